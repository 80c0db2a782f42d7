"""The audit log in the database: events, RFC 9162 complete-subtree hashes, checkpoints.

Tables (on ``SQLModel.metadata``, migrated by alembic with the rest of the hub):

- ``audit_event``: one row per event, keyed by its leaf index; ``body`` is the
  canonical encoding (:meth:`hub.audit.events.AuditEvent.encode`), the Merkle leaf
  data.  The other columns copy fields of the body so the regulator's filters
  use indexes; they are never trusted for verification (the body is).
- ``audit_node``: the hash of every COMPLETE subtree ``(level, node_index)``
  (level 0 = leaf hashes).  Complete subtrees never change, so they are written
  once, when the leaf that completes them is appended.
- ``audit_checkpoint``: every signed checkpoint note the hub made.
- ``audit_cosignature``: the witnesses' cosignature lines of those checkpoints
  (C2SP tlog-cosignature; ADR 0010), at most one per checkpoint body and witness:
  the newest, since a witness re-cosigns an unchanged head with a new timestamp
  and regulators count only recent cosignatures (``cosigned_at``, the line's
  timestamp; review-2, S1).  They are appended to the note when it is served
  (:func:`cosigned_note`).

Guarantees:

- :func:`append` adds the event row and its new nodes to the CALLER's session
  and does not commit: the event commits, or rolls back, with the RPC's work.
- Appends are serialized.  On PostgreSQL :func:`append` first takes the
  transaction-level advisory lock :data:`APPEND_LOCK_KEY`
  (``pg_advisory_xact_lock``, released at commit or rollback) and only then reads
  the tree size, so two replicas never use the same leaf index.  On SQLite the
  hub's :class:`hub.storage.store.Store` begins every transaction with
  ``BEGIN IMMEDIATE``: the write lock is held from the first statement, so the
  size read inside it is current.  In both cases ``(level, node_index)`` and the
  leaf index are primary keys, so a lost race fails instead of forking the tree.
- Appending reads at most log2(n)+1 stored nodes once per transaction (the
  perfect subtrees of the current tree, cached for later appends of the same
  transaction); roots and proofs read at most 2*log2(n)+1 nodes in ONE query
  (:class:`SessionNodeSource`); nothing rehashes the log.
- :func:`create_checkpoint` refuses to sign (raises :class:`AuditLogCorrupt`) if
  the stored tree no longer matches the latest checkpoint it signed, so the hub
  never signs two inconsistent checkpoints from a database edited underneath it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm
from sqlmodel import Field, Session, SQLModel, col, select

from client_sdk.core.errors import AuditLogCorrupt, InvalidRequest, NotFound
from hub.audit import merkle
from hub.audit.checkpoint import Checkpoint, LogSigner, parse_checkpoint_body, split_note
from hub.audit.events import AuditEvent
from hub.storage.models import UTCDateTime

__all__ = [
    "APPEND_LOCK_KEY",
    "AuditCheckpointRow",
    "AuditCosignatureRow",
    "AuditEventRow",
    "AuditLogCorrupt",  # defined in client_sdk.core.errors (the wire registry)
    "AuditNodeRow",
    "EventFilter",
    "SessionNodeSource",
    "StoredEvent",
    "add_cosignature",
    "append",
    "checkpoint_due",
    "consistency_proof",
    "cosignature_times",
    "cosignatures",
    "cosigned_note",
    "create_checkpoint",
    "get_event",
    "inclusion_proof",
    "last_cosigned_size",
    "latest_checkpoint",
    "list_events",
    "root_at",
    "tree_size",
]

# pg_advisory_xact_lock key of the audit log ("fraudhub audit" as a number):
# every hub replica appending to the same database takes the same lock.
APPEND_LOCK_KEY = 0x6672_6175_6468_7562 & 0x7FFF_FFFF_FFFF_FFFF
# Nodes per query: a proof needs about 2*log2(n) nodes, far below this.
_IN_CHUNK = 200


class AuditEventRow(SQLModel, table=True):
    """One audit event; ``body`` is its canonical encoding (the Merkle leaf data)."""

    __tablename__ = "audit_event"

    leaf_index: int = Field(
        sa_column=sa.Column(sa.BigInteger(), primary_key=True, autoincrement=False)
    )
    time: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False, index=True))
    institution: str = Field(max_length=128, index=True)
    role: str = Field(max_length=32)
    action: str = Field(max_length=128, index=True)
    outcome: str = Field(max_length=64, index=True)
    # ",kind1,kind2," and ",tier1,tier2,": LIKE '%,x,%' finds one value.
    kinds: str = Field(max_length=1024)
    tiers: str = Field(max_length=256)
    body: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))


class AuditNodeRow(SQLModel, table=True):
    """The RFC 9162 hash of the complete subtree ``(level, node_index)``."""

    __tablename__ = "audit_node"

    level: int = Field(sa_column=sa.Column(sa.SmallInteger(), primary_key=True))
    node_index: int = Field(
        sa_column=sa.Column(sa.BigInteger(), primary_key=True, autoincrement=False)
    )
    hash: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))


class AuditCheckpointRow(SQLModel, table=True):
    """A signed checkpoint note (C2SP tlog-checkpoint) the hub issued."""

    __tablename__ = "audit_checkpoint"

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False, index=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    note: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))


class AuditCosignatureRow(SQLModel, table=True):
    """One witness's cosignature line of one checkpoint."""

    __tablename__ = "audit_cosignature"
    __table_args__ = (sa.UniqueConstraint("checkpoint_digest", "witness"),)

    id: int | None = Field(default=None, primary_key=True)
    # SHA-256 (hex) of the checkpoint body the line cosigns: the line belongs to
    # that body, whichever checkpoint row (re-signed or not) carries it.
    checkpoint_digest: str = Field(max_length=64, index=True)
    # The witness's verifier key string: which pinned key made the line.
    witness: str = Field(max_length=512)
    tree_size: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    line: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    # The witness's timestamp in the line (POSIX seconds; migration 0008_cosign_refresh).
    cosigned_at: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False, server_default="0")
    )


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: its leaf index and canonical encoding."""

    leaf_index: int
    body: bytes


@dataclass(frozen=True)
class EventFilter:
    """Filters of the regulator's event listing; ``None`` means any."""

    institution: str | None = None
    action: str | None = None
    tier: str | None = None
    kind: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _node_table() -> sa.Table:
    table: sa.Table = AuditNodeRow.__table__  # type: ignore[attr-defined]
    return table


def _event_table() -> sa.Table:
    table: sa.Table = AuditEventRow.__table__  # type: ignore[attr-defined]
    return table


# Statements built once: constructing SQLAlchemy expressions per call costs more
# than running them on SQLite.
_NODES = _node_table()
_EVENTS = _event_table()


@functools.lru_cache(maxsize=256)
def _select_nodes(count: int) -> sa.Select[tuple[int, int, bytes]]:
    """``SELECT ... WHERE (level = :l0 AND node_index = :i0) OR ...`` for ``count`` nodes.

    An OR of primary-key equalities, not a row-value ``IN``: SQLite plans
    ``(level, node_index) IN (...)`` as a full table scan, but each OR term as
    one primary-key index search (PostgreSQL: a BitmapOr of index scans).
    """
    terms = [
        sa.and_(
            _NODES.c.level == sa.bindparam(f"l{k}"), _NODES.c.node_index == sa.bindparam(f"i{k}")
        )
        for k in range(count)
    ]
    return sa.select(_NODES.c.level, _NODES.c.node_index, _NODES.c.hash).where(sa.or_(*terms))


_SELECT_SIZE = sa.select(
    sa.select(sa.func.max(_NODES.c.node_index)).where(_NODES.c.level == 0).scalar_subquery(),
    sa.select(sa.func.max(_EVENTS.c.leaf_index)).scalar_subquery(),
)
_INSERT_EVENT = sa.insert(_EVENTS)
_INSERT_NODES = sa.insert(_NODES)


class SessionNodeSource:
    """A :class:`hub.audit.merkle.NodeSource` reading ``audit_node`` in one query per call."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.reads = 0  # rows fetched, for the O(log n) test and benchmark

    def get_nodes(self, ids: Sequence[merkle.NodeId]) -> Mapping[merkle.NodeId, bytes]:
        wanted = list(dict.fromkeys(ids))
        found: dict[merkle.NodeId, bytes] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            params: dict[str, int] = {}
            for k, n in enumerate(chunk):
                params[f"l{k}"] = n.level
                params[f"i{k}"] = n.index
            rows = self._session.execute(_select_nodes(len(chunk)), params).all()
            self.reads += len(rows)
            for level, index, digest in rows:
                found[merkle.NodeId(level, index)] = bytes(digest)
        missing = [n for n in wanted if n not in found]
        if missing:
            raise AuditLogCorrupt(
                f"audit log node (level {missing[0].level}, index {missing[0].index}) is missing"
            )
        return found


def _lock_for_append(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})


def tree_size(session: Session) -> int:
    """Number of leaves in the stored tree: one past the last event or leaf hash.

    Both tables are read (two indexed lookups of a maximum), so deleting the
    last row of either one does not silently shorten the log: the other table
    still counts it, and the missing row then shows up as a gap or a missing node.
    """
    last = session.execute(_SELECT_SIZE).one()
    known = [int(v) for v in last if v is not None]
    return max(known) + 1 if known else 0


def _csv(values: Sequence[str]) -> str:
    return "," + ",".join(values) + "," if values else ""


@dataclass
class _Frontier:
    """The tree size and its perfect subtrees, valid inside one transaction."""

    size: int
    nodes: dict[merkle.NodeId, bytes]


# session.info key of the cached frontier; see append().
_FRONTIER = "fraudhub.auditlog.frontier"


@sa.event.listens_for(sa.orm.Session, "after_transaction_end")
def _forget_frontier(session: sa.orm.Session, _transaction: sa.orm.SessionTransaction) -> None:
    # Any commit, rollback or savepoint end may change the stored tree.
    session.info.pop(_FRONTIER, None)


def append(session: Session, event: AuditEvent) -> int:
    """Add ``event`` and the complete subtrees it finishes to ``session``; return its index.

    Does not commit.  The first append of a transaction takes the lock and reads
    the tree size and its perfect subtrees (one query each); later appends in
    the same transaction reuse them from ``session.info`` (the lock is held
    until the transaction ends, and any transaction or savepoint end drops the
    cache).  Raises sqlalchemy errors from the database unchanged (the caller's
    transaction then rolls back with its work).
    """
    frontier: _Frontier | None = session.info.get(_FRONTIER)
    if frontier is None:
        _lock_for_append(session)
        size = tree_size(session)
        ids = merkle.root_nodes(size)
        stored = SessionNodeSource(session).get_nodes(ids) if ids else {}
        frontier = _Frontier(size, dict(stored))
    index = frontier.size
    body = event.encode()
    leaf = merkle.leaf_hash(body)
    nodes = merkle.new_complete_nodes(index, leaf, frontier.nodes)
    session.execute(
        _INSERT_EVENT,
        [
            {
                "leaf_index": index,
                "time": event.time,
                "institution": event.institution,
                "role": event.role,
                "action": event.action,
                "outcome": event.outcome,
                "kinds": _csv(event.kinds),
                "tiers": _csv(event.tiers),
                "body": body,
            }
        ],
    )
    session.execute(
        _INSERT_NODES,
        [{"level": n.level, "node_index": n.index, "hash": h} for n, h in nodes],
    )
    pool = {**frontier.nodes, **dict(nodes)}
    session.info[_FRONTIER] = _Frontier(
        index + 1, {n: pool[n] for n in merkle.root_nodes(index + 1)}
    )
    return index


def root_at(session: Session, size: int) -> bytes:
    """RFC 9162 root of the first ``size`` leaves; raises InvalidRequest past the end."""
    current = tree_size(session)
    if not 0 <= size <= current:
        raise InvalidRequest(f"the audit log has {current} events, not {size}")
    return merkle.tree_root(size, SessionNodeSource(session))


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Raises InvalidRequest if ``index >= size`` or ``size`` exceeds the log.
    """
    current = tree_size(session)
    if size > current:
        raise InvalidRequest(f"the audit log has {current} events, not {size}")
    return merkle.inclusion_proof(index, size, SessionNodeSource(session))


def consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof from ``old_size`` to ``new_size`` leaves; raises InvalidRequest."""
    current = tree_size(session)
    if new_size > current:
        raise InvalidRequest(f"the audit log has {current} events, not {new_size}")
    return merkle.consistency_proof(old_size, new_size, SessionNodeSource(session))


def list_events(
    session: Session,
    start: int,
    end: int | None,
    event_filter: EventFilter | None = None,
    *,
    limit: int = 1000,
) -> list[StoredEvent]:
    """Events with ``start <= leaf_index < end`` matching the filter, in log order."""
    if start < 0 or limit <= 0:
        raise InvalidRequest("event range start must be >= 0 and the page size > 0")
    table = _event_table()
    query = sa.select(table.c.leaf_index, table.c.body).where(table.c.leaf_index >= start)
    if end is not None:
        query = query.where(table.c.leaf_index < end)
    f = event_filter or EventFilter()
    if f.institution is not None:
        query = query.where(table.c.institution == f.institution)
    if f.action is not None:
        query = query.where(table.c.action == f.action)
    if f.outcome is not None:
        query = query.where(table.c.outcome == f.outcome)
    if f.tier is not None:
        query = query.where(table.c.tiers.like(f"%,{_like_literal(f.tier)},%", escape="\\"))
    if f.kind is not None:
        query = query.where(table.c.kinds.like(f"%,{_like_literal(f.kind)},%", escape="\\"))
    if f.since is not None:
        query = query.where(table.c.time >= f.since)
    if f.until is not None:
        query = query.where(table.c.time < f.until)
    rows = session.execute(query.order_by(table.c.leaf_index).limit(limit)).all()
    return [StoredEvent(int(i), bytes(b)) for i, b in rows]


def _like_literal(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def latest_checkpoint(session: Session) -> AuditCheckpointRow | None:
    """The most recent signed checkpoint, or None before the first one."""
    return session.exec(
        select(AuditCheckpointRow).order_by(col(AuditCheckpointRow.id).desc()).limit(1)
    ).first()


def checkpoint_due(
    session: Session, now: datetime, *, every_events: int, every_seconds: float
) -> bool:
    """True if the log grew since the last checkpoint and N events or T seconds passed."""
    size = tree_size(session)
    last = latest_checkpoint(session)
    if last is None:
        return size > 0
    if size <= last.tree_size:
        return False
    return (
        size - last.tree_size >= every_events
        or (now - last.created_at).total_seconds() >= every_seconds
    )


def create_checkpoint(
    session: Session, signer: LogSigner, origin: str, now: datetime, *, record: bool = True
) -> str:
    """Sign a checkpoint of the current tree, store it in ``session``, return the note.

    With ``record=False`` the note is signed but not stored (a database that
    refuses writes can still be read and committed to by signature).

    If the tree has not grown since the latest checkpoint, that checkpoint is
    returned instead of signing a new one.  Raises AuditLogCorrupt if the stored
    tree does not reproduce the latest checkpoint's root (the database was edited:
    signing now could produce two inconsistent checkpoints).  Does not commit.
    """
    size = tree_size(session)
    last = latest_checkpoint(session)
    if last is not None:
        previous = parse_checkpoint_body(last.note.split("\n\n", 1)[0] + "\n")
        if previous.size > size:
            raise AuditLogCorrupt(
                f"the audit log has {size} events but checkpoint {last.id} signed "
                f"{previous.size}: refusing to sign a shorter log"
            )
        if merkle.tree_root(previous.size, SessionNodeSource(session)) != previous.root_hash:
            raise AuditLogCorrupt(
                f"the stored audit log no longer matches checkpoint {last.id} "
                f"(size {previous.size}): refusing to sign"
            )
        if previous.size == size:
            return last.note
    root = merkle.tree_root(size, SessionNodeSource(session))
    note = signer.sign_checkpoint(Checkpoint(origin, size, root))
    if record:
        session.add(AuditCheckpointRow(tree_size=size, created_at=now, note=note))
        session.flush()
    return note


def get_event(session: Session, index: int) -> StoredEvent:
    """The event at leaf ``index``; raises NotFound."""
    row = session.get(AuditEventRow, index)
    if row is None:
        raise NotFound(f"audit event {index} does not exist")
    return StoredEvent(row.leaf_index, bytes(row.body))


def _body_digest(note: str) -> str:
    return hashlib.sha256(split_note(note)[0].encode()).hexdigest()


def add_cosignature(
    session: Session,
    note: str,
    witness: str,
    tree_size: int,
    line: str,
    now: datetime,
    cosigned_at: int,
) -> None:
    """Store ``witness``'s cosignature ``line`` (made at ``cosigned_at``, POSIX
    seconds) of the checkpoint ``note``.

    One line per checkpoint body and witness: a newer line by the same witness
    replaces the stored one (regulators count only recent cosignatures, so the
    newest is the one to serve); an older one is ignored.  Does not commit.
    """
    digest = _body_digest(note)
    row = session.exec(
        select(AuditCosignatureRow).where(
            AuditCosignatureRow.checkpoint_digest == digest,
            AuditCosignatureRow.witness == witness,
        )
    ).first()
    if row is None:
        row = AuditCosignatureRow(
            checkpoint_digest=digest,
            witness=witness,
            tree_size=tree_size,
            line=line,
            created_at=now,
            cosigned_at=cosigned_at,
        )
    elif row.cosigned_at > cosigned_at:
        return
    else:
        row.tree_size, row.line, row.created_at = tree_size, line, now
        row.cosigned_at = cosigned_at
    session.add(row)
    session.flush()


def cosignature_times(session: Session, note: str) -> dict[str, int]:
    """When each witness made its stored cosignature of ``note`` (POSIX seconds), by
    witness verifier key."""
    rows = session.exec(
        select(AuditCosignatureRow.witness, AuditCosignatureRow.cosigned_at).where(
            AuditCosignatureRow.checkpoint_digest == _body_digest(note)
        )
    ).all()
    return {witness: int(cosigned_at) for witness, cosigned_at in rows}


def cosignatures(session: Session, note: str) -> dict[str, str]:
    """The stored cosignature lines of the checkpoint ``note``, by witness verifier key."""
    rows = session.exec(
        select(AuditCosignatureRow).where(
            AuditCosignatureRow.checkpoint_digest == _body_digest(note)
        )
    ).all()
    return {row.witness: row.line for row in rows}


def cosigned_note(session: Session, note: str) -> str:
    """The checkpoint ``note`` with its stored cosignature lines appended."""
    lines = cosignatures(session, note)
    return note + "".join(lines[w] for w in sorted(lines))


def last_cosigned_size(session: Session, witness: str) -> int:
    """The largest tree size ``witness`` cosigned for this hub (0 if none)."""
    size = session.exec(
        select(sa.func.max(AuditCosignatureRow.tree_size)).where(
            AuditCosignatureRow.witness == witness
        )
    ).first()
    return int(size or 0)
