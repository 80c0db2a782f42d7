"""Finding 4 of issue 10: split views of the audit log.

The hub's operator deletes an event no regulator has verified yet, renumbers
the later ones, rebuilds every stored hash and drops the checkpoints that
covered the deleted event, although the hub had already signed and served one
of them.  A lone regulator verifying against the hub's log key alone cannot
tell; ``fraudhub audit verify`` must refuse the rewritten log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from _audit_hub import RunningHub
from fraudhub.v1 import audit_pb2, audit_pb2_grpc
from test_audit_verify import complete_nodes


@pytest.fixture
def hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path, capsys)
    yield running
    running.stop()


def _serve_fresh_checkpoint(hub: RunningHub) -> int:
    """Someone (another regulator) is served a checkpoint of the current tree; its size."""
    with hub.channel("reg-1") as channel:
        note = (
            audit_pb2_grpc.AuditStub(channel)
            .GetCheckpoint(audit_pb2.GetCheckpointRequest(fresh=True), timeout=30)
            .note
        )
    return int(note.split("\n")[1])


def rewrite_without(conn: sqlite3.Connection, target: int) -> None:
    """The operator's split view: event ``target`` never happened.

    Delete it, renumber the later events, recompute every complete-subtree hash
    and drop every checkpoint that covered it, so the hub signs the new history.
    """
    conn.execute("DELETE FROM audit_event WHERE leaf_index = ?", (target,))
    # Two steps: the leaf index is a primary key.
    conn.execute("UPDATE audit_event SET leaf_index = -leaf_index WHERE leaf_index > ?", (target,))
    conn.execute("UPDATE audit_event SET leaf_index = -leaf_index - 1 WHERE leaf_index < 0")
    bodies = [bytes(b) for (b,) in conn.execute("SELECT body FROM audit_event ORDER BY leaf_index")]
    conn.execute("DELETE FROM audit_node")
    conn.executemany(
        "INSERT INTO audit_node (level, node_index, hash) VALUES (?, ?, ?)",
        [(n.level, n.index, h) for n, h in complete_nodes(bodies).items()],
    )
    conn.execute("DELETE FROM audit_checkpoint WHERE tree_size > ?", (target,))


@pytest.mark.e2e
def test_deleting_an_event_covered_by_a_served_checkpoint_fails_verification(
    hub: RunningHub,
) -> None:
    assert hub.verify()[0] == 0
    verified = hub.verified_size()
    hub.traffic(4)
    served = _serve_fresh_checkpoint(hub)
    target = verified + 1
    assert served > target
    with hub.sql() as conn:
        rewrite_without(conn, target)
    status, out = hub.verify()
    assert status == 1, out
