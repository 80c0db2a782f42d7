"""The Audit servicer: checkpoints, events, proofs and reports for regulators.

A thin adapter over :mod:`hub.storage.auditlog`.  Guarantees:

- Only the ``regulator`` role may call it: :data:`METHOD_ROLES` (alias
  :data:`AUDIT_ROLES`) is this service's part of the hub's per-method role
  table; the hub's ``AuthInterceptor`` enforces it before a method runs (every
  other role gets PERMISSION_DENIED, which the hub's refusal interceptor
  audits).  This module never checks roles itself.
- Every call the servicer answers is itself audited (action ``Audit.<Method>``,
  purpose ``audit``, ``item_count`` = events or proof hashes returned), in the
  transaction that did the work; a failed call (bad argument, storage error)
  is audited on its own with its outcome.  Reading the log leaves a trace in
  it.  A streaming call is audited when the stream ends, however it ends, with
  what was actually sent.
- Checkpoints are signed with the hub's Ed25519 log key (``<data_dir>/log-key.pem``,
  created if missing) under the key name :data:`DEFAULT_ORIGIN`; they are made
  every ``HubConfig.checkpoint_every_events`` events or
  ``HubConfig.checkpoint_every_seconds`` seconds (``serve --checkpoint-every``,
  ``--checkpoint-seconds``; defaults 1000 and 60) by a :class:`Checkpointer`
  thread that lives as long as the gRPC server, and on request (``GetCheckpoint(fresh=true)``).
- With witnesses configured (``HubConfig.witnesses``, ADR 0010) each new
  checkpoint is offered to them for cosigning on the checkpoint thread
  (:mod:`hub.services.witnesses`); GetCheckpoint asks those that have not
  cosigned the served checkpoint yet (bounded wait) and serves the note with
  every stored cosignature appended.  A witness outage never fails a call.
  When no checkpoint is due, the thread asks again for the current head the
  witnesses whose newest cosignature is ``HubConfig.cosignature_refresh_seconds``
  old (``serve --witness-refresh``), so regulators counting only recent
  cosignatures (``audit verify --max-age``) see an honest hub's head as fresh.
- Proofs read O(log n) stored nodes; ``ListEvents`` pages through the log by
  leaf index, :data:`PAGE_SIZE` rows per database read.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import grpc
from fraudhub.v1 import audit_pb2, audit_pb2_grpc
from google.protobuf.message import Message
from sqlmodel import Session
from typing_extensions import override

from client_sdk.core.errors import ConfigurationError, FraudhubError, InvalidRequest, StorageError
from client_sdk.core.vocabulary import Principal
from client_sdk.wire.codecs import bigint, optional_datetime, timestamp
from hub.audit.checkpoint import LogSigner
from hub.audit.dispute_report import DisputeLedger, DisputeReport
from hub.audit.events import AuditEvent, decode, request_digest
from hub.audit.report import InstitutionReport, aggregate
from hub.infra.privatefiles import LOG_KEY_FILENAME, load_or_create_log_key
from hub.services.audited import audit_alone, audit_outcome, run_audited
from hub.services.config import (
    CHECKPOINT_EVERY_EVENTS,
    CHECKPOINT_EVERY_SECONDS,
    HubConfig,
    LivePolicy,
)
from hub.services.witnesses import CosignatureCollector
from hub.storage import auditlog, store
from hub.storage.models import utcnow
from hub.storage.store import Store
from hub.wire.auth import current_principal, current_principal_still_valid

__all__ = [
    "AUDIT_ROLES",
    "CHECKPOINT_EVERY_EVENTS",
    "CHECKPOINT_EVERY_SECONDS",
    "DEFAULT_ORIGIN",
    "LOG_KEY_FILENAME",
    "METHOD_ROLES",
    "PAGE_SIZE",
    "READ_ONLY_METHODS",
    "AuditService",
    "Checkpointer",
    "log_signer",
    "register",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SERVICE = "fraudhub.v1.Audit"
#: The log's origin line and the key name of its signatures.
DEFAULT_ORIGIN = "fraudhub/audit-log"
PAGE_SIZE = 1000

#: The Audit service's rows of the hub's per-method role table: regulators only.
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"/{SERVICE}/{name}": frozenset({"regulator"})
    for name in (
        "GetCheckpoint",
        "ListEvents",
        "GetInclusionProof",
        "GetConsistencyProof",
        "GetReport",
        "GetPolicy",
    )
}
AUDIT_ROLES = METHOD_ROLES
#: Every Audit method reads the log: on a full disk they are still served
#: (the replay guard remembers their token ids in memory, the read's own
#: audit event is logged as missing).  ADR 0003 and 0007 amendments.
READ_ONLY_METHODS: frozenset[str] = frozenset(METHOD_ROLES)


class AuditService(audit_pb2_grpc.AuditServicer):
    """The Audit RPCs over one :class:`Store` (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        signer: LogSigner,
        *,
        origin: str = DEFAULT_ORIGIN,
        policy: LivePolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        page_size: int | None = None,
        collector: CosignatureCollector | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._origin = origin
        self._policy = policy
        self._clock = clock
        self._page_size = page_size or PAGE_SIZE
        self._collector = collector

    # --- auditing the auditor --------------------------------------------------

    def _event(
        self, who: Principal, method: str, request: Message, count: int, outcome: str
    ) -> AuditEvent:
        return AuditEvent.log_read(
            time=self._clock(),
            institution=who.institution,
            role=who.role,
            action=f"Audit.{method}",
            outcome=outcome,
            item_count=count,
            policy_version=self._policy.current.version if self._policy else "",
            request_digest=request_digest(request.SerializeToString(deterministic=True)),
        )

    def _audited(
        self, method: str, request: Message, work: Callable[[Session, bool], tuple[_T, int]]
    ) -> _T:
        """Run ``work`` in the audited transaction (ADR 0007).

        ``work(session, record)`` returns its result and the count to audit.
        On failure the transaction rolls back and the failure is audited on
        its own, then re-raised (database errors as StorageError).  If the
        database is full, ``work(session, False)`` runs again in a read
        transaction that is never committed (it must write nothing then) and
        its result is returned without an audit event.
        """
        who = current_principal()
        try:
            result, _count = run_audited(
                self._store,
                lambda session: work(session, True),
                lambda done: self._event(who, method, request, done[1], "ok"),
                lambda exc: self._event(who, method, request, 0, audit_outcome(exc)),
            )
        except StorageError as exc:
            if exc.cause != "disk full":
                raise
            # Every method here reads the log: on a full disk the regulator is
            # still answered, the missing trace is logged (ADR 0007, amended).
            with self._store.session() as session:
                result, count = work(session, False)
            log.error(
                "Audit.%s for %s answered without its audit event (%d item(s)): the database "
                "is full",
                method,
                who.institution,
                count,
            )
        return result

    # --- RPCs ------------------------------------------------------------------

    @override
    def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> audit_pb2.SignedCheckpoint:
        def work(session: Session, record: bool) -> tuple[str, int]:
            latest = auditlog.latest_checkpoint(session)
            if request.fresh or latest is None:
                return auditlog.create_checkpoint(
                    session, self._signer, self._origin, self._clock(), record=record
                ), 1
            return latest.note, 1

        note = self._audited("GetCheckpoint", request, work)
        if self._collector is not None:
            # Bounded by the collector's timeout; a witness outage serves fewer lines.
            self._collector.collect(note)
        # Store.session raises StorageError for database failures.
        with self._store.session() as session:
            served = auditlog.cosigned_note(session, note)
        return audit_pb2.SignedCheckpoint(note=served)

    @override
    def ListEvents(
        self, request: audit_pb2.ListEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.AuditEventRecord]:
        # Read now: the generator may be closed (client cancel) outside the
        # interceptor's context, where the caller is no longer visible.
        who = current_principal()
        sent = 0
        outcome = "CANCELLED"
        try:
            event_filter = _event_filter(request.filter)
            for name in ("start", "end", "limit"):
                bigint(getattr(request, name), name)
            end = request.end or None
            remaining = request.limit or None
            position = request.start
            while remaining is None or remaining > 0:
                # Re-checked per page, as Match and Contribute streams do per
                # message: an expired token or a disabled institution ends the stream.
                current_principal_still_valid()
                page = min(self._page_size, remaining or self._page_size)
                with self._store.session() as session:
                    rows = auditlog.list_events(session, position, end, event_filter, limit=page)
                for row in rows:
                    yield audit_pb2.AuditEventRecord(leaf_index=row.leaf_index, encoded=row.body)
                    sent += 1
                if len(rows) < page:
                    break
                position = rows[-1].leaf_index + 1
                if remaining is not None:
                    remaining -= len(rows)
            outcome = "ok"
        except FraudhubError as exc:
            outcome = audit_outcome(exc)
            raise
        finally:
            # Audited when the stream ends, however it ends, with what was sent.
            audit_alone(self._store, self._event(who, "ListEvents", request, sent, outcome))

    @override
    def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.InclusionProof:
        def work(session: Session, _record: bool) -> tuple[list[bytes], int]:
            hashes = auditlog.inclusion_proof(session, request.leaf_index, request.tree_size)
            return hashes, len(hashes)

        return audit_pb2.InclusionProof(
            leaf_index=request.leaf_index,
            tree_size=request.tree_size,
            hashes=self._audited("GetInclusionProof", request, work),
        )

    @override
    def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ConsistencyProof:
        def work(session: Session, _record: bool) -> tuple[list[bytes], int]:
            hashes = auditlog.consistency_proof(session, request.old_size, request.new_size)
            return hashes, len(hashes)

        return audit_pb2.ConsistencyProof(
            old_size=request.old_size,
            new_size=request.new_size,
            hashes=self._audited("GetConsistencyProof", request, work),
        )

    @override
    def GetReport(
        self, request: audit_pb2.GetReportRequest, context: grpc.ServicerContext
    ) -> audit_pb2.Report:
        def work(session: Session, _record: bool) -> tuple[audit_pb2.Report, int]:
            since, until = optional_datetime(request, "from"), optional_datetime(request, "to")
            window = auditlog.EventFilter(since=since, until=until)
            if since is not None and until is not None and since >= until:
                raise InvalidRequest("report window: 'from' must be before 'to'")
            counted = 0

            def window_events() -> Iterator[AuditEvent]:
                # Page by page: the report holds aggregates, never the whole window.
                nonlocal counted
                position = 0
                while True:
                    rows = auditlog.list_events(
                        session, position, None, window, limit=self._page_size
                    )
                    counted += len(rows)
                    yield from (decode(r.body) for r in rows)
                    if len(rows) < self._page_size:
                        return
                    position = rows[-1].leaf_index + 1

            ledger = DisputeLedger()
            reports = aggregate(ledger.watch(window_events()))
            message = audit_pb2.Report(
                events=counted,
                institutions=[_report_message(r) for r in reports],
                disputes=[_dispute_message(d) for d in ledger.reports()],
            )
            return message, counted

        return self._audited("GetReport", request, work)

    @override
    def GetPolicy(
        self, request: audit_pb2.GetPolicyRequest, context: grpc.ServicerContext
    ) -> audit_pb2.PolicyText:
        def work(session: Session, _record: bool) -> tuple[audit_pb2.PolicyText, int]:
            if not _POLICY_VERSION.fullmatch(request.version):
                raise InvalidRequest("version must be 64 lowercase hex digits")
            row = store.get_policy_text(session, request.version)
            first_used = timestamp(row.first_used)
            text = audit_pb2.PolicyText(
                version=row.version, canonical_text=row.canonical_text, first_used=first_used
            )
            return text, 1

        return self._audited("GetPolicy", request, work)


_POLICY_VERSION = re.compile(r"[0-9a-f]{64}")


def _event_filter(f: audit_pb2.EventFilter) -> auditlog.EventFilter:
    """The store's filter for a request's; InvalidRequest for a bad timestamp."""
    return auditlog.EventFilter(
        institution=f.institution or None,
        action=f.action or None,
        tier=f.tier or None,
        kind=f.kind or None,
        outcome=f.outcome or None,
        since=optional_datetime(f, "since"),
        until=optional_datetime(f, "until"),
    )


def _report_message(report: InstitutionReport) -> audit_pb2.InstitutionReport:
    return audit_pb2.InstitutionReport(
        institution=report.institution,
        requests=report.requests,
        items=report.items,
        matches=report.matches,
        match_rate=report.match_rate,
        refusals=report.refusals,
        refusals_by_reason=dict(report.refusals_by_reason),
        requests_by_tier=dict(report.requests_by_tier),
        requests_by_purpose=dict(report.requests_by_purpose),
        contributed=report.contributed,
        revoked=report.revoked,
        disputes_opened=report.disputes_opened,
        disputes_upheld=report.disputes_upheld,
        disputes_withdrawn=report.disputes_withdrawn,
        disputes_lapsed=report.disputes_lapsed,
        refused_items=report.refused_items,
        malformed_items=report.malformed_items,
        evidence=dict(report.evidence),
        sightings_filed=dict(report.sightings_filed),
        sightings_received=dict(report.sightings_received),
        false_positive_ratio=report.false_positive_ratio,
    )


def _dispute_message(dispute: DisputeReport) -> audit_pb2.DisputeReport:
    message = audit_pb2.DisputeReport(
        id=dispute.id,
        opened_by=dispute.opened_by,
        kind=dispute.kind,
        opened_at=timestamp(dispute.opened_at),
        suspended=dispute.suspended,
        upheld=dispute.upheld,
        withdrawn=dispute.withdrawn,
        lapsed=dispute.lapsed,
        outcome=dispute.outcome,
        resolution_seconds=dispute.resolution_seconds or 0.0,
    )
    if dispute.resolved_at is not None:
        message.resolved_at.CopyFrom(timestamp(dispute.resolved_at))
    return message


class Checkpointer:
    """Signs a checkpoint whenever N events or T seconds have accumulated.

    :meth:`run_once` does one check; :meth:`run_until` loops until ``stopped``
    returns True (the hub passes ``server.wait_for_termination``, so the thread
    ends with the gRPC server).  Failures are logged, never raised: a missed
    checkpoint is made at the next tick.
    """

    def __init__(
        self,
        store: Store,
        signer: LogSigner,
        *,
        origin: str = DEFAULT_ORIGIN,
        every_events: int = CHECKPOINT_EVERY_EVENTS,
        every_seconds: float = CHECKPOINT_EVERY_SECONDS,
        clock: Callable[[], datetime] = utcnow,
        collector: CosignatureCollector | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._origin = origin
        self._every_events = every_events
        self._every_seconds = every_seconds
        self._clock = clock
        self._collector = collector

    def run_once(self) -> str | None:
        """Sign a checkpoint if one is due, then ask the witnesses to cosign it
        (on this thread, never the writers'); return its note, or None.  With
        none due, refresh the current head's stale cosignatures instead."""
        note: str | None = None
        with self._store.session() as session:
            now = self._clock()
            if auditlog.checkpoint_due(
                session, now, every_events=self._every_events, every_seconds=self._every_seconds
            ):
                note = auditlog.create_checkpoint(session, self._signer, self._origin, now)
                session.commit()
        if note is None:
            if self._collector is not None:
                self._collector.refresh()
            return None
        if self._collector is not None:
            self._collector.collect(note)
        return note

    def run_until(self, stopped: Callable[[float], bool], tick: float = 1.0) -> None:
        while not stopped(tick):
            try:
                self.run_once()
            except FraudhubError as exc:
                # The type only: the store logged a database error's cause already.
                log.error("periodic checkpoint failed (%s); retrying next tick", type(exc).__name__)


def log_signer(data_dir: Path, origin: str = DEFAULT_ORIGIN) -> LogSigner:
    """The hub's checkpoint signer from ``<data_dir>/log-key.pem`` (created if missing)."""
    return LogSigner(origin, load_or_create_log_key(Path(data_dir) / LOG_KEY_FILENAME))


def _collector(
    store: Store, config: HubConfig, on_error: Callable[[str], None] | None
) -> CosignatureCollector | None:
    """The witnesses' cosignature collector, if any are configured; raises ConfigurationError."""
    if not config.witnesses:
        return None
    if config.witness_identity is None:
        raise ConfigurationError(
            "witnesses are configured but not the hub's operator identity to call them with"
        )
    default_ca = None if config.insecure else (config.tls_dir or config.data_dir) / "tls" / "ca.pem"
    return CosignatureCollector(
        store,
        config.witnesses,
        config.witness_identity,
        default_ca=default_ca,
        refresh_after=config.cosignature_refresh_seconds,
        on_error=on_error,
    )


def register(
    server: grpc.Server,
    store: Store,
    policy: LivePolicy,
    config: HubConfig,
    *,
    on_holder_error: Callable[[str], None] | None = None,
) -> str:
    """Add the Audit servicer and its checkpoint thread to ``server``; return the service name.

    ``on_holder_error`` is told the audience of each witness (key holder) call that failed.

    The thread waits on ``server.wait_for_termination`` between ticks, so it
    stops when the server stops.
    """
    signer = log_signer(config.data_dir)
    collector = _collector(store, config, on_holder_error)
    audit_pb2_grpc.add_AuditServicer_to_server(
        AuditService(store, signer, policy=policy, collector=collector), server
    )
    checkpointer = Checkpointer(
        store,
        signer,
        every_events=config.checkpoint_every_events,
        every_seconds=config.checkpoint_every_seconds,
        collector=collector,
    )

    def stopped(timeout: float) -> bool:
        # wait_for_termination returns True when it TIMED OUT (server still running).
        return not server.wait_for_termination(timeout)

    def run() -> None:
        checkpointer.run_until(stopped)
        if collector is not None:
            collector.close()  # the server stopped: no more checkpoints to offer

    threading.Thread(target=run, name="fraudhub-checkpoints", daemon=True).start()
    log.info("audit log key %s", signer.verifier_key())
    return SERVICE
