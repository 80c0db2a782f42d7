"""The Exchange messages (exchange.proto) <-> the client's values (client_sdk.client.results).

The SDK's own codecs (the hub reads the same messages with its own servicer
code): building an ``Indicator`` message with its sealed label, reading a
hub result back with its labels opened, and turning a response (or the
partial response an INVALID_ARGUMENT status carries) into one outcome per
item.  Decoding raises only InvalidRequest (an unknown disclosure number, a
time out of range: ``client_sdk.wire.codecs``); a label that does not open is
``None`` and a category number this SDK does not know is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

import grpc
from fraudhub.v1 import common_pb2, exchange_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status

from client_sdk.client.results import Contributed, Indicator, ItemFailure, Label, MatchResult
from client_sdk.core.errors import InvalidItems, InvalidRequest, LabelError, PolicyDenied
from client_sdk.core.tokens import TokenKeys, open_label, seal_label
from client_sdk.core.vocabulary import EVIDENCE_CLASSES
from client_sdk.wire.codecs import (
    category_value,
    category_word,
    disclosure_word,
    optional_datetime,
    timestamp,
    to_datetime,
)

__all__ = [
    "contribute_outcomes",
    "indicator_message",
    "malformed",
    "match_outcome",
    "match_result",
    "partial_response",
]

_R = TypeVar("_R", bound=Message)


def partial_response(error: grpc.RpcError, response_type: type[_R]) -> _R | None:
    """The response for the valid items packed in an INVALID_ARGUMENT status, if any."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(response_type.DESCRIPTOR):
            message = response_type()
            detail.Unpack(message)
            return message
    return None


def indicator_message(
    item: Indicator, kind: str, keys: TokenKeys, *, epoch: int, institution: str, now: datetime
) -> exchange_pb2.Indicator:
    """The wire form of one item; raises InvalidRequest for bad metadata."""
    if not 0 <= item.confidence <= 100:
        raise InvalidRequest("confidence must be between 0 and 100")
    message = exchange_pb2.Indicator(
        token=keys.match_token,
        kind=kind,
        category=category_value(item.category),
        confidence=item.confidence,
        key_epoch=epoch,
        observed_at=timestamp(item.observed_at or now),
    )
    if item.expires_at is not None:
        message.expires_at.CopyFrom(timestamp(item.expires_at))
    if item.evidence is not None:
        if item.evidence not in EVIDENCE_CLASSES:
            raise InvalidRequest("evidence must be one of " + ", ".join(EVIDENCE_CLASSES))
        message.evidence = item.evidence
    if item.label:
        message.sealed_label = seal_label(
            keys.label_key, keys.match_token, kind, institution, item.label.encode()
        )
    return message


def match_result(
    index: int, kind: str, keys: TokenKeys, result: exchange_pb2.MatchResult
) -> MatchResult:
    """The client's view of one hub result: labels opened (None if one does not open)."""
    labels = []
    for sealed in result.labels:
        try:
            text: str | None = open_label(
                keys.label_key, keys.match_token, kind, sealed.contributor, sealed.sealed_label
            ).decode("utf-8", "replace")
        except LabelError:
            text = None
        labels.append(Label(sealed.contributor, text))
    return MatchResult(
        index=index,
        kind=kind,
        matched=result.matched,
        disclosure=disclosure_word(result.disclosure),
        contributors=result.contributors,
        # A category newer than this SDK is left out rather than failing the match.
        categories=tuple(word for word in map(category_word, result.categories) if word),
        first_seen=optional_datetime(result, "first_seen"),
        last_seen=optional_datetime(result, "last_seen"),
        max_confidence=result.max_confidence,
        labels=tuple(labels),
        reasons=tuple(result.reasons),
        evidence=tuple(result.evidence),
        impersonated=result.impersonated,
        score=result.score,
        sightings_confirmed=result.sightings_confirmed,
        sightings_false_positive=result.sightings_false_positive,
        sightings_expired=result.sightings_expired,
    )


def match_outcome(
    index: int, kind: str, keys: TokenKeys, result: exchange_pb2.MatchResult
) -> MatchResult | ItemFailure:
    """One query's outcome: a refused query is an ItemFailure(PolicyDenied), as it is
    when the policy refuses a whole request, so the caller gets the same type for
    an item whatever else was in its batch (issue 13)."""
    refused = result.disclosure == common_pb2.DISCLOSURE_NONE and any(
        reason.startswith("DENY_") for reason in result.reasons
    )
    if refused and not result.matched:
        return ItemFailure(
            index, kind, PolicyDenied("the policy refuses this query", tuple(result.reasons))
        )
    return match_result(index, kind, keys, result)


def malformed(
    response: exchange_pb2.ContributeResponse | exchange_pb2.MatchResponse,
    invalid: InvalidItems | None,
) -> dict[int, str]:
    """Reason by position of each malformed item: the response lists all of them,
    the INVALID_ARGUMENT status only the first 50 (and a stream's status counts
    positions across the stream, so it is only used with the response it came with)."""
    found = {e.index: e.reason for e in (invalid.items if invalid else ())}
    found.update((m.index, m.reason) for m in response.malformed)
    return found


def contribute_outcomes(
    batch: Sequence[tuple[int, exchange_pb2.Indicator]],
    response: exchange_pb2.ContributeResponse,
    invalid: InvalidItems | None,
) -> dict[int, Contributed | ItemFailure]:
    """Per-item outcomes of one request (or one stream) of ``batch``."""
    out: dict[int, Contributed | ItemFailure] = {}
    bad = malformed(response, invalid)
    rejected = {r.index: r.reason for r in response.rejected_items}
    clipped = {c.index: to_datetime(c.expires_at, "clipped.expires_at") for c in response.clipped}
    for position, (index, message) in enumerate(batch):
        if position in bad:
            out[index] = ItemFailure(index, message.kind, InvalidRequest(bad[position]))
        elif position in rejected:
            reasons = tuple(rejected[position].split(","))
            denied = PolicyDenied("the policy refuses this item", reasons)
            out[index] = ItemFailure(index, message.kind, denied)
        else:
            out[index] = Contributed(index, message.kind, clipped.get(position))
    return out
