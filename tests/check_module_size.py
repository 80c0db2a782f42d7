"""Lint step (`make lint`): no hand-written Python module is over about 600 lines.

Run as ``python tests/check_module_size.py``; exits 1 naming each module over
:data:`LIMIT` lines that is not in :data:`KNOWN_OVERSIZED`, and each entry of
:data:`KNOWN_OVERSIZED` that is no longer over the limit (remove it: the list
only shrinks).  Generated protobuf code (``*_pb2*``) is not hand-written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LIMIT = 600

# Modules over the limit today, each with why it may stay so until its split lands.
KNOWN_OVERSIZED: dict[str, str] = {}


def hand_written_modules(root: Path) -> list[Path]:
    """Tracked ``*.py`` files, generated protobuf code excluded."""
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    return [root / name for name in listed if "_pb2" not in Path(name).name]


def problems(root: Path) -> list[str]:
    """What is wrong, one line each; empty when every module is within the limit."""
    found: list[str] = []
    oversized: set[str] = set()
    for path in hand_written_modules(root):
        if not path.exists():
            continue  # deleted in the work tree, not yet in the index
        name = path.relative_to(root).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > LIMIT:
            oversized.add(name)
            if name not in KNOWN_OVERSIZED:
                found.append(f"{name}: {lines} lines (limit {LIMIT}); split it along its seams")
    for name in sorted(set(KNOWN_OVERSIZED) - oversized):
        found.append(f"{name}: within the limit now; remove it from KNOWN_OVERSIZED")
    return found


def main() -> int:
    found = problems(Path(__file__).resolve().parent.parent)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
