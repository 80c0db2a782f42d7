"""Wiring of the hub's gRPC server.

:class:`HubServer` builds one ``grpc.server`` with, in this order, the
interceptors ``hub.wire.metrics.RpcInterceptor`` (Prometheus metrics and the
per-RPC log line; the endpoint when ``HubConfig.metrics_port`` is set),
``hub.wire.rpc.InFlight`` (counts running handlers, for a bounded stop),
``hub.wire.status.ErrorInterceptor`` (fraudhub errors to statuses),
:class:`RefusalAuditInterceptor` (audits calls the auth layer refuses),
``hub.wire.auth.AuthInterceptor`` (JWT and the role table :data:`HUB_METHOD_ROLES`)
and ``hub.wire.decode.DecodeInterceptor`` (requests read and decoded only
after authentication, within :data:`HUB_MESSAGE_LIMITS`), then the Exchange,
Admin and Audit servicers, gRPC health checking and reflection.

Guarantees:

- TLS with the material of ``fraudhub init`` unless ``insecure`` is set
  (``hub.wire.tls.bind`` logs a warning then).
- Every Exchange and Admin call is audited: the servicers audit what they
  decide, :class:`RefusalAuditInterceptor` audits role refusals before any
  servicer runs, and counts authentication failures per peer and window
  (one event with the count, ``hub.services.refusals``).
- Expired indicators are deleted at start and every
  ``HubConfig.expiry_sweep_interval`` seconds (audited as ``Hub.ExpirySweep``);
  the same sweep lapses dispute items past their deadline and deletes their
  indicators (``Hub.DisputeLapse``, :func:`hub.services.disputes.sweep_lapsed`).
- :meth:`HubServer.stop` lets in-flight calls finish for the grace period and
  marks the server NOT_SERVING first; SIGTERM and SIGINT do that, SIGHUP
  reloads the policy (a broken file is logged and the running policy stays).
  Streams still open after the grace period are cancelled, and ``stop``
  returns within grace + :data:`STOP_MARGIN` + :data:`FLUSH_TIMEOUT` seconds
  in every case (``fraudhub serve`` then exits even if a handler is stuck).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Collection, Mapping
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
import jwt
from fraudhub.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    disputes_pb2,
    disputes_pb2_grpc,
    exchange_pb2,
    exchange_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client_sdk.core.errors import (
    AuthenticationError,
    FraudhubError,
    PermissionDenied,
    PolicyDenied,
    StorageError,
)
from client_sdk.wire.auth import HUB_AUDIENCE
from client_sdk.wire.channels import MAX_MESSAGE_BYTES
from hub.audit.events import AuditEvent
from hub.keyholder.keyfiles import load_public
from hub.policy.engine import Policy
from hub.services import alerts as alerts_service
from hub.services import audit as audit_service
from hub.services import disputes as disputes_service
from hub.services import feedback
from hub.services.admin import AdminService
from hub.services.audited import audit_alone, audit_outcome
from hub.services.config import HubConfig, LivePolicy
from hub.services.exchange import ExchangeService
from hub.services.refusals import RefusalTally
from hub.storage import alerts as alert_storage
from hub.storage import auditlog
from hub.storage.models import utcnow
from hub.storage.registry import DatabaseRegistry, DatabaseReplayGuard
from hub.storage.store import Store, delete_expired, record_policy_text
from hub.wire import tls
from hub.wire.auth import AuthInterceptor, TokenVerifier
from hub.wire.decode import DecodeInterceptor, message_limits, receive_limit
from hub.wire.metrics import RpcInterceptor, ServerMetrics
from hub.wire.rpc import InFlight, around
from hub.wire.status import ErrorInterceptor

__all__ = [
    "HUB_MESSAGE_LIMITS",
    "HUB_METHOD_ROLES",
    "HubServer",
    "RefusalAuditInterceptor",
    "method_names",
]

log = logging.getLogger(__name__)

#: Seconds :meth:`HubServer.stop` waits past the grace period for cancelled calls.
STOP_MARGIN = 2.0
#: Seconds it waits for the last refusal counts to be audited.
FLUSH_TIMEOUT = 1.0
# Institution id recorded for a caller whose token did not verify.
UNAUTHENTICATED_CALLER = "unauthenticated"
# Institution id of the hub's own housekeeping in the audit log.
HUB_INSTITUTION = "hub"


def method_names(service: Any) -> list[str]:
    """Full method names (``/fraudhub.v1.Exchange/Match``) of a service descriptor."""
    return [f"/{service.full_name}/{m.name}" for m in service.methods]


def _table(service: Any, roles: Mapping[str, Collection[str]]) -> dict[str, frozenset[str]]:
    names = {m.name for m in service.methods}
    if set(roles) != names:
        # Every method must be listed: a new RPC without a row is a build error here.
        raise RuntimeError(f"role table of {service.full_name} does not list {names ^ set(roles)}")
    return {f"/{service.full_name}/{name}": frozenset(r) for name, r in roles.items()}


_EXCHANGE = exchange_pb2.DESCRIPTOR.services_by_name["Exchange"]
_ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
_DISPUTES = disputes_pb2.DESCRIPTOR.services_by_name["Disputes"]
_SCREENERS = ("bank", "carrier")

#: Which roles may call which hub method (regulators audit, they do not screen).
HUB_METHOD_ROLES: dict[str, frozenset[str]] = {
    **_table(
        _EXCHANGE,
        {
            "Contribute": _SCREENERS,
            "ContributeStream": _SCREENERS,
            "Revoke": _SCREENERS,
            "Match": _SCREENERS,
            "MatchStream": _SCREENERS,
        },
    ),
    **_table(
        _ADMIN,
        {
            "AddInstitution": ("operator",),
            "ListInstitutions": ("operator",),
            "DisableInstitution": ("operator",),
            "EnableInstitution": ("operator",),
            "RotateInstitutionKey": ("operator",),
            "ReloadPolicy": ("operator",),
        },
    ),
    **_table(_DISPUTES, disputes_service.METHOD_ROLES),
}


# Request bytes per message, from exchange.proto's bounds: 10,000 indicators
# of at most ~1.2 kB each (a 1,052-byte sealed label) for contributions,
# 10,000 queries of ~60 bytes for matches and revocations.  Every other
# method (Admin, Audit, later services) takes hub.wire.decode.DEFAULT_LIMIT.
_CONTRIBUTION_LIMIT = 16 * 1024 * 1024
_QUERY_LIMIT = 2 * 1024 * 1024
_LIMIT_OVERRIDES = {
    f"/{_EXCHANGE.full_name}/Contribute": _CONTRIBUTION_LIMIT,
    f"/{_EXCHANGE.full_name}/ContributeStream": _CONTRIBUTION_LIMIT,
    f"/{_EXCHANGE.full_name}/Match": _QUERY_LIMIT,
    f"/{_EXCHANGE.full_name}/MatchStream": _QUERY_LIMIT,
    f"/{_EXCHANGE.full_name}/Revoke": _QUERY_LIMIT,
}
#: Request bytes per message of each hub method (decoded after authentication).
HUB_MESSAGE_LIMITS: dict[str, int] = message_limits(
    {
        **HUB_METHOD_ROLES,
        **audit_service.METHOD_ROLES,
        **feedback.METHOD_ROLES,
        **alerts_service.METHOD_ROLES,
    },
    {**_LIMIT_OVERRIDES, **feedback.LIMIT_OVERRIDES, **alerts_service.LIMIT_OVERRIDES},
)


class RefusalAuditInterceptor(grpc.ServerInterceptor):
    """Audits calls refused by the auth layer (installed just before it).

    Refusals of a registered institution (role, disabled) are audited one
    by one; authentication failures are counted per peer and window by
    ``tally`` (:class:`~hub.services.refusals.RefusalTally`), one event with
    the count each, so unauthenticated traffic cannot grow the log without
    bound.

    The servicers audit everything they decide; what reaches this interceptor
    as :class:`AuthenticationError` or a role :class:`PermissionDenied` (not a
    :class:`PolicyDenied`, which the servicer audited) never reached a
    servicer.  For a role refusal the token verified, so its issuer is the
    caller; for an authentication failure the caller is unknown.
    """

    def __init__(
        self,
        store: Store,
        policy: LivePolicy,
        audited: Collection[str],
        registry: DatabaseRegistry,
    ) -> None:
        self._store = store
        self._policy = policy
        self._audited = frozenset(audited)
        self._registry = registry
        self.tally = RefusalTally(store, lambda: policy.current.version)

    def _record(self, method: str, exc: FraudhubError, context: grpc.ServicerContext) -> None:
        institution, role = UNAUTHENTICATED_CALLER, "none"
        if isinstance(exc, PermissionDenied):
            issuer = _verified_issuer(context)
            registered = self._registry.lookup(issuer) if issuer else None
            if registered is not None:
                institution, role = registered.id, registered.role
        service, _, name = method.lstrip("/").partition("/")
        action = f"{service.rpartition('.')[2]}.{name}"
        if institution == UNAUTHENTICATED_CALLER:
            # Anyone can send these: one event per peer and window, with the count.
            self.tally.record(context.peer(), action, type(exc).__name__)
            return
        event = AuditEvent.refusal(
            time=utcnow(),
            institution=institution,
            role=role,
            action=action,
            outcome=audit_outcome(exc),
            error=type(exc).__name__,
            policy_version=self._policy.current.version,
        )
        audit_alone(self._store, event)  # the call is refused either way (ADR 0007)

    def intercept_service(
        self, continuation: Any, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method not in self._audited:
            return handler

        def record_refusal(exc: Exception, context: grpc.ServicerContext) -> None:
            # A PolicyDenied was decided, and audited, by a servicer.
            if isinstance(exc, AuthenticationError | PermissionDenied) and not isinstance(
                exc, PolicyDenied
            ):
                self._record(method, exc, context)

        return around(handler, on_error=record_refusal)


def _verified_issuer(context: grpc.ServicerContext) -> str | None:
    """Issuer of the call's token; only called once the token verified (role refusal)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            try:
                claims = jwt.decode(text.partition(" ")[2], options={"verify_signature": False})
            except jwt.PyJWTError:
                return None
            issuer = claims.get("iss")
            return issuer if isinstance(issuer, str) else None
    return None


class HubServer:
    """One hub process: the gRPC server and everything it serves."""

    def __init__(self, config: HubConfig, *, store: Store | None = None) -> None:
        self.config = config
        self.store = store or Store(config.url)
        self.policy = LivePolicy(config.policy_paths, on_change=self._record_policy)
        self.key_info = load_public(config.public_key)
        self.registry = DatabaseRegistry(self.store)
        self.health = health.HealthServicer()
        self._stopped = threading.Event()
        self._done = threading.Event()
        self._clean = True
        self.port = 0
        self.metrics = ServerMetrics("hub")
        self.metrics.add_gauges(self._audit_gauges)
        self.metrics_port: int | None = None
        roles = {
            **HUB_METHOD_ROLES,
            **audit_service.METHOD_ROLES,
            **feedback.METHOD_ROLES,
            **alerts_service.METHOD_ROLES,
        }
        self.in_flight = InFlight()
        self.refusals = RefusalAuditInterceptor(self.store, self.policy, roles, self.registry)
        self.alert_notifier = alerts_service.AlertNotifier()
        self.alerts = alerts_service.AlertRecorder(self.policy, self.alert_notifier)
        self.exchange = ExchangeService(
            self.store,
            self.policy,
            self.key_info.epoch,
            previous_epochs=config.previous_epochs,
            alerts=self.alerts,
        )
        verifier = TokenVerifier(
            self.registry, HUB_AUDIENCE, replay=DatabaseReplayGuard(self.store)
        )
        self.server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=config.max_workers, thread_name_prefix="fraudhub-hub"
            ),
            interceptors=[
                RpcInterceptor(self.metrics),
                self.in_flight,
                ErrorInterceptor(),
                self.refusals,
                AuthInterceptor(verifier, roles, read_only_methods=audit_service.READ_ONLY_METHODS),
                DecodeInterceptor(HUB_MESSAGE_LIMITS),
            ],
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", receive_limit(HUB_MESSAGE_LIMITS)),
                *tls.SERVER_OPTIONS,
            ],
        )
        exchange_pb2_grpc.add_ExchangeServicer_to_server(
            self.exchange,
            self.server,
        )
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminService(self.store, self.policy, self.registry), self.server
        )
        disputes_pb2_grpc.add_DisputesServicer_to_server(
            disputes_service.DisputesService(
                self.store, self.policy, lambda: self.accepted_epochs, alerts=self.alerts
            ),
            self.server,
        )
        names = [
            _EXCHANGE.full_name,
            _ADMIN.full_name,
            _DISPUTES.full_name,
            audit_service.register(
                self.server, self.store, self.policy, config, on_holder_error=self._holder_error
            ),
            *feedback.register(self.server, self.store, self.policy, self.key_info.epoch),
            alerts_service.register(
                self.server,
                self.store,
                self.policy,
                self.key_info.epoch,
                self.alerts,
                self.alert_notifier,
            ),
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(names, self.server)
        self._service_names = names

    @property
    def accepted_epochs(self) -> tuple[int, ...]:
        """The OPRF key epochs the hub accepts: its own, then the earlier ones (ADR 0013)."""
        previous = [e for e in self.config.previous_epochs if e != self.key_info.epoch]
        return (self.key_info.epoch, *previous)

    def _holder_error(self, holder: str) -> None:
        self.metrics.holder_errors.labels(holder=holder).inc()

    def _audit_gauges(self) -> list[tuple[str, str, float]]:
        """Audit log size and checkpoint age, read at scrape time (none if the database fails)."""
        try:
            with self.store.session() as session:
                size = auditlog.tree_size(session)
                checkpoint = auditlog.latest_checkpoint(session)
        except StorageError:
            return []
        gauges = [("fraudhub_audit_log_size", "Events in the audit log", float(size))]
        if checkpoint is not None:
            age = (utcnow() - checkpoint.created_at).total_seconds()
            gauges.append(
                ("fraudhub_checkpoint_age_seconds", "Age of the newest signed checkpoint", age)
            )
        return gauges

    def sweep_expired(self) -> int:
        """Delete expired indicators and audit how many; return the count.

        The retention cap takes effect here: an expired indicator already never
        matches, the sweep removes its token from the database.  Watchers of an
        indicator whose expiry withdraws what they saw get a ``withdrawn``
        alert in the same transaction; expired watches and their alerts go too.
        Then dispute items past their deadline lapse (their own transaction and
        events).
        """
        now = utcnow()
        with self.store.session() as session:
            change = self.alerts.begin(
                session,
                alert_storage.expiring_watched_keys(session, now),
                now,
                exclude=None,
                include_expired=True,
            )
            deleted = delete_expired(session, now)
            self.alerts.finish(session, change, now)
            watches = alert_storage.delete_expired_watches(session, now)
            watches += alert_storage.delete_expired_alerts(session, now)
            if watches:
                auditlog.append(
                    session,
                    AuditEvent.housekeeping(
                        time=now,
                        institution=HUB_INSTITUTION,
                        action="Hub.WatchExpirySweep",
                        item_count=watches,
                        reasons=("RETENTION_EXPIRED",),
                        policy_version=self.policy.current.version,
                    ),
                )
            if deleted:
                # Same transaction: the deletion and its record commit together.
                auditlog.append(
                    session,
                    AuditEvent.housekeeping(
                        time=now,
                        institution=HUB_INSTITUTION,
                        action="Hub.ExpirySweep",
                        item_count=deleted,
                        reasons=("RETENTION_EXPIRED",),
                        policy_version=self.policy.current.version,
                    ),
                )
            session.commit()
        if deleted:
            log.info("expiry sweep deleted %d indicator(s)", deleted)
        lapsed = disputes_service.sweep_lapsed(self.store, self.policy.current.version, now)
        if lapsed:
            log.info("dispute sweep removed %d unanswered indicator(s)", lapsed)
        return deleted

    def _sweep_until_stopped(self) -> None:
        while not self._stopped.wait(self.config.expiry_sweep_interval):
            try:
                self.sweep_expired()
            except Exception as exc:  # the next sweep retries; serving goes on
                log.error("expiry sweep failed: %s", type(exc).__name__)

    def start(self) -> int:
        """Migrate the database, bind and start; return the bound port."""
        self.store.migrate()
        self._record_policy(self.policy.current)
        self.sweep_expired()
        threading.Thread(
            target=self._sweep_until_stopped, name="fraudhub-expiry", daemon=True
        ).start()
        threading.Thread(
            target=self.refusals.tally.run_until,
            args=(self._stopped.wait,),
            name="fraudhub-refusals",
            daemon=True,
        ).start()
        credentials = None
        if not self.config.insecure:
            data_dir = self.config.tls_dir or self.config.data_dir
            credentials = tls.load_server_credentials(tls.tls_files(data_dir, "hub"))
        self.port = tls.bind(
            self.server, self.config.listen, credentials, insecure=self.config.insecure
        )
        self.server.start()
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(
                self.config.metrics_port, self.config.metrics_host
            )
        for name in ("", *self._service_names):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "hub serving on port %d (policy %s, key epochs %s)",
            self.port,
            self.policy.current.version[:12],
            ",".join(map(str, self.accepted_epochs)),
        )
        return self.port

    def _record_policy(self, policy: Policy) -> None:
        """Keep a policy's text for auditors (Audit.GetPolicy) before it runs.

        Raises StorageError if the database refuses: the hub then does not
        start, or the reload is refused and the running policy stays.
        """
        try:
            with self.store.session() as session:
                record_policy_text(session, policy.version, policy.canonical_text, utcnow())
                session.commit()
        except StorageError as exc:
            log.error("could not record policy %s (%s)", policy.version[:12], exc.cause)
            raise StorageError(
                "could not record the policy's text for auditors", exc.cause
            ) from None

    def stop(self, grace: float | None = None) -> bool:
        """Refuse new calls, let in-flight ones finish for ``grace`` seconds, stop.

        Returns within ``grace`` + :data:`STOP_MARGIN` + :data:`FLUSH_TIMEOUT`
        seconds whatever the calls do: gRPC cancels them after the grace
        period, and a handler that does not return then (blocked in a
        database lock wait, say) is left behind.  Returns True if every call
        finished, False if some were left (the process should then exit
        without waiting for their threads: :meth:`finished_cleanly`).
        """
        if self._stopped.is_set():
            self._done.wait(STOP_MARGIN)
            return self._clean
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        grace = self.config.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace + STOP_MARGIN
        stopped = self.server.stop(grace).wait(grace + STOP_MARGIN)
        # gRPC's event does not wait for handler threads; ours does.
        self._clean = stopped and self.in_flight.wait_idle(max(0.0, deadline - time.monotonic()))
        if not self._clean:
            log.error(
                "calls still running %.1f s after the %.1f s grace period; stopping without them",
                STOP_MARGIN,
                grace,
            )
        # The last window of authentication failures, bounded too (the
        # database may be what the stuck calls wait for).
        flusher = threading.Thread(
            target=self.refusals.tally.flush, name="fraudhub-refusals-flush", daemon=True
        )
        flusher.start()
        flusher.join(FLUSH_TIMEOUT)
        self.metrics.close()
        if self._clean:
            self.store.dispose()
        log.info("hub stopped")
        self._done.set()
        return self._clean

    @property
    def finished_cleanly(self) -> bool:
        """False once :meth:`stop` left calls running (their threads block exit)."""
        return self._clean

    def wait(self) -> None:
        """Block until :meth:`stop` has returned (not until every handler thread ended)."""
        # Wakes up now and then so that signal handlers run in the main thread.
        while not self._done.wait(0.5):
            pass

    def reload_policy(self) -> None:
        """Reload the policy; log, never raise (SIGHUP)."""
        try:
            self.policy.reload()
        except FraudhubError as exc:
            log.error("policy reload refused, the running policy stays: %s", exc)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully, SIGHUP reloads the policy (main thread only)."""

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            threading.Thread(target=self.stop, name="fraudhub-stop").start()

        def on_reload(_signum: int, _frame: FrameType | None) -> None:
            threading.Thread(target=self.reload_policy, name="fraudhub-reload").start()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_reload)
