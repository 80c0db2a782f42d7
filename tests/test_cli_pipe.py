"""``fraudhub ... | head``: a reader that goes away ends the command quietly.

The command's stdout is a pipe whose read end is already closed, as after
``head`` has read its lines and exited: the command exits 141 (128 + SIGPIPE)
with nothing on stderr, never a BrokenPipeError traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_demo import ROOT

pytestmark = pytest.mark.e2e  # runs fraudhub as a subprocess


def run_into_closed_pipe(*args: str, timeout: float = 120) -> tuple[int, str]:
    """Run ``fraudhub ARGS`` with stdout a pipe nobody reads; return (status, stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "protos"), str(ROOT)])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first write
    try:
        done = subprocess.run(
            [sys.executable, "-m", "hub.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def test_a_closed_stdout_ends_the_command_quietly() -> None:
    status, err = run_into_closed_pipe("policy", "check", str(ROOT / "policies" / "default.yaml"))
    assert status == 141
    assert err == ""
