"""The Disputes servicer and the hub's lapse sweep: due process for the people listed.

A thin adapter around :mod:`hub.core.disputes` (states) and
:mod:`hub.storage.disputes` (queries).  Each call is one audited transaction
(:mod:`hub.services.audited`, ADR 0007): the step and its event commit together.

Guarantees:

- **Open** is decided by the policy (action ``dispute``, the caller's purpose
  and case reference, the kind's tier) and counted against the rule's daily
  quota; a refusal is PERMISSION_DENIED and stores nothing.  Tokens are
  checked (32 bytes, accepted key epochs, distinct epochs) and never audited:
  the event names the kind, the tier, the dispute id (``DISPUTE:<id>``) and how
  many indicators it suspended.
- The deadline is the decision's ``dispute_response_days``; :func:`sweep_lapsed`
  lapses overdue items (deleting their indicators), one audited transaction,
  one ``Hub.DisputeLapse`` event per item naming the dispute and contributor.
- The event that closes a dispute carries ``DISPUTE_OUTCOME:<outcome>``
  (:data:`hub.core.disputes.OUTCOMES`), so the regulator's report reads every
  dispute's outcome and time to resolution from the log alone.
- **Watchers are told** (:func:`hub.services.alerts.alerting`, in the same
  transaction): opening a dispute suspends the indicators, so a watcher who
  could see them gets ``withdrawn``; an upheld item that lifts the last
  suspension raises ``new`` again.  A lapse or withdrawal deletes an indicator
  that is already suspended, whose ``withdrawn`` was raised at the opening:
  the watcher sees no further change (an alert never repeats).
- **Contributors are told** (issue 12): opening a dispute that suspends
  indicators records, in the same transaction, one ``disputed`` alert per
  contributor (watching or not) naming the dispute, its kind and the response
  deadline, with the token of the contributor's own indicator only; audited as
  ``Alerts.Raise`` (counts, no token) under the purpose ``dispute``.
- Resolve answers only the caller's own items; evidence is a code of
  :data:`~client_sdk.core.vocabulary.UPHOLD_EVIDENCE`, never free text.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from datetime import UTC, datetime

import grpc
from fraudhub.v1 import disputes_pb2, disputes_pb2_grpc
from google.protobuf.message import Message
from sqlmodel import Session

from client_sdk.core import indicators
from client_sdk.core.errors import InvalidRequest, PolicyDenied
from client_sdk.core.tokens import TOKEN_BYTES
from client_sdk.wire.codecs import bigint, timestamp
from hub.audit.events import AuditEvent, case_ref_digest, request_digest
from hub.core import disputes as core
from hub.policy.model import Context, Principal
from hub.services.alerts import AlertRecorder, alerting
from hub.services.audited import run_audited
from hub.services.config import LivePolicy
from hub.services.exchange_audit import AuditDraft
from hub.services.quotas import MAX_CASE_REFERENCE, PURPOSE_CODE
from hub.storage import auditlog, store
from hub.storage import disputes as queries
from hub.storage.alerts import DisputeNote, Key
from hub.storage.models import Dispute, DisputeItem, Indicator, utcnow
from hub.wire.auth import current_principal_still_valid

__all__ = ["DISPUTE_STEPS", "MAX_TOKENS", "METHOD_ROLES", "DisputesService", "sweep_lapsed"]

#: Tokens of one value per request: one per key epoch the hub accepts (ADR 0013).
MAX_TOKENS = 4
#: The steps a contributor may take (the hub's sweep takes ``lapse``).
DISPUTE_STEPS = ("uphold", "withdraw")
#: Which roles may call which Disputes method (the hub's role table joins it).
METHOD_ROLES: dict[str, tuple[str, ...]] = {
    "Open": ("bank", "carrier", "operator"),
    "List": ("bank", "carrier", "operator"),
    "Resolve": ("bank", "carrier"),
}
#: Institution id of the hub's own work in the audit log (as hub.services.server).
HUB_INSTITUTION = "hub"


def _item_message(item: DisputeItem) -> disputes_pb2.DisputeItem:
    message = disputes_pb2.DisputeItem(
        id=item.id or 0,
        dispute_id=item.dispute_id,
        kind=item.kind,
        category=item.category,
        observed_at=timestamp(item.observed_at),
        contributed_at=timestamp(item.contributed_at),
        due_at=timestamp(item.due_at),
        state=item.state,
        evidence=item.evidence,
    )
    if item.resolved_at is not None:
        message.resolved_at.CopyFrom(timestamp(item.resolved_at))
    return message


def _closing_reasons(session: Session, answered: queries.Answered) -> list[str]:
    """``DISPUTE_OUTCOME:<outcome>`` when this step closed the dispute, else nothing."""
    if not answered.dispute_closed:
        return []
    states = queries.states_of(session, answered.item.dispute_id)
    return [f"DISPUTE_OUTCOME:{core.dispute_outcome(states)}"]


class DisputesService(disputes_pb2_grpc.DisputesServicer):
    """Open, List and Resolve (see the module docstring)."""

    def __init__(
        self,
        hub_store: store.Store,
        policy: LivePolicy,
        accepted_epochs: Callable[[], Collection[int]],
        *,
        clock: Callable[[], datetime] = utcnow,
        alerts: AlertRecorder | None = None,
    ) -> None:
        self._alerts = alerts
        self._store = hub_store
        self._policy = policy
        self._epochs = accepted_epochs
        self._clock = clock

    def _run(
        self,
        action: str,
        request: Message,
        prepare: Callable[[AuditDraft], None],
        work: Callable[[Session, datetime, Principal, AuditDraft], Message],
    ) -> Message:
        who = current_principal_still_valid()
        principal = Principal(who.institution, who.role)
        policy = self._policy.current
        draft = AuditDraft(
            action=action,
            request_digest=request_digest(request.SerializeToString(deterministic=True)),
            policy_version=policy.version,
            declared_purposes=policy.purposes,
        )
        prepare(draft)
        now = self._clock()
        return run_audited(
            self._store,
            lambda session: work(session, now, principal, draft),
            lambda _result: draft.event(principal, "ok", now),
            lambda exc: draft.failed(principal, exc, now),
        )

    # --- Open ----------------------------------------------------------------------

    def Open(  # noqa: N802 - the name is the RPC's
        self, request: disputes_pb2.OpenDisputeRequest, context: grpc.ServicerContext
    ) -> disputes_pb2.OpenDisputeResponse:
        def prepare(draft: AuditDraft) -> None:
            draft.purpose = request.purpose
            draft.case_reference = request.case_reference or None
            if request.kind in indicators.KINDS:
                draft.kinds.add(request.kind)

        def work(
            session: Session, now: datetime, principal: Principal, draft: AuditDraft
        ) -> Message:
            self._check_open(request)
            policy = self._policy.current
            decision = policy.decide(
                principal,
                "dispute",
                request.kind,
                request.purpose,
                Context(case_reference=request.case_reference or None),
            )
            draft.note(decision)
            if not decision.allow:
                raise PolicyDenied("the policy refuses this dispute", decision.reasons)
            days = decision.obligations.dispute_response_days
            if days is None:  # a dispute rule must set it (hub.policy.reader)
                raise InvalidRequest("the policy gives no dispute_response_days")
            limit = decision.obligations.daily_quota
            if limit is not None:
                day = now.astimezone(UTC).date().isoformat()
                bucket = decision.obligations.quota_bucket or "dispute"
                store.consume_quota(session, principal.institution, bucket, day, 1, limit)
            dispute = Dispute(
                id=secrets.token_hex(16),
                opened_by=principal.institution,
                kind=request.kind,
                case_ref_digest=case_ref_digest(request.case_reference or None),
                opened_at=now,
            )
            tokens = [(t.token, t.key_epoch) for t in request.tokens]
            items = alerting(
                self._alerts,
                session,
                [(request.kind, token, epoch) for token, epoch in tokens],
                now,
                principal.institution,
                lambda: queries.open_dispute(session, dispute, tokens, days),
            )
            if self._alerts is not None and items:
                self._alerts.disputed(session, _dispute_notes(session, dispute.id, items), now)
            draft.item_count = len(items)
            draft.reasons.append(f"DISPUTE:{dispute.id}")
            if not items:
                draft.reasons.append("DISPUTE_OUTCOME:not_listed")
            response = disputes_pb2.OpenDisputeResponse(
                dispute_id=dispute.id, suspended=len(items), policy_version=policy.version
            )
            if items:
                response.due_at.CopyFrom(timestamp(items[0].due_at))
            return response

        result = self._run("Disputes.Open", request, prepare, work)
        assert isinstance(result, disputes_pb2.OpenDisputeResponse)
        return result

    def _check_open(self, request: disputes_pb2.OpenDisputeRequest) -> None:
        """Request bounds; raises InvalidRequest (never echoing a kind, token or purpose)."""
        if not PURPOSE_CODE.fullmatch(request.purpose):
            raise InvalidRequest("purpose must be a purpose code of the policy")
        if len(request.case_reference) > MAX_CASE_REFERENCE:
            raise InvalidRequest(f"case_reference is longer than {MAX_CASE_REFERENCE} characters")
        if request.kind not in indicators.KINDS:
            raise InvalidRequest("unknown kind")
        if not 1 <= len(request.tokens) <= MAX_TOKENS:
            raise InvalidRequest(f"a dispute names 1 to {MAX_TOKENS} tokens of one value")
        accepted = set(self._epochs())
        epochs = [t.key_epoch for t in request.tokens]
        if len(set(epochs)) != len(epochs):
            raise InvalidRequest("one token per key epoch")
        for position, token in enumerate(request.tokens):
            if len(token.token) != TOKEN_BYTES:
                raise InvalidRequest(f"tokens[{position}]: a token is {TOKEN_BYTES} bytes")
            if token.key_epoch not in accepted:
                raise InvalidRequest(
                    f"tokens[{position}]: key epoch {token.key_epoch} is not accepted by the hub "
                    f"(accepted: {', '.join(map(str, sorted(accepted)))})"
                )

    # --- List ----------------------------------------------------------------------

    def List(  # noqa: N802 - the name is the RPC's
        self, request: disputes_pb2.ListDisputesRequest, context: grpc.ServicerContext
    ) -> disputes_pb2.ListDisputesResponse:
        def work(
            session: Session, now: datetime, principal: Principal, draft: AuditDraft
        ) -> Message:
            items = queries.items_of(
                session, principal.institution, include_answered=request.include_answered
            )
            opened = []
            for dispute, states in queries.disputes_opened_by(session, principal.institution):
                message = disputes_pb2.OpenedDispute(
                    id=dispute.id,
                    kind=dispute.kind,
                    opened_at=timestamp(dispute.opened_at),
                    suspended=len(states),
                    outcome=core.dispute_outcome(states),
                )
                if dispute.closed_at is not None:
                    message.closed_at.CopyFrom(timestamp(dispute.closed_at))
                opened.append(message)
            draft.item_count = len(items)
            return disputes_pb2.ListDisputesResponse(
                items=[_item_message(i) for i in items], opened=opened
            )

        result = self._run("Disputes.List", request, lambda _draft: None, work)
        assert isinstance(result, disputes_pb2.ListDisputesResponse)
        return result

    # --- Resolve -------------------------------------------------------------------

    def Resolve(  # noqa: N802 - the name is the RPC's
        self, request: disputes_pb2.ResolveDisputeRequest, context: grpc.ServicerContext
    ) -> disputes_pb2.DisputeItem:
        def work(
            session: Session, now: datetime, principal: Principal, draft: AuditDraft
        ) -> Message:
            if request.step not in DISPUTE_STEPS:
                raise InvalidRequest(f"step must be one of {', '.join(DISPUTE_STEPS)}")
            bigint(request.item_id, "item_id", low=1)
            answered = alerting(
                self._alerts,
                session,
                _indicator_keys(session, request.item_id, principal.institution),
                now,
                principal.institution,
                lambda: queries.answer_item(
                    session,
                    request.item_id,
                    principal.institution,
                    request.step,
                    request.evidence,
                    now,
                ),
            )
            item = answered.item
            draft.kinds.add(item.kind)
            draft.item_count = 1
            draft.reasons.extend([f"DISPUTE:{item.dispute_id}", f"OUTCOME:{item.state}"])
            if item.evidence:
                draft.reasons.append(f"EVIDENCE:{item.evidence}")
            draft.reasons.extend(_closing_reasons(session, answered))
            return _item_message(item)

        result = self._run("Disputes.Resolve", request, lambda _draft: None, work)
        assert isinstance(result, disputes_pb2.DisputeItem)
        return result


def _dispute_notes(
    session: Session, dispute_id: str, items: list[DisputeItem]
) -> list[DisputeNote]:
    """One note per contributor: its own first suspended indicator (newest key epoch)."""
    mine: dict[str, tuple[Indicator, DisputeItem]] = {}
    for item in items:
        indicator = session.get(Indicator, item.indicator_id)
        if indicator is None:
            continue
        held = mine.get(item.contributor)
        if held is None or indicator.key_epoch > held[0].key_epoch:
            mine[item.contributor] = (indicator, item)
    return [
        DisputeNote(
            contributor=contributor,
            kind=indicator.kind,
            token=bytes(indicator.token),
            key_epoch=indicator.key_epoch,
            dispute_id=dispute_id,
            respond_by=item.due_at,
            expires_at=max(indicator.expires_at, item.due_at),
        )
        for contributor, (indicator, item) in sorted(mine.items())
    ]


def _indicator_keys(session: Session, item_id: int, contributor: str) -> list[Key]:
    """The key of ``contributor``'s disputed indicator behind item ``item_id`` (if any)."""
    item = session.get(DisputeItem, item_id)
    if item is None or item.contributor != contributor:
        return []  # answer_item refuses it
    indicator = session.get(Indicator, item.indicator_id)
    if indicator is None:
        return []
    return [(indicator.kind, bytes(indicator.token), indicator.key_epoch)]


def sweep_lapsed(hub_store: store.Store, policy_version: str, now: datetime) -> int:
    """Lapse every overdue pending item, delete its indicator, audit each; return how many.

    One transaction: the deletions and their events commit together.  Raises
    StorageError if the database fails (the caller's next sweep retries).
    """
    with hub_store.session() as session:
        lapsed = queries.lapse_overdue(session, now)
        for answered in lapsed:
            item = answered.item
            reasons = [
                f"DISPUTE:{item.dispute_id}",
                f"CONTRIBUTOR:{item.contributor}",
                "OUTCOME:lapsed",
                *_closing_reasons(session, answered),
            ]
            auditlog.append(
                session,
                AuditEvent.housekeeping(
                    time=now,
                    institution=HUB_INSTITUTION,
                    action="Hub.DisputeLapse",
                    item_count=1,
                    reasons=tuple(reasons),
                    policy_version=policy_version,
                ),
            )
        session.commit()
    return len(lapsed)
