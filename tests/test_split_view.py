"""Finding 4 of issue 10: split views of the audit log.

The hub's operator deletes an event no regulator has verified yet, renumbers
the later ones, rebuilds every stored hash and drops the checkpoints that
covered the deleted event, although the hub had already signed and served one
of them.  A lone regulator verifying against the hub's log key alone cannot
tell.  With witnesses (key holders running ``fraudhub.v1.Witness``, ADR 0010)
that cosigned the served checkpoint, they refuse the rewritten history, so
``fraudhub audit verify`` with a witness quorum refuses the rewritten log and
names the witnesses whose cosignature is missing; a regulator that verified a
cosigned checkpoint before the rewrite sees the fork.  Witness outages never
block the hub's writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _audit_hub import RunningHub
from fraudhub.v1 import audit_pb2, audit_pb2_grpc, witness_pb2, witness_pb2_grpc
from test_audit_verify import complete_nodes

from client_sdk.wire.auth import BearerAuth, InstitutionKey
from client_sdk.wire.channels import ChannelSecurity, open_channel


@pytest.fixture
def hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path, capsys, witnesses=2)
    yield running
    running.stop()


def _pinned(hub: RunningHub) -> list[str]:
    return [arg for key in hub.witness_keys for arg in ("--witness", key)]


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
    hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    status, out = hub.verify(*_pinned(hub))
    assert status == 0, out
    assert "cosigned by 2 of 2 pinned witness(es) (quorum 2)" in out
    verified = hub.verified_size()
    hub.traffic(4)
    served = _serve_fresh_checkpoint(hub)
    target = verified + 1
    assert served > target
    # A second regulator verifies the served, cosigned checkpoint before the rewrite.
    other_state = hub.root / "other-regulator.json"
    status, out, err = hub.cli(
        "verify", "--log-key", hub.log_key, "--state", str(other_state), *_pinned(hub)
    )
    assert status == 0, err
    with hub.sql() as conn:
        rewrite_without(conn, target)
    # The witnesses cosigned the original history and refuse the rewrite: no quorum.
    caplog.clear()
    status, out = hub.verify()
    refusals = [r.getMessage() for r in caplog.records if r.name == "hub.services.witnesses"]
    assert len(refusals) == 2, refusals
    assert all("rollback" in m or "inconsistent" in m or "already at size" in m for m in refusals)
    assert status == 1, out
    assert "missing witness quorum: 0 of the required 2" in out
    for key in hub.witness_keys:
        name, key_id, _ = key.split("+", 2)
        assert f"witness {name} ({key_id}): no cosignature" in out
    # The regulator holding the older cosigned checkpoint sees the fork even
    # without asking for a quorum.
    status, out, err = hub.cli("verify", "--state", str(other_state), "--witness-quorum", "0")
    assert status == 1
    assert "truncated log" in err or "rewritten log" in err, err


@pytest.mark.e2e
def test_witness_outage_does_not_block_writes_and_is_named(hub: RunningHub) -> None:
    assert hub.verify(*_pinned(hub))[0] == 0
    hub.witness_servers[1].stop(0)
    hub.traffic(3)  # the hub's writes go on
    status, out = hub.verify()
    assert status == 1
    name, key_id, _ = hub.witness_keys[1].split("+", 2)
    assert "missing witness quorum: 1 of the required 2" in out
    assert f"witness {name} ({key_id}): no cosignature" in out
    # A regulator that accepts one of two witnesses verifies, warned of the other.
    status, out = hub.verify("--witness-quorum", "1")
    assert status == 0, out
    assert f"warning: witness {name} ({key_id}): no cosignature" in out


@pytest.mark.e2e
def test_only_the_operator_may_ask_a_witness(hub: RunningHub) -> None:
    address = hub.config.witnesses[0].address
    auth = BearerAuth(
        InstitutionKey.load("bank-a", hub.root / "bank-a.pem"), hub.config.witnesses[0].audience
    )
    channel = open_channel(address, ChannelSecurity(insecure=True), auth)
    with channel, pytest.raises(grpc.RpcError) as caught:
        witness_pb2_grpc.WitnessStub(channel).AddCheckpoint(
            witness_pb2.AddCheckpointRequest(old_size=0, checkpoint="x"), timeout=10
        )
    # bank-a is not in the holder's registry at all; the hub operator is.
    assert caught.value.code() in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    )
