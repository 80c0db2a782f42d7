"""Public name kept from before the layout of ADR 0006: ``client_sdk.oprf``.

The code lives in :mod:`client_sdk.core.oprf`; this module re-exports its public
API (``__all__``) so that code written against ``client_sdk.oprf`` keeps working.
"""

from client_sdk.core.oprf import *  # noqa: F403 - the public API, re-exported whole
from client_sdk.core.oprf import __all__ as __all__  # noqa: PLC0414 - re-export for type checkers
