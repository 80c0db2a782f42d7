"""fraudhub SDK: what an institution installs to share and screen fraud indicators.

The public API is exactly ``__all__``.  Names are imported on first use
(PEP 562), so ``import client_sdk.core.errors`` stays light and does not load
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
    from client_sdk.client.config import ClientConfig
    from client_sdk.client.hub import HubClient
    from client_sdk.client.results import (
        BulkSummary,
        Contributed,
        Indicator,
        ItemFailure,
        Label,
        MatchResult,
        RevokeResult,
    )
    from client_sdk.client.tokenizer import HolderEndpoint, Tokenizer
    from client_sdk.core.errors import FraudhubError
    from client_sdk.core.indicators import canonicalize
    from client_sdk.core.vocabulary import CATEGORIES, KINDS, REVOKE_REASONS
    from client_sdk.wire.auth import InstitutionKey
    from client_sdk.wire.channels import ChannelSecurity, RetryPolicy
    from client_sdk.wire.status import errors_from_status

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
    "CATEGORIES": "client_sdk.core.vocabulary",
    "KINDS": "client_sdk.core.vocabulary",
    "canonicalize": "client_sdk.core.indicators",
    "FraudhubError": "client_sdk.core.errors",
    "InstitutionKey": "client_sdk.wire.auth",
    "ChannelSecurity": "client_sdk.wire.channels",
    "RetryPolicy": "client_sdk.wire.channels",
    "errors_from_status": "client_sdk.wire.status",
    "HolderEndpoint": "client_sdk.client.tokenizer",
    "Tokenizer": "client_sdk.client.tokenizer",
    "BulkSummary": "client_sdk.client.results",
    "ClientConfig": "client_sdk.client.config",
    "Contributed": "client_sdk.client.results",
    "HubClient": "client_sdk.client.hub",
    "Indicator": "client_sdk.client.results",
    "ItemFailure": "client_sdk.client.results",
    "Label": "client_sdk.client.results",
    "MatchResult": "client_sdk.client.results",
    "RevokeResult": "client_sdk.client.results",
    "REVOKE_REASONS": "client_sdk.core.vocabulary",
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
