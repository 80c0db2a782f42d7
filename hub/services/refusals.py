"""Authentication failures, counted per peer and window: bounded audit growth.

A caller without a valid token is not an institution: every one of its calls
is refused before a servicer runs, and auditing each of them would let anyone
who can reach the port grow the permanent audit log without bound (500 bad
calls in 0.6 s were 500 entries).  :class:`RefusalTally` guarantees:

- Per peer (the caller's network address without its port) and per window of
  :data:`WINDOW_SECONDS`, the authentication failures become ONE audit event
  ``Hub.AuthenticationFailures`` with outcome ``UNAUTHENTICATED``,
  ``item_count`` = the number of refused calls and reason codes naming the
  refusal class, the peer (``PEER:`` and 16 hex digits of a SHA-256 of the
  address: a stable key the operator can match with the hub's warning line,
  not the address itself) and each method called (``METHOD:Exchange.Match``).
- A window's events are appended when the window has passed (the hub's
  flusher thread, :meth:`run_until`) and when the hub stops (:meth:`flush`);
  a crash loses at most one window of counts, never an institution's call.
- At most :data:`MAX_PEERS` peers are tracked per window; further peers share
  one ``PEER:other`` event, so memory and events per window are bounded.
- Appending never raises: a failure is logged (``audit_alone``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.audit.anomalies import AUTHENTICATION_FAILURES
from hub.audit.events import AuditEvent
from hub.services.audited import audit_alone
from hub.storage.models import utcnow
from hub.storage.store import Store

__all__ = [
    "ACTION",
    "MAX_PEERS",
    "OTHER_PEERS",
    "WINDOW_SECONDS",
    "RefusalTally",
    "peer_key",
]

#: The audit action of one window's authentication failures from one peer.
ACTION = AUTHENTICATION_FAILURES
WINDOW_SECONDS = 60.0
MAX_PEERS = 1024
OTHER_PEERS = "PEER:other"
UNAUTHENTICATED_CALLER = "unauthenticated"

log = logging.getLogger(__name__)


def peer_key(peer: str) -> str:
    """The reason code naming a peer: ``PEER:`` + 16 hex digits of SHA-256(address).

    ``peer`` is gRPC's ``ipv4:1.2.3.4:5678`` / ``ipv6:[::1]:5678``; the port
    changes with every connection and is dropped.
    """
    host = peer.rpartition(":")[0] if peer.count(":") >= 2 else peer
    return "PEER:" + hashlib.sha256(host.encode("utf-8")).hexdigest()[:16]


@dataclass
class _Count:
    calls: int = 0
    methods: set[str] = field(default_factory=set)
    errors: set[str] = field(default_factory=set)


class RefusalTally:
    """Counts authentication failures per peer; appends one event per peer and window."""

    def __init__(
        self,
        store: Store,
        policy_version: Callable[[], str],
        *,
        window: float = WINDOW_SECONDS,
        max_peers: int = MAX_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._policy_version = policy_version
        self._window = window
        self._max_peers = max_peers
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, _Count] = {}
        self._window_ends = clock() + window

    def record(self, peer: str, action: str, error: str) -> None:
        """Count one refused call of ``action`` from ``peer`` (appends a due window first)."""
        key = peer_key(peer)
        with self._lock:
            due = self._take_if_due()
            if key not in self._counts and len(self._counts) >= self._max_peers:
                key = OTHER_PEERS
            count = self._counts.get(key)
            if count is None:
                count = self._counts[key] = _Count()
                # Once per peer and window: the operator's link from key to address.
                log.warning("authentication failures from %s (%s)", peer, key)
            count.calls += 1
            count.methods.add(action)
            count.errors.add(error)
        self._append(due)

    def flush(self) -> int:
        """Append the current window's events now; return how many."""
        with self._lock:
            taken, self._counts = self._counts, {}
            self._window_ends = self._clock() + self._window
        return self._append(taken)

    def flush_if_due(self) -> int:
        with self._lock:
            due = self._take_if_due()
        return self._append(due)

    def run_until(self, stopped: Callable[[float], bool]) -> None:
        """Append each window when it has passed, until ``stopped(timeout)`` is true."""
        while not stopped(min(self._window, 5.0)):
            self.flush_if_due()

    def _take_if_due(self) -> dict[str, _Count]:
        # Called with the lock held.
        if self._clock() < self._window_ends:
            return {}
        taken, self._counts = self._counts, {}
        self._window_ends = self._clock() + self._window
        return taken

    def _append(self, counts: dict[str, _Count]) -> int:
        now = utcnow()
        for key, count in sorted(counts.items()):
            reasons = (
                *sorted(count.errors),
                key,
                *(f"METHOD:{m}" for m in sorted(count.methods)),
            )
            event = AuditEvent.of(
                time=now,
                institution=UNAUTHENTICATED_CALLER,
                role="none",
                action=ACTION,
                outcome="UNAUTHENTICATED",
                item_count=count.calls,
                reasons=reasons,
                policy_version=self._policy_version(),
            )
            audit_alone(self._store, event)
        return len(counts)
