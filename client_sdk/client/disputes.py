"""Disputes from an institution's side: open one for a person, list, answer (issue 12).

:class:`DisputeClient` is what :attr:`HubClient.disputes
<client_sdk.client.hub.HubClient.disputes>` returns.  Guarantees:

- The disputed value is canonicalized and tokenized on this machine like a
  screened value; only its token(s) and kind reach the hub, under the
  ``redress`` purpose with the person's request as the case reference (the
  hub's audit log keeps only its digest).
- Every call goes through the one retry loop (UNAVAILABLE is retried; opening
  twice opens two disputes of the same value, which is harmless: both suspend
  the same indicators and each is answered).
- Results are typed (:class:`DisputeOpened`, :class:`DisputeItem`,
  :class:`OpenedDispute`); no token is ever returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc
from fraudhub.v1 import disputes_pb2, disputes_pb2_grpc

from client_sdk.core.errors import InvalidRequest
from client_sdk.core.tokens import TokenKeys
from client_sdk.core.vocabulary import UPHOLD_EVIDENCE
from client_sdk.wire.channels import RetryPolicy, call_with_retry
from client_sdk.wire.codecs import optional_datetime

__all__ = [
    "REDRESS",
    "DisputeClient",
    "DisputeItem",
    "DisputeOpened",
    "OpenedDispute",
]

#: The policy purpose of disputes (policies/default.yaml).
REDRESS = "redress"

#: Tokenizes one (kind, value) under every key epoch the client uses:
#: ``[(epoch, keys)]``; raises InvalidIndicator for an invalid value.
EpochTokenizer = Callable[[str, str], Sequence[tuple[int, TokenKeys]]]


@dataclass(frozen=True)
class DisputeOpened:
    """A dispute just opened: its id, how many indicators it suspended, their deadline."""

    dispute_id: str
    suspended: int
    due_at: datetime | None


@dataclass(frozen=True)
class DisputeItem:
    """One of this institution's indicators under dispute, and its state."""

    id: int
    dispute_id: str
    kind: str
    category: str
    observed_at: datetime | None
    contributed_at: datetime | None
    due_at: datetime | None
    state: str
    evidence: str
    resolved_at: datetime | None


@dataclass(frozen=True)
class OpenedDispute:
    """A dispute this institution opened and its outcome so far."""

    id: str
    kind: str
    opened_at: datetime | None
    closed_at: datetime | None
    suspended: int
    outcome: str


class DisputeClient:
    """Open, list and answer disputes over one hub channel."""

    def __init__(self, channel: grpc.Channel, tokenize: EpochTokenizer, retry: RetryPolicy) -> None:
        self._stub = disputes_pb2_grpc.DisputesStub(channel)
        self._tokenize = tokenize
        self._retry = retry

    def open(
        self, kind: str, value: str, *, case_reference: str, purpose: str = REDRESS
    ) -> DisputeOpened:
        """Open a dispute of ``value`` for the person it concerns.

        Raises InvalidIndicator for an invalid value (before any key holder is
        asked), PolicyDenied if the policy refuses, QuotaExhausted, Unavailable.
        """
        tokens = self._tokenize(kind, value)
        request = disputes_pb2.OpenDisputeRequest(
            purpose=purpose,
            case_reference=case_reference,
            kind=kind,
            tokens=[
                disputes_pb2.DisputedToken(token=keys.match_token, key_epoch=epoch)
                for epoch, keys in tokens
            ],
        )
        reply = call_with_retry(lambda t: self._stub.Open(request, timeout=t), self._retry)
        return DisputeOpened(reply.dispute_id, reply.suspended, optional_datetime(reply, "due_at"))

    def list(
        self, *, include_answered: bool = False
    ) -> tuple[list[DisputeItem], list[OpenedDispute]]:
        """The items of disputes of this institution's indicators, and the disputes it opened."""
        request = disputes_pb2.ListDisputesRequest(include_answered=include_answered)
        reply = call_with_retry(lambda t: self._stub.List(request, timeout=t), self._retry)
        return [_item(i) for i in reply.items], [
            OpenedDispute(
                o.id,
                o.kind,
                optional_datetime(o, "opened_at"),
                optional_datetime(o, "closed_at"),
                o.suspended,
                o.outcome,
            )
            for o in reply.opened
        ]

    def uphold(self, item_id: int, evidence: str) -> DisputeItem:
        """Keep a disputed indicator, naming the evidence (one of UPHOLD_EVIDENCE)."""
        if evidence not in UPHOLD_EVIDENCE:  # the hub checks too
            raise InvalidRequest("evidence must be one of " + ", ".join(UPHOLD_EVIDENCE))
        return self._resolve(item_id, "uphold", evidence)

    def withdraw(self, item_id: int) -> DisputeItem:
        """Withdraw a disputed indicator: the hub deletes it."""
        return self._resolve(item_id, "withdraw", "")

    def _resolve(self, item_id: int, step: str, evidence: str) -> DisputeItem:
        request = disputes_pb2.ResolveDisputeRequest(item_id=item_id, step=step, evidence=evidence)
        reply = call_with_retry(lambda t: self._stub.Resolve(request, timeout=t), self._retry)
        return _item(reply)


def _item(message: disputes_pb2.DisputeItem) -> DisputeItem:
    return DisputeItem(
        id=message.id,
        dispute_id=message.dispute_id,
        kind=message.kind,
        category=message.category,
        observed_at=optional_datetime(message, "observed_at"),
        contributed_at=optional_datetime(message, "contributed_at"),
        due_at=optional_datetime(message, "due_at"),
        state=message.state,
        evidence=message.evidence,
        resolved_at=optional_datetime(message, "resolved_at"),
    )
