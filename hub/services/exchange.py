"""The Exchange servicer: Contribute, Revoke, Match and their bulk streams.

A thin adapter: it decodes protobuf messages, asks the policy, runs the store
queries and :mod:`hub.core.matching` inside ONE transaction per request message,
appends that message's audit event to the same transaction, and encodes the
answer.  Authentication and the per-RPC role check happened in the
interceptors (``hub.wire.auth``); errors are mapped to gRPC statuses by
``hub.wire.status``.

Documented behaviour (the SDK relies on it):

- **Per-item policy.**  Each item is decided for its own kind.  Items the
  policy refuses are listed in ``rejected_items`` (Contribute) or answered
  with ``disclosure = NONE`` and the reason codes (Match); the other items
  are processed.  If the policy refuses *every* item of a unary request, the
  call fails with PERMISSION_DENIED (:class:`PolicyDenied`) and nothing is
  stored; a stream never fails for that (one batch of a bulk run may hold
  only refused kinds), its items are refused one by one.
- **Malformed items.**  Items that break the bounds of ``exchange.proto``
  (token length, unknown kind, category, confidence, dates, label length) are
  reported in one INVALID_ARGUMENT whose google.rpc.BadRequest names each
  item (:class:`InvalidItems`, the first 50); the valid items of the same
  request are still processed and committed first.  The response lists every
  malformed item in ``malformed`` and travels as one more detail of the
  status (a packed ContributeResponse, RevokeResponse or MatchResponse) when
  it is at most :data:`MAX_PARTIAL_BYTES`; otherwise the status message says
  it was left out.  Streams report malformed items the same way at the end of
  the stream, after every valid message committed, with indices counted
  across the whole stream; MatchStream's per-message responses list them too.
- **Streams are bounded** (:data:`MAX_STREAM_ITEMS` items): past it the
  stream ends INVALID_ARGUMENT (audited), the earlier messages processed.
- **Revocation** is never refused by the policy: withdrawing data discloses
  nothing, and a tightened policy must not trap data in the hub.  Only the
  contributor's own rows are touched.  The reason is one of
  :data:`REVOKE_REASONS`, because it is audited: free text could carry a value.
- A purpose the policy does not declare is refused and audited as
  :data:`UNDECLARED_PURPOSE`, never as the text the caller sent.
- **Atomicity.**  A message's rows, its quota use and its audit event commit
  together; a refused or failed message leaves only its audit event (written
  in a fresh transaction after the rollback).
- **Key epochs** (ADR 0013).  The hub is at one OPRF key epoch and may still
  accept earlier ones during a key change (``previous_epochs``): contributions
  and queries of any accepted epoch are processed; a token only ever matches
  tokens of its own epoch.  An item of another epoch is malformed.
- Nothing here logs or audits a token, a label or a raw value.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import grpc
from fraudhub.v1 import exchange_pb2, exchange_pb2_grpc
from google.protobuf.message import Message
from sqlmodel import Session

from client_sdk.core import indicators
from client_sdk.core.errors import (
    InvalidItems,
    InvalidRequest,
    ItemError,
    PolicyDenied,
)
from client_sdk.core.tokens import TOKEN_BYTES
from client_sdk.core.vocabulary import REVOKE_REASONS
from client_sdk.wire.codecs import optional_datetime, timestamp
from hub.core import matching
from hub.core.matching import Contribution
from hub.policy.engine import Policy
from hub.policy.model import Context, Decision, Principal
from hub.services.alerts import AlertRecorder, alerting
from hub.services.audited import audit_alone, audit_outcome
from hub.services.config import LivePolicy
from hub.services.exchange_audit import UNDECLARED_PURPOSE, AuditDraft, begin_draft, run_drafted
from hub.services.exchange_codecs import (
    MAX_PARTIAL_BYTES,
    abort_partial,
    contribution_item,
    encode_summary,
    invalid_message,
    malformed_items,
    replace_field,
)
from hub.services.lifecycle import MatchFacts, item_count_codes, lifecycle_refusal
from hub.services.quotas import (
    MAX_CASE_REFERENCE,
    MAX_ITEMS,
    check_envelope,
    consume_quotas,
    count_quota,
)
from hub.storage.feedback import find_warninglisted
from hub.storage.models import utcnow
from hub.storage.store import (
    Store,
    revoke,
    upsert_contributions,
)

__all__ = [
    "MAX_CASE_REFERENCE",
    "MAX_ITEMS",
    "MAX_PARTIAL_BYTES",
    "MAX_STREAM_ITEMS",
    "REVOKE_REASONS",
    "UNDECLARED_PURPOSE",
    "ExchangeService",
    "audit_outcome",
    "malformed_items",
    "replace_field",
]

# Items per ContributeStream / MatchStream: the hub keeps a stream's per-item
# outcomes until it ends, so a stream is bounded; open another for more.
MAX_STREAM_ITEMS = 200_000
# Purposes and revocation reasons are codes, never free text: they are audited.
_T = TypeVar("_T")


def _kind_error(index: int, kind: str, field_name: str) -> ItemError | None:
    """Why ``kind`` is malformed, or None.  Never echoes an unknown kind."""
    if kind in indicators.KINDS or kind in indicators.PROHIBITED_KINDS:
        return None
    return ItemError(index, "", "unknown kind", field_name)


@dataclass
class _ContributeTally:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[exchange_pb2.RejectedItem] = field(default_factory=list)
    clipped: list[exchange_pb2.ClippedItem] = field(default_factory=list)
    invalid: list[ItemError] = field(default_factory=list)
    policy_version: str = ""

    def merge(self, other: _ContributeTally) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        self.clipped.extend(other.clipped)
        self.invalid.extend(other.invalid)
        self.policy_version = other.policy_version

    def response(self) -> exchange_pb2.ContributeResponse:
        return exchange_pb2.ContributeResponse(
            accepted=self.accepted,
            duplicates=self.duplicates,
            rejected=len(self.rejected),
            rejected_items=self.rejected,
            clipped=self.clipped,
            policy_version=self.policy_version,
            malformed=malformed_items(self.invalid),
        )


class ExchangeService(exchange_pb2_grpc.ExchangeServicer):
    """Contribute, Revoke and Match over one :class:`Store` (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        policy: LivePolicy,
        key_epoch: int,
        *,
        previous_epochs: Collection[int] = (),
        clock: Callable[[], datetime] = utcnow,
        alerts: AlertRecorder | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        self._key_epoch = key_epoch
        self._previous_epochs = frozenset(previous_epochs) - {key_epoch}
        self._clock = clock
        #: Records watchers' alerts in the transaction of each change.  None: no
        #: alerts are recorded (the path before watchlists; bench/alerts.py compares).
        self.alerts = alerts

    # --- the audited transaction ---------------------------------------------

    def _transact(
        self,
        principal: Principal,
        draft: AuditDraft,
        work: Callable[[Session, datetime], _T],
    ) -> _T:
        return run_drafted(self._store, principal, draft, self._clock(), work)

    def _stream_limit(
        self,
        principal: Principal,
        draft: AuditDraft,
        request: exchange_pb2.ContributeRequest | exchange_pb2.MatchRequest,
        offset: int,
    ) -> InvalidRequest | None:
        """The error for a stream message past :data:`MAX_STREAM_ITEMS`, audited; else None.

        The hub keeps a stream's per-item outcomes until it ends, so a stream
        is bounded.  The messages before this one stay processed.
        """
        if isinstance(request, exchange_pb2.ContributeRequest):
            count = len(request.indicators)
        else:
            count = len(request.queries)
        if offset + count <= MAX_STREAM_ITEMS:
            return None
        draft.item_count = count
        draft.purpose = request.purpose
        draft.case_reference = request.case_reference or None
        error = InvalidRequest(
            f"a stream holds at most {MAX_STREAM_ITEMS} items; the messages before this one "
            "were processed, send the rest on a new stream"
        )
        audit_alone(self._store, draft.failed(principal, error, self._clock()))
        return error

    def _begin(self, action: str, request: Message) -> tuple[Principal, Policy, AuditDraft]:
        policy = self._policy.current
        principal, draft = begin_draft(action, request, policy)
        return principal, policy, draft

    # --- Contribute ----------------------------------------------------------

    def Contribute(  # noqa: N802 - the name is the RPC's
        self, request: exchange_pb2.ContributeRequest, context: grpc.ServicerContext
    ) -> exchange_pb2.ContributeResponse:
        principal, policy, draft = self._begin("Exchange.Contribute", request)
        tally = _ContributeTally(policy_version=policy.version)
        self._contribute_message(principal, policy, draft, request, 0, tally)
        if tally.invalid:
            abort_partial(
                context, invalid_message(tally.invalid, "stored"), tally.invalid, tally.response()
            )
        return tally.response()

    def ContributeStream(  # noqa: N802 - the name is the RPC's
        self,
        request_iterator: Iterator[exchange_pb2.ContributeRequest],
        context: grpc.ServicerContext,
    ) -> exchange_pb2.ContributeResponse:
        policy = self._policy.current
        tally = _ContributeTally(policy_version=policy.version)
        offset = 0
        for request in request_iterator:
            principal, policy, draft = self._begin("Exchange.ContributeStream", request)
            too_long = self._stream_limit(principal, draft, request, offset)
            if too_long is not None:
                # What the earlier messages stored still reaches the caller.
                abort_partial(context, str(too_long), tally.invalid, tally.response())
            tally.policy_version = policy.version
            self._contribute_message(
                principal, policy, draft, request, offset, tally, whole_refusal_fails=False
            )
            offset += len(request.indicators)
        if tally.invalid:
            abort_partial(
                context, invalid_message(tally.invalid, "stored"), tally.invalid, tally.response()
            )
        return tally.response()

    def _contribute_message(
        self,
        principal: Principal,
        policy: Policy,
        draft: AuditDraft,
        request: exchange_pb2.ContributeRequest,
        offset: int,
        tally: _ContributeTally,
        *,
        whole_refusal_fails: bool = True,
    ) -> None:
        draft.purpose = request.purpose
        draft.case_reference = request.case_reference or None
        draft.item_count = len(request.indicators)

        def work(session: Session, now: datetime) -> _ContributeTally:
            check_envelope(request.purpose, request.case_reference, len(request.indicators))
            context = Context(case_reference=request.case_reference or None)
            decisions: dict[str, Decision] = {}
            accepted: list[Contribution] = []
            quota: dict[tuple[str, int], int] = {}
            rejected: list[exchange_pb2.RejectedItem] = []
            clipped: list[exchange_pb2.ClippedItem] = []
            invalid: list[ItemError] = []
            listed = find_warninglisted(session, _keys(request.indicators))
            for position, item in enumerate(request.indicators):
                index = offset + position
                kind_error = _kind_error(index, item.kind, "indicators")
                if kind_error is not None:
                    invalid.append(kind_error)
                    continue
                draft.kinds.add(item.kind)
                decision = decisions.get(item.kind)
                if decision is None:
                    decision = policy.decide(
                        principal, "contribute", item.kind, request.purpose, context
                    )
                    decisions[item.kind] = decision
                    draft.note(decision)
                try:
                    decoded = contribution_item(item)
                except InvalidRequest as exc:
                    # A timestamp outside years 1-9999: this item only.
                    invalid.append(ItemError(index, item.kind, str(exc), "indicators"))
                    continue
                checked = matching.validate_contribution(
                    index,
                    decoded,
                    now=now,
                    categories=indicators.CATEGORIES,
                    key_epoch=self._key_epoch,
                    retention_days=decision.obligations.retention_days,
                    also_accepted=self._previous_epochs,
                )
                if isinstance(checked, ItemError):
                    invalid.append(replace_field(checked, "indicators"))
                    continue
                refusal = lifecycle_refusal(checked, decision, listed)
                if refusal is not None:
                    rejected.append(exchange_pb2.RejectedItem(index=index, reason=refusal))
                    continue
                accepted.append(checked)
                requested = optional_datetime(item, "expires_at")
                if requested is not None and checked.expires_at < requested:
                    clipped.append(
                        exchange_pb2.ClippedItem(
                            index=index, expires_at=timestamp(checked.expires_at)
                        )
                    )
                count_quota(quota, decision)
            # Only the policy's own refusals fail a request whole; an item refused for
            # its evidence or a warning list is answered per item (issue 12).
            if (
                whole_refusal_fails
                and not (accepted or invalid)
                and any(not d.allow for d in decisions.values())
            ):
                raise PolicyDenied(
                    "the policy refuses every item of this request", tuple(draft.reasons)
                )
            consume_quotas(session, principal, quota, now, "contribute")
            counts = alerting(
                self.alerts,
                session,
                [(c.kind, c.token, c.key_epoch) for c in accepted],
                now,
                principal.institution,
                lambda: upsert_contributions(session, principal.institution, accepted, now),
            )
            if invalid:
                draft.reasons.append("INVALID_ITEMS")
            draft.reasons.extend(item_count_codes(accepted, rejected, invalid))
            return _ContributeTally(
                counts.accepted, counts.duplicates, rejected, clipped, invalid, policy.version
            )

        # Counted only once the message committed.
        tally.merge(self._transact(principal, draft, work))

    # --- Revoke --------------------------------------------------------------

    def Revoke(  # noqa: N802 - the name is the RPC's
        self, request: exchange_pb2.RevokeRequest, context: grpc.ServicerContext
    ) -> exchange_pb2.RevokeResponse:
        principal, _policy, draft = self._begin("Exchange.Revoke", request)
        draft.item_count = len(request.items)
        invalid: list[ItemError] = []

        def work(session: Session, now: datetime) -> exchange_pb2.RevokeResponse:
            if not 1 <= len(request.items) <= MAX_ITEMS:
                raise InvalidRequest(f"a request holds 1 to {MAX_ITEMS} items")
            if request.reason not in REVOKE_REASONS:
                # A fixed list: the reason is written to the permanent audit log.
                raise InvalidRequest("reason must be one of " + ", ".join(REVOKE_REASONS))
            draft.reasons.append(f"REVOKE_REASON:{request.reason}")
            keys: list[tuple[str, bytes, int]] = []
            for index, item in enumerate(request.items):
                kind_error = _kind_error(index, item.kind, "items")
                if kind_error is not None:
                    invalid.append(kind_error)
                elif len(item.token) != TOKEN_BYTES:
                    invalid.append(
                        ItemError(index, item.kind, f"token must be {TOKEN_BYTES} bytes", "items")
                    )
                else:
                    draft.kinds.add(item.kind)
                    keys.append((item.kind, item.token, item.key_epoch))
            revoked = alerting(
                self.alerts,
                session,
                keys,
                now,
                principal.institution,
                lambda: revoke(session, principal.institution, keys, request.reason, now),
            )
            if invalid:
                draft.reasons.append("INVALID_ITEMS")
            draft.match_count = 0
            return exchange_pb2.RevokeResponse(revoked=revoked, not_found=len(keys) - revoked)

        response = self._transact(principal, draft, work)
        if invalid:
            abort_partial(context, invalid_message(invalid, "revoked"), invalid, response)
        return response

    # --- Match ---------------------------------------------------------------

    def Match(  # noqa: N802 - the name is the RPC's
        self, request: exchange_pb2.MatchRequest, context: grpc.ServicerContext
    ) -> exchange_pb2.MatchResponse:
        principal, policy, draft = self._begin("Exchange.Match", request)
        response, invalid = self._match_message(principal, policy, draft, request)
        response.malformed.extend(malformed_items(invalid))
        if invalid:
            abort_partial(context, invalid_message(invalid, "answered"), invalid, response)
        return response

    def MatchStream(  # noqa: N802 - the name is the RPC's
        self, request_iterator: Iterator[exchange_pb2.MatchRequest], context: grpc.ServicerContext
    ) -> Iterator[exchange_pb2.MatchResponse]:
        invalid: list[ItemError] = []
        offset = 0
        for request in request_iterator:
            principal, policy, draft = self._begin("Exchange.MatchStream", request)
            too_long = self._stream_limit(principal, draft, request, offset)
            if too_long is not None:
                raise too_long  # the earlier messages were answered already
            response, message_invalid = self._match_message(
                principal, policy, draft, request, whole_refusal_fails=False
            )
            invalid.extend(
                ItemError(e.index + offset, e.kind, e.reason, e.field) for e in message_invalid
            )
            offset += len(request.queries)
            response.malformed.extend(malformed_items(message_invalid))
            yield response
        if invalid:
            raise InvalidItems(invalid_message(invalid, "answered"), tuple(invalid))

    def _match_message(
        self,
        principal: Principal,
        policy: Policy,
        draft: AuditDraft,
        request: exchange_pb2.MatchRequest,
        *,
        whole_refusal_fails: bool = True,
    ) -> tuple[exchange_pb2.MatchResponse, list[ItemError]]:
        draft.purpose = request.purpose
        draft.case_reference = request.case_reference or None
        draft.item_count = len(request.queries)
        invalid: list[ItemError] = []

        def work(session: Session, now: datetime) -> exchange_pb2.MatchResponse:
            check_envelope(request.purpose, request.case_reference, len(request.queries))
            context = Context(case_reference=request.case_reference or None)
            decisions: dict[str, Decision] = {}
            valid: list[tuple[int, tuple[str, bytes, int], Decision]] = []
            quota: dict[tuple[str, int], int] = {}
            for index, query in enumerate(request.queries):
                kind_error = _kind_error(index, query.kind, "queries")
                if kind_error is not None:
                    invalid.append(kind_error)
                    continue
                if len(query.token) != TOKEN_BYTES:
                    invalid.append(
                        ItemError(
                            index, query.kind, f"token must be {TOKEN_BYTES} bytes", "queries"
                        )
                    )
                    continue
                if (
                    query.key_epoch != self._key_epoch
                    and query.key_epoch not in self._previous_epochs
                ):
                    # A token of another epoch can never match: say so rather than "no match".
                    reason = (
                        f"token made under key epoch {query.key_epoch}, hub is at {self._key_epoch}"
                    )
                    invalid.append(ItemError(index, query.kind, reason, "queries"))
                    continue
                draft.kinds.add(query.kind)
                decision = decisions.get(query.kind)
                if decision is None:
                    decision = policy.decide(
                        principal, "match", query.kind, request.purpose, context
                    )
                    decisions[query.kind] = decision
                    draft.note(decision)
                valid.append((index, (query.kind, query.token, query.key_epoch), decision))
                if decision.allow:
                    count_quota(quota, decision)
            if whole_refusal_fails and valid and not any(d.allow for _, _, d in valid):
                raise PolicyDenied(
                    "the policy refuses every query of this request", tuple(draft.reasons)
                )
            consume_quotas(session, principal, quota, now, "match")
            allowed_keys = [key for _, key, decision in valid if decision.allow]
            facts = MatchFacts.load(session, policy, allowed_keys, now)
            results: list[exchange_pb2.MatchResult] = []
            for index, key, decision in valid:
                results.append(_match_result(index, principal, decision, key, facts))
            draft.match_count = sum(1 for r in results if r.matched)
            if invalid:
                draft.reasons.append("INVALID_ITEMS")
            return exchange_pb2.MatchResponse(results=results, policy_version=policy.version)

        return self._transact(principal, draft, work), invalid


# --- helpers ---------------------------------------------------------------------


def _keys(items: Iterable[exchange_pb2.Indicator]) -> list[tuple[str, bytes, int]]:
    return [(i.kind, i.token, i.key_epoch) for i in items if len(i.token) == TOKEN_BYTES]


def _match_result(
    index: int,
    principal: Principal,
    decision: Decision,
    key: tuple[str, bytes, int],
    facts: MatchFacts,
) -> exchange_pb2.MatchResult:
    reasons = list(decision.reasons)
    if not decision.allow:
        return exchange_pb2.MatchResult(index=index, reasons=reasons)
    listed = facts.warninglisted.get(key)
    if listed is not None:
        # A known-good value is never reported (issue 12).
        return exchange_pb2.MatchResult(index=index, reasons=[*reasons, f"WARNINGLISTED:{listed}"])
    # Decision guarantees LABELS only with attribution (CAP_NO_ATTRIBUTION in decide).
    level = decision.disclosure
    summary = facts.summary(principal.institution, key, decision)
    return encode_summary(index, summary, level, reasons)
