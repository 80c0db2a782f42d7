"""Alerts obey the lifecycle rules of matches (issue 11 meets issue 12), end to end:
real gRPC with TLS, SQLite and PostgreSQL (the ``e2e_world`` fixture of conftest.py).

A watcher is never told about an indicator a match would not report: a disputed
one, one backed only by an impersonation victim, a warning-listed value, one
below the rule's ``min_evidence`` or below its decay model's score threshold.
Each test uses its own values (the deployment is shared per backend).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import E2E_EMPTY_OVERRIDE
from fraudhub.v1 import admin_pb2, admin_pb2_grpc

from client_sdk import Indicator
from client_sdk.client import feedback
from client_sdk.client.alerts import Alert, RefMap
from client_sdk.client.results import ItemFailure, MatchResult
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth
from client_sdk.wire.channels import open_channel
from hub.devtools.deployment import LocalDeployment
from hub.services.disputes import sweep_lapsed

pytestmark = pytest.mark.e2e

MONITOR = "customer_monitoring"
REPORT = "fraud_reporting"
PAYMENT = "payment_screening"


@pytest.fixture
def world(e2e_world: Any) -> LocalDeployment:
    assert isinstance(e2e_world, LocalDeployment)
    return e2e_world


@pytest.fixture
def refs(tmp_path: Path) -> Iterator[RefMap]:
    ref_map = RefMap(tmp_path / "refs.sqlite3")
    yield ref_map
    ref_map.close()


def phone(n: int) -> str:
    return f"+86 137 7700 {n:04d}"


def drain(world: LocalDeployment, institution: str, refs: RefMap) -> list[Alert]:
    """Every unacknowledged alert of ``institution``, then ack them."""
    client = world.client(institution)
    page = client.alerts.list(ref_map=refs, limit=1000)
    if page.alerts:
        client.alerts.ack(page.alerts[-1].sequence)
    return page.alerts


def events(alerts: list[Alert]) -> list[tuple[str, str | None]]:
    return [(a.event, a.ref) for a in alerts]


def watch(world: LocalDeployment, refs: RefMap, value: str, ref: str, *, initial: bool) -> int:
    result = world.client("bank-a").watch(
        [("phone", value)], purpose=MONITOR, reference=[ref], ref_map=refs, initial=initial
    )
    assert (result.added + result.refreshed, result.failures) == (1, [])
    return result.alerts


def contribute(world: LocalDeployment, institution: str, item: Indicator) -> None:
    [result] = world.client(institution).contribute([item], purpose=REPORT)
    assert not isinstance(result, ItemFailure), result


def match(world: LocalDeployment, value: str) -> MatchResult:
    [result] = world.client("bank-a").match([("phone", value)], purpose=PAYMENT)
    assert isinstance(result, MatchResult), result
    return result


def admin(world: LocalDeployment) -> admin_pb2_grpc.AdminStub:
    channel = open_channel(
        world.hub_address, world.security, BearerAuth(world.keys["operator-o"], HUB_AUDIENCE)
    )
    return admin_pb2_grpc.AdminStub(channel)


def test_a_dispute_withdraws_the_alert_and_an_upheld_item_raises_it_again(
    world: LocalDeployment, refs: RefMap
) -> None:
    drain(world, "bank-a", refs)
    value = phone(1)
    watch(world, refs, value, "CUST-D1", initial=False)
    contribute(world, "bank-b", Indicator("phone", value, "scam_phone", 90))
    assert events(drain(world, "bank-a", refs)) == [("new", "CUST-D1")]
    opened = world.client("carrier-x").disputes.open("phone", value, case_reference="DSR-A1")
    assert opened.suspended == 1
    [withdrawn] = drain(world, "bank-a", refs)
    assert (withdrawn.event, withdrawn.ref, withdrawn.contributors) == ("withdrawn", "CUST-D1", 0)
    assert withdrawn.score == 0
    assert not match(world, value).matched
    # Watching it again while it is suspended raises no "new": a match would not report it.
    assert watch(world, refs, value, "CUST-D1", initial=True) == 0
    assert drain(world, "bank-a", refs) == []
    [item] = [
        i for i in world.client("bank-b").disputes.list()[0] if i.dispute_id == opened.dispute_id
    ]
    world.client("bank-b").disputes.uphold(item.id, "police_case")
    [again] = drain(world, "bank-a", refs)
    assert (again.event, again.ref, again.categories) == ("new", "CUST-D1", ("scam_phone",))
    assert match(world, value).matched
    # A second dispute withdraws it again; the contributor's withdrawal deletes an
    # indicator the watcher already saw withdrawn: no second alert.
    second = world.client("carrier-x").disputes.open("phone", value, case_reference="DSR-A2")
    assert events(drain(world, "bank-a", refs)) == [("withdrawn", "CUST-D1")]
    [item] = [
        i for i in world.client("bank-b").disputes.list()[0] if i.dispute_id == second.dispute_id
    ]
    world.client("bank-b").disputes.withdraw(item.id)
    assert drain(world, "bank-a", refs) == []
    assert not match(world, value).matched


def test_a_lapsed_dispute_leaves_exactly_one_withdrawn_alert(
    world: LocalDeployment, refs: RefMap
) -> None:
    drain(world, "bank-a", refs)
    value = phone(2)
    contribute(world, "bank-b", Indicator("phone", value, "scam_phone", 90))
    assert watch(world, refs, value, "CUST-D2", initial=True) == 1
    opened = world.client("carrier-x").disputes.open("phone", value, case_reference="DSR-A3")
    assert opened.due_at is not None
    version = world.hub.policy.current.version
    assert sweep_lapsed(world.hub.store, version, opened.due_at + timedelta(seconds=1)) >= 1
    assert events(drain(world, "bank-a", refs)) == [("new", "CUST-D2"), ("withdrawn", "CUST-D2")]
    assert not match(world, value).matched


def test_an_impersonation_victim_record_alone_raises_no_alert(
    world: LocalDeployment, refs: RefMap
) -> None:
    drain(world, "bank-a", refs)
    value = phone(3)
    watch(world, refs, value, "CUST-I3", initial=False)
    contribute(
        world,
        "bank-b",
        Indicator("phone", value, "scam_phone", 90, evidence="impersonation_victim"),
    )
    assert drain(world, "bank-a", refs) == []
    assert not match(world, value).matched
    # A real report from another bank is alerted, counting only that bank.
    contribute(world, "bank-c", Indicator("phone", value, "scam_phone", 90))
    [alert] = drain(world, "bank-a", refs)
    assert (alert.event, alert.ref, alert.contributors) == ("new", "CUST-I3", 1)


def test_a_warning_listed_value_raises_no_alert(world: LocalDeployment, refs: RefMap) -> None:
    drain(world, "bank-a", refs)
    value = phone(4)
    contribute(world, "bank-b", Indicator("phone", value, "scam_phone", 90))
    operator = world.client("operator-o")
    tokenizer = world.client("bank-c")
    change = feedback.warninglist_change(
        operator, [("phone", value)], list_name="known-good", add=True, tokenizer=tokenizer
    )
    assert change.changed == 1
    try:
        assert watch(world, refs, value, "CUST-W4", initial=True) == 0
        assert "WARNINGLISTED:known-good" in match(world, value).reasons
        # Revoking what the watcher never saw withdraws nothing either.
        world.client("bank-b").revoke([("phone", value)], reason="false_positive")
        assert drain(world, "bank-a", refs) == []
    finally:
        feedback.warninglist_change(
            operator, [("phone", value)], list_name="known-good", add=False, tokenizer=tokenizer
        )


def test_below_the_decay_threshold_no_alert(world: LocalDeployment, refs: RefMap) -> None:
    drain(world, "bank-a", refs)
    value = phone(5)
    watch(world, refs, value, "CUST-S5", initial=False)
    # The phone model's threshold is 30: a fresh report at confidence 20 does not count.
    contribute(world, "bank-b", Indicator("phone", value, "scam_phone", 20))
    assert drain(world, "bank-a", refs) == []
    assert not match(world, value).matched
    contribute(world, "bank-c", Indicator("phone", value, "money_mule", 90))
    [alert] = drain(world, "bank-a", refs)
    assert (alert.event, alert.contributors, alert.categories) == ("new", 1, ("money_mule",))
    assert alert.max_confidence == 90
    # The score is the counted indicator's (fresh: about its confidence), never bank-b's 20.
    assert 30 <= alert.score <= 90
    [result] = world.client("bank-a").match([("phone", value)], purpose=PAYMENT)
    assert isinstance(result, MatchResult)
    assert alert.score - 1 <= result.score <= alert.score  # decay only lowers it


def test_below_the_watch_rules_min_evidence_no_alert(world: LocalDeployment, refs: RefMap) -> None:
    drain(world, "bank-a", refs)
    value = phone(6)
    watch(world, refs, value, "CUST-E6", initial=False)
    override = world.override_path  # type: ignore[attr-defined]
    override.write_text(
        "format: fraudhub-policy/1\nname: e2e-override\nrules:\n"
        "  - id: e2e-watch-phone-proven\n    action: watch\n    roles: [bank]\n"
        f"    purposes: [{MONITOR}]\n    kinds: [phone]\n"
        "    disclosure: summary\n    retention_days: 365\n    min_evidence: victim_report\n"
        "    legal_basis: test min_evidence\n"
    )
    stub = admin(world)
    try:
        stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest())
        contribute(
            world,
            "bank-b",
            Indicator("phone", value, "scam_phone", 90, evidence="internal_investigation"),
        )
        assert drain(world, "bank-a", refs) == []
        contribute(
            world, "bank-c", Indicator("phone", value, "money_mule", 90, evidence="police_case")
        )
        [alert] = drain(world, "bank-a", refs)
        assert (alert.event, alert.contributors, alert.categories) == ("new", 1, ("money_mule",))
    finally:
        override.write_text(E2E_EMPTY_OVERRIDE)
        stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest())
