"""The key holder as a witness of the hub's audit log (``fraudhub.v1.Witness``, ADR 0010).

A thin adapter around :class:`hub.audit.witness.Witness`.  Guarantees:

- The witness's Ed25519 cosigning key lives in the holder's state directory
  (:data:`WITNESS_KEY_FILENAME`, mode 0600, created on first use); the hub's
  operator never holds it, so the operator cannot cosign its own rewrite.
- The last cosigned tree head per log origin is in a small SQLite file in the
  same directory (:class:`WitnessStateFile`): a restart never lets the
  witness cosign a checkpoint inconsistent with one it cosigned before.
- Only OPERATOR institutions may call AddCheckpoint (:data:`METHOD_ROLES`);
  the caller is authenticated like every other holder RPC.
- A stale old size is answered with the witness's size (``conflict``), not an
  error; refusals are INVALID_ARGUMENT or NOT_FOUND naming why.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from fraudhub.v1 import witness_pb2, witness_pb2_grpc

from client_sdk.core.errors import WitnessConflict
from hub.audit.checkpoint import LogVerifier
from hub.audit.cosignature import Cosigner
from hub.audit.witness import TreeHead, Witness, WitnessTransaction
from hub.infra.privatefiles import load_or_create_log_key
from hub.infra.sqlitefile import immediate, open_state_file
from hub.wire.auth import current_principal

__all__ = [
    "METHOD_ROLES",
    "SERVICE_NAME",
    "WITNESS_KEY_FILENAME",
    "WITNESS_STATE_FILENAME",
    "WitnessServicer",
    "WitnessStateFile",
    "default_witness_name",
    "load_cosigner",
    "open_witness",
]

log = logging.getLogger(__name__)

SERVICE_NAME: str = witness_pb2.DESCRIPTOR.services_by_name["Witness"].full_name
WITNESS_KEY_FILENAME = "witness-key.pem"
WITNESS_STATE_FILENAME = "witness.sqlite3"
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"/{SERVICE_NAME}/AddCheckpoint": frozenset({"operator"}),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_head (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root_hash BLOB NOT NULL
)
"""


class _FileTransaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def get(self, origin: str) -> TreeHead | None:
        row = self._db.execute(
            "SELECT size, root_hash FROM witness_head WHERE origin = ?", (origin,)
        ).fetchone()
        return TreeHead(int(row[0]), bytes(row[1])) if row else None

    def put(self, origin: str, head: TreeHead) -> None:
        self._db.execute(
            "INSERT INTO witness_head (origin, size, root_hash) VALUES (?, ?, ?) "
            "ON CONFLICT (origin) DO UPDATE "
            "SET size = excluded.size, root_hash = excluded.root_hash",
            (origin, head.size, head.root_hash),
        )


class WitnessStateFile:
    """:class:`hub.audit.witness.WitnessState` in SQLite: one write transaction
    (``BEGIN IMMEDIATE``) per step, so two processes sharing the file serialize too.

    Raises ConfigurationError if the file cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_state_file(path, _SCHEMA, "witness")

    @contextmanager
    def locked(self) -> Iterator[WitnessTransaction]:
        with self._lock, immediate(self._db) as db:
            yield _FileTransaction(db)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def default_witness_name(index: int) -> str:
    """The witness key name of key holder ``index`` unless configured otherwise."""
    return f"fraudhub/keyholder-{index}/witness"


def load_cosigner(state_dir: Path, name: str) -> Cosigner:
    """The witness key in ``state_dir`` (created, mode 0600, if missing) under ``name``.

    Raises ConfigurationError if the file is not an Ed25519 key or the name is
    not a valid signed-note key name.
    """
    return Cosigner(name, load_or_create_log_key(Path(state_dir) / WITNESS_KEY_FILENAME))


def open_witness(
    state_dir: Path,
    name: str,
    log_keys: list[str],
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[Witness, WitnessStateFile]:
    """A witness of the logs whose verifier keys are ``log_keys`` (origin = key name);
    ``clock`` (POSIX seconds) stamps its cosignatures.

    Returns the witness and its state file (to close).  Raises ConfigurationError.
    """
    verifiers = [LogVerifier.from_verifier_key(vkey) for vkey in log_keys]
    state = WitnessStateFile(Path(state_dir) / WITNESS_STATE_FILENAME)
    witness = Witness(
        load_cosigner(state_dir, name), {v.name: v for v in verifiers}, state, clock=clock
    )
    return witness, state


class WitnessServicer(witness_pb2_grpc.WitnessServicer):
    """Serves AddCheckpoint for one :class:`Witness`."""

    def __init__(self, witness: Witness) -> None:
        self._witness = witness

    def AddCheckpoint(  # noqa: N802 - the name is the RPC's
        self, request: witness_pb2.AddCheckpointRequest, context: grpc.ServicerContext
    ) -> witness_pb2.AddCheckpointResponse:
        caller = current_principal().institution
        try:
            signature = self._witness.add_checkpoint(
                request.old_size, list(request.consistency_proof), request.checkpoint
            )
        except WitnessConflict as exc:
            log.info("witness conflict for %s: at size %d", caller, exc.size)
            return witness_pb2.AddCheckpointResponse(
                conflict=witness_pb2.WitnessConflict(witness_size=exc.size)
            )
        log.info("cosigned a checkpoint for %s", caller)
        return witness_pb2.AddCheckpointResponse(cosignature=signature.line())
