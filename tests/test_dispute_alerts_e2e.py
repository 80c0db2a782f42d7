"""A dispute notifies each contributor in its alerts stream (issue 12, item 4), end to end:
real gRPC with TLS, SQLite and PostgreSQL (the ``e2e_world`` fixture of conftest.py).

Opening a dispute that suspends indicators records, in the same transaction,
one ``disputed`` alert per contributor (whether or not it watches anything)
naming the dispute and the response deadline, carrying only the token of the
contributor's own indicator.  A non-contributor is told nothing.  The alert is
audited as ``Alerts.Raise`` (counts, no token) and no raw value reaches the
alert, the audit log or the logs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from client_sdk import Indicator
from client_sdk.client.alerts import Alert
from client_sdk.client.results import ItemFailure
from hub.cli import main
from hub.devtools.deployment import LocalDeployment
from hub.storage import auditlog
from hub.storage.models import Indicator as IndicatorRow

pytestmark = pytest.mark.e2e

REPORT = "fraud_reporting"


@pytest.fixture
def world(e2e_world: Any) -> LocalDeployment:
    assert isinstance(e2e_world, LocalDeployment)
    return e2e_world


def phone(n: int) -> str:
    return f"+86 137 6600 {n:04d}"


def drain(world: LocalDeployment, institution: str) -> list[Alert]:
    """Every unacknowledged alert of ``institution`` (no ref map), then ack them."""
    client = world.client(institution)
    page = client.alerts.list(limit=1000)
    if page.alerts:
        client.alerts.ack(page.alerts[-1].sequence)
    return page.alerts


def contribute(world: LocalDeployment, institution: str, value: str) -> None:
    [result] = world.client(institution).contribute(
        [Indicator("phone", value, "scam_phone", 80)], purpose=REPORT
    )
    assert not isinstance(result, ItemFailure), result


def own_tokens(world: LocalDeployment, institution: str) -> set[bytes]:
    with world.hub.store.session() as session:
        rows = session.exec(select(IndicatorRow).where(IndicatorRow.contributor == institution))
        return {bytes(r.token) for r in rows.all()}


def audit_since(world: LocalDeployment, since: int) -> list[dict[str, Any]]:
    with world.hub.store.session() as session:
        return [json.loads(e.body) for e in auditlog.list_events(session, since, None)]


def audit_size(world: LocalDeployment) -> int:
    with world.hub.store.session() as session:
        return auditlog.tree_size(session)


def test_each_contributor_gets_one_disputed_alert_and_a_bystander_none(
    world: LocalDeployment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for institution in ("bank-a", "bank-b", "bank-c"):
        drain(world, institution)
    value = phone(1)
    digits = "".join(c for c in value if c.isdigit())
    contribute(world, "bank-a", value)
    contribute(world, "bank-c", value)
    before_tokens = own_tokens(world, "bank-a")
    since = audit_size(world)

    opened = world.client("carrier-x").disputes.open("phone", value, case_reference="DSR-N1")
    assert opened.suspended == 2 and opened.due_at is not None

    # bank-a watches nothing, yet is told: exactly one alert naming the dispute.
    [alert] = drain(world, "bank-a")
    assert (alert.event, alert.kind, alert.dispute) == ("disputed", "phone", opened.dispute_id)
    assert alert.respond_by == opened.due_at
    assert (alert.purpose, alert.disclosure, alert.contributors) == ("dispute", "none", 0)
    assert alert.categories == () and alert.score == 0 and alert.ref is None
    # Only a token bank-a itself contributed, never more.
    assert alert.token in before_tokens
    record = alert.to_json()
    assert record["event"] == "disputed" and record["dispute"] == opened.dispute_id
    assert record["respond_by"] == opened.due_at.isoformat()
    assert digits not in repr(alert) and digits not in json.dumps(record)
    # The dispute list names the same dispute, so `dispute resolve` can be run.
    [item], _ = world.client("bank-a").disputes.list()
    assert item.dispute_id == alert.dispute

    [other] = drain(world, "bank-c")
    assert (other.event, other.dispute) == ("disputed", opened.dispute_id)
    assert other.token in own_tokens(world, "bank-c")
    # bank-b contributed nothing: no alert.
    assert drain(world, "bank-b") == []

    # Audited as Alerts.Raise per contributor: counts, no token.
    raised = [e for e in audit_since(world, since) if e["action"] == "Alerts.Raise"]
    assert sorted(e["institution"] for e in raised) == ["bank-a", "bank-c"]
    for event in raised:
        assert event["purpose"] == "dispute" and event["item_count"] == 1
        assert "EVENT:disputed:1" in event["reasons"]
        body = json.dumps(event)
        assert alert.token.hex() not in body and other.token.hex() not in body
        assert digits not in body
    assert digits not in caplog.text and alert.token.hex() not in caplog.text


def test_a_dispute_that_suspends_nothing_alerts_nobody(world: LocalDeployment) -> None:
    for institution in ("bank-a", "bank-b", "bank-c"):
        drain(world, institution)
    opened = world.client("carrier-x").disputes.open("phone", phone(2), case_reference="DSR-N2")
    assert opened.suspended == 0
    assert all(drain(world, i) == [] for i in ("bank-a", "bank-b", "bank-c"))


def test_alerts_follow_jsonl_prints_the_disputed_alert(
    world: LocalDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(world.client_config("bank-b"))
    refs = str(tmp_path / "bank-b.refs.sqlite3")
    follow = ["alerts", "follow", "--config", config, "--refs", refs, "--format", "jsonl"]
    assert main([*follow, "--since-ack", "--timeout", "2"]) == 0  # catch up on older alerts
    capsys.readouterr()
    value = phone(3)
    digits = "".join(c for c in value if c.isdigit())
    contribute(world, "bank-b", value)
    opened = world.client("carrier-x").disputes.open("phone", value, case_reference="DSR-N3")
    assert opened.due_at is not None
    assert main([*follow, "--since-ack", "--max", "1", "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    [line] = out.splitlines()
    record = json.loads(line)
    assert (record["event"], record["kind"], record["dispute"]) == (
        "disputed",
        "phone",
        opened.dispute_id,
    )
    assert record["respond_by"] == opened.due_at.isoformat()
    assert digits not in out
    # Acknowledged after printing: nothing more.
    assert main([*follow, "--since-ack", "--timeout", "1"]) == 0
    assert capsys.readouterr().out == ""
