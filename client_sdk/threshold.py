"""Public name kept from before the layout of ADR 0006: ``client_sdk.threshold``.

The code lives in :mod:`client_sdk.core.threshold`; this module re-exports its public
API (``__all__``) so that code written against ``client_sdk.threshold`` keeps working.
"""

from client_sdk.core.threshold import *  # noqa: F403 - the public API, re-exported whole
from client_sdk.core.threshold import __all__ as __all__  # noqa: PLC0414 - re-export for type checkers
