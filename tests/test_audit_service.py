"""The Audit gRPC service of a running hub (hub.services.audit).

Real hub, real SQLite file, loopback gRPC: listing with paging and filters,
proofs that verify against the signed checkpoint, reports, argument errors,
self-auditing of the regulator's reads, periodic checkpoints and the role table.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from _audit_hub import RunningHub
from fraudhub.v1 import audit_pb2, audit_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from client_sdk.core.errors import StorageError
from hub.audit import merkle
from hub.audit.checkpoint import LogVerifier, open_checkpoint
from hub.audit.events import AuditEvent, decode
from hub.services.audit import METHOD_ROLES, Checkpointer, log_signer
from hub.storage import auditlog
from hub.storage.store import Store, sqlite_url

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def event(i: int) -> AuditEvent:
    return AuditEvent(
        time=T0 + timedelta(minutes=i),
        institution="bank-a" if i % 2 else "carrier-c",
        role="bank" if i % 2 else "carrier",
        action="Exchange.Match",
        purpose="payment_screening",
        legal_basis="policy:match-public",
        case_ref_digest="",
        kinds=("phone",) if i % 3 == 0 else ("url",),
        tiers=("context_dependent",) if i % 3 == 0 else ("public",),
        item_count=10,
        match_count=i % 4,
        outcome="ok" if i % 10 else "RESOURCE_EXHAUSTED",
        reasons=() if i % 10 else ("daily_quota",),
        policy_version="v1",
        request_digest="",
    )


@pytest.fixture
def hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path, capsys)
    # 2,500 events written by the hub's own log code, in two transactions.
    with running.server.store.session() as session:
        for i in range(1200):
            auditlog.append(session, event(i))
        session.commit()
    with running.server.store.session() as session:
        for i in range(1200, 2500):
            auditlog.append(session, event(i))
        session.commit()
    yield running
    running.stop()


@pytest.fixture
def stub(hub: RunningHub) -> Iterator[audit_pb2_grpc.AuditStub]:
    with hub.channel("reg-1") as channel:
        yield audit_pb2_grpc.AuditStub(channel)


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def test_list_events_pages_through_the_whole_log(stub: audit_pb2_grpc.AuditStub) -> None:
    records = list(stub.ListEvents(audit_pb2.ListEventsRequest(end=2500)))
    assert [r.leaf_index for r in records] == list(range(2500))  # > 2 pages of 1000
    assert [decode(r.encoded) for r in records[:3]] == [event(0), event(1), event(2)]
    limited = list(stub.ListEvents(audit_pb2.ListEventsRequest(start=998, limit=5)))
    assert [r.leaf_index for r in limited] == [998, 999, 1000, 1001, 1002]


def test_list_events_filters(stub: audit_pb2_grpc.AuditStub) -> None:
    def indexes(**fields: Any) -> list[int]:
        request = audit_pb2.ListEventsRequest(end=60, filter=audit_pb2.EventFilter(**fields))
        return [r.leaf_index for r in stub.ListEvents(request)]

    assert indexes(institution="bank-a") == list(range(1, 60, 2))
    assert indexes(tier="context_dependent") == list(range(0, 60, 3))
    assert indexes(kind="phone") == list(range(0, 60, 3))
    assert indexes(outcome="RESOURCE_EXHAUSTED") == list(range(0, 60, 10))
    assert indexes(action="Exchange.Contribute") == []
    window = {"since": _ts(T0 + timedelta(minutes=5)), "until": _ts(T0 + timedelta(minutes=9))}
    assert indexes(**window) == [5, 6, 7, 8]


def test_proofs_verify_against_the_signed_checkpoint(
    hub: RunningHub, stub: audit_pb2_grpc.AuditStub
) -> None:
    verifier = LogVerifier.from_verifier_key(hub.log_key)
    note = stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(fresh=True)).note
    checkpoint = open_checkpoint(note, verifier)
    assert checkpoint.size == 2500  # signed before its own audit event was appended
    bodies = [r.encoded for r in stub.ListEvents(audit_pb2.ListEventsRequest(end=2500))]
    assert merkle.root_hash(bodies) == checkpoint.root_hash
    for index in (0, 1, 1234, 2499):
        proof = stub.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(leaf_index=index, tree_size=2500)
        )
        merkle.verify_inclusion(
            merkle.leaf_hash(bodies[index]), index, 2500, list(proof.hashes), checkpoint.root_hash
        )
    consistency = stub.GetConsistencyProof(
        audit_pb2.GetConsistencyProofRequest(old_size=1000, new_size=2500)
    )
    merkle.verify_consistency(
        1000, 2500, merkle.root_hash(bodies[:1000]), checkpoint.root_hash, list(consistency.hashes)
    )
    # Without fresh, the same checkpoint comes back while the hub signed no newer one.
    again = stub.GetCheckpoint(audit_pb2.GetCheckpointRequest())
    assert again.note == note


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("GetInclusionProof", audit_pb2.GetInclusionProofRequest(leaf_index=5, tree_size=5)),
        ("GetInclusionProof", audit_pb2.GetInclusionProofRequest(leaf_index=0, tree_size=10**9)),
        ("GetConsistencyProof", audit_pb2.GetConsistencyProofRequest(old_size=9, new_size=8)),
        ("GetConsistencyProof", audit_pb2.GetConsistencyProofRequest(old_size=1, new_size=10**9)),
    ],
)
def test_bad_proof_arguments_are_invalid_argument(
    stub: audit_pb2_grpc.AuditStub, method: str, request_message: object
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, method)(request_message)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The refused call is audited too, with its outcome.
    own = [
        decode(r.encoded)
        for r in stub.ListEvents(
            audit_pb2.ListEventsRequest(filter=audit_pb2.EventFilter(institution="reg-1"))
        )
    ]
    assert [(e.action, e.outcome) for e in own] == [(f"Audit.{method}", "invalid")]


def test_report(stub: audit_pb2_grpc.AuditStub) -> None:
    request = audit_pb2.GetReportRequest()
    getattr(request, "from").CopyFrom(_ts(T0))
    request.to.CopyFrom(_ts(T0 + timedelta(minutes=20)))
    report = stub.GetReport(request)
    assert report.events == 20
    by_id = {r.institution: r for r in report.institutions}
    bank = by_id["bank-a"]
    assert (bank.requests, bank.items, bank.refusals) == (10, 100, 0)
    assert bank.matches == sum(i % 4 for i in range(1, 20, 2))
    carrier = by_id["carrier-c"]
    assert dict(carrier.refusals_by_reason) == {"daily_quota": 2}
    assert dict(carrier.requests_by_tier) == {"context_dependent": 4, "public": 6}
    backwards = audit_pb2.GetReportRequest()
    getattr(backwards, "from").CopyFrom(_ts(T0 + timedelta(days=1)))
    backwards.to.CopyFrom(_ts(T0))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetReport(backwards)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_regulators_reads_are_audited(stub: audit_pb2_grpc.AuditStub) -> None:
    list(stub.ListEvents(audit_pb2.ListEventsRequest(start=10, limit=7)))
    stub.GetInclusionProof(audit_pb2.GetInclusionProofRequest(leaf_index=3, tree_size=2500))
    own = [
        decode(r.encoded)
        for r in stub.ListEvents(
            audit_pb2.ListEventsRequest(filter=audit_pb2.EventFilter(institution="reg-1"))
        )
    ]
    assert [(e.action, e.item_count, e.outcome, e.purpose) for e in own] == [
        ("Audit.ListEvents", 7, "ok", "audit"),
        ("Audit.GetInclusionProof", 12, "ok", "audit"),  # ceil(log2(2500)) hashes
    ]
    assert all(e.role == "regulator" and len(e.request_digest) == 64 for e in own)


def test_only_regulators_may_call_audit(hub: RunningHub) -> None:
    assert set(METHOD_ROLES.values()) == {frozenset({"regulator"})}
    assert len(METHOD_ROLES) == len(audit_pb2.DESCRIPTOR.services_by_name["Audit"].methods)
    with hub.channel("bank-a") as channel:
        bank_stub = audit_pb2_grpc.AuditStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            bank_stub.GetReport(audit_pb2.GetReportRequest())
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as info:
            list(bank_stub.ListEvents(audit_pb2.ListEventsRequest()))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_periodic_checkpoints(tmp_path: Path) -> None:
    # A store of its own: the running hub's checkpoint thread would race this one.
    store = Store(sqlite_url(tmp_path))
    store.migrate()
    signer = log_signer(tmp_path)
    clock = [T0]
    checkpointer = Checkpointer(
        store, signer, every_events=100, every_seconds=60, clock=lambda: clock[0]
    )
    verifier = LogVerifier.from_verifier_key(signer.verifier_key())
    assert checkpointer.run_once() is None  # an empty log is not checkpointed
    with store.session() as session:
        for i in range(2500):
            auditlog.append(session, event(i))
        session.commit()
    first = checkpointer.run_once()  # no checkpoint yet and 2,500 events: due
    assert first is not None and open_checkpoint(first, verifier).size == 2500
    assert checkpointer.run_once() is None  # nothing new
    with store.session() as session:
        for i in range(2500, 2550):
            auditlog.append(session, event(i))
        session.commit()
    assert checkpointer.run_once() is None  # 50 < 100 events, 0 s < 60 s
    clock[0] = T0 + timedelta(seconds=61)
    later = checkpointer.run_once()
    assert later is not None and open_checkpoint(later, verifier).size == 2550
    with store.session() as session:
        for i in range(2550, 2650):
            auditlog.append(session, event(i))
        session.commit()
    by_count = checkpointer.run_once()  # 100 events, 0 s since the last one
    assert by_count is not None and open_checkpoint(by_count, verifier).size == 2650
    store.dispose()


def test_checkpoint_thread_ends_with_the_server(hub: RunningHub) -> None:
    threads = [t for t in threading.enumerate() if t.name == "fraudhub-checkpoints"]
    assert threads and all(t.is_alive() for t in threads)
    hub.stop()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()
    hub.restart()  # the fixture stops it again


def test_cli_report_and_anomalies_over_the_service(hub: RunningHub) -> None:
    status, out, _ = hub.cli(
        "report", "--from", "2026-11-20T08:00", "--to", "2026-11-20T08:20", "--format", "csv"
    )
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("institution,requests,items,matches,match_rate,refusals")
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["bank-a", "10", "100"],
        ["carrier-c", "10", "100"],
    ]
    status, out, _ = hub.cli("anomalies", "--from", "2026-11-19", "--to", "2026-11-23")
    assert status == 1  # something was flagged
    flags = out.splitlines()
    assert len(flags) == 1
    assert flags[0].startswith("[quota_exhaustion] carrier-c: 250 request(s) refused")
    assert "daily_quota x250" in flags[0]


def test_verified_reports_ignore_the_hubs_index_columns(hub: RunningHub) -> None:
    """An operator who edits the indexed copy of an event's time hides it from the
    hub-side report; --verified reads the signed log's own bodies and still counts it,
    and refuses to report at all once a body no longer matches the verified root."""
    assert hub.verify()[0] == 0
    window = ("--from", "2026-11-20T08:00", "--to", "2026-11-20T08:20", "--format", "csv")

    def rows(*extra: str) -> tuple[int, list[list[str]], str]:
        status, out, err = hub.cli("report", *window, *extra)
        return status, [line.split(",")[:3] for line in out.splitlines()[1:]], err

    expected = [["bank-a", "10", "100"], ["carrier-c", "10", "100"]]
    verified = ("--verified", "--state", str(hub.state))
    status, found, err = rows(*verified)
    assert (status, found) == (0, expected) and "re-checked against its root" in err
    with hub.sql() as db:
        db.execute(
            "UPDATE audit_event SET time = '1999-01-01 00:00:00.000000' WHERE leaf_index = 1"
        )
    assert rows()[1] == [["bank-a", "9", "90"], ["carrier-c", "10", "100"]]  # fooled
    assert rows(*verified)[:2] == (0, expected)  # not fooled
    status, _, _ = hub.cli("anomalies", "--from", "2026-11-19", "--to", "2026-11-23", *verified)
    assert status == 1  # the quota exhaustion is still flagged from verified events
    with hub.sql() as db:
        db.execute(
            "UPDATE audit_event SET body = CAST(replace(CAST(body AS TEXT), 'carrier-c', "
            "'carrier-d') AS BLOB) WHERE leaf_index = 2"
        )
    status, found, err = rows(*verified)
    assert status == 1 and found == [] and "do not rebuild the verified root" in err


def test_regulators_read_the_policy_text_an_event_names(hub: RunningHub, tmp_path: Path) -> None:
    version = hub.server.policy.current.version
    status, out, _ = hub.cli("policy", version)
    assert status == 0 and "its SHA-256 checks out" in out
    assert json.loads(out.split("\n", 1)[1])["layers"][0]["name"]
    saved = tmp_path / "policy.json"
    status, _, _ = hub.cli("policy", version, "--out", str(saved))
    assert status == 0
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == version
    status, _, err = hub.cli("policy", "0" * 64)
    assert status == 2 and "no policy text recorded for that version" in err
    status, _, err = hub.cli("policy", "not-a-version")
    assert status == 2 and "64 lowercase hex digits" in err
    with hub.channel("bank-a") as channel, pytest.raises(grpc.RpcError) as denied:
        audit_pb2_grpc.AuditStub(channel).GetPolicy(audit_pb2.GetPolicyRequest(version=version))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_each_policy_that_starts_running_is_reported(tmp_path: Path) -> None:
    from hub.services.config import LivePolicy, default_policy

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(default_policy().read_text(encoding="utf-8"), encoding="utf-8")
    seen: list[str] = []
    live = LivePolicy((policy_file,), on_change=lambda p: seen.append(p.version))
    first = live.current.version
    policy_file.write_text(
        policy_file.read_text(encoding="utf-8").replace("name: ", "name: changed ", 1),
        encoding="utf-8",
    )
    new, previous = live.reload()
    assert previous == first and new != first and seen == [new]

    def refuse(_policy: object) -> None:
        raise StorageError("could not record the policy's text for auditors")

    failing = LivePolicy((policy_file,), on_change=refuse)
    running = failing.current.version
    policy_file.write_text(
        policy_file.read_text(encoding="utf-8").replace("name: ", "name: again ", 1),
        encoding="utf-8",
    )
    with pytest.raises(StorageError):
        failing.reload()
    assert failing.current.version == running  # not recorded, so not running


def test_list_events_rechecks_the_caller_per_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regulator disabled mid-stream gets no further page (issue 10, finding 5)."""
    monkeypatch.setattr("hub.services.audit.PAGE_SIZE", 5)
    running = RunningHub(tmp_path, capsys)
    try:
        with running.server.store.session() as session:
            for i in range(2000):
                auditlog.append(session, event(i))
            session.commit()
        with running.channel("reg-1") as channel:
            stream = audit_pb2_grpc.AuditStub(channel).ListEvents(audit_pb2.ListEventsRequest())
            first = next(stream)
            assert first.leaf_index == 0
            with running.sql() as db:
                db.execute("UPDATE institution SET enabled = 0 WHERE id = 'reg-1'")
            running.server.registry.invalidate()
            received = 1
            with pytest.raises(grpc.RpcError) as info:
                for _ in stream:
                    received += 1
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "disabled during the stream" in (info.value.details() or "")
            # What was already in flight arrived; the rest of the 2,000 did not.
            assert received < 2000, received
        with running.sql() as db:
            (outcome,) = db.execute(
                "SELECT outcome FROM audit_event WHERE action = 'Audit.ListEvents' "
                "ORDER BY leaf_index DESC LIMIT 1"
            ).fetchone()
        assert outcome == "denied"
    finally:
        running.stop()
