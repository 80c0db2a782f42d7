"""The Alerts servicer: watches, and delivery of the alerts they raise.

A thin adapter over :mod:`hub.storage.alerts` and :mod:`hub.core.alerts`
(see ``protos/fraudhub/v1/alerts.proto`` for the contract and
``docs/ALERTS.md`` for what the hub learns).

Guarantees:

- **Watch is governed like match**: per (role, purpose, kind) the policy's
  ``watch`` action decides; a refused item is listed with its reason codes,
  and if every item is refused the call fails PERMISSION_DENIED with the
  readable explanation of those codes (nothing is stored).  The watch's
  expiry is clipped to the rule's retention cap; items count against the
  rule's daily quota.
- **An alert reports exactly what a match would** (issue 12 lifecycle rules:
  disputed indicators, impersonation victims, ``min_evidence``, warning lists,
  decayed scores below the threshold): the watcher's view is the match path's
  own summary (:meth:`hub.services.lifecycle.MatchFacts.summary`) under the
  ``watch`` decision, at most SUMMARY.
- **Alerts are recorded in the transaction of the change** (contribution,
  revocation, dispute opening and resolution, expiry sweep) by
  :class:`AlertRecorder`, which the Exchange and Disputes servicers and the
  sweep call: one watch lookup per batch, then, for watched
  tokens only, the watcher's view before and after.  Each recording appends
  one ``Alerts.Raise`` audit event per (watcher, purpose): counts, kinds and
  event counts, never a token.  Live subscribers are woken after the commit.
- **Delivery** is at-least-once, in sequence order per watcher: ``Subscribe``
  sends everything after its start point, then each new alert; ``List``
  pages; ``Ack`` moves the durable cursor forward.  ``Subscribe`` is audited
  when the stream ends (alerts sent), ``List`` and ``Ack`` per call.
- A caller only ever sees and acknowledges its own alerts and watches: the
  caller's institution is part of every query.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import grpc
import sqlalchemy as sa
from fraudhub.v1 import alerts_pb2, alerts_pb2_grpc, common_pb2, exchange_pb2
from google.protobuf.message import Message
from sqlmodel import Session

from client_sdk.core import indicators
from client_sdk.core.errors import InvalidItems, InvalidRequest, ItemError, PolicyDenied
from client_sdk.core.tokens import TOKEN_BYTES
from client_sdk.wire.codecs import bigint, category_value, optional_datetime, timestamp
from hub.audit.events import AuditEvent
from hub.core.alerts import AlertView, alert_disclosure
from hub.core.matching import DEFAULT_RETENTION_DAYS, Sighting, clip_expiry
from hub.policy.engine import Policy
from hub.policy.model import Decision, Disclosure, Principal, explain_reason
from hub.services.audited import audit_alone
from hub.services.config import LivePolicy
from hub.services.exchange_audit import AuditDraft, begin_draft, run_drafted
from hub.services.exchange_codecs import malformed_items
from hub.services.lifecycle import MatchFacts
from hub.storage import alerts as alert_store
from hub.storage import auditlog
from hub.storage.alerts import Key, PendingChange, RecordedAlerts, WatchItem, WatchRef
from hub.storage.models import utcnow
from hub.storage.store import Store, consume_quota

__all__ = [
    "LIMIT_OVERRIDES",
    "MAX_LIST",
    "METHOD_ROLES",
    "SERVICE",
    "AlertNotifier",
    "AlertRecorder",
    "AlertsService",
    "alerting",
    "register",
]

log = logging.getLogger(__name__)

SERVICE = "fraudhub.v1.Alerts"
MAX_ITEMS = 10_000
MAX_LIST = 1000
DEFAULT_LIST = 100
# A subscriber re-reads the database at least this often (alerts recorded by
# another hub replica on the same database wake no local subscriber).
POLL_SECONDS = 1.0
_CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_R = TypeVar("_R")

#: The Alerts service's rows of the hub's per-method role table: screeners only.
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"/{SERVICE}/{name}": frozenset({"bank", "carrier"})
    for name in ("Watch", "Unwatch", "ListWatches", "Subscribe", "List", "Ack")
}
#: Request bytes per message (hub.wire.decode): 10,000 watch items of a 32-byte token,
#: a kind and an epoch fit well under 2 MiB; the other methods take the default.
LIMIT_OVERRIDES: dict[str, int] = {
    f"/{SERVICE}/{name}": 2 * 1024 * 1024 for name in ("Watch", "Unwatch")
}

_EVENTS = {
    "new": alerts_pb2.NEW,
    "changed": alerts_pb2.CHANGED,
    "withdrawn": alerts_pb2.WITHDRAWN,
    "disputed": alerts_pb2.DISPUTED,
}


class AlertNotifier:
    """Wakes this process's subscribers when alerts commit (a generation counter)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._condition:
            return self._generation

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Return when the generation passed ``seen`` or after ``timeout`` seconds."""
        with self._condition:
            self._condition.wait_for(lambda: self._generation != seen, timeout)


class AlertRecorder:
    """Records the alerts of a change inside the caller's transaction.

    Usage (inside the transaction that changes indicators)::

        change = recorder.begin(session, keys, now, exclude=institution)
        ...change the indicators...
        recorder.finish(session, change, now)
    """

    def __init__(self, policy: LivePolicy, notifier: AlertNotifier) -> None:
        self._policy = policy
        self._notifier = notifier

    def begin(
        self,
        session: Session,
        keys: Iterable[Key],
        now: datetime,
        *,
        exclude: str | None,
        include_expired: bool = False,
    ) -> PendingChange:
        return alert_store.begin_change(
            session, keys, now, exclude=exclude, include_expired=include_expired
        )

    def finish(self, session: Session, change: PendingChange, now: datetime) -> RecordedAlerts:
        """Record the alerts, audit them, and wake subscribers once committed."""
        policy = self._policy.current
        if not change.watched:
            return RecordedAlerts()
        facts = MatchFacts.load(session, policy, change.keys, now, with_indicators=False)
        recorded = alert_store.finish_change(
            session, change, now, _judge(policy, facts), policy.version
        )
        return self._audit(session, policy, recorded, now)

    def disputed(
        self, session: Session, notes: Sequence[alert_store.DisputeNote], now: datetime
    ) -> RecordedAlerts:
        """A ``disputed`` alert per contributor of a suspended indicator (audited)."""
        policy = self._policy.current
        recorded = alert_store.record_disputed(session, notes, now, policy.version)
        return self._audit(session, policy, recorded, now)

    def _audit(
        self, session: Session, policy: Policy, recorded: RecordedAlerts, now: datetime
    ) -> RecordedAlerts:
        """One ``Alerts.Raise`` event per (recipient, purpose): counts, never a token."""
        for group in recorded.groups:
            auditlog.append(
                session,
                AuditEvent.of(
                    time=now,
                    institution=group.watcher,
                    role=group.role,
                    action="Alerts.Raise",
                    outcome="ok",
                    purpose=group.purpose,
                    kinds=tuple(sorted(group.kinds)),
                    tiers=tuple(sorted({policy.tier_of(k) for k in group.kinds})),
                    item_count=group.count,
                    reasons=tuple(f"EVENT:{e}:{n}" for e, n in sorted(group.events.items())),
                    policy_version=policy.version,
                ),
            )
        if recorded.count:
            sa.event.listen(session, "after_commit", lambda _s: self._notifier.notify(), once=True)
        return recorded


def alerting(
    recorder: AlertRecorder | None,
    session: Session,
    keys: list[Key],
    now: datetime,
    exclude: str,
    change: Callable[[], _R],
) -> _R:
    """Runs ``change`` of ``keys`` in the caller's transaction; their watchers (not
    ``exclude``) get alerts of what it changed.  ``recorder`` None: no alerts."""
    if recorder is None or not keys:
        return change()
    pending = recorder.begin(session, keys, now, exclude=exclude)
    result = change()
    recorder.finish(session, pending, now)
    return result


def _judge(policy: Policy, facts: MatchFacts) -> alert_store.Judge:
    """What a watcher may see: the match path's summary (:class:`MatchFacts`) under
    the policy's ``watch`` decision, at most SUMMARY."""
    decisions: dict[tuple[str, str, str, str], Decision | None] = {}

    def judge(
        watcher: str, role: str, purpose: str, key: Key, sightings: Sequence[Sighting]
    ) -> AlertView | None:
        cached = (watcher, role, key[0], purpose)
        if cached not in decisions:
            decided = policy.decide(Principal(watcher, role), "watch", key[0], purpose)
            granted = decided.allow and decided.disclosure > Disclosure.NONE
            decisions[cached] = decided if granted else None
        decision = decisions[cached]
        if decision is None:
            return None
        summary = facts.summary(
            watcher,
            key,
            decision,
            indicators=sightings,
            disclosure=alert_disclosure(decision.disclosure),
        )
        return AlertView.of(summary)

    return judge


class AlertsService(alerts_pb2_grpc.AlertsServicer):
    """Watch, Unwatch, ListWatches, Subscribe, List and Ack (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        policy: LivePolicy,
        key_epoch: int,
        recorder: AlertRecorder,
        notifier: AlertNotifier,
        *,
        clock: Callable[[], datetime] = utcnow,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._store = store
        self._policy = policy
        self._key_epoch = key_epoch
        self._recorder = recorder
        self._notifier = notifier
        self._clock = clock
        self._poll = poll_seconds

    def _begin(self, action: str, request: Message) -> tuple[Principal, Policy, AuditDraft]:
        policy = self._policy.current
        principal, draft = begin_draft(action, request, policy)
        return principal, policy, draft

    def _audited(
        self, principal: Principal, draft: AuditDraft, work: Callable[[Session, datetime], _R]
    ) -> _R:
        return run_drafted(self._store, principal, draft, self._clock(), work)

    # --- watches ---------------------------------------------------------------------

    def Watch(  # noqa: N802 - the name is the RPC's
        self, request: alerts_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> alerts_pb2.WatchResponse:
        principal, policy, draft = self._begin("Alerts.Watch", request)
        draft.purpose = request.purpose
        draft.item_count = len(request.items)
        invalid: list[ItemError] = []

        def work(session: Session, now: datetime) -> alerts_pb2.WatchResponse:
            if not 1 <= len(request.items) <= MAX_ITEMS:
                raise InvalidRequest(f"a request holds 1 to {MAX_ITEMS} items")
            if not _CODE.fullmatch(request.purpose):
                raise InvalidRequest("purpose must be a purpose code of the policy")
            requested = optional_datetime(request, "expires_at")
            if requested is not None and requested <= now:
                raise InvalidRequest("expires_at is in the past")
            accepted, rejected, quota = self._decide_watches(
                principal, policy, draft, request, requested, now, invalid
            )
            if not accepted and rejected and not invalid:
                raise PolicyDenied(
                    "the policy refuses every item of this request: "
                    + "; ".join(explain_reason(r) for r in draft.reasons),
                    tuple(draft.reasons),
                )
            day = now.date().isoformat()
            for (bucket, limit), amount in sorted(quota.items()):
                consume_quota(session, principal.institution, bucket, day, amount, limit)
            counts = alert_store.upsert_watches(
                session, principal.institution, request.purpose, accepted, now
            )
            raised = 0
            if request.initial and accepted:
                raised = self._initial_alerts(session, principal, request.purpose, accepted, now)
            draft.match_count = raised
            if invalid:
                draft.reasons.append("INVALID_ITEMS")
            response = alerts_pb2.WatchResponse(
                added=counts.added,
                refreshed=counts.refreshed,
                rejected=len(rejected),
                rejected_items=rejected,
                malformed=malformed_items(invalid),
                alerts=raised,
                policy_version=policy.version,
            )
            if accepted:
                response.expires_at.CopyFrom(timestamp(min(w.expires_at for w in accepted)))
            return response

        response = self._audited(principal, draft, work)
        if invalid:
            raise InvalidItems(_invalid_message(invalid, "stored"), tuple(invalid))
        return response

    def _decide_watches(
        self,
        principal: Principal,
        policy: Policy,
        draft: AuditDraft,
        request: alerts_pb2.WatchRequest,
        requested: datetime | None,
        now: datetime,
        invalid: list[ItemError],
    ) -> tuple[list[WatchItem], list[exchange_pb2.RejectedItem], dict[tuple[str, int], int]]:
        """The policy's decision per item: the watches to store (expiry clipped to the
        rule's retention), the refused items, and the quota each bucket uses."""
        decisions: dict[str, Decision] = {}
        accepted: list[WatchItem] = []
        rejected: list[exchange_pb2.RejectedItem] = []
        quota: dict[tuple[str, int], int] = {}
        for index, item in enumerate(request.items):
            error = self._item_error(index, item)
            if error is not None:
                invalid.append(error)
                continue
            draft.kinds.add(item.kind)
            decision = decisions.get(item.kind)
            if decision is None:
                decision = policy.decide(principal, "watch", item.kind, request.purpose)
                decisions[item.kind] = decision
                draft.note(decision)
            if not decision.allow:
                reason = ",".join(decision.reasons)
                rejected.append(exchange_pb2.RejectedItem(index=index, reason=reason))
                continue
            retention = decision.obligations.retention_days
            default = now + timedelta(days=retention or DEFAULT_RETENTION_DAYS)
            expires_at = clip_expiry(requested or default, now, retention)
            accepted.append(WatchItem(item.kind, item.token, item.key_epoch, expires_at))
            limit = decision.obligations.daily_quota
            if limit is not None:
                bucket = decision.obligations.quota_bucket or "watch"
                quota[(bucket, limit)] = quota.get((bucket, limit), 0) + 1
        return accepted, rejected, quota

    def _initial_alerts(
        self,
        session: Session,
        principal: Principal,
        purpose: str,
        accepted: list[WatchItem],
        now: datetime,
    ) -> int:
        """Alerts for indicators already present (``initial``): seen from nothing before."""
        change = PendingChange(
            {
                (w.kind, w.token, w.key_epoch): [
                    WatchRef(principal.institution, purpose, w.expires_at)
                ]
                for w in accepted
            }
        )
        return self._recorder.finish(session, change, now).count

    def Unwatch(  # noqa: N802 - the name is the RPC's
        self, request: alerts_pb2.UnwatchRequest, context: grpc.ServicerContext
    ) -> alerts_pb2.UnwatchResponse:
        principal, _policy, draft = self._begin("Alerts.Unwatch", request)
        draft.item_count = len(request.items)
        invalid: list[ItemError] = []

        def work(session: Session, _now: datetime) -> alerts_pb2.UnwatchResponse:
            if not 1 <= len(request.items) <= MAX_ITEMS:
                raise InvalidRequest(f"a request holds 1 to {MAX_ITEMS} items")
            keys: list[Key] = []
            for index, item in enumerate(request.items):
                error = self._item_error(index, item)
                if error is not None:
                    invalid.append(error)
                    continue
                draft.kinds.add(item.kind)
                keys.append((item.kind, item.token, item.key_epoch))
            removed = alert_store.remove_watches(session, principal.institution, keys)
            if invalid:
                draft.reasons.append("INVALID_ITEMS")
            return alerts_pb2.UnwatchResponse(
                removed=removed,
                not_found=len(set(keys)) - removed,
                malformed=malformed_items(invalid),
            )

        response = self._audited(principal, draft, work)
        if invalid:
            raise InvalidItems(_invalid_message(invalid, "removed"), tuple(invalid))
        return response

    def ListWatches(  # noqa: N802 - the name is the RPC's
        self, request: alerts_pb2.ListWatchesRequest, context: grpc.ServicerContext
    ) -> alerts_pb2.ListWatchesResponse:
        principal, _policy, draft = self._begin("Alerts.ListWatches", request)

        def work(session: Session, now: datetime) -> alerts_pb2.ListWatchesResponse:
            counts = alert_store.watch_counts(session, principal.institution, now)
            draft.item_count = sum(n for _, _, n in counts)
            draft.kinds.update(kind for kind, _, _ in counts)
            return alerts_pb2.ListWatchesResponse(
                counts=[
                    alerts_pb2.WatchCount(kind=kind, purpose=purpose, count=n)
                    for kind, purpose, n in counts
                ]
            )

        return self._audited(principal, draft, work)

    def _item_error(self, index: int, item: alerts_pb2.WatchItem) -> ItemError | None:
        if item.kind not in indicators.KINDS and item.kind not in indicators.PROHIBITED_KINDS:
            return ItemError(index, "", "unknown kind", "items")
        if len(item.token) != TOKEN_BYTES:
            return ItemError(index, item.kind, f"token must be {TOKEN_BYTES} bytes", "items")
        if item.key_epoch != self._key_epoch:
            reason = f"token made under key epoch {item.key_epoch}, hub is at {self._key_epoch}"
            return ItemError(index, item.kind, reason, "items")
        return None

    # --- delivery ----------------------------------------------------------------------

    def _start(self, session: Session, institution: str, start: int, after: int) -> int:
        latest, acked = alert_store.cursor_of(session, institution)
        if start == alerts_pb2.START_AFTER:
            return bigint(after, "after")
        if start == alerts_pb2.START_NOW:
            return latest
        if start == alerts_pb2.START_AFTER_ACK:
            return acked
        raise InvalidRequest("start must be START_AFTER_ACK, START_AFTER or START_NOW")

    def Subscribe(  # noqa: N802 - the name is the RPC's
        self, request: alerts_pb2.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[alerts_pb2.Alert]:
        principal, _policy, draft = self._begin("Alerts.Subscribe", request)
        me = principal.institution
        with self._store.session() as session:
            cursor = self._start(session, me, request.start, request.after)
        # Wake this stream's wait when the client goes away.
        context.add_callback(self._notifier.notify)
        outcome = "ok"
        try:
            while context.is_active():
                seen = self._notifier.generation
                with self._store.session() as session:
                    rows = alert_store.alerts_after(session, me, cursor, DEFAULT_LIST)
                for row in rows:
                    draft.kinds.add(row.kind)
                    draft.item_count += 1
                    yield _encode(row)
                    cursor = row.sequence
                if len(rows) < DEFAULT_LIST:
                    self._notifier.wait(seen, self._poll)
        except Exception:
            outcome = "error"
            raise
        finally:
            # Audited however the stream ends, with what was actually sent.
            audit_alone(self._store, draft.event(principal, outcome, self._clock()))

    def List(  # noqa: N802 - the name is the RPC's
        self, request: alerts_pb2.ListAlertsRequest, context: grpc.ServicerContext
    ) -> alerts_pb2.ListAlertsResponse:
        principal, _policy, draft = self._begin("Alerts.List", request)

        def work(session: Session, _now: datetime) -> alerts_pb2.ListAlertsResponse:
            limit = request.limit or DEFAULT_LIST
            if not 1 <= limit <= MAX_LIST:
                raise InvalidRequest(f"limit must be 1..{MAX_LIST}")
            me = principal.institution
            after = self._start(session, me, request.start, request.after)
            rows = alert_store.alerts_after(session, me, after, limit)
            latest, acked = alert_store.cursor_of(session, me)
            draft.item_count = len(rows)
            draft.kinds.update(r.kind for r in rows)
            return alerts_pb2.ListAlertsResponse(
                alerts=[_encode(r) for r in rows], acked=acked, latest=latest
            )

        return self._audited(principal, draft, work)

    def Ack(  # noqa: N802 - the name is the RPC's
        self, request: alerts_pb2.AckRequest, context: grpc.ServicerContext
    ) -> alerts_pb2.AckResponse:
        principal, _policy, draft = self._begin("Alerts.Ack", request)

        def work(session: Session, _now: datetime) -> alerts_pb2.AckResponse:
            _latest, before = alert_store.cursor_of(session, principal.institution)
            acked = alert_store.ack(session, principal.institution, request.cursor)
            draft.item_count = acked - before
            return alerts_pb2.AckResponse(acked=acked)

        return self._audited(principal, draft, work)


def _encode(row: alert_store.Alert) -> alerts_pb2.Alert:
    alert = alerts_pb2.Alert(
        sequence=row.sequence,
        event=_EVENTS[row.event],
        token=row.token,
        kind=row.kind,
        key_epoch=row.key_epoch,
        purpose=row.purpose,
        disclosure=common_pb2.Disclosure.ValueType(row.disclosure),
        contributors=row.contributors,
        categories=[category_value(c) for c in row.categories.split(",") if c],
        max_confidence=row.max_confidence,
        score=row.score,
        policy_version=row.policy_version,
        dispute_id=row.dispute_id,
    )
    alert.raised_at.CopyFrom(timestamp(row.raised_at))
    if row.respond_by is not None:
        alert.respond_by.CopyFrom(timestamp(row.respond_by))
    if row.first_seen is not None:
        alert.first_seen.CopyFrom(timestamp(row.first_seen))
    if row.last_seen is not None:
        alert.last_seen.CopyFrom(timestamp(row.last_seen))
    return alert


def _invalid_message(invalid: list[ItemError], done: str) -> str:
    # The valid items committed first; the status names each malformed one.
    return f"{len(invalid)} item(s) are malformed; the valid items were {done}"


def register(
    server: grpc.Server,
    store: Store,
    policy: LivePolicy,
    key_epoch: int,
    recorder: AlertRecorder,
    notifier: AlertNotifier,
) -> str:
    """Add the Alerts servicer to ``server``; return its full service name."""
    alerts_pb2_grpc.add_AlertsServicer_to_server(
        AlertsService(store, policy, key_epoch, recorder, notifier), server
    )
    return SERVICE
