"""fraudhub SDK: what an institution installs to share and screen fraud indicators.

The public API is exactly ``__all__``.  Names are imported on first use
(PEP 562), so ``import client_sdk.errors`` stays light and does not load
gRPC or the generated protocol code.

Typical use::

    from client_sdk import ClientConfig, HubClient, Indicator

    with HubClient.from_config(ClientConfig.load(Path("client.json"))) as hub:
        hub.contribute([Indicator("phone", "+86 138 0013 8000", "scam_phone")],
                       purpose="fraud_reporting")
        results = hub.match([("phone", "13800138000")], purpose="payment_screening")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time names load on first use
    from client_sdk.auth import InstitutionKey
    from client_sdk.client import (
        REVOKE_REASONS,
        BulkSummary,
        ClientConfig,
        Contributed,
        HubClient,
        Indicator,
        ItemFailure,
        Label,
        MatchResult,
        RevokeResult,
    )
    from client_sdk.errors import FraudhubError
    from client_sdk.indicators import CATEGORIES, KINDS, canonicalize
    from client_sdk.tokenizer import HolderEndpoint, Tokenizer
    from client_sdk.transport import ChannelSecurity, RetryPolicy, errors_from_status

__all__ = [
    "CATEGORIES",
    "KINDS",
    "REVOKE_REASONS",
    "BulkSummary",
    "ChannelSecurity",
    "ClientConfig",
    "Contributed",
    "FraudhubError",
    "HolderEndpoint",
    "HubClient",
    "Indicator",
    "InstitutionKey",
    "ItemFailure",
    "Label",
    "MatchResult",
    "RetryPolicy",
    "RevokeResult",
    "Tokenizer",
    "canonicalize",
    "errors_from_status",
]

# Where each public name lives.
_SOURCES: dict[str, str] = {
    "CATEGORIES": "client_sdk.indicators",
    "KINDS": "client_sdk.indicators",
    "canonicalize": "client_sdk.indicators",
    "FraudhubError": "client_sdk.errors",
    "InstitutionKey": "client_sdk.auth",
    "ChannelSecurity": "client_sdk.transport",
    "RetryPolicy": "client_sdk.transport",
    "errors_from_status": "client_sdk.transport",
    "HolderEndpoint": "client_sdk.tokenizer",
    "Tokenizer": "client_sdk.tokenizer",
    "BulkSummary": "client_sdk.client",
    "ClientConfig": "client_sdk.client",
    "Contributed": "client_sdk.client",
    "HubClient": "client_sdk.client",
    "Indicator": "client_sdk.client",
    "ItemFailure": "client_sdk.client",
    "Label": "client_sdk.client",
    "MatchResult": "client_sdk.client",
    "RevokeResult": "client_sdk.client",
    "REVOKE_REASONS": "client_sdk.client",
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'client_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
