"""The Feedback and WarningList servicers (issue 12): sightings and known-good values.

Thin adapters like the Exchange servicer: decode, ask the policy per kind,
run the feedback queries (:mod:`hub.storage.feedback`) and append the audit
event in ONE transaction (:func:`hub.services.audited.run_audited`, ADR 0007).

Documented behaviour:

- **FileSightings** (banks and carriers): each item is decided for its kind
  under the action ``sighting``; refused items are listed with their reason
  codes, malformed ones (token length, unknown kind or type, another key epoch,
  ``seen_at`` in the future) in ``malformed`` and an INVALID_ARGUMENT naming
  each, the valid items recorded all the same.  A request whose every item the
  policy refuses fails PERMISSION_DENIED.  The answer never says whether
  anybody contributed a token.  The reporter's event counts its sightings by
  type (``SIGHTING:<type>/<n>``); in the same transaction each contributor
  whose active indicator a sighting hits gets a ``Feedback.SightingReceived``
  event with its counts, so regulators see false-positive ratios per
  contributor (:mod:`hub.audit.report`).  Tokens never reach an event.
- **ReviewSightings**: for the caller's OWN active indicators, the number of
  other institutions that filed each type; a token the caller did not
  contribute gets zeros (never someone else's feedback).  Decided as
  ``revoke`` (a role may review what it may contribute).
- **WarningList** (operator, purpose ``warninglist``): adds, removes and
  counts entries; decided as ``warninglist`` (no kind).  Each call is audited
  with the list name and the kinds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import grpc
from fraudhub.v1 import exchange_pb2, feedback_pb2, feedback_pb2_grpc
from google.protobuf.message import Message
from sqlmodel import Session

from client_sdk.core.errors import InvalidRequest, ItemError, PolicyDenied
from client_sdk.core.tokens import TOKEN_BYTES
from client_sdk.core.vocabulary import KINDS, SIGHTING_TYPES
from client_sdk.wire.codecs import optional_datetime
from hub.audit.events import AuditEvent
from hub.core.matching import MAX_CLOCK_SKEW
from hub.policy.engine import Policy
from hub.policy.model import AUDIT_KIND, Context, Decision, Principal
from hub.services.config import LivePolicy
from hub.services.exchange_audit import AuditDraft, begin_draft, run_drafted
from hub.services.exchange_codecs import abort_partial, invalid_message, malformed_items
from hub.services.lifecycle import sighting_counts
from hub.services.quotas import check_envelope, consume_quotas, count_quota
from hub.storage import auditlog
from hub.storage.feedback import (
    Key,
    add_warninglist_entries,
    count_warninglist_entries,
    find_sightings,
    record_sightings,
    remove_warninglist_entries,
)
from hub.storage.models import utcnow
from hub.storage.store import Store, find_active, get_institution

__all__ = ["LIMIT_OVERRIDES", "METHOD_ROLES", "FeedbackService", "WarningListService", "register"]

_FEEDBACK = feedback_pb2.DESCRIPTOR.services_by_name["Feedback"]
_WARNINGLIST = feedback_pb2.DESCRIPTOR.services_by_name["WarningList"]
#: Which roles may call which method.
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"/{_FEEDBACK.full_name}/FileSightings": frozenset({"bank", "carrier"}),
    f"/{_FEEDBACK.full_name}/ReviewSightings": frozenset({"bank", "carrier"}),
    f"/{_WARNINGLIST.full_name}/AddEntries": frozenset({"operator"}),
    f"/{_WARNINGLIST.full_name}/RemoveEntries": frozenset({"operator"}),
    f"/{_WARNINGLIST.full_name}/ListEntries": frozenset({"operator"}),
}
#: Request bytes per message (hub.wire.decode): 10,000 items of a 32-byte token, a
#: kind, an epoch and a type or time fit in well under 2 MiB.
LIMIT_OVERRIDES: dict[str, int] = {
    method: 2 * 1024 * 1024 for method in METHOD_ROLES if not method.endswith("/ListEntries")
}
#: A warning list's name is a code: it is audited.
_LIST_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_T = TypeVar("_T")


class _Audited:
    """The begin/transact pair both servicers share."""

    def __init__(
        self, store: Store, policy: LivePolicy, key_epoch: int, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._policy = policy
        self._key_epoch = key_epoch
        self._clock = clock

    def _begin(self, action: str, request: Message) -> tuple[Principal, Policy, AuditDraft]:
        policy = self._policy.current
        principal, draft = begin_draft(action, request, policy)
        return principal, policy, draft

    def _transact(
        self, principal: Principal, draft: AuditDraft, work: Callable[[Session, datetime], _T]
    ) -> _T:
        return run_drafted(self._store, principal, draft, self._clock(), work)

    def _key_error(
        self, index: int, kind: str, token: bytes, epoch: int, field: str
    ) -> ItemError | None:
        """Why a (kind, token, epoch) item is malformed, or None.  Never echoes a value."""
        if kind not in KINDS:
            return ItemError(index, "", "unknown kind", field)
        if len(token) != TOKEN_BYTES:
            return ItemError(index, kind, f"token must be {TOKEN_BYTES} bytes", field)
        if epoch != self._key_epoch:
            reason = f"token made under key epoch {epoch}, hub is at {self._key_epoch}"
            return ItemError(index, kind, reason, field)
        return None


class FeedbackService(_Audited, feedback_pb2_grpc.FeedbackServicer):
    """FileSightings and ReviewSightings (see the module docstring)."""

    def FileSightings(  # noqa: N802 - the name is the RPC's
        self, request: feedback_pb2.FileSightingsRequest, context: grpc.ServicerContext
    ) -> feedback_pb2.FileSightingsResponse:
        principal, policy, draft = self._begin("Feedback.FileSightings", request)
        draft.purpose = request.purpose
        draft.case_reference = request.case_reference or None
        draft.item_count = len(request.items)
        invalid: list[ItemError] = []

        def work(session: Session, now: datetime) -> feedback_pb2.FileSightingsResponse:
            check_envelope(request.purpose, request.case_reference, len(request.items))
            ctx = Context(case_reference=request.case_reference or None)
            decisions: dict[str, Decision] = {}
            quota: dict[tuple[str, int], int] = {}
            rejected: list[exchange_pb2.RejectedItem] = []
            valid: list[tuple[Key, str, datetime]] = []
            for index, item in enumerate(request.items):
                error = self._key_error(index, item.kind, item.token, item.key_epoch, "items")
                seen_at = optional_datetime(item, "seen_at") or now
                if error is None and item.type not in SIGHTING_TYPES:
                    error = ItemError(index, item.kind, "unknown sighting type", "items")
                if error is None and seen_at > now + MAX_CLOCK_SKEW:
                    error = ItemError(index, item.kind, "seen_at is in the future", "items")
                if error is not None:
                    invalid.append(error)
                    continue
                draft.kinds.add(item.kind)
                decision = decisions.get(item.kind)
                if decision is None:
                    decision = policy.decide(principal, "sighting", item.kind, request.purpose, ctx)
                    decisions[item.kind] = decision
                    draft.note(decision)
                if not decision.allow:
                    reason = ",".join(decision.reasons)
                    rejected.append(exchange_pb2.RejectedItem(index=index, reason=reason))
                    continue
                count_quota(quota, decision)
                valid.append(((item.kind, item.token, item.key_epoch), item.type, seen_at))
            if not valid and rejected and not invalid:
                raise PolicyDenied(
                    "the policy refuses every item of this request", tuple(draft.reasons)
                )
            consume_quotas(session, principal, quota, now, "sighting")
            recorded = record_sightings(session, principal.institution, valid, now)
            by_type = Counter(type_ for _, type_, _ in valid)
            draft.reasons.extend(f"SIGHTING:{t}/{n}" for t, n in sorted(by_type.items()))
            if rejected:
                draft.reasons.append(f"REFUSED_ITEMS:{len(rejected)}")
            if invalid:
                draft.reasons.extend(("INVALID_ITEMS", f"MALFORMED_ITEMS:{len(invalid)}"))
            self._notify_contributors(session, principal, draft, valid, now)
            return feedback_pb2.FileSightingsResponse(
                recorded=recorded, rejected_items=rejected, policy_version=policy.version
            )

        response = self._transact(principal, draft, work)
        response.malformed.extend(malformed_items(invalid))
        if invalid:
            abort_partial(context, invalid_message(invalid, "recorded"), invalid, response)
        return response

    def _notify_contributors(
        self,
        session: Session,
        principal: Principal,
        draft: AuditDraft,
        valid: list[tuple[Key, str, datetime]],
        now: datetime,
    ) -> None:
        """One ``Feedback.SightingReceived`` event per contributor the sightings hit."""
        active = find_active(session, [key for key, _, _ in valid], now)
        received: dict[str, Counter[str]] = {}
        for key, type_, _ in valid:
            for indicator in active.get(key, []):
                if indicator.contributor != principal.institution:
                    received.setdefault(indicator.contributor, Counter())[type_] += 1
        for contributor, counts in sorted(received.items()):
            role = get_institution(session, contributor).role
            auditlog.append(
                session,
                AuditEvent.of(
                    time=now,
                    institution=contributor,
                    role=role,
                    action="Feedback.SightingReceived",
                    outcome="ok",
                    purpose=draft.purpose if draft.purpose in draft.declared_purposes else "",
                    kinds=tuple(draft.kinds),
                    item_count=sum(counts.values()),
                    reasons=(
                        *(f"SIGHTING:{t}/{n}" for t, n in sorted(counts.items())),
                        f"REPORTER:{principal.institution}",
                    ),
                    policy_version=draft.policy_version,
                    request_digest=draft.request_digest,
                ),
            )

    def ReviewSightings(  # noqa: N802 - the name is the RPC's
        self, request: feedback_pb2.ReviewSightingsRequest, context: grpc.ServicerContext
    ) -> feedback_pb2.ReviewSightingsResponse:
        principal, policy, draft = self._begin("Feedback.ReviewSightings", request)
        draft.purpose = request.purpose
        draft.item_count = len(request.queries)
        invalid: list[ItemError] = []

        def work(session: Session, now: datetime) -> feedback_pb2.ReviewSightingsResponse:
            check_envelope(request.purpose, "", len(request.queries))
            decisions: dict[str, Decision] = {}
            valid: list[tuple[int, Key, Decision]] = []
            for index, query in enumerate(request.queries):
                error = self._key_error(index, query.kind, query.token, query.key_epoch, "queries")
                if error is not None:
                    invalid.append(error)
                    continue
                draft.kinds.add(query.kind)
                decision = decisions.get(query.kind)
                if decision is None:
                    decision = policy.decide(principal, "revoke", query.kind, request.purpose)
                    decisions[query.kind] = decision
                    draft.note(decision)
                valid.append((index, (query.kind, query.token, query.key_epoch), decision))
            if valid and not any(d.allow for _, _, d in valid):
                raise PolicyDenied("the policy refuses every query", tuple(draft.reasons))
            keys = [key for _, key, d in valid if d.allow]
            active = find_active(session, keys, now)
            rows = find_sightings(session, keys)
            results = []
            for index, key, decision in valid:
                own = decision.allow and any(
                    i.contributor == principal.institution for i in active.get(key, [])
                )
                counts = sighting_counts(rows.get(key, []) if own else [], excluding="")
                results.append(
                    feedback_pb2.SightingCounts(
                        index=index,
                        own=own,
                        confirmed=counts.confirmed,
                        false_positive=counts.false_positive,
                        expired=counts.expired,
                        reasons=list(decision.reasons),
                    )
                )
            if invalid:
                draft.reasons.append("INVALID_ITEMS")
            return feedback_pb2.ReviewSightingsResponse(
                results=results, policy_version=policy.version
            )

        response = self._transact(principal, draft, work)
        response.malformed.extend(malformed_items(invalid))
        if invalid:
            abort_partial(context, invalid_message(invalid, "answered"), invalid, response)
        return response


class WarningListService(_Audited, feedback_pb2_grpc.WarningListServicer):
    """AddEntries, RemoveEntries and ListEntries (see the module docstring)."""

    def _decide(self, principal: Principal, policy: Policy, draft: AuditDraft) -> None:
        decision = policy.decide(principal, "warninglist", AUDIT_KIND, draft.purpose)
        draft.note(decision)
        if not decision.allow:
            raise PolicyDenied("the policy refuses this warning list request", decision.reasons)

    def _change(
        self,
        action: str,
        request: feedback_pb2.WarningListRequest,
        context: grpc.ServicerContext,
        apply: Callable[[Session, str, list[Key], str, datetime], int],
    ) -> feedback_pb2.WarningListResponse:
        principal, policy, draft = self._begin(action, request)
        draft.purpose = request.purpose
        draft.item_count = len(request.items)
        invalid: list[ItemError] = []

        def work(session: Session, now: datetime) -> feedback_pb2.WarningListResponse:
            check_envelope(request.purpose, "", len(request.items))
            if not _LIST_NAME.fullmatch(request.list):
                # A code, never free text: the name is written to the audit log.
                raise InvalidRequest("list must be a code such as customer-service")
            self._decide(principal, policy, draft)
            draft.reasons.append(f"WARNINGLIST:{request.list}")
            keys: list[Key] = []
            for index, item in enumerate(request.items):
                error = self._key_error(index, item.kind, item.token, item.key_epoch, "items")
                if error is not None:
                    invalid.append(error)
                    continue
                draft.kinds.add(item.kind)
                keys.append((item.kind, item.token, item.key_epoch))
            changed = apply(session, request.list, keys, principal.institution, now)
            if invalid:
                draft.reasons.append("INVALID_ITEMS")
            return feedback_pb2.WarningListResponse(
                changed=changed, unchanged=len(set(keys)) - changed
            )

        response = self._transact(principal, draft, work)
        response.malformed.extend(malformed_items(invalid))
        if invalid:
            abort_partial(context, invalid_message(invalid, "processed"), invalid, response)
        return response

    def AddEntries(  # noqa: N802 - the name is the RPC's
        self, request: feedback_pb2.WarningListRequest, context: grpc.ServicerContext
    ) -> feedback_pb2.WarningListResponse:
        return self._change("WarningList.AddEntries", request, context, add_warninglist_entries)

    def RemoveEntries(  # noqa: N802 - the name is the RPC's
        self, request: feedback_pb2.WarningListRequest, context: grpc.ServicerContext
    ) -> feedback_pb2.WarningListResponse:
        def remove(session: Session, name: str, keys: list[Key], _by: str, _now: datetime) -> int:
            return remove_warninglist_entries(session, name, keys)

        return self._change("WarningList.RemoveEntries", request, context, remove)

    def ListEntries(  # noqa: N802 - the name is the RPC's
        self, request: feedback_pb2.ListWarningListRequest, context: grpc.ServicerContext
    ) -> feedback_pb2.ListWarningListResponse:
        principal, policy, draft = self._begin("WarningList.ListEntries", request)
        draft.purpose = request.purpose

        def work(session: Session, _now: datetime) -> feedback_pb2.ListWarningListResponse:
            self._decide(principal, policy, draft)
            counts = count_warninglist_entries(session)
            return feedback_pb2.ListWarningListResponse(
                counts=[
                    feedback_pb2.WarningListCount(list=name, kind=kind, entries=n)
                    for name, kind, n in counts
                ]
            )

        return self._transact(principal, draft, work)


def register(server: grpc.Server, store: Store, policy: LivePolicy, key_epoch: int) -> list[str]:
    """Add the Feedback and WarningList servicers to ``server``; return their service names."""
    feedback_pb2_grpc.add_FeedbackServicer_to_server(
        FeedbackService(store, policy, key_epoch, utcnow), server
    )
    feedback_pb2_grpc.add_WarningListServicer_to_server(
        WarningListService(store, policy, key_epoch, utcnow), server
    )
    return [_FEEDBACK.full_name, _WARNINGLIST.full_name]
