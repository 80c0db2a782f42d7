"""Sightings and warning lists from the client side (issue 12; ``feedback.proto``).

:class:`HubClient <client_sdk.client.hub.HubClient>` delegates here:
``file_sightings`` (an institution that matched a value says what it saw),
``review_sightings`` (a contributor reads the feedback on its own values),
and the operator's ``warninglist_add`` / ``warninglist_remove`` /
``warninglist_counts``.  Values are canonicalized and tokenized through the
key holders exactly as for a match; only tokens leave the process.  Each
input gets one outcome or one :class:`~client_sdk.client.results.ItemFailure`
(whose error never holds the value).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

import grpc
from fraudhub.v1 import exchange_pb2, feedback_pb2, feedback_pb2_grpc
from google.protobuf.message import Message

from client_sdk.client.results import ItemFailure
from client_sdk.core.errors import InvalidItems, InvalidRequest, PolicyDenied
from client_sdk.core.tokens import TokenKeys
from client_sdk.core.vocabulary import SIGHTING_TYPES
from client_sdk.wire.channels import with_timeout
from client_sdk.wire.codecs import timestamp


class HubClient(Protocol):
    """What this module uses of :class:`client_sdk.client.hub.HubClient` (which imports it)."""

    _channel: grpc.Channel
    _batch: int
    _epoch: int

    def _tokenize(
        self, kinds_values: Sequence[tuple[str, str]], offset: int = ...
    ) -> tuple[dict[int, tuple[str, TokenKeys]], list[ItemFailure]]: ...

    def _unary(
        self, method: Callable[[float], _M], response_type: type[_M]
    ) -> tuple[_M, InvalidItems | None]: ...


__all__ = [
    "WARNINGLIST_PURPOSE",
    "Sighting",
    "SightingMethods",
    "SightingReview",
    "SightingsFiled",
    "WarningListChange",
    "file_sightings",
    "review_sightings",
    "warninglist_change",
    "warninglist_counts",
]

_R = TypeVar("_R")
_M = TypeVar("_M", bound=Message)

#: The dedicated, audited purpose of warning list maintenance.
WARNINGLIST_PURPOSE = "warninglist"


@dataclass(frozen=True)
class Sighting:
    """What the filer saw of a value: ``type`` is confirmed, false_positive or expired."""

    kind: str
    value: str = field(repr=False)
    type: str
    seen_at: datetime | None = None


@dataclass(frozen=True)
class SightingsFiled:
    """How many sightings the hub recorded; ``failures`` are the inputs it did not."""

    recorded: int
    failures: tuple[ItemFailure, ...] = ()


@dataclass(frozen=True)
class SightingReview:
    """Feedback on input ``index``: ``own`` if this institution contributed the value,
    then how many other institutions filed each type (zeros when not ``own``)."""

    index: int
    kind: str
    own: bool
    confirmed: int = 0
    false_positive: int = 0
    expired: int = 0


@dataclass(frozen=True)
class WarningListChange:
    """Entries added or removed (``changed``), already so (``unchanged``), and failures."""

    changed: int
    unchanged: int
    failures: tuple[ItemFailure, ...] = ()


class SightingMethods:
    """:class:`client_sdk.client.hub.HubClient`'s sighting methods (mixed in there)."""

    def file_sightings(
        self: HubClient,
        items: Sequence[Sighting],
        *,
        purpose: str,
        case_reference: str | None = None,
    ) -> SightingsFiled:
        """File sightings (confirmed, false_positive, expired) on values this institution holds."""
        return file_sightings(self, items, purpose=purpose, case_reference=case_reference)

    def review_sightings(
        self: HubClient, items: Sequence[tuple[str, str]], *, purpose: str
    ) -> list[SightingReview | ItemFailure]:
        """Other institutions' sightings on this institution's own contributions."""
        return review_sightings(self, items, purpose=purpose)


def file_sightings(
    client: HubClient,
    items: Sequence[Sighting],
    *,
    purpose: str,
    case_reference: str | None = None,
) -> SightingsFiled:
    """File ``items``; raises InvalidRequest for an unknown type before tokenizing anything."""
    for item in items:
        if item.type not in SIGHTING_TYPES:
            raise InvalidRequest("sighting type must be one of " + ", ".join(SIGHTING_TYPES))
    stub = feedback_pb2_grpc.FeedbackStub(client._channel)
    tokens, failures = client._tokenize([(i.kind, i.value) for i in items])
    entries = sorted(tokens.items())
    recorded = 0
    for start in range(0, len(entries), client._batch):
        batch = entries[start : start + client._batch]
        request = feedback_pb2.FileSightingsRequest(
            purpose=purpose, case_reference=case_reference or ""
        )
        for _, (kind, keys) in batch:
            request.items.append(
                feedback_pb2.SightingItem(
                    token=keys.match_token, kind=kind, key_epoch=client._epoch, type=""
                )
            )
        for message, (index, _) in zip(request.items, batch, strict=True):
            message.type = items[index].type
            seen_at = items[index].seen_at
            if seen_at is not None:
                message.seen_at.CopyFrom(timestamp(seen_at))
        try:
            response, invalid = client._unary(
                with_timeout(stub.FileSightings, request),
                feedback_pb2.FileSightingsResponse,
            )
        except PolicyDenied as refused:
            failures.extend(ItemFailure(i, kind, refused) for i, (kind, _) in batch)
            continue
        recorded += response.recorded
        bad = {m.index: m.reason for m in response.malformed}
        if invalid is not None:
            bad.update({e.index: e.reason for e in invalid.items})
        rejected = {r.index: r.reason for r in response.rejected_items}
        for position, (index, (kind, _)) in enumerate(batch):
            if position in bad:
                failures.append(ItemFailure(index, kind, InvalidRequest(bad[position])))
            elif position in rejected:
                reasons = tuple(rejected[position].split(","))
                failures.append(
                    ItemFailure(index, kind, PolicyDenied("the policy refuses this item", reasons))
                )
    return SightingsFiled(recorded, tuple(sorted(failures, key=lambda f: f.index)))


def review_sightings(
    client: HubClient, items: Sequence[tuple[str, str]], *, purpose: str
) -> list[SightingReview | ItemFailure]:
    """The feedback on this institution's own contributions of ``(kind, value)`` pairs."""
    stub = feedback_pb2_grpc.FeedbackStub(client._channel)
    tokens, failures = client._tokenize(items)
    out: dict[int, SightingReview | ItemFailure] = {f.index: f for f in failures}
    entries = sorted(tokens.items())
    for start in range(0, len(entries), client._batch):
        batch = entries[start : start + client._batch]
        request = feedback_pb2.ReviewSightingsRequest(
            purpose=purpose,
            queries=[
                exchange_pb2.MatchQuery(token=k.match_token, kind=kind, key_epoch=client._epoch)
                for _, (kind, k) in batch
            ],
        )
        try:
            response, _ = client._unary(
                with_timeout(stub.ReviewSightings, request),
                feedback_pb2.ReviewSightingsResponse,
            )
        except PolicyDenied as refused:
            out.update({i: ItemFailure(i, kind, refused) for i, (kind, _) in batch})
            continue
        bad = {m.index: m.reason for m in response.malformed}
        for position, (index, (kind, _)) in enumerate(batch):
            if position in bad:
                out[index] = ItemFailure(index, kind, InvalidRequest(bad[position]))
        for result in response.results:
            index, (kind, _) = batch[result.index]
            out[index] = SightingReview(
                index, kind, result.own, result.confirmed, result.false_positive, result.expired
            )
    return [out[i] for i in sorted(out)]


def warninglist_change(
    client: HubClient,
    items: Sequence[tuple[str, str]],
    *,
    list_name: str,
    add: bool,
    tokenizer: HubClient | None = None,
) -> WarningListChange:
    """Add (or remove) ``(kind, value)`` pairs to (from) the warning list ``list_name``.

    ``client`` is the operator's (the hub lets only the operator edit the lists);
    ``tokenizer`` is a member institution's client whose key holders evaluate the
    values: holders never evaluate for the operator role (review finding: the hub
    holds the tokens, so an evaluation oracle would let it test guesses offline).
    The values are public known-good numbers and domains, so the member learns
    nothing; the holders count the evaluations against its quota.
    """
    stub = feedback_pb2_grpc.WarningListStub(client._channel)
    tokens, failures = (tokenizer or client)._tokenize(items)
    entries = sorted(tokens.items())
    changed = unchanged = 0
    method = stub.AddEntries if add else stub.RemoveEntries
    for start in range(0, len(entries), client._batch):
        batch = entries[start : start + client._batch]
        request = feedback_pb2.WarningListRequest(
            purpose=WARNINGLIST_PURPOSE,
            list=list_name,
            items=[
                exchange_pb2.MatchQuery(token=k.match_token, kind=kind, key_epoch=client._epoch)
                for _, (kind, k) in batch
            ],
        )
        response, _ = client._unary(
            with_timeout(method, request),
            feedback_pb2.WarningListResponse,
        )
        changed += response.changed
        unchanged += response.unchanged
        for malformed in response.malformed:
            index, (kind, _) = batch[malformed.index]
            failures.append(ItemFailure(index, kind, InvalidRequest(malformed.reason)))
    return WarningListChange(changed, unchanged, tuple(failures))


def warninglist_counts(client: HubClient) -> list[tuple[str, str, int]]:
    """(list, kind, entries) of every warning list."""
    stub = feedback_pb2_grpc.WarningListStub(client._channel)
    request = feedback_pb2.ListWarningListRequest(purpose=WARNINGLIST_PURPOSE)
    response, _ = client._unary(
        with_timeout(stub.ListEntries, request),
        feedback_pb2.ListWarningListResponse,
    )
    return [(c.list, c.kind, c.entries) for c in response.counts]
