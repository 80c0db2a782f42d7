"""The key holder server: one share of the threshold OPRF key behind gRPC.

A thin adapter around ``client_sdk.core.threshold.holder_evaluate``.  Guarantees:

- Every KeyHolder call is authenticated (``hub.wire.auth``); BANK and CARRIER
  institutions may evaluate, every registered role may read the key info.
  Health checking and reflection are served without a token.
- A batch holds 1..:data:`MAX_BATCH` blinded elements of the served epoch;
  every malformed element is reported by position (google.rpc.BadRequest,
  field ``blinded_elements[i]``) and nothing is evaluated.
- Only institutions this holder's own operator admitted may call
  (``hub.keyholder.admission.HolderRegistry``; the hub's registry is never
  read).  Each may evaluate at most its own daily quota of elements per UTC
  day AND its own quota per rolling 30 UTC days (today and the 29 before),
  both set per institution by the holder's operator (defaults
  :data:`DEFAULT_DAILY_QUOTA`, :data:`DEFAULT_MONTHLY_QUOTA`).  The counts
  live per day in SQLite in the holder's state directory, so a restart resets
  neither; they are charged before evaluating, and a spent quota answers
  RESOURCE_EXHAUSTED naming which one.  (Evaluation counts are what a key holder is
  allowed to learn, DESIGN.md "Parties".)
- A token id is accepted once while its token lives, across restarts
  (:class:`SeenTokenFile`, in the state directory).
- Elements, evaluations and proofs are never logged: only the institution
  and the element count.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from fraudhub.v1 import keyholder_pb2, keyholder_pb2_grpc, witness_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client_sdk.core import oprf
from client_sdk.core.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidElementError,
    InvalidItems,
    InvalidRequest,
    ItemError,
    QuotaExhausted,
)
from client_sdk.core.threshold import KeyShare, PublicKeyInfo, holder_evaluate
from hub.infra.sqlitefile import immediate, open_state_file
from hub.keyholder.admission import (
    DEFAULT_DAILY_QUOTA,
    DEFAULT_MONTHLY_QUOTA,
    QUOTA_WINDOW_DAYS,
    QuotaLimits,
)
from hub.keyholder.witness import METHOD_ROLES as WITNESS_ROLES
from hub.keyholder.witness import SERVICE_NAME as WITNESS_SERVICE
from hub.keyholder.witness import WitnessServicer
from hub.wire.auth import LEEWAY, ROLES, AuthInterceptor, TokenVerifier, current_principal
from hub.wire.decode import DecodeInterceptor, message_limits, receive_limit
from hub.wire.metrics import RpcInterceptor, ServerMetrics, note_call
from hub.wire.rpc import InFlight
from hub.wire.status import ErrorInterceptor
from hub.wire.tls import SERVER_OPTIONS, bind

__all__ = [
    "DEFAULT_DAILY_QUOTA",
    "DEFAULT_MONTHLY_QUOTA",
    "MAX_BATCH",
    "MESSAGE_LIMITS",
    "METHOD_ROLES",
    "SERVICE_NAME",
    "STOP_MARGIN",
    "KeyHolderServer",
    "KeyHolderServicer",
    "QuotaLedger",
    "SeenTokenFile",
]

log = logging.getLogger(__name__)

#: Largest batch of one BlindEvaluate (keyholder.proto).
MAX_BATCH = 4096
#: Seconds :meth:`KeyHolderServer.stop` waits past the grace period for cancelled calls.
STOP_MARGIN = 2.0
SERVICE_NAME: str = keyholder_pb2.DESCRIPTOR.services_by_name["KeyHolder"].full_name
ELEMENT_BYTES = 32
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"/{SERVICE_NAME}/GetKeyInfo": frozenset(ROLES),
    f"/{SERVICE_NAME}/BlindEvaluate": frozenset({"bank", "carrier"}),
}
#: Request bytes per message: a full batch of 32-byte elements with its
#: protobuf framing, and a little room; GetKeyInfo takes the default.
_LIMIT_OVERRIDES = {f"/{SERVICE_NAME}/BlindEvaluate": 64 * 1024 + MAX_BATCH * (ELEMENT_BYTES + 4)}
MESSAGE_LIMITS: dict[str, int] = message_limits(METHOD_ROLES, _LIMIT_OVERRIDES)
_SEEN_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_token (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    forget_after REAL NOT NULL,
    PRIMARY KEY (issuer, jti)
)
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    institution TEXT NOT NULL,
    day TEXT NOT NULL,
    elements INTEGER NOT NULL,
    PRIMARY KEY (institution, day)
)
"""


def _utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def _window_start(day: str) -> str:
    """The first UTC day (ISO) of the rolling quota window that ends on ``day``."""
    first = dt.date.fromisoformat(day) - dt.timedelta(days=QUOTA_WINDOW_DAYS - 1)
    return first.isoformat()


class QuotaLedger:
    """Per-institution, per-day evaluation counts in a small SQLite file.

    The limits of an institution are ``limits(institution)`` (the holder's own
    registry, per institution) or, without ``limits``, ``daily_quota`` and
    ``monthly_quota`` for all.  A charge must fit both today's count and the
    sum over the rolling window of :data:`QUOTA_WINDOW_DAYS` UTC days ending
    today.  Thread-safe within a process (one lock) and across processes
    sharing the file (``BEGIN IMMEDIATE``).  Raises ConfigurationError if the
    file cannot be opened.
    """

    def __init__(
        self,
        path: Path,
        daily_quota: int,
        *,
        monthly_quota: int = DEFAULT_MONTHLY_QUOTA,
        limits: Callable[[str], QuotaLimits] | None = None,
        today: Callable[[], str] = _utc_day,
    ) -> None:
        if daily_quota < 1 or monthly_quota < 1:
            raise ConfigurationError("daily and 30-day quotas must be at least 1 element")
        self.daily_quota = daily_quota
        self.monthly_quota = monthly_quota
        self._limits = limits
        self._today = today
        self._lock = threading.Lock()
        self._db = open_state_file(path, _SCHEMA, "quota")

    def used(self, institution: str) -> int:
        """Elements ``institution`` evaluated today."""
        with self._lock:
            row = self._db.execute(
                "SELECT elements FROM evaluations WHERE institution = ? AND day = ?",
                (institution, self._today()),
            ).fetchone()
        return int(row[0]) if row else 0

    def used_in_window(self, institution: str) -> int:
        """Elements ``institution`` evaluated in the rolling 30-day window ending today."""
        day = self._today()
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(elements), 0) FROM evaluations "
                "WHERE institution = ? AND day >= ? AND day <= ?",
                (institution, _window_start(day), day),
            ).fetchone()
        return int(row[0])

    def charge(self, institution: str, elements: int) -> None:
        """Count ``elements`` against today's and the rolling 30-day quota; raise
        QuotaExhausted (naming which) if either would overflow."""
        day = self._today()
        if self._limits is not None:
            daily, monthly = self._limits(institution)
        else:
            daily, monthly = self.daily_quota, self.monthly_quota
        start = _window_start(day)
        with self._lock, immediate(self._db) as db:
            row = db.execute(
                "SELECT COALESCE(SUM(CASE WHEN day = ? THEN elements END), 0), "
                "COALESCE(SUM(elements), 0) FROM evaluations "
                "WHERE institution = ? AND day >= ? AND day <= ?",
                (day, institution, start, day),
            ).fetchone()
            used, window = int(row[0]), int(row[1])
            if used + elements > daily:
                raise QuotaExhausted(
                    f"daily evaluation quota spent ({used} of {daily} elements "
                    f"used, {elements} asked); it resets at 00:00 UTC"
                )
            if window + elements > monthly:
                raise QuotaExhausted(
                    f"30-day evaluation quota spent ({window} of {monthly} elements used "
                    f"from {start} to {day}, {elements} asked); each UTC day frees what "
                    f"was used {QUOTA_WINDOW_DAYS} days before it"
                )
            db.execute(
                "INSERT INTO evaluations (institution, day, elements) VALUES (?, ?, ?) "
                "ON CONFLICT (institution, day) DO UPDATE "
                "SET elements = elements + excluded.elements",
                (institution, day, elements),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SeenTokenFile:
    """The key holder's :class:`~hub.wire.auth.ReplayGuard`: JWT ids in a SQLite file in
    its state directory, so a restart does not reopen a token's lifetime to replay.

    One small write per call; expired ids are deleted on the way, at most once a
    minute.  Raises ConfigurationError if the file cannot be opened.
    """

    def __init__(
        self, path: Path, *, clock: Callable[[], float] = time.time, sweep_every: float = 60.0
    ) -> None:
        self._clock = clock
        self._sweep_every = sweep_every
        self._next_sweep = 0.0
        self._lock = threading.Lock()
        self._db = open_state_file(path, _SEEN_SCHEMA, "token")

    def check_and_store(self, issuer: str, jti: str, expires_at: float) -> None:
        now = self._clock()
        with self._lock, immediate(self._db) as db:
            if now >= self._next_sweep:
                db.execute("DELETE FROM seen_token WHERE forget_after < ?", (now,))
                self._next_sweep = now + self._sweep_every
            cursor = db.execute(
                "INSERT INTO seen_token (issuer, jti, forget_after) VALUES (?, ?, ?) "
                "ON CONFLICT (issuer, jti) DO UPDATE SET forget_after = excluded.forget_after "
                "WHERE seen_token.forget_after < ?",
                (issuer, jti, expires_at + LEEWAY, now),
            )
            fresh = cursor.rowcount == 1
        if not fresh:
            raise AuthenticationError("token already used (replayed jti)")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _check_elements(elements: list[bytes]) -> None:
    """Raise InvalidItems naming every malformed element (none is evaluated)."""
    bad: list[ItemError] = []
    for position, element in enumerate(elements):
        reason = None
        if len(element) != ELEMENT_BYTES:
            reason = f"must be {ELEMENT_BYTES} bytes, got {len(element)}"
        else:
            try:
                oprf.deserialize_element(element)
            except InvalidElementError as exc:
                reason = str(exc)
        if reason is not None:
            bad.append(ItemError(position, "element", reason, "blinded_elements"))
    if bad:
        raise InvalidItems(f"{len(bad)} malformed blinded element(s)", tuple(bad))


class KeyHolderServicer(keyholder_pb2_grpc.KeyHolderServicer):
    """Serves GetKeyInfo and BlindEvaluate for one key share."""

    def __init__(self, share: KeyShare, public: PublicKeyInfo, quota: QuotaLedger) -> None:
        if public.public_shares.get(share.index) != share.public_share or (
            public.epoch != share.epoch
        ):
            raise ConfigurationError(f"share {share.index} does not belong to the public key file")
        self._share = share
        self._public = public
        self._quota = quota

    def GetKeyInfo(  # noqa: N802 - the name is the RPC's
        self, request: keyholder_pb2.GetKeyInfoRequest, context: grpc.ServicerContext
    ) -> keyholder_pb2.KeyInfo:
        return keyholder_pb2.KeyInfo(
            suite=oprf.SUITE,
            epoch=self._share.epoch,
            threshold=self._share.threshold,
            holders=self._share.holders,
            index=self._share.index,
            public_share=self._share.public_share,
            group_public_key=self._public.group_public_key,
            max_batch=MAX_BATCH,
        )

    def BlindEvaluate(  # noqa: N802 - the name is the RPC's
        self, request: keyholder_pb2.BlindEvaluateRequest, context: grpc.ServicerContext
    ) -> keyholder_pb2.BlindEvaluateResponse:
        principal = current_principal()
        if request.epoch != self._share.epoch:
            raise InvalidRequest(
                f"key epoch {request.epoch} is not served here (epoch {self._share.epoch})"
            )
        elements = list(request.blinded_elements)
        if not 1 <= len(elements) <= MAX_BATCH:
            raise InvalidRequest(f"a batch holds 1..{MAX_BATCH} blinded elements")
        _check_elements(elements)
        self._quota.charge(principal.institution, len(elements))
        note_call(principal.institution, items=len(elements), quota=len(elements))
        response = holder_evaluate(self._share, elements)
        log.info("evaluated %d element(s) for %s", len(elements), principal.institution)
        return keyholder_pb2.BlindEvaluateResponse(
            index=response.index,
            epoch=response.epoch,
            evaluated_elements=response.evaluated_elements,
            proof=response.proof,
        )


@dataclass
class KeyHolderServer:
    """A running (or ready) key holder gRPC server with health and reflection."""

    server: grpc.Server
    health: health.HealthServicer
    port: int
    in_flight: InFlight = field(default_factory=InFlight)

    @classmethod
    def create(
        cls,
        servicer: KeyHolderServicer,
        verifier: TokenVerifier,
        address: str,
        credentials: grpc.ServerCredentials | None,
        *,
        insecure: bool = False,
        max_workers: int = 8,
        witness: WitnessServicer | None = None,
        metrics: ServerMetrics | None = None,
    ) -> KeyHolderServer:
        """Build and bind (not start) a server; raises ConfigurationError.

        ``witness`` also serves the audit log's Witness service (ADR 0010).
        ``metrics`` counts and logs every call (``hub.wire.metrics``).
        """
        in_flight = InFlight()
        roles = dict(METHOD_ROLES)
        services = [SERVICE_NAME]
        if witness is not None:
            roles.update(WITNESS_ROLES)
            services.append(WITNESS_SERVICE)
        limits = message_limits(roles, _LIMIT_OVERRIDES)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="keyholder"),
            interceptors=[
                RpcInterceptor(metrics or ServerMetrics("keyholder")),
                in_flight,
                ErrorInterceptor(),
                AuthInterceptor(verifier, roles),
                DecodeInterceptor(limits),
            ],
            options=[
                ("grpc.max_receive_message_length", receive_limit(limits)),
                *SERVER_OPTIONS,
            ],
        )
        keyholder_pb2_grpc.add_KeyHolderServicer_to_server(servicer, server)
        if witness is not None:
            witness_pb2_grpc.add_WitnessServicer_to_server(witness, server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        port = bind(server, address, credentials, insecure=insecure)
        return cls(server, health_servicer, port, in_flight)

    def start(self) -> None:
        self.server.start()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = None) -> bool:
        """Report NOT_SERVING, then stop, letting calls finish for ``grace`` seconds.

        Returns within ``grace`` + :data:`STOP_MARGIN` seconds whatever the
        calls do (gRPC cancels them after the grace period): True if every
        call finished, False if a handler was left running (the process
        should then exit without joining its thread).
        """
        self.health.enter_graceful_shutdown()
        budget = (grace or 0.0) + STOP_MARGIN
        deadline = time.monotonic() + budget
        finished = self.server.stop(grace).wait(budget) and self.in_flight.wait_idle(
            max(0.0, deadline - time.monotonic())
        )
        if not finished:
            log.error("calls still running %.1f s after the grace period", STOP_MARGIN)
        return finished
