"""The Admin servicer and the registry changes an operator makes on the hub's machine.

Guarantees:

- Only the operator role reaches these methods (the hub's role table in
  ``hub.services.server``); every call, allowed or refused, is audited with the target
  institution id as a reason code, never a key, through the one audited
  transaction (:mod:`hub.services.audited`, ADR 0007).
- A registry change made locally (``fraudhub institution add|disable|enable``, the
  local deployment) is audited as done by :data:`LOCAL_OPERATOR` in the same
  transaction as the change (:func:`add_institution_locally`,
  :func:`disable_institution_locally`).
- A signing-key rotation (``RotateInstitutionKey``, ``fraudhub institution
  rotate-key``) keeps the institution's id, role, history and contributions;
  the new key must pass the weak-key check
  (:func:`client_sdk.wire.auth.check_public_key`); the old key is refused from
  the next call on this replica and within :data:`REGISTRY_TTL` seconds on the
  others (no overlap: a JWT signed by the old key fails verification).  Key
  holders keep their own registry: re-export it to them
  (``fraudhub institution export``).  The audit event names the institution,
  never a key.
- A policy reload that does not validate is refused (FAILED_PRECONDITION with
  file, line and field) and the running policy stays.

The registry and replay guard the auth layer reads live in
:mod:`hub.storage.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import grpc
from fraudhub.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from google.protobuf.message import Message
from sqlmodel import Session

from client_sdk.core.errors import ConfigurationError, InvalidRequest
from client_sdk.wire.auth import check_public_key
from client_sdk.wire.codecs import timestamp
from hub.audit.events import AuditEvent, request_digest
from hub.services.audited import audit_outcome, run_audited
from hub.services.config import LivePolicy
from hub.storage import store
from hub.storage.models import Institution, utcnow
from hub.storage.registry import (
    DatabaseRegistry,
    to_registered,
)
from hub.wire.auth import ROLES, current_principal, is_institution_id

__all__ = [
    "LOCAL_OPERATOR",
    "AdminService",
    "add_institution_locally",
    "disable_institution_locally",
    "enable_institution_locally",
    "local_operator_event",
    "rotate_institution_key_locally",
]

MAX_REASON = 256

#: The audit log's name for registry changes made on the hub's machine, not over RPC.
LOCAL_OPERATOR = "local-operator"


def local_operator_event(action: str, target: str, via: str, outcome: str = "ok") -> AuditEvent:
    """The audit event of a registry change made locally (CLI, demo), not over RPC."""
    return AuditEvent.administration(
        time=utcnow(),
        institution=LOCAL_OPERATOR,
        action=action,
        outcome=outcome,
        # An id that is not an identifier is never written (it could be anything).
        reasons=((f"TARGET:{target}",) if target else ()) + (f"VIA:{via}",),
    )


def _locally(
    hub_store: store.Store,
    action: str,
    target: str,
    via: str,
    work: Callable[[Session], Institution],
) -> Institution:
    return run_audited(
        hub_store,
        work,
        lambda _row: local_operator_event(action, target, via),
        lambda exc: local_operator_event(action, target, via, audit_outcome(exc)),
    )


def add_institution_locally(hub_store: store.Store, row: Institution, via: str) -> Institution:
    """Register ``row`` and audit it as :data:`LOCAL_OPERATOR` (``VIA:<via>``), one transaction.

    Raises ConfigurationError for a malformed id, role or key (nothing is
    written), AlreadyExists if the id is taken, StorageError if the database
    fails; a failure is audited on its own (ADR 0007).
    """
    to_registered(row)  # validates id, role and key length before anything is written
    return _locally(
        hub_store,
        "Admin.AddInstitution",
        row.id,
        via,
        lambda session: store.add_institution(session, row),
    )


def disable_institution_locally(
    hub_store: store.Store, institution_id: str, via: str
) -> Institution:
    """Disable ``institution_id`` and audit it as :data:`LOCAL_OPERATOR`, one transaction.

    Raises NotFound if it is not registered, StorageError if the database
    fails; a failure is audited on its own (ADR 0007).
    """
    target = institution_id if _is_identifier(institution_id) else ""
    return _locally(
        hub_store,
        "Admin.DisableInstitution",
        target,
        via,
        lambda session: store.disable_institution(session, institution_id, utcnow()),
    )


def enable_institution_locally(
    hub_store: store.Store, institution_id: str, via: str
) -> Institution:
    """Enable ``institution_id`` again and audit it as :data:`LOCAL_OPERATOR`, one transaction.

    Raises NotFound if it is not registered, StorageError if the database
    fails; a failure is audited on its own (ADR 0007).
    """
    target = institution_id if _is_identifier(institution_id) else ""
    return _locally(
        hub_store,
        "Admin.EnableInstitution",
        target,
        via,
        lambda session: store.enable_institution(session, institution_id),
    )


def rotate_institution_key_locally(
    hub_store: store.Store, institution_id: str, public_key: bytes, via: str
) -> Institution:
    """Give ``institution_id`` a new signing key, audited as :data:`LOCAL_OPERATOR`.

    Raises ConfigurationError for a weak or malformed key (nothing is
    written), NotFound if it is not registered, AlreadyExists if it is its
    current key, StorageError if the database fails; a failure is audited on
    its own (ADR 0007).
    """
    check_public_key(public_key)
    target = institution_id if _is_identifier(institution_id) else ""
    return _locally(
        hub_store,
        "Admin.RotateInstitutionKey",
        target,
        via,
        lambda session: store.rotate_institution_key(session, institution_id, public_key),
    )


def _institution_message(row: Institution) -> admin_pb2.Institution:
    return admin_pb2.Institution(
        id=row.id,
        name=row.display_name,
        role=common_pb2.Role.Value(row.role.upper()),
        public_key=bytes(row.public_key),
        disabled=not row.enabled,
        created_at=timestamp(row.created_at),
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
        """Run ``work`` in the audited transaction (ADR 0007), as the calling operator."""
        caller = current_principal()
        now = self._clock()
        reasons = (f"TARGET:{target}",) if target else ()
        digest = request_digest(request.SerializeToString(deterministic=True))

        def event(outcome: str) -> AuditEvent:
            return AuditEvent.administration(
                time=now,
                institution=caller.institution,
                action=action,
                outcome=outcome,
                reasons=reasons,
                policy_version=self._policy.current.version,
                request_digest=digest,
            )

        return run_audited(
            self._store,
            lambda session: work(session, now),
            lambda _response: event("ok"),
            lambda exc: event(audit_outcome(exc)),
        )

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

    def EnableInstitution(  # noqa: N802 - the name is the RPC's
        self, request: admin_pb2.EnableInstitutionRequest, context: grpc.ServicerContext
    ) -> admin_pb2.Institution:
        def work(session: Session, now: datetime) -> Message:
            if len(request.reason) > MAX_REASON:
                raise InvalidRequest(f"reason is longer than {MAX_REASON} characters")
            return _institution_message(store.enable_institution(session, request.id))

        target = request.id if _is_identifier(request.id) else ""
        result = self._audited("Admin.EnableInstitution", request, target, work)
        self._registry.invalidate()
        assert isinstance(result, admin_pb2.Institution)
        return result

    def RotateInstitutionKey(  # noqa: N802 - the name is the RPC's
        self, request: admin_pb2.RotateInstitutionKeyRequest, context: grpc.ServicerContext
    ) -> admin_pb2.Institution:
        def work(session: Session, now: datetime) -> Message:
            try:
                check_public_key(request.public_key)
            except ConfigurationError as exc:
                raise InvalidRequest(str(exc)) from None
            row = store.rotate_institution_key(session, request.id, request.public_key)
            return _institution_message(row)

        target = request.id if _is_identifier(request.id) else ""
        result = self._audited("Admin.RotateInstitutionKey", request, target, work)
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
    return is_institution_id(value)
