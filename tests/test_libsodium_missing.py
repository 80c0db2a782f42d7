"""Without libsodium, fraudhub fails with one actionable line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e  # runs fraudhub as a subprocess

# Make `import pysodium` fail the way it does when the shared library is absent
# (pysodium raises ValueError from its ctypes loader).
NO_SODIUM = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pysodium":
            raise ValueError("Unable to find libsodium")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["fraudhub", "keys", "deal", "-t", "1", "-n", "1", "--out", "unused"]
from hub.cli import main
sys.exit(main())
"""


def test_missing_libsodium_gives_one_actionable_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NO_SODIUM], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "libsodium >= 1.0.18" in lines[0]
    assert "apt-get install libsodium23" in lines[0]
    assert "Traceback" not in proc.stderr
