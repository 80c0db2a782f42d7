"""Shared test setup: make the generated ``fraudhub.v1`` package importable.

pyproject maps the ``fraudhub`` package to ``protos/fraudhub``; the repository
is not pip-installed in development, so ``protos/`` goes on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PROTOS = str(Path(__file__).resolve().parent.parent / "protos")
if _PROTOS not in sys.path:
    sys.path.insert(0, _PROTOS)
