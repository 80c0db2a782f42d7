"""The hub collects witness cosignatures of its audit checkpoints (ADR 0010).

For every configured witness (address, pinned witness key, JWT audience) the
:class:`CosignatureCollector` sends the checkpoint with an RFC 9162
consistency proof from the size it believes that witness last cosigned
(C2SP tlog-witness add-checkpoint).  A ``conflict`` answer names the
witness's size; the collector retries once from there.  A returned line is
stored only if it verifies under the PINNED witness key over this checkpoint.

Guarantees:

- Never raises and never blocks the hub's writes: it runs on the checkpoint
  thread (and, bounded by ``timeout``, in GetCheckpoint for the missing ones);
  witnesses are asked in parallel; a witness that is down, refuses, or answers
  garbage is logged (witness name and error type only) and skipped.  A
  checkpoint without a quorum is served with the cosignatures it has;
  regulators decide (``audit verify --witness-quorum``).
- The hub authenticates to witnesses as its OPERATOR institution
  (``witness_identity``), with a fresh short-lived JWT per call.
- Cosignatures are kept fresh (review-2, S1): regulators count a cosignature
  only if it is at most ``max_age`` old (``audit verify --max-age``, default
  one day), so a witness whose newest stored cosignature of the checkpoint is
  older than ``refresh_after`` (default half a day) is asked again for the
  same head (:meth:`CosignatureCollector.refresh`, on the checkpoint thread
  when no new checkpoint is due; witnesses re-cosign an unchanged head with a
  new timestamp); the newer line replaces the stored one.  A witness that
  failed is asked again by :meth:`refresh` after ``retry_after`` at the
  earliest, so an outage costs the checkpoint thread one timeout per minute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
from fraudhub.v1 import witness_pb2, witness_pb2_grpc

from client_sdk.core.errors import CheckpointError, ConfigurationError, FraudhubError, StorageError
from client_sdk.wire.auth import BearerAuth, InstitutionKey
from client_sdk.wire.channels import ChannelSecurity, open_channel
from client_sdk.wire.status import errors_from_status
from hub.audit.checkpoint import parse_checkpoint_body, split_note
from hub.audit.cosignature import DEFAULT_MAX_AGE, CosignatureVerifier
from hub.services.config import WitnessEndpoint, WitnessIdentity
from hub.storage import auditlog
from hub.storage.models import utcnow
from hub.storage.store import Store

__all__ = ["CosignatureCollector"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
#: Ask again for a head once the newest cosignature is this old (seconds): half
#: the regulators' default max age, so an honest hub's are always fresh enough.
DEFAULT_REFRESH_AFTER = DEFAULT_MAX_AGE / 2
#: :meth:`CosignatureCollector.refresh` asks a witness at most this often (seconds).
DEFAULT_RETRY_AFTER = 60.0


@dataclass
class _Witness:
    endpoint: WitnessEndpoint
    verifier: CosignatureVerifier
    stub: witness_pb2_grpc.WitnessStub
    channel: grpc.Channel
    # The size we believe it last cosigned; corrected by its conflict answers.
    size: int | None = None
    # When (POSIX seconds, the collector's clock) it was last asked.
    asked_at: float | None = None


class CosignatureCollector:
    """Asks the configured witnesses to cosign checkpoints; stores what verifies."""

    def __init__(
        self,
        store: Store,
        endpoints: tuple[WitnessEndpoint, ...],
        identity: WitnessIdentity,
        *,
        default_ca: Path | None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], datetime] = utcnow,
        on_error: Callable[[str], None] | None = None,
        refresh_after: float = DEFAULT_REFRESH_AFTER,
        retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        if refresh_after <= 0 or retry_after < 0:
            raise ConfigurationError("the cosignature refresh age must be > 0 seconds")
        self._store = store
        # Told the audience of a witness whose call failed (the holder-errors metric).
        self._on_error = on_error
        self._timeout = timeout
        self._clock = clock
        self._refresh_after = refresh_after
        self._retry_after = retry_after
        self._lock = threading.Lock()
        key = InstitutionKey.load(identity.institution, identity.key)
        self._witnesses: list[_Witness] = []
        for endpoint in endpoints:
            ca = endpoint.ca or default_ca
            if ca is None:
                security = ChannelSecurity(insecure=True)
            else:
                security = ChannelSecurity.from_ca_file(str(ca), endpoint.server_name)
            channel = open_channel(endpoint.address, security, BearerAuth(key, endpoint.audience))
            self._witnesses.append(
                _Witness(
                    endpoint,
                    CosignatureVerifier.from_verifier_key(endpoint.verifier_key),
                    witness_pb2_grpc.WitnessStub(channel),
                    channel,
                )
            )
        self._pool = futures.ThreadPoolExecutor(
            max_workers=max(1, len(self._witnesses)), thread_name_prefix="fraudhub-witness"
        )

    @property
    def witness_keys(self) -> list[str]:
        return [w.endpoint.verifier_key for w in self._witnesses]

    def collect(self, note: str) -> int:
        """Ask every witness that has not cosigned checkpoint ``note`` yet, or whose
        cosignature of it is ``refresh_after`` old; return how many fresh
        cosignatures it has now.  Never raises."""
        return self._collect(note, patient=False)

    def refresh(self) -> int:
        """:meth:`collect` for the latest checkpoint (the current head), asking each
        witness at most once per ``retry_after``; 0 before the first checkpoint.
        Never raises."""
        try:
            with self._store.session() as session:
                latest = auditlog.latest_checkpoint(session)
        except StorageError as exc:
            log.error("cannot read the latest checkpoint (%s)", exc.cause)
            return 0
        return 0 if latest is None else self._collect(latest.note, patient=True)

    def _collect(self, note: str, *, patient: bool) -> int:
        now = self._clock().timestamp()
        try:
            with self._store.session() as session:
                times = auditlog.cosignature_times(session, note)
        except StorageError as exc:
            log.error("cannot read cosignatures (%s)", exc.cause)
            return 0
        fresh = {w for w, at in times.items() if now - at < self._refresh_after}
        due = [w for w in self._witnesses if w.endpoint.verifier_key not in fresh]
        if patient:
            due = [w for w in due if w.asked_at is None or now - w.asked_at >= self._retry_after]
        have = len(fresh & {w.endpoint.verifier_key for w in self._witnesses})
        try:
            jobs = [self._pool.submit(self._ask, w, note) for w in due]
        except RuntimeError:
            return have  # closed: the hub is stopping
        done, _ = futures.wait(jobs, timeout=self._timeout * 2 + 1)
        return have + sum(1 for job in done if job.result())

    def _ask(self, witness: _Witness, note: str) -> bool:
        asked = self._ask_once(witness, note)
        if not asked and self._on_error is not None:
            self._on_error(witness.endpoint.audience)
        return asked

    def _ask_once(self, witness: _Witness, note: str) -> bool:
        label = witness.verifier.label()
        witness.asked_at = self._clock().timestamp()
        try:
            body, _ = split_note(note)
            checkpoint = parse_checkpoint_body(body)
            if witness.size is None:
                with self._store.session() as session:
                    witness.size = auditlog.last_cosigned_size(
                        session, witness.endpoint.verifier_key
                    )
            old_size = min(witness.size, checkpoint.size)
            reply = self._add(witness, old_size, checkpoint.size, note)
            if reply.WhichOneof("result") == "conflict":
                witness.size = reply.conflict.witness_size
                if witness.size > checkpoint.size:
                    log.info(
                        "witness %s is already at size %d, past the checkpoint of size %d",
                        label,
                        witness.size,
                        checkpoint.size,
                    )
                    return False
                reply = self._add(witness, witness.size, checkpoint.size, note)
            if reply.WhichOneof("result") != "cosignature":
                log.warning("witness %s answered without a cosignature", label)
                return False
            line = reply.cosignature
            _, signatures = split_note(note + line)
            cosigned_at = witness.verifier.verify(body, signatures[-1])
            with self._store.session() as session:
                auditlog.add_cosignature(
                    session,
                    note,
                    witness.endpoint.verifier_key,
                    checkpoint.size,
                    line,
                    self._clock(),
                    cosigned_at,
                )
                session.commit()
            witness.size = checkpoint.size
            return True
        except CheckpointError as exc:
            log.warning("witness %s: its cosignature does not verify (%s)", label, exc)
        except StorageError as exc:
            log.error("cosignature of witness %s not stored (%s)", label, exc.cause)
        except FraudhubError as exc:
            # Refusals name why (e.g. inconsistent with what it cosigned): an alarm.
            log.error("witness %s refused a checkpoint: %s", label, exc)
            witness.size = None
        return False

    def _add(
        self, witness: _Witness, old_size: int, new_size: int, note: str
    ) -> witness_pb2.AddCheckpointResponse:
        with self._store.session() as session:
            proof = auditlog.consistency_proof(session, old_size, new_size) if old_size else []
        try:
            reply: witness_pb2.AddCheckpointResponse = witness.stub.AddCheckpoint(
                witness_pb2.AddCheckpointRequest(
                    old_size=old_size, consistency_proof=proof, checkpoint=note
                ),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            raise errors_from_status(exc) from None
        return reply

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for witness in self._witnesses:
            witness.channel.close()
