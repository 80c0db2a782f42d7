"""The audited transaction: every service's one way to do work and audit it.

Guarantees (ADR 0007):

- :func:`run_audited` runs the work and appends its audit event in ONE
  transaction: the effect and its event commit together or not at all.  If
  the append (or the commit) fails, the effect is rolled back and the caller
  gets the :class:`~hub.storage.store.StorageError` (cause named, no values):
  nothing the hub did goes unrecorded.
- A failed call (any :class:`~client_sdk.core.errors.FraudhubError`, database
  errors included: the store maps them) is audited in a fresh transaction
  after the rollback, then the ORIGINAL error is raised.  If that failure
  event cannot be written either, :func:`audit_alone` logs the action, the
  outcome and the error's class (never a value) and the original error still
  reaches the caller.
- :func:`audit_outcome` is the one outcome vocabulary of failed calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlmodel import Session

from client_sdk.core.errors import (
    CallerError,
    FraudhubError,
    InvalidRequest,
    PermissionDenied,
    StorageError,
)
from hub.audit.events import AuditEvent
from hub.storage import auditlog
from hub.storage.store import Store
from hub.wire.metrics import note_call

__all__ = ["audit_alone", "audit_outcome", "run_audited"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def audit_outcome(exc: BaseException) -> str:
    """The audit event outcome of a failed call (interfaces.md vocabulary).

    ``denied`` for a role or policy refusal, ``invalid`` for a malformed
    request, the gRPC status name for other caller errors (quota,
    authentication...), ``error`` for the hub's own failures.
    """
    if isinstance(exc, PermissionDenied):
        return "denied"
    if isinstance(exc, InvalidRequest):
        return "invalid"
    if isinstance(exc, CallerError):
        return exc.grpc_status
    return "error"


def audit_alone(store: Store, event: AuditEvent) -> None:
    """Append ``event`` in a transaction of its own; log, never raise, if that fails.

    For events of calls that failed or were refused: the call's own error
    stands, and the operator must see that its audit failed too.
    """
    note_call(event.institution, items=event.item_count)
    try:
        with store.session() as session:
            auditlog.append(session, event)
            session.commit()
    except FraudhubError as exc:
        cause = f" ({exc.cause})" if isinstance(exc, StorageError) else ""
        log.error(
            "could not audit %s (outcome %s): %s%s",
            event.action,
            event.outcome,
            type(exc).__name__,
            cause,
        )


def run_audited(
    store: Store,
    work: Callable[[Session], _T],
    event: Callable[[_T], AuditEvent],
    failure_event: Callable[[FraudhubError], AuditEvent],
) -> _T:
    """Run ``work`` and append ``event(result)`` in one transaction; return the result.

    On a :class:`FraudhubError` (from the work, the append or the commit) the
    transaction is rolled back, ``failure_event(error)`` is appended by
    :func:`audit_alone`, and the error is re-raised.  Other exceptions are
    bugs: they propagate unaudited (the error interceptor logs them).
    """
    try:
        with store.session() as session:
            result = work(session)
            decided = event(result)
            auditlog.append(session, decided)
            session.commit()
        note_call(decided.institution, items=decided.item_count, matches=decided.match_count)
    except FraudhubError as exc:
        audit_alone(store, failure_event(exc))
        raise
    return result
