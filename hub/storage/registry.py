"""The hub's institution registry and token-id replay guard, in its database.

Guarantees:

- :class:`DatabaseRegistry` is the hub's
  :class:`~hub.wire.auth.InstitutionRegistry`: a disabled institution is refused
  from its next call on this replica (the cache is invalidated on change) and
  within :data:`REGISTRY_TTL` seconds on other replicas.
- :class:`DatabaseReplayGuard` is the hub's :class:`~hub.wire.auth.ReplayGuard`:
  a token id is accepted once across every replica on the database and across
  restarts (an in-memory cache forgets on restart and is per replica).  A
  database failure refuses the call as Unavailable (retryable), never skips
  the check; the one exception is a read-only call (``hub.wire.auth.read_only_call``,
  the regulator's Audit methods) on a full disk: its id is checked against
  the database (a read) and remembered in memory by this replica.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from client_sdk.core.errors import AuthenticationError, StorageError, Unavailable
from hub.storage.models import Institution
from hub.storage.store import Store, forget_expired_tokens, remember_token, token_remembered
from hub.wire.auth import LEEWAY, ReplayCache, read_only_call
from hub.wire.auth import Institution as RegisteredInstitution

__all__ = [
    "REGISTRY_TTL",
    "SEEN_TOKEN_SWEEP",
    "DatabaseRegistry",
    "DatabaseReplayGuard",
    "to_registered",
]

log = logging.getLogger(__name__)

# Seconds another replica may keep serving a disabled institution.
REGISTRY_TTL = 2.0
# Seconds between sweeps of expired token ids.
SEEN_TOKEN_SWEEP = 60.0


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

    def __init__(self, hub_store: Store, *, ttl: float = REGISTRY_TTL) -> None:
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
        hub_store: Store,
        *,
        sweep_every: float = SEEN_TOKEN_SWEEP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = hub_store
        self._sweep_every = sweep_every
        self._clock = clock
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        # Read-only calls on a full disk (see _remember_in_memory).
        self._fallback = ReplayCache(clock=clock)

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
                fresh = remember_token(session, issuer, jti, forget_after, now)
                session.commit()
        except StorageError as exc:
            # The store logged the failure by type and cause (never the token id).
            log.error("replay check failed (%s)", exc.cause)
            if exc.cause != "disk full" or not read_only_call():
                raise Unavailable(
                    f"cannot check the token against replays ({exc.cause}); retry"
                ) from None
            fresh = self._remember_in_memory(issuer, jti, expires_at, now)
        if not fresh:
            raise AuthenticationError("token already used (replayed jti)")

    def _remember_in_memory(self, issuer: str, jti: str, expires_at: float, now: datetime) -> bool:
        """The replay check of a read-only call while the database refuses writes.

        The database still answers reads, so a token id recorded before the
        disk filled is still refused; a new one is remembered by this
        replica, in memory (ADR 0003, "Read-only calls on a full disk").
        Raises Unavailable if the database cannot even be read.
        """
        try:
            with self._store.session() as session:
                if token_remembered(session, issuer, jti, now):
                    return False
        except StorageError as exc:
            raise Unavailable(
                f"cannot check the token against replays ({exc.cause}); retry"
            ) from None
        try:
            self._fallback.check_and_store(issuer, jti, expires_at)
        except AuthenticationError:
            return False
        log.warning("token id of a read-only call kept in memory: the database is full")
        return True

    def _sweep(self, now: datetime) -> None:
        """Delete expired ids in a transaction of its own: best effort, never the
        reason a valid call fails (the next sweep catches up)."""
        try:
            with self._store.session() as session:
                forget_expired_tokens(session, now)
                session.commit()
        except StorageError as exc:
            log.warning("sweeping expired token ids failed (%s)", exc.cause)
