"""Leaving a server process whose gRPC handler threads did not end.

gRPC's worker threads are not daemons and the interpreter joins them at exit,
so one handler blocked past the shutdown grace period (in a database lock
wait, say) would keep ``fraudhub serve`` or ``fraudhub keyholder`` alive
after SIGTERM.  :func:`exit_leaving_stuck_calls` flushes the logs and the
standard streams and ends the process at once.  The stuck calls were
cancelled by gRPC already; their transactions were never committed, so the
database rolls them back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

__all__ = ["exit_leaving_stuck_calls"]


def exit_leaving_stuck_calls(status: int = 0) -> None:
    """Flush logs and streams, then ``os._exit(status)``; never returns."""
    logging.getLogger(__name__).error("exiting with calls still running (cancelled)")
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe must not stop the exit
            stream.flush()
    os._exit(status)
