"""Where the files fraudhub ships beside its code are: policies and examples.

In a source checkout (and an editable install) they are the repository's
``policies/`` and ``examples/``.  A regular ``pip install .`` copies them to
``<prefix>/share/fraudhub/`` (pyproject ``data-files``), since they are data a
person reads and edits, not importable modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

from client_sdk.core.errors import ConfigurationError

__all__ = ["shipped"]

_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def shipped(relative: str) -> Path:
    """The installed path of ``relative`` (e.g. ``"policies/default.yaml"``).

    Raises ConfigurationError when neither location has it.
    """
    for root in (_SOURCE_ROOT, Path(sys.prefix) / "share" / "fraudhub"):
        candidate = root / relative
        if candidate.exists():
            return candidate
    raise ConfigurationError(
        f"{relative} is not installed (looked in the source tree and {sys.prefix}/share/fraudhub)"
    )
