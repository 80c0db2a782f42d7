"""Unauthenticated traffic cannot grow the audit log without bound (issue 13).

Before: 500 bad-token calls in 0.6 s added 500 permanent audit entries and
``audit anomalies`` flagged nothing.  Now the hub counts refusals before
authentication per peer and window (``hub.services.refusals``): one event with
the count, and ``audit anomalies`` names the flood.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from _audit_hub import RunningHub
from fraudhub.v1 import exchange_pb2

from hub.audit.anomalies import AUTHENTICATION_FAILURES, Thresholds, detect
from hub.audit.events import AuditEvent, decode
from hub.services.refusals import OTHER_PEERS, RefusalTally, peer_key
from hub.storage import auditlog
from hub.storage.store import Store, sqlite_url

FLOOD = 500


def _events(store: Store) -> list[AuditEvent]:
    with store.session() as session:
        return [decode(e.body) for e in auditlog.list_events(session, 0, None, limit=100_000)]


@pytest.fixture
def hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path, capsys)
    yield running
    running.stop()


@pytest.mark.e2e
def test_a_bad_token_flood_is_one_event_with_its_count_and_is_flagged(hub: RunningHub) -> None:
    before = len(_events(hub.server.store))
    request = exchange_pb2.MatchRequest(purpose="payment_screening").SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
        match: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/fraudhub.v1.Exchange/Match"
        )
        for n in range(FLOOD):
            with pytest.raises(grpc.RpcError) as info:
                match(request, metadata=(("authorization", f"Bearer not-a-jwt-{n}"),), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing written per call; the window's count lands as one event.
    assert len(_events(hub.server.store)) == before
    assert hub.server.refusals.tally.flush() == 1
    added = _events(hub.server.store)[before:]
    assert len(added) == 1
    (event,) = added
    assert (event.institution, event.action, event.outcome, event.item_count) == (
        "unauthenticated",
        AUTHENTICATION_FAILURES,
        "UNAUTHENTICATED",
        FLOOD,
    )
    assert peer_key("ipv4:127.0.0.1:1") in event.reasons
    assert "METHOD:Exchange.Match" in event.reasons
    # No token or address in the permanent log.
    body = json.dumps([str(r) for r in event.reasons])
    assert "not-a-jwt" not in body and "127.0.0.1" not in body
    status, out, _ = hub.cli("anomalies")
    assert status == 1
    assert "authentication_failure_flood" in out and f"{FLOOD} calls refused" in out


@pytest.mark.e2e
def test_a_registered_institution_s_role_refusal_is_still_audited_one_by_one(
    hub: RunningHub,
) -> None:
    before = len(_events(hub.server.store))
    with hub.channel("reg-1") as channel:
        match: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/fraudhub.v1.Exchange/Match"
        )
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                match(exchange_pb2.MatchRequest().SerializeToString(), timeout=5)
    added = _events(hub.server.store)[before:]
    assert [(e.institution, e.outcome) for e in added] == [("reg-1", "denied")] * 3


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tally_appends_one_event_per_peer_and_window_and_bounds_peers(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    store.migrate()
    clock = _Clock()
    tally = RefusalTally(store, lambda: "", window=60, max_peers=2, clock=clock)
    for _ in range(10):
        tally.record("ipv4:10.0.0.1:5000", "Exchange.Match", "AuthenticationError")
    tally.record("ipv6:[::1]:6000", "Admin.AddInstitution", "AuthenticationError")
    tally.record("ipv4:10.0.0.3:1", "Exchange.Match", "AuthenticationError")
    tally.record("ipv4:10.0.0.4:1", "Exchange.Match", "AuthenticationError")
    assert _events(store) == []
    clock.now = 61
    tally.record("ipv4:10.0.0.1:5001", "Exchange.Match", "AuthenticationError")  # next window
    events = _events(store)
    counts = {next(r for r in e.reasons if r.startswith("PEER:")): e.item_count for e in events}
    assert counts == {peer_key("ipv4:10.0.0.1:1"): 10, peer_key("ipv6:[::1]:1"): 1, OTHER_PEERS: 2}
    assert tally.flush() == 1
    assert _events(store)[-1].item_count == 1
    assert tally.flush() == 0
    store.dispose()


def _refusals(peer: str, calls: int, at: datetime) -> AuditEvent:
    return AuditEvent.of(
        time=at,
        institution="unauthenticated",
        role="none",
        action=AUTHENTICATION_FAILURES,
        outcome="UNAUTHENTICATED",
        item_count=calls,
        reasons=("AuthenticationError", peer),
    )


def test_anomalies_flag_a_flood_per_peer_and_hour_only_above_the_threshold() -> None:
    start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    events = [
        *(_refusals("PEER:aaaaaaaaaaaaaaaa", 40, start + timedelta(minutes=m)) for m in (0, 1, 2)),
        *(_refusals("PEER:bbbbbbbbbbbbbbbb", 60, start + timedelta(hours=h)) for h in range(5)),
    ]
    flags = detect(events, Thresholds(auth_failures_per_hour=100))
    assert [f.kind for f in flags] == ["authentication_failure_flood"]
    assert flags[0].explanation.startswith("PEER:aaaaaaaaaaaaaaaa: 120 calls refused")
