"""The audit log in a real database (hub.storage.auditlog): a SQLite file and PostgreSQL.

The PostgreSQL cases use a fresh schema per test (the test database is shared
with other suites) and are marked ``postgres``; the URL comes from
``FRAUDHUB_TEST_PG_URL`` (default: the local trust-auth server).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from client_sdk.core.errors import InvalidRequest
from hub.audit import merkle
from hub.audit.checkpoint import LogSigner, LogVerifier, open_checkpoint
from hub.audit.events import AuditEvent, request_digest
from hub.storage import auditlog

PG_URL = os.environ.get("FRAUDHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ORIGIN = "fraudhub.test/audit"
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
AUDIT_TABLES = [
    auditlog.AuditEventRow.__table__,  # type: ignore[attr-defined]
    auditlog.AuditNodeRow.__table__,  # type: ignore[attr-defined]
    auditlog.AuditCheckpointRow.__table__,  # type: ignore[attr-defined]
]


def event(
    i: int, *, institution: str = "bank-a", tiers: tuple[str, ...] = ("public",)
) -> AuditEvent:
    return AuditEvent(
        time=T0 + timedelta(minutes=i),
        institution=institution,
        role="bank",
        action="Exchange.Match",
        purpose="payee_screening",
        legal_basis="contract",
        case_ref_digest="",
        kinds=("url",),
        tiers=tiers,
        item_count=i % 7,
        match_count=i % 2,
        outcome="ok" if i % 5 else "PERMISSION_DENIED",
        reasons=(),
        policy_version="v1",
        request_digest=request_digest(i.to_bytes(8, "big")),
    )


def _sqlite_engine(path: Path) -> Engine:
    from hub.storage.store import Store, sqlite_url

    return Store(sqlite_url(path)).engine


def _pg_engine() -> tuple[Engine, str]:
    schema = f"audit_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    engine = sa.create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    return engine, schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    schema = None
    if request.param == "sqlite":
        eng = _sqlite_engine(tmp_path)
    else:
        eng, schema = _pg_engine()
    SQLModel.metadata.create_all(eng, tables=AUDIT_TABLES)
    yield eng
    eng.dispose()
    if schema is not None:
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def fill(engine: Engine, n: int, start: int = 0) -> list[bytes]:
    bodies = []
    with Session(engine) as session:
        for i in range(start, start + n):
            e = event(i)
            assert auditlog.append(session, e) == i
            bodies.append(e.encode())
        session.commit()
    return bodies


def test_append_builds_the_rfc9162_tree(engine: Engine) -> None:
    bodies = fill(engine, 37)
    with Session(engine) as session:
        assert auditlog.tree_size(session) == 37
        for size in (1, 2, 3, 16, 31, 37):
            assert auditlog.root_at(session, size) == merkle.root_hash(bodies[:size])
        stored = auditlog.list_events(session, 0, None)
        assert [s.body for s in stored] == bodies


def test_append_does_not_commit(engine: Engine) -> None:
    fill(engine, 3)
    with Session(engine) as session:
        auditlog.append(session, event(3))
        session.rollback()
    with Session(engine) as session:
        assert auditlog.tree_size(session) == 3


def test_proofs_verify_and_read_few_nodes(engine: Engine) -> None:
    bodies = fill(engine, 300)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    with Session(engine) as session:
        root = auditlog.root_at(session, 300)
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            source = auditlog.SessionNodeSource(session)
            proof = merkle.inclusion_proof(123, 300, source)
            assert len(statements) == 1  # one query
            assert source.reads <= 2 * (300).bit_length()
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
        merkle.verify_inclusion(merkle.leaf_hash(bodies[123]), 123, 300, proof, root)
        assert proof == auditlog.inclusion_proof(session, 123, 300)
        old_root = auditlog.root_at(session, 100)
        merkle.verify_consistency(
            100, 300, old_root, root, auditlog.consistency_proof(session, 100, 300)
        )
        with pytest.raises(InvalidRequest):
            auditlog.inclusion_proof(session, 0, 301)
        with pytest.raises(InvalidRequest):
            auditlog.consistency_proof(session, 10, 301)


def test_list_events_filters(engine: Engine) -> None:
    with Session(engine) as session:
        for i in range(20):
            auditlog.append(
                session,
                event(
                    i,
                    institution="bank-a" if i % 2 else "carrier-b",
                    tiers=("sensitive",) if i % 3 == 0 else ("public",),
                ),
            )
        session.commit()
        f = auditlog.EventFilter
        assert [
            e.leaf_index for e in auditlog.list_events(session, 0, None, f(institution="bank-a"))
        ] == list(range(1, 20, 2))
        assert [
            e.leaf_index for e in auditlog.list_events(session, 0, None, f(tier="sensitive"))
        ] == list(range(0, 20, 3))
        assert [
            e.leaf_index
            for e in auditlog.list_events(session, 0, None, f(outcome="PERMISSION_DENIED"))
        ] == [0, 5, 10, 15]
        window = f(since=T0 + timedelta(minutes=4), until=T0 + timedelta(minutes=8))
        assert [e.leaf_index for e in auditlog.list_events(session, 0, None, window)] == [
            4,
            5,
            6,
            7,
        ]
        assert [e.leaf_index for e in auditlog.list_events(session, 5, 9)] == [5, 6, 7, 8]
        assert [e.leaf_index for e in auditlog.list_events(session, 0, None, limit=3)] == [0, 1, 2]
        # A LIKE wildcard in a filter value matches literally, not as a pattern.
        assert auditlog.list_events(session, 0, None, f(tier="%")) == []


def test_checkpoints(engine: Engine) -> None:
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.generate())
    verifier = LogVerifier.from_verifier_key(signer.verifier_key())
    bodies = fill(engine, 10)
    with Session(engine) as session:
        assert auditlog.checkpoint_due(session, T0, every_events=5, every_seconds=60)
        note = auditlog.create_checkpoint(session, signer, ORIGIN, T0)
        session.commit()
        cp = open_checkpoint(note, verifier, origin=ORIGIN)
        assert (cp.size, cp.root_hash) == (10, merkle.root_hash(bodies))
        # No growth: the same checkpoint, not a new signature.
        assert auditlog.create_checkpoint(session, signer, ORIGIN, T0) == note
        assert not auditlog.checkpoint_due(session, T0, every_events=1, every_seconds=0)
    fill(engine, 3, start=10)
    with Session(engine) as session:
        later = T0 + timedelta(seconds=30)
        assert not auditlog.checkpoint_due(session, later, every_events=5, every_seconds=60)
        assert auditlog.checkpoint_due(session, later, every_events=3, every_seconds=60)
        assert auditlog.checkpoint_due(
            session, later + timedelta(minutes=1), every_events=5, every_seconds=60
        )
        latest = auditlog.latest_checkpoint(session)
        assert latest is not None and latest.tree_size == 10


def test_checkpoint_refused_after_the_tree_was_edited(engine: Engine) -> None:
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.generate())
    fill(engine, 8)
    with Session(engine) as session:
        auditlog.create_checkpoint(session, signer, ORIGIN, T0)
        session.commit()
    fill(engine, 2, start=8)
    with Session(engine) as session:
        # Rewrite the subtree over leaves 0..7, the root of checkpoint size 8.
        session.execute(
            sa.update(auditlog.AuditNodeRow.__table__)  # type: ignore[attr-defined]
            .where(sa.text("level = 3 AND node_index = 0"))
            .values(hash=b"\x01" * 32)
        )
        session.commit()
        with pytest.raises(auditlog.AuditLogCorrupt, match="no longer matches"):
            auditlog.create_checkpoint(session, signer, ORIGIN, T0)


@pytest.mark.postgres
def test_concurrent_appends_are_serialized_on_postgresql() -> None:
    eng, schema = _pg_engine()
    try:
        SQLModel.metadata.create_all(eng, tables=AUDIT_TABLES)
        errors: list[BaseException] = []

        def worker(w: int) -> None:
            try:
                for j in range(15):
                    with Session(eng) as session:
                        auditlog.append(session, event(w * 100 + j))
                        session.commit()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with Session(eng) as session:
            stored = auditlog.list_events(session, 0, None)
            assert [s.leaf_index for s in stored] == list(range(60))
            assert auditlog.root_at(session, 60) == merkle.root_hash([s.body for s in stored])
    finally:
        eng.dispose()
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_many_appends_in_one_transaction_with_savepoints(engine: Engine) -> None:
    bodies: list[bytes] = []
    with Session(engine) as session:
        for i in range(5):
            auditlog.append(session, event(i))
            bodies.append(event(i).encode())
        # A rolled-back savepoint leaves no trace and no stale cached size.
        nested = session.begin_nested()
        auditlog.append(session, event(99))
        nested.rollback()
        for i in range(5, 9):
            auditlog.append(session, event(i))
            bodies.append(event(i).encode())
        # A released savepoint keeps its event; the next append follows it.
        nested = session.begin_nested()
        auditlog.append(session, event(9))
        bodies.append(event(9).encode())
        nested.commit()
        assert auditlog.append(session, event(10)) == 10
        bodies.append(event(10).encode())
        session.commit()
    with Session(engine) as session:
        assert [s.body for s in auditlog.list_events(session, 0, None)] == bodies
        for size in range(1, len(bodies) + 1):
            assert auditlog.root_at(session, size) == merkle.root_hash(bodies[:size])
    # A later transaction continues from the committed tree.
    assert fill(engine, 3, start=11) and True
    with Session(engine) as session:
        assert auditlog.tree_size(session) == 14


def test_node_reads_search_the_primary_key_on_sqlite(tmp_path: Path) -> None:
    """The node query is index searches only: no table scan, whatever the log size."""
    eng = _sqlite_engine(tmp_path)
    SQLModel.metadata.create_all(eng, tables=AUDIT_TABLES)
    compiled = auditlog._select_nodes(3).compile(dialect=eng.dialect)
    params = compiled.construct_params({"l0": 0, "i0": 1, "l1": 3, "i1": 2, "l2": 5, "i2": 0})
    assert compiled.positiontup is not None
    with eng.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled),
            tuple(params[name] for name in compiled.positiontup),
        ).all()
    details = [row[3] for row in plan]
    assert not any(d.startswith("SCAN") for d in details), details
    assert sum("SEARCH audit_node USING" in d for d in details) == 3, details
    eng.dispose()
