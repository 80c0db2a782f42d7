"""Protobuf <-> domain codecs of the Exchange service's messages.

Pure translation, no storage and no policy: an ``exchange_pb2.Indicator``
becomes a :class:`~hub.core.matching.ContributionItem`, a
:class:`~hub.core.matching.MatchSummary` a ``MatchResult``, item errors the
``malformed`` list and the INVALID_ARGUMENT status that carries a partial
answer.  Timestamps and categories go through ``client_sdk.wire.codecs``, the
one place that maps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

import grpc
from fraudhub.v1 import common_pb2, exchange_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status

from client_sdk.core.errors import InvalidItems, ItemError
from client_sdk.wire.codecs import category_value, category_word, optional_datetime, timestamp
from hub.core.matching import ContributionItem, MatchSummary
from hub.policy.model import Disclosure
from hub.wire.status import to_rpc_status

__all__ = [
    "MAX_PARTIAL_BYTES",
    "abort_partial",
    "contribution_item",
    "encode_summary",
    "invalid_message",
    "malformed_items",
    "replace_field",
]

# The largest partial answer packed into an INVALID_ARGUMENT status (trailing
# metadata): the SDK's channels accept 2 MiB (client_sdk.wire.channels).
MAX_PARTIAL_BYTES = 1024 * 1024


def replace_field(error: ItemError, field_name: str) -> ItemError:
    """``error`` reported against the request's repeated field ``field_name``."""
    return ItemError(error.index, error.kind, f"{error.field}: {error.reason}", field_name)


def contribution_item(item: exchange_pb2.Indicator) -> ContributionItem:
    return ContributionItem(
        token=item.token,
        kind=item.kind,
        key_epoch=item.key_epoch,
        category=category_word(item.category),
        confidence=item.confidence,
        observed_at=optional_datetime(item, "observed_at"),
        expires_at=optional_datetime(item, "expires_at"),
        sealed_label=item.sealed_label or None,
        evidence=item.evidence,
    )


def encode_summary(
    index: int, summary: MatchSummary, granted: Disclosure, reasons: list[str]
) -> exchange_pb2.MatchResult:
    result = exchange_pb2.MatchResult(
        index=index,
        matched=summary.matched,
        disclosure=common_pb2.Disclosure.ValueType(int(granted)),
        contributors=summary.contributors,
        categories=[category_value(c) for c in summary.categories],
        max_confidence=summary.max_confidence,
        labels=[
            exchange_pb2.SealedLabel(contributor=label.contributor, sealed_label=label.sealed)
            for label in summary.labels
        ],
        reasons=reasons,
        evidence=list(summary.evidence),
        impersonated=summary.impersonated,
        score=summary.score,
        sightings_confirmed=summary.feedback.confirmed,
        sightings_false_positive=summary.feedback.false_positive,
        sightings_expired=summary.feedback.expired,
    )
    if summary.first_seen is not None:
        result.first_seen.CopyFrom(timestamp(summary.first_seen))
    if summary.last_seen is not None:
        result.last_seen.CopyFrom(timestamp(summary.last_seen))
    return result


def malformed_items(invalid: Iterable[ItemError]) -> list[exchange_pb2.MalformedItem]:
    """The response's complete list of malformed items (the status names only 50)."""
    return [
        exchange_pb2.MalformedItem(index=e.index, field=e.field, reason=e.reason) for e in invalid
    ]


def abort_partial(
    context: grpc.ServicerContext, message: str, invalid: list[ItemError], partial: Message
) -> NoReturn:
    """Fail with INVALID_ARGUMENT naming each bad item, carrying the partial answer.

    The status is the one ``hub.wire.status`` makes for :class:`InvalidItems`
    (ErrorInfo + BadRequest), plus ``partial`` (the response for the valid
    items) packed as one more detail, so the SDK still gets its results, if
    it is at most :data:`MAX_PARTIAL_BYTES`: the status travels in trailing
    metadata, which gRPC peers bound (16 KiB by default, 2 MiB in the SDK).
    """
    size = partial.ByteSize()
    if size > MAX_PARTIAL_BYTES:
        # Contributions are idempotent: resending smaller requests loses nothing.
        message += (
            f"; the answer for them ({size} bytes) is too large to attach to this status: "
            "send smaller requests (MatchStream answers each message before the status)"
        )
    status = to_rpc_status(InvalidItems(message, tuple(invalid)))
    if size <= MAX_PARTIAL_BYTES:
        packed = any_pb2.Any()
        packed.Pack(partial)
        status.details.append(packed)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # grpc always raises


def invalid_message(invalid: list[ItemError], done: str) -> str:
    return f"{len(invalid)} item(s) are malformed; the valid items were {done}"
