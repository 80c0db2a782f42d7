"""A witness of the audit log: C2SP tlog-witness's add-checkpoint, without the transport.

A witness remembers, per log origin, the last checkpoint it cosigned.  Given a
new checkpoint and a consistency proof from the size the caller believes the
witness is at (:meth:`Witness.add_checkpoint`), it

1. finds the log by the checkpoint's origin line and checks the log's
   signature with the log key it was configured with (unknown origin:
   :class:`UnknownLog`; unsigned or badly signed: :class:`CheckpointRefused`);
2. compares the caller's old size with its own: a mismatch is a
   :class:`WitnessConflict` carrying the witness's size, so the caller can
   retry with a proof from there (tlog-witness answers 409 with the size);
3. refuses a smaller tree (rollback) and any tree the RFC 9162 consistency
   proof does not prove an extension of the one it cosigned
   (:class:`InconsistentCheckpoint`);
4. only then stores the new tree head and returns its cosignature/v1 line.

Steps 2-4 run under the state's lock, so two concurrent requests can never
both advance from the same size to different trees.  The state is reached
through the small :class:`WitnessState` protocol (the key holder keeps it in a
SQLite file; :class:`MemoryWitnessState` is for tests and embedding).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from client_sdk.core.errors import (
    CheckpointError,
    CheckpointRefused,
    ConsistencyProofError,
    InconsistentCheckpoint,
    InvalidRequest,
    UnknownLog,
    WitnessConflict,
)
from hub.audit import merkle
from hub.audit.checkpoint import LogVerifier, NoteSignature, open_checkpoint, split_note
from hub.audit.cosignature import MAX_TIMESTAMP, Cosigner

__all__ = [
    "MemoryWitnessState",
    "TreeHead",
    "Witness",
    "WitnessState",
    "WitnessTransaction",
]


@dataclass(frozen=True)
class TreeHead:
    """The last checkpoint a witness cosigned for one log."""

    size: int
    root_hash: bytes


class WitnessTransaction(Protocol):
    def get(self, origin: str) -> TreeHead | None: ...

    def put(self, origin: str, head: TreeHead) -> None: ...


class WitnessState(Protocol):
    """Where a witness keeps its tree heads; :meth:`locked` is one atomic step."""

    def locked(self) -> AbstractContextManager[WitnessTransaction]: ...


class MemoryWitnessState:
    """Tree heads in a dict, one lock (a witness without persistence)."""

    def __init__(self) -> None:
        self._heads: dict[str, TreeHead] = {}
        self._lock = threading.Lock()

    def get(self, origin: str) -> TreeHead | None:
        return self._heads.get(origin)

    def put(self, origin: str, head: TreeHead) -> None:
        self._heads[origin] = head

    @contextmanager
    def locked(self) -> Iterator[WitnessTransaction]:
        with self._lock:
            yield self


class Witness:
    """Cosigns checkpoints of the logs in ``logs`` (origin -> log key) that extend
    what it cosigned before; see the module docstring."""

    def __init__(
        self,
        cosigner: Cosigner,
        logs: Mapping[str, LogVerifier],
        state: WitnessState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = cosigner
        self._logs = dict(logs)
        self._state = state
        self._clock = clock

    def size(self, origin: str) -> int:
        """The size of the last checkpoint cosigned for ``origin`` (0 before the first)."""
        with self._state.locked() as txn:
            head = txn.get(origin)
        return head.size if head else 0

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: str) -> NoteSignature:
        """Cosign ``note`` if it extends the witness's tree of ``old_size`` leaves.

        Raises UnknownLog, CheckpointRefused, WitnessConflict (with the
        witness's size) or InconsistentCheckpoint; the state is unchanged then.
        """
        if old_size < 0:
            raise InvalidRequest("old size must not be negative")
        try:
            body, _ = split_note(note)
        except CheckpointError as exc:
            raise CheckpointRefused(f"not a signed note: {exc}") from exc
        origin = body.split("\n", 1)[0]
        verifier = self._logs.get(origin)
        if verifier is None:
            raise UnknownLog(f"this witness does not witness log {origin!r}")
        try:
            checkpoint = open_checkpoint(note, verifier, origin=origin)
        except CheckpointError as exc:
            raise CheckpointRefused(f"checkpoint refused: {exc}") from exc
        with self._state.locked() as txn:
            head = txn.get(origin)
            current = head.size if head else 0
            if old_size != current:
                raise WitnessConflict.at(origin, current, old_size)
            if checkpoint.size < current:
                raise InconsistentCheckpoint(
                    f"rollback: the checkpoint has {checkpoint.size} leaves, fewer than the "
                    f"{current} this witness cosigned"
                )
            try:
                # The first checkpoint of a log is taken on trust (nothing to extend).
                if head is not None:
                    merkle.verify_consistency(
                        current, checkpoint.size, head.root_hash, checkpoint.root_hash, proof
                    )
            except ConsistencyProofError as exc:
                raise InconsistentCheckpoint(
                    f"inconsistent: the checkpoint of size {checkpoint.size} does not extend "
                    f"the tree of size {current} this witness cosigned ({exc})"
                ) from exc
            txn.put(origin, TreeHead(checkpoint.size, checkpoint.root_hash))
            # Inside the lock: cosignature times never go backwards for one log.
            timestamp = min(int(self._clock()), MAX_TIMESTAMP)
            return self.cosigner.cosign(body, timestamp)
