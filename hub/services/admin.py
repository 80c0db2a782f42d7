"""The Admin servicer and the database-backed institution registry.

Guarantees:

- Only the operator role reaches these methods (the hub's role table in
  ``hub.services.server``); every call, allowed or refused, is audited with the target
  institution id as a reason code, never a key.
- :class:`DatabaseRegistry` is the hub's
  :class:`~hub.wire.auth.InstitutionRegistry`: a disabled institution is refused
  from its next call on this replica (the cache is invalidated on change) and
  within :data:`REGISTRY_TTL` seconds on other replicas.
- :class:`DatabaseReplayGuard` is the hub's :class:`~hub.wire.auth.ReplayGuard`:
  a token id is accepted once across every replica on the database and across
  restarts (an in-memory cache forgets on restart and is per replica).
- A policy reload that does not validate is refused (FAILED_PRECONDITION with
  file, line and field) and the running policy stays.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from fraudhub.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from client_sdk.core.errors import (
    AuthenticationError,
    ConfigurationError,
    FraudhubError,
    InvalidRequest,
    Unavailable,
)
from client_sdk.core.vocabulary import Principal
from hub.audit.events import AuditEvent, request_digest
from hub.services.config import LivePolicy
from hub.services.exchange import audit_outcome
from hub.storage import auditlog, store
from hub.storage.models import Institution, utcnow
from hub.wire.auth import LEEWAY, ROLES, current_principal
from hub.wire.auth import Institution as RegisteredInstitution

__all__ = [
    "LOCAL_OPERATOR",
    "REGISTRY_TTL",
    "AdminService",
    "DatabaseRegistry",
    "DatabaseReplayGuard",
    "local_operator_event",
    "to_registered",
]

log = logging.getLogger(__name__)

# Seconds another replica may keep serving a disabled institution.
REGISTRY_TTL = 2.0
# Seconds between sweeps of expired token ids.
SEEN_TOKEN_SWEEP = 60.0
MAX_REASON = 256


#: The audit log's name for registry changes made on the hub's machine, not over RPC.
LOCAL_OPERATOR = "local-operator"


def local_operator_event(action: str, target: str, via: str) -> AuditEvent:
    """The audit event of a registry change made locally (CLI, demo), not over RPC."""
    return AuditEvent(
        time=utcnow(),
        institution=LOCAL_OPERATOR,
        role="operator",
        action=action,
        purpose="administration",
        legal_basis="",
        case_ref_digest="",
        kinds=(),
        item_count=1,
        match_count=0,
        outcome="ok",
        reasons=(f"TARGET:{target}", f"VIA:{via}"),
        policy_version="",
        request_digest="",
    )


def to_registered(row: Institution) -> RegisteredInstitution:
    """The auth layer's view of a registry row (validates id, role and key)."""
    return RegisteredInstitution(
        id=row.id,
        name=row.display_name,
        role=row.role,
        public_key=bytes(row.public_key),
        disabled=not row.enabled,
    )


class DatabaseRegistry:
    """Institutions from the hub's database, cached for :data:`REGISTRY_TTL` seconds."""

    def __init__(self, hub_store: store.Store, *, ttl: float = REGISTRY_TTL) -> None:
        self._store = hub_store
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, RegisteredInstitution | None]] = {}

    def lookup(self, institution_id: str) -> RegisteredInstitution | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(institution_id)
            if cached is not None and now - cached[0] < self._ttl:
                return cached[1]
        with self._store.session() as session:
            row = session.get(Institution, institution_id)
            found = to_registered(row) if row is not None else None
        with self._lock:
            self._cache[institution_id] = (now, found)
        return found

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()


class DatabaseReplayGuard:
    """Token ids in the hub's database (``seen_token``), swept once they expire.

    Costs one small write transaction per call that carries a token (a bulk
    stream carries one).  A database failure refuses the call as Unavailable
    (retryable) rather than skip the check.
    """

    def __init__(
        self,
        hub_store: store.Store,
        *,
        sweep_every: float = SEEN_TOKEN_SWEEP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = hub_store
        self._sweep_every = sweep_every
        self._clock = clock
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def check_and_store(self, issuer: str, jti: str, expires_at: float) -> None:
        now_s = self._clock()
        now = datetime.fromtimestamp(now_s, UTC)
        forget_after = datetime.fromtimestamp(expires_at + LEEWAY, UTC)
        with self._lock:
            sweep = now_s >= self._next_sweep
            if sweep:
                # Jittered, so replicas started together do not sweep in step.
                self._next_sweep = now_s + self._sweep_every * random.uniform(0.5, 1.5)  # noqa: S311
        if sweep:
            self._sweep(now)
        try:
            with self._store.session() as session:
                fresh = store.remember_token(session, issuer, jti, forget_after, now)
                session.commit()
        except SQLAlchemyError as exc:
            # The exception text can hold SQL parameters (the token id): type only.
            log.error("replay check failed: %s", type(exc).__name__)
            raise Unavailable("cannot check the token against replays; retry") from None
        if not fresh:
            raise AuthenticationError("token already used (replayed jti)")

    def _sweep(self, now: datetime) -> None:
        """Delete expired ids in a transaction of its own: best effort, never the
        reason a valid call fails (the next sweep catches up)."""
        try:
            with self._store.session() as session:
                store.forget_expired_tokens(session, now)
                session.commit()
        except SQLAlchemyError as exc:
            log.warning("sweeping expired token ids failed: %s", type(exc).__name__)


def _institution_message(row: Institution) -> admin_pb2.Institution:
    created = Timestamp()
    created.FromDatetime(row.created_at)
    return admin_pb2.Institution(
        id=row.id,
        name=row.display_name,
        role=common_pb2.Role.Value(row.role.upper()),
        public_key=bytes(row.public_key),
        disabled=not row.enabled,
        created_at=created,
    )


class AdminService(admin_pb2_grpc.AdminServicer):
    """Institution registry and policy reload (see the module docstring)."""

    def __init__(
        self,
        hub_store: store.Store,
        policy: LivePolicy,
        registry: DatabaseRegistry,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = hub_store
        self._policy = policy
        self._registry = registry
        self._clock = clock

    def _audited(
        self,
        action: str,
        request: Message,
        target: str,
        work: Callable[[Session, datetime], Message],
    ) -> Message:
        caller = current_principal()
        principal = Principal(caller.institution, caller.role)
        now = self._clock()
        reasons = (f"TARGET:{target}",) if target else ()

        def event(outcome: str, extra: tuple[str, ...] = ()) -> AuditEvent:
            return AuditEvent(
                time=now,
                institution=principal.institution,
                role=principal.role,
                action=action,
                purpose="administration",
                legal_basis="",
                case_ref_digest="",
                kinds=(),
                item_count=1,
                match_count=0,
                outcome=outcome,
                reasons=reasons + extra,
                policy_version=self._policy.current.version,
                request_digest=request_digest(request.SerializeToString(deterministic=True)),
            )

        try:
            with self._store.session() as session:
                response = work(session, now)
                auditlog.append(session, event("ok"))
                session.commit()
        except (FraudhubError, SQLAlchemyError) as exc:
            outcome = audit_outcome(exc)
            with self._store.session() as session:
                auditlog.append(session, event(outcome))
                session.commit()
            if isinstance(exc, SQLAlchemyError):
                raise store.StorageError("the hub's database failed") from None
            raise
        return response

    def AddInstitution(  # noqa: N802 - the name is the RPC's
        self, request: admin_pb2.AddInstitutionRequest, context: grpc.ServicerContext
    ) -> admin_pb2.Institution:
        given = request.institution
        role = (
            common_pb2.Role.Name(given.role).lower()
            if given.role in common_pb2.Role.values()
            else ""
        )

        def work(session: Session, now: datetime) -> Message:
            if role not in ROLES:
                raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
            if len(given.name) > 200:
                raise InvalidRequest("name is longer than 200 characters")
            row = Institution(
                id=given.id,
                role=role,
                public_key=given.public_key,
                display_name=given.name,
                created_at=now,
            )
            try:
                to_registered(row)
            except ConfigurationError as exc:
                raise InvalidRequest(str(exc)) from None
            store.add_institution(session, row)
            return _institution_message(row)

        target = given.id if _is_identifier(given.id) else ""
        result = self._audited("Admin.AddInstitution", request, target, work)
        self._registry.invalidate()
        assert isinstance(result, admin_pb2.Institution)
        return result

    def ListInstitutions(  # noqa: N802 - the name is the RPC's
        self, request: admin_pb2.ListInstitutionsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListInstitutionsResponse:
        def work(session: Session, now: datetime) -> Message:
            rows = store.list_institutions(session, include_disabled=request.include_disabled)
            return admin_pb2.ListInstitutionsResponse(
                institutions=[_institution_message(r) for r in rows]
            )

        result = self._audited("Admin.ListInstitutions", request, "", work)
        assert isinstance(result, admin_pb2.ListInstitutionsResponse)
        return result

    def DisableInstitution(  # noqa: N802 - the name is the RPC's
        self, request: admin_pb2.DisableInstitutionRequest, context: grpc.ServicerContext
    ) -> admin_pb2.Institution:
        def work(session: Session, now: datetime) -> Message:
            if len(request.reason) > MAX_REASON:
                raise InvalidRequest(f"reason is longer than {MAX_REASON} characters")
            return _institution_message(store.disable_institution(session, request.id, now))

        target = request.id if _is_identifier(request.id) else ""
        result = self._audited("Admin.DisableInstitution", request, target, work)
        self._registry.invalidate()
        assert isinstance(result, admin_pb2.Institution)
        return result

    def ReloadPolicy(  # noqa: N802 - the name is the RPC's
        self, request: admin_pb2.ReloadPolicyRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ReloadPolicyResponse:
        def work(session: Session, now: datetime) -> Message:
            version, previous = self._policy.reload()
            return admin_pb2.ReloadPolicyResponse(policy_version=version, previous_version=previous)

        result = self._audited("Admin.ReloadPolicy", request, "", work)
        assert isinstance(result, admin_pb2.ReloadPolicyResponse)
        return result


def _is_identifier(value: str) -> bool:
    try:
        RegisteredInstitution(id=value, name="", role="bank", public_key=bytes(32))
    except ConfigurationError:
        return False
    return True
