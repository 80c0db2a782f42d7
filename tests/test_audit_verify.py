"""``fraudhub audit verify`` catches every rewrite of the audit log.

Two layers:

- a hypothesis property over a real SQLite file: changing, dropping or swapping
  any stored event or node hash makes :func:`hub.audit.verify.verify_log` fail
  (in-process client calling :mod:`hub.storage.auditlog`, no network);
- end to end: a real hub (``hub.services.server.HubServer``, SQLite, loopback gRPC on
  port 0) serves traffic; the test edits its database underneath it and runs
  the real CLI (``hub.cli.main``), which must exit non-zero naming the
  tampering: edited, deleted or reordered event, truncated log, forked or
  rewritten log, bad signature, unknown key.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from _audit_hub import RunningHub
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fraudhub.v1 import audit_pb2, audit_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, SQLModel

from client_sdk.core.errors import AuditLogError, ConfigurationError
from hub.audit import merkle
from hub.audit.checkpoint import Checkpoint, LogSigner, LogVerifier
from hub.audit.events import AuditEvent, decode, request_digest
from hub.audit.verify import VerifiedState, verify_log
from hub.cli.audit import load_verified_state, save_verified_state
from hub.infra.privatefiles import load_or_create_log_key
from hub.services.audit import DEFAULT_ORIGIN, LOG_KEY_FILENAME
from hub.storage import auditlog

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
ORIGIN = "fraudhub.test/audit"


def make_event(i: int) -> AuditEvent:
    return AuditEvent(
        time=T0 + timedelta(seconds=i),
        institution=f"bank-{i % 3}",
        role="bank",
        action="Exchange.Match",
        purpose="payment_screening",
        legal_basis="policy:match-public",
        case_ref_digest="",
        kinds=("url",),
        tiers=("public",),
        item_count=1 + i % 4,
        match_count=i % 2,
        outcome="ok",
        reasons=(),
        policy_version="v1",
        request_digest=request_digest(i.to_bytes(4, "big")),
    )


def complete_nodes(bodies: Sequence[bytes]) -> dict[merkle.NodeId, bytes]:
    """Every complete subtree hash of a list of entries (brute force)."""
    nodes: dict[merkle.NodeId, bytes] = {}
    level_hashes = [merkle.leaf_hash(b) for b in bodies]
    level = 0
    while level_hashes:
        for i, h in enumerate(level_hashes):
            nodes[merkle.NodeId(level, i)] = h
        level_hashes = [
            merkle.node_hash(level_hashes[i], level_hashes[i + 1])
            for i in range(0, len(level_hashes) - 1, 2)
        ]
        level += 1
    return nodes


# --- property: any tampering is detected ---------------------------------------


class SessionLogClient:
    """The LogClient protocol served straight from the database (no network)."""

    def __init__(self, engine: sa.Engine, signer: LogSigner) -> None:
        self.engine = engine
        self.signer = signer

    def get_checkpoint(self, fresh: bool) -> str:
        with Session(self.engine) as session:
            note = auditlog.create_checkpoint(session, self.signer, ORIGIN, T0)
            session.commit()
        return note

    def events(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        with Session(self.engine) as session:
            rows = auditlog.list_events(session, start, end, limit=10**6)
        return iter([(r.leaf_index, r.body) for r in rows])

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        with Session(self.engine) as session:
            return auditlog.inclusion_proof(session, index, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        with Session(self.engine) as session:
            return auditlog.consistency_proof(session, old_size, new_size)


@dataclass(frozen=True)
class Tamper:
    what: str  # edit_event, drop_event, swap_events, edit_node, drop_node, swap_nodes
    a: int
    b: int


def _apply(conn: sa.Connection, tamper: Tamper, size: int, nodes: list[merkle.NodeId]) -> None:
    if tamper.what == "edit_event":
        i = tamper.a % size
        body = conn.execute(
            sa.text("SELECT body FROM audit_event WHERE leaf_index = :i"), {"i": i}
        ).scalar_one()
        edited = replace(decode(bytes(body)), item_count=decode(bytes(body)).item_count + 1000)
        conn.execute(
            sa.text("UPDATE audit_event SET body = :b WHERE leaf_index = :i"),
            {"b": edited.encode(), "i": i},
        )
    elif tamper.what == "drop_event":
        conn.execute(
            sa.text("DELETE FROM audit_event WHERE leaf_index = :i"), {"i": tamper.a % size}
        )
    elif tamper.what == "swap_events":
        i, j = tamper.a % size, tamper.b % size
        if i == j:
            j = (i + 1) % size
        bi, bj = (
            conn.execute(
                sa.text("SELECT body FROM audit_event WHERE leaf_index = :i"), {"i": k}
            ).scalar_one()
            for k in (i, j)
        )
        for k, body in ((i, bj), (j, bi)):
            conn.execute(
                sa.text("UPDATE audit_event SET body = :b WHERE leaf_index = :i"),
                {"b": body, "i": k},
            )
    else:
        x = nodes[tamper.a % len(nodes)]
        y = nodes[tamper.b % len(nodes)]
        if tamper.what == "swap_nodes" and x == y:
            y = nodes[(tamper.b + 1) % len(nodes)]
        where = "level = :l AND node_index = :n"
        if tamper.what == "drop_node":
            conn.execute(
                sa.text(f"DELETE FROM audit_node WHERE {where}"), {"l": x.level, "n": x.index}
            )
        elif tamper.what == "edit_node":
            conn.execute(
                sa.text(f"UPDATE audit_node SET hash = :h WHERE {where}"),
                {"h": os.urandom(32), "l": x.level, "n": x.index},
            )
        else:
            hx, hy = (
                conn.execute(
                    sa.text(f"SELECT hash FROM audit_node WHERE {where}"),
                    {"l": n.level, "n": n.index},
                ).scalar_one()
                for n in (x, y)
            )
            for n, h in ((x, hy), (y, hx)):
                conn.execute(
                    sa.text(f"UPDATE audit_node SET hash = :h WHERE {where}"),
                    {"h": h, "l": n.level, "n": n.index},
                )


TAMPERS = st.builds(
    Tamper,
    st.sampled_from(
        ["edit_event", "drop_event", "swap_events", "edit_node", "drop_node", "swap_nodes"]
    ),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(size=st.integers(2, 40), verified_fraction=st.floats(0, 1), tamper=TAMPERS)
def test_any_change_drop_or_swap_is_detected(
    size: int, verified_fraction: float, tamper: Tamper
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/audit.sqlite3")
        SQLModel.metadata.create_all(
            engine,
            tables=[
                auditlog.AuditEventRow.__table__,  # type: ignore[attr-defined]
                auditlog.AuditNodeRow.__table__,  # type: ignore[attr-defined]
                auditlog.AuditCheckpointRow.__table__,  # type: ignore[attr-defined]
            ],
        )
        signer = LogSigner(ORIGIN, Ed25519PrivateKey.generate())
        verifier = LogVerifier.from_verifier_key(signer.verifier_key())
        client = SessionLogClient(engine, signer)
        verified = max(1, int(size * verified_fraction))
        with Session(engine) as session:
            for i in range(verified):
                auditlog.append(session, make_event(i))
            session.commit()
        # The regulator verified a prefix; the log then grew.
        state = verify_log(client, verifier, None).state
        with Session(engine) as session:
            for i in range(verified, size):
                auditlog.append(session, make_event(i))
            session.commit()
        nodes = sorted(complete_nodes([b"x"] * size), key=lambda n: (n.level, n.index))
        with engine.begin() as conn:
            _apply(conn, tamper, size, nodes)
        with pytest.raises((AuditLogError, auditlog.AuditLogCorrupt)):
            verify_log(client, verifier, state, full=True, deep=True)
        engine.dispose()


def test_untampered_log_passes_full_and_deep(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/audit.sqlite3")
    SQLModel.metadata.create_all(engine)
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.generate())
    verifier = LogVerifier.from_verifier_key(signer.verifier_key())
    client = SessionLogClient(engine, signer)
    with Session(engine) as session:
        for i in range(23):
            auditlog.append(session, make_event(i))
        session.commit()
    first = verify_log(client, verifier, None, deep=True)
    assert (first.previous_size, first.new_events) == (0, 23)
    with Session(engine) as session:
        for i in range(23, 30):
            auditlog.append(session, make_event(i))
        session.commit()
    second = verify_log(client, verifier, first.state, full=True, deep=True)
    assert (second.previous_size, second.state.size) == (23, 30)
    restored = VerifiedState.from_json(second.state.to_json(), "state")
    assert restored == second.state


# --- end to end against a running hub --------------------------------------------


@pytest.fixture
def hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path, capsys)
    yield running
    running.stop()


def _body(conn: sqlite3.Connection, index: int) -> bytes:
    row = conn.execute("SELECT body FROM audit_event WHERE leaf_index = ?", (index,)).fetchone()
    assert row is not None, f"no event {index}"
    return bytes(row[0])


def _set_body(conn: sqlite3.Connection, index: int, body: bytes) -> None:
    conn.execute("UPDATE audit_event SET body = ? WHERE leaf_index = ?", (body, index))


def _rebuild_nodes(conn: sqlite3.Connection) -> None:
    """What a careful forger does: recompute every stored hash from the edited events."""
    bodies = [bytes(b) for (b,) in conn.execute("SELECT body FROM audit_event ORDER BY leaf_index")]
    conn.execute("DELETE FROM audit_node")
    conn.executemany(
        "INSERT INTO audit_node (level, node_index, hash) VALUES (?, ?, ?)",
        [(n.level, n.index, h) for n, h in complete_nodes(bodies).items()],
    )


def _forge(body: bytes) -> bytes:
    event = decode(body)
    return replace(
        event, match_count=event.match_count + 1, item_count=event.item_count + 1
    ).encode()


@pytest.mark.e2e
def test_clean_log_verifies_and_advances(hub: RunningHub) -> None:
    status, out = hub.verify()
    assert status == 0, out
    assert "from the empty log" in out
    first = hub.verified_size()
    hub.traffic(3)
    status, out = hub.verify()
    assert status == 0, out
    assert hub.verified_size() >= first + 3
    # The pinned key is kept in the state file: later runs need no --log-key.
    status, out, err = hub.cli("verify", "--state", str(hub.state))
    assert status == 0, err
    status, out, _ = hub.cli("report", "--format", "json")
    assert status == 0
    rows = {r["institution"]: r for r in json.loads(out)}
    assert rows["bank-a"]["requests"] == 3
    assert rows["bank-a"]["items"] == 3
    assert rows["reg-1"]["requests_by_purpose"] == {"audit": rows["reg-1"]["requests"]}
    status, out, _ = hub.cli("anomalies")
    assert (status, out) == (0, "no anomalies\n")


@pytest.mark.e2e
def test_edited_event(hub: RunningHub) -> None:
    assert hub.verify()[0] == 0
    hub.traffic(4)
    target = hub.verified_size() + 1
    with hub.sql() as conn:
        _set_body(conn, target, _forge(_body(conn, target)))
    status, out = hub.verify()
    assert status == 1
    assert f"edited event: event {target} does not match" in out


@pytest.mark.e2e
def test_edited_event_that_is_not_canonical(hub: RunningHub) -> None:
    assert hub.verify()[0] == 0
    hub.traffic(2)
    target = hub.verified_size()
    with hub.sql() as conn:
        spaced = json.dumps(json.loads(_body(conn, target)), sort_keys=True).encode()
        _set_body(conn, target, spaced)
    status, out = hub.verify()
    assert status == 1
    assert f"edited event: event {target} is not a canonical event" in out


@pytest.mark.e2e
def test_edit_of_an_already_verified_event_is_caught_by_full(hub: RunningHub) -> None:
    hub.traffic(3)
    assert hub.verify()[0] == 0
    with hub.sql() as conn:
        _set_body(conn, 1, _forge(_body(conn, 1)))
    status, out = hub.verify("--full")
    assert status == 1
    assert "edited event: event 1 does not match" in out


@pytest.mark.e2e
def test_deleted_event(hub: RunningHub) -> None:
    assert hub.verify()[0] == 0
    hub.traffic(4)
    target = hub.verified_size() + 2
    with hub.sql() as conn:
        conn.execute("DELETE FROM audit_event WHERE leaf_index = ?", (target,))
    status, out = hub.verify()
    assert status == 1
    assert f"deleted event: event {target} is missing" in out


@pytest.mark.e2e
def test_reordered_events(hub: RunningHub) -> None:
    assert hub.verify()[0] == 0
    hub.traffic(4)
    a = hub.verified_size() + 1
    b = a + 2
    with hub.sql() as conn:
        body_a, body_b = _body(conn, a), _body(conn, b)
        _set_body(conn, a, body_b)
        _set_body(conn, b, body_a)
    status, out = hub.verify()
    assert status == 1
    assert f"reordered events: the event served at position {a} was logged at position {b}" in out


@pytest.mark.e2e
def test_truncated_log(hub: RunningHub) -> None:
    hub.traffic(6)
    assert hub.verify()[0] == 0
    keep = hub.verified_size() - 3
    with hub.sql() as conn:
        # Cut the tail and everything that commits to it, so the hub signs the short log.
        conn.execute("DELETE FROM audit_event WHERE leaf_index >= ?", (keep,))
        conn.execute("DELETE FROM audit_node WHERE (node_index + 1) << level > ?", (keep,))
        conn.execute("DELETE FROM audit_checkpoint WHERE tree_size > ?", (keep,))
    status, out = hub.verify()
    assert status == 1
    assert f"truncated log: the hub's checkpoint has {keep} events" in out


@pytest.mark.e2e
def test_forked_checkpoint_after_a_rewrite(hub: RunningHub) -> None:
    hub.traffic(5)
    assert hub.verify()[0] == 0
    size = hub.verified_size()
    with hub.sql() as conn:
        # Rewrite history at exactly the verified size and let the hub re-sign it.
        conn.execute("DELETE FROM audit_event WHERE leaf_index >= ?", (size,))
        _set_body(conn, size - 2, _forge(_body(conn, size - 2)))
        _rebuild_nodes(conn)
        conn.execute("DELETE FROM audit_checkpoint WHERE tree_size >= ?", (size - 2,))
    status, out = hub.verify()
    assert status == 1
    assert f"forked log: the hub signed two different roots for size {size}" in out


@pytest.mark.e2e
def test_forked_checkpoint_served_as_latest(hub: RunningHub) -> None:
    hub.traffic(2)
    assert hub.verify()[0] == 0
    size = hub.verified_size()
    # The operator, holding the log key, signs a second root for the same size.
    signer = LogSigner(
        DEFAULT_ORIGIN, load_or_create_log_key(hub.config.data_dir / LOG_KEY_FILENAME)
    )
    forged = signer.sign_checkpoint(Checkpoint(DEFAULT_ORIGIN, size, os.urandom(32)))
    with hub.sql() as conn:
        conn.execute(
            "INSERT INTO audit_checkpoint (tree_size, created_at, note) VALUES (?, ?, ?)",
            (size, "2026-11-24 10:00:00.000000", forged),
        )
    status, out = hub.verify("--no-fresh")
    assert status == 1
    assert f"forked log: the hub signed two different roots for size {size}" in out


@pytest.mark.e2e
def test_rewritten_log(hub: RunningHub) -> None:
    hub.traffic(4)
    assert hub.verify()[0] == 0
    size = hub.verified_size()
    with hub.sql() as conn:
        _set_body(conn, 2, _forge(_body(conn, 2)))
        _rebuild_nodes(conn)
        conn.execute("DELETE FROM audit_checkpoint")
    status, out = hub.verify()
    assert status == 1
    assert "rewritten log: the checkpoint of size" in out
    assert f"not consistent with the verified checkpoint of size {size}" in out


@pytest.mark.e2e
def test_bad_signature(hub: RunningHub) -> None:
    assert hub.verify()[0] == 0
    with hub.sql() as conn:
        note_id, note = conn.execute(
            "SELECT id, note FROM audit_checkpoint ORDER BY id DESC LIMIT 1"
        ).fetchone()
        body, signature = note.split("\n\n")
        name, blob = signature.rstrip("\n").rsplit(" ", 1)
        flipped = blob[:10] + ("A" if blob[10] != "A" else "B") + blob[11:]
        conn.execute(
            "UPDATE audit_checkpoint SET note = ? WHERE id = ?",
            (f"{body}\n\n{name} {flipped}\n", note_id),
        )
    status, out = hub.verify("--no-fresh")
    assert status == 1
    assert "bad signature" in out


@pytest.mark.e2e
def test_unknown_key(hub: RunningHub) -> None:
    assert hub.verify()[0] == 0
    hub.stop()
    key_file = hub.config.data_dir / LOG_KEY_FILENAME
    key_file.unlink()
    load_or_create_log_key(key_file)  # the hub now signs with a key nobody pinned
    hub.restart()
    status, out = hub.verify()
    assert status == 1
    assert "unknown key" in out


@pytest.mark.e2e
def test_audit_service_is_for_regulators_only(hub: RunningHub) -> None:
    status, _, err = hub.cli(
        "verify", "--log-key", hub.log_key, "--state", str(hub.state), institution="bank-a"
    )
    assert status == 2
    assert "may not call /fraudhub.v1.Audit/GetCheckpoint" in err
    with hub.channel("reg-1") as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        refused = [
            decode(r.encoded)
            for r in stub.ListEvents(
                audit_pb2.ListEventsRequest(filter=audit_pb2.EventFilter(institution="bank-a"))
            )
        ]
    assert [(e.action, e.outcome) for e in refused] == [("Audit.GetCheckpoint", "denied")]


@pytest.mark.e2e
def test_hub_refuses_to_sign_over_a_tree_edited_underneath_it(hub: RunningHub) -> None:
    hub.traffic(3)
    assert hub.verify()[0] == 0
    with hub.sql() as conn:
        size = conn.execute("SELECT max(tree_size) FROM audit_checkpoint").fetchone()[0]
        top = merkle.root_nodes(size)[0]  # the largest subtree under the last checkpoint
        conn.execute(
            "UPDATE audit_node SET hash = ? WHERE level = ? AND node_index = ?",
            (os.urandom(32), top.level, top.index),
        )
    status, out = hub.verify()
    assert status == 2
    assert "no longer matches checkpoint" in out and "refusing to sign" in out


def test_state_file_is_checked_when_loaded(tmp_path: Path) -> None:
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.generate())
    bodies = [make_event(i).encode() for i in range(5)]
    compact = merkle.CompactRange()
    for b in bodies:
        compact.append(merkle.leaf_hash(b))
    state = VerifiedState(
        verifier_key=signer.verifier_key(),
        origin=ORIGIN,
        size=5,
        root_hash=compact.root(),
        compact_range=tuple(compact.hashes),
        note=signer.sign_checkpoint(Checkpoint(ORIGIN, 5, compact.root())),
    )
    path = tmp_path / "state.json"
    save_verified_state(state, path)
    assert load_verified_state(path) == state
    assert load_verified_state(tmp_path / "missing.json") is None
    obj = json.loads(path.read_text())
    obj["size"] = 7  # a compact range of 5 leaves (2 hashes) cannot describe 7 (3)
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigurationError, match="compact range of 7 leaves"):
        load_verified_state(path)
    obj["size"], obj["root_hash"] = 5, obj["compact_range"][0]
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigurationError, match="does not match its root"):
        load_verified_state(path)
    path.write_text("{}")
    with pytest.raises(ConfigurationError, match="not a fraudhub audit state file"):
        load_verified_state(path)
