"""Logging setup of the ``fraudhub`` command: plain text or one JSON object per line.

``--log-format json`` makes every record one line of JSON with ``time``
(ISO 8601 UTC), ``level``, ``logger`` and ``message``; the per-RPC records of
``hub.wire.metrics`` add ``method``, ``institution``, ``code``, ``items`` and
``duration_ms`` as fields of their own.  Only those named fields are copied
from a record: whatever else a caller attaches never reaches the output.
Exceptions are rendered as their type only (a message may hold a value).

The servers (``serve``, ``keyholder``) log their per-RPC lines at INFO
whatever ``-v`` says: that line is the request log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from hub.wire.metrics import RPC_LOGGER

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
_RPC_FIELDS = ("method", "institution", "code", "items", "duration_ms")
# Attribute marking the handler configure_logging installed.
_MARK = "_fraudhub_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rpc = getattr(record, "rpc", None)
        if isinstance(rpc, dict):
            line.update({key: rpc[key] for key in _RPC_FIELDS if key in rpc})
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, separators=(",", ":"))


def configure_logging(verbosity: int, log_format: str, *, server: bool) -> None:
    """Log to stderr in ``log_format``; ``server`` turns the per-RPC lines on.

    Like ``logging.basicConfig``, it leaves a root logger that something else
    (an embedding program, a test harness) configured alone; it replaces only
    the handler a previous call installed.
    """
    if server:
        logging.getLogger(RPC_LOGGER).setLevel(logging.INFO)
    root = logging.getLogger()
    foreign = [h for h in root.handlers if not getattr(h, _MARK, False)]
    if foreign:
        return
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _MARK, True)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING - 10 * min(verbosity, 2))
