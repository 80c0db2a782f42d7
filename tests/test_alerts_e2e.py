"""Watchlists and alerts end to end: real gRPC with TLS, hub + 3 key holders,
SQLite and PostgreSQL (the ``e2e_world`` fixture of conftest.py).

Each test uses its own values (the deployment is shared per backend).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fraudhub.v1 import alerts_pb2, alerts_pb2_grpc
from sqlmodel import select

from client_sdk import Indicator
from client_sdk.client.alerts import Alert, RefMap
from client_sdk.client.results import ItemFailure
from client_sdk.core.errors import InvalidRequest, PolicyDenied
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth
from client_sdk.wire.channels import open_channel
from hub.audit.events import decode
from hub.devtools.deployment import LocalDeployment
from hub.storage import auditlog
from hub.storage.alerts import Alert as AlertRow
from hub.storage.alerts import Watch
from hub.storage.models import Indicator as IndicatorRow
from hub.storage.models import utcnow

pytestmark = pytest.mark.e2e

MONITOR = "customer_monitoring"
REPORT = "fraud_reporting"


@pytest.fixture
def world(e2e_world: Any) -> LocalDeployment:
    assert isinstance(e2e_world, LocalDeployment)
    return e2e_world


@pytest.fixture
def refs(tmp_path: Path) -> Iterator[RefMap]:
    ref_map = RefMap(tmp_path / "refs.sqlite3")
    yield ref_map
    ref_map.close()


class Follower:
    """Follows a client's alerts on a thread, queueing them."""

    def __init__(
        self, world: LocalDeployment, institution: str, refs: RefMap, start: str, count: int
    ) -> None:
        self.alerts: queue.Queue[Alert] = queue.Queue()
        client = world.client(institution)
        self._stream = client.alerts.follow(start=start, timeout=30, ref_map=refs)
        self._count = count
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for n, alert in enumerate(self._stream, start=1):
            self.alerts.put(alert)
            if n == self._count:
                break  # closes the stream in this thread

    def next(self, timeout: float = 10) -> Alert:
        return self.alerts.get(timeout=timeout)

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


def drain(world: LocalDeployment, institution: str, refs: RefMap) -> list[Alert]:
    """Every unacknowledged alert of ``institution`` (List pages), then ack them."""
    client = world.client(institution)
    page = client.alerts.list(ref_map=refs, limit=1000)
    if page.alerts:
        client.alerts.ack(page.alerts[-1].sequence)
    return page.alerts


def test_bank_a_is_alerted_with_its_own_ref_when_bank_b_reports_a_watched_customer(
    world: LocalDeployment, refs: RefMap
) -> None:
    bank_a, bank_b = world.client("bank-a"), world.client("bank-b")
    drain(world, "bank-a", refs)
    customers = [("phone", f"139 1100 {n:04d}") for n in range(20)]
    result = bank_a.watch(
        customers,
        purpose=MONITOR,
        reference=[f"CUST-{n}" for n in range(20)],
        ref_map=refs,
    )
    assert (result.added + result.refreshed, result.failures) == (20, [])
    follower = Follower(world, "bank-a", refs, start="ack", count=2)
    try:
        contributed = bank_b.contribute(
            [Indicator("phone", "+86 139 1100 0007", "money_mule", 90)], purpose=REPORT
        )
        assert not isinstance(contributed[0], ItemFailure)
        alert = follower.next()
        assert (alert.event, alert.ref, alert.kind) == ("new", "CUST-7", "phone")
        assert alert.disclosure == "summary"
        assert alert.categories == ("money_mule",)
        assert alert.contributors == 1
        assert alert.first_seen is not None and alert.last_seen is not None
        # A second category from another bank is a visible change.
        world.client("bank-c").contribute(
            [Indicator("phone", "13911000007", "scam_phone", 80)], purpose=REPORT
        )
        changed = follower.next()
        assert (changed.event, changed.ref, changed.contributors) == ("changed", "CUST-7", 2)
        assert changed.categories == ("money_mule", "scam_phone")
        assert changed.sequence == alert.sequence + 1
    finally:
        follower.join()
    # The contributor is never alerted about its own contribution, nor told who watches.
    assert all(a.kind != "phone" or a.ref is None for a in drain(world, "bank-b", refs))
    counts = {(c.kind, c.purpose): c.count for c in bank_a.alerts.counts()}
    assert counts[("phone", MONITOR)] >= 20


def test_disconnect_and_reconnect_loses_and_duplicates_nothing_acked(
    world: LocalDeployment, refs: RefMap
) -> None:
    bank_a, bank_b = world.client("bank-a"), world.client("bank-b")
    drain(world, "bank-a", refs)
    values = [("email", f"mule{n}@reconnect.example") for n in range(6)]
    bank_a.watch(values, purpose=MONITOR, reference=[f"R{n}" for n in range(6)], ref_map=refs)
    bank_b.contribute([Indicator("email", v, "money_mule") for _, v in values[:3]], purpose=REPORT)
    seen: list[Alert] = []
    for alert in bank_a.alerts.follow(start="ack", timeout=10, ref_map=refs):
        seen.append(alert)
        bank_a.alerts.ack(alert.sequence)
        if len(seen) == 2:
            break  # disconnect after acknowledging two of three
    # Offline: more alerts are raised.
    bank_b.contribute([Indicator("email", v, "money_mule") for _, v in values[3:]], purpose=REPORT)
    for alert in bank_a.alerts.follow(start="ack", timeout=10, ref_map=refs):
        seen.append(alert)
        bank_a.alerts.ack(alert.sequence)
        if len(seen) == 6:
            break
    assert sorted(a.ref or "" for a in seen) == [f"R{n}" for n in range(6)]
    sequences = [a.sequence for a in seen]
    assert sequences == list(range(sequences[0], sequences[0] + 6))
    # Nothing is left unacknowledged, and an acknowledgement never moves back.
    page = bank_a.alerts.list(ref_map=refs)
    assert page.alerts == [] and page.acked == page.latest == sequences[-1]
    assert bank_a.alerts.ack(sequences[0]) == sequences[-1]
    with pytest.raises(InvalidRequest, match="past the newest alert"):
        bank_a.alerts.ack(sequences[-1] + 10)


def test_sensitive_kind_alerts_only_at_the_second_institution_and_revocation_withdraws(
    world: LocalDeployment, refs: RefMap
) -> None:
    bank_a = world.client("bank-a")
    drain(world, "bank-a", refs)
    account = "CMB:62220011100077"
    result = bank_a.watch(
        [("bank_account", account)], purpose=MONITOR, reference=["ACC-77"], ref_map=refs
    )
    assert result.failures == []
    world.client("bank-b").contribute(
        [Indicator("bank_account", account, "money_mule", 90)], purpose=REPORT
    )
    assert drain(world, "bank-a", refs) == []  # k = 2: one contributor shows nothing
    world.client("carrier-x").contribute(
        [Indicator("bank_account", account, "money_mule", 70)], purpose=REPORT
    )
    [new] = drain(world, "bank-a", refs)
    assert (new.event, new.ref, new.disclosure, new.contributors) == ("new", "ACC-77", "count", 2)
    assert new.categories == ()  # count only: no categories for a sensitive kind
    revoked = world.client("carrier-x").revoke([("bank_account", account)], reason="false_positive")
    assert revoked.revoked == 1
    [withdrawn] = drain(world, "bank-a", refs)
    assert (withdrawn.event, withdrawn.ref) == ("withdrawn", "ACC-77")
    assert withdrawn.sequence == new.sequence + 1


def test_initial_raises_alerts_for_indicators_already_present(
    world: LocalDeployment, refs: RefMap
) -> None:
    drain(world, "bank-c", refs)
    world.client("bank-b").contribute(
        [Indicator("domain", "initial-alerts.example", "phishing")], purpose=REPORT
    )
    result = world.client("bank-c").watch(
        [("domain", "initial-alerts.example")],
        purpose=MONITOR,
        reference=["D-1"],
        ref_map=refs,
        initial=True,
    )
    assert result.alerts == 1
    [alert] = drain(world, "bank-c", refs)
    assert (alert.event, alert.ref, alert.categories) == ("new", "D-1", ("phishing",))


def test_watching_a_sensitive_kind_without_an_allowed_purpose_is_refused_readably(
    world: LocalDeployment, refs: RefMap
) -> None:
    bank_a = world.client("bank-a")
    result = bank_a.watch(
        [("bank_account", "CMB:62220011100088")], purpose="payment_screening", ref_map=refs
    )
    [failure] = result.failures
    assert isinstance(failure.error, PolicyDenied)
    assert failure.error.reasons == ("DENY_NO_RULE",)
    assert "no rule allows this role, purpose, action and kind" in str(failure.error)
    carrier = world.client("carrier-x").watch(
        [("bank_account", "CMB:62220011100088")], purpose=MONITOR, ref_map=refs
    )
    assert [f.error.reasons for f in carrier.failures] == [("DENY_NO_RULE",)]  # type: ignore[attr-defined]


def test_unwatch_is_idempotent_and_watches_are_audited_without_tokens(
    world: LocalDeployment, refs: RefMap
) -> None:
    bank_a = world.client("bank-a")
    values = [("url", "https://unwatch.example/a"), ("url", "https://unwatch.example/b")]
    first = bank_a.watch(values, purpose=MONITOR, ref_map=refs)
    again = bank_a.watch(values, purpose=MONITOR, ref_map=refs)
    assert (first.added, again.added, again.refreshed) == (2, 0, 2)
    world.client("bank-b").contribute([Indicator("url", values[0][1], "phishing")], purpose=REPORT)
    assert [a.event for a in drain(world, "bank-a", refs)][-1:] == ["new"]  # List + Ack
    assert bank_a.unwatch(values, ref_map=refs) == 2
    assert bank_a.unwatch(values, ref_map=refs) == 0
    with world.hub.store.session() as session:
        events = [
            decode(stored.body) for stored in auditlog.list_events(session, 0, None, limit=10**6)
        ]
        assert not session.exec(
            select(Watch).where(Watch.watcher == "bank-a", Watch.kind == "url")
        ).all()
        # Alerts are stored for their watcher only, as tokens (never a value).
        watchers = {row.watcher for row in session.exec(select(AlertRow)).all()}
        assert "bank-a" in watchers
    actions = {e.action for e in events}
    assert {"Alerts.Watch", "Alerts.Unwatch", "Alerts.Raise", "Alerts.List", "Alerts.Ack"} <= (
        actions
    )
    watch_events = [e for e in events if e.action == "Alerts.Watch" and e.institution == "bank-a"]
    assert all(e.purpose in (MONITOR, "payment_screening") for e in watch_events)
    assert all(e.policy_version for e in watch_events)


def test_cli_watch_add_list_and_follow_jsonl_resumes_after_ack(
    world: LocalDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    config = str(world.client_config("carrier-x"))
    refs = str(tmp_path / "carrier.refs.sqlite3")
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text(
        "ref,kind,value,plan\n"
        "SUB-1,phone,+86 135 7700 0001,prepaid\n"
        "SUB-2,phone,135 7700 0002,postpaid\n"
        "SUB-3,phone,not a phone,prepaid\n"
        "SUB-4,bank_account,CMB:62220011100555,prepaid\n"
    )
    watch = ["watch", "add", "--config", config, "--refs", refs, "--no-progress"]
    assert main([*watch, "--purpose", MONITOR, str(subscribers)]) == 1
    out, err = capsys.readouterr()
    assert "2 watches added" in out and "of 4 rows" in out
    assert "row 3 (phone):" in err and "row 4 (bank_account):" in err and "DENY_NO_RULE" in err
    assert "7700" not in err  # failures name the row, never the value
    assert main([*watch, "--purpose", MONITOR, str(subscribers)]) == 1  # idempotent re-run
    assert "0 watches added, 2 refreshed" in capsys.readouterr().out
    assert main(["watch", "list", "--config", config]) == 0
    assert "phone" in capsys.readouterr().out

    follow = ["alerts", "follow", "--config", config, "--refs", refs, "--format", "jsonl"]
    assert main([*follow, "--since-ack", "--timeout", "2"]) == 0  # catch up on older alerts
    capsys.readouterr()
    world.client("bank-a").contribute(
        [Indicator("phone", "13577000002", "scam_phone", 80)], purpose=REPORT
    )
    assert main([*follow, "--since-ack", "--max", "1", "--timeout", "10"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["ref"] == "SUB-2" and record["event"] == "new" and record["kind"] == "phone"
    assert record["disclosure"] == "summary" and record["categories"] == ["scam_phone"]
    assert record["contributors"] == 1 and record["first_seen"] and record["last_seen"]
    # Acknowledged after printing: a restarted follower does not print it again.
    assert main([*follow, "--since-ack", "--timeout", "1"]) == 0
    assert capsys.readouterr().out == ""
    assert (
        main(
            [
                "watch",
                "remove",
                "--config",
                config,
                "--refs",
                refs,
                "--no-progress",
                str(subscribers),
            ]
        )
        == 0
    )
    assert "2 of 4 rows unwatched" in capsys.readouterr().out


def test_expiry_sweep_withdraws_in_the_sweep_transaction(
    world: LocalDeployment, refs: RefMap
) -> None:
    bank_a = world.client("bank-a")
    drain(world, "bank-a", refs)
    value = "expiring-mule@sweep.example"
    bank_a.watch([("email", value)], purpose=MONITOR, reference=["EXP-1"], ref_map=refs)
    world.client("bank-b").contribute([Indicator("email", value, "money_mule")], purpose=REPORT)
    [new] = drain(world, "bank-a", refs)
    assert (new.event, new.ref) == ("new", "EXP-1")
    with world.hub.store.session() as session:
        row = session.exec(
            select(IndicatorRow).where(
                IndicatorRow.contributor == "bank-b", IndicatorRow.token == new.token
            )
        ).one()
        row.observed_at = utcnow() - timedelta(days=2)
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
        session.commit()
    assert world.hub.sweep_expired() >= 1
    [withdrawn] = drain(world, "bank-a", refs)
    assert (withdrawn.event, withdrawn.ref, withdrawn.sequence) == (
        "withdrawn",
        "EXP-1",
        new.sequence + 1,
    )


def test_only_banks_and_carriers_call_alerts(world: LocalDeployment) -> None:
    channel = open_channel(
        world.hub_address, world.security, BearerAuth(world.keys["regulator-r"], HUB_AUDIENCE)
    )
    try:
        stub = alerts_pb2_grpc.AlertsStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListWatches(alerts_pb2.ListWatchesRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as streamed:
            list(stub.Subscribe(alerts_pb2.SubscribeRequest(), timeout=10))
        assert streamed.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        channel.close()


def test_a_sequence_past_the_signed_64_bit_range_is_invalid_argument(
    world: LocalDeployment,
) -> None:
    # Found by the wire fuzz: after >= 2^63 overflowed the database driver (INTERNAL).
    channel = open_channel(
        world.hub_address, world.security, BearerAuth(world.keys["bank-a"], HUB_AUDIENCE)
    )
    try:
        stub = alerts_pb2_grpc.AlertsStub(channel)
        request = alerts_pb2.ListAlertsRequest(start=alerts_pb2.START_AFTER, after=2**63, limit=1)
        with pytest.raises(grpc.RpcError) as refused:
            stub.List(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "after must be 0.." in str(refused.value.details())
        stream = stub.Subscribe(
            alerts_pb2.SubscribeRequest(start=alerts_pb2.START_AFTER, after=2**64 - 1), timeout=10
        )
        with pytest.raises(grpc.RpcError) as streamed:
            list(stream)
        assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
