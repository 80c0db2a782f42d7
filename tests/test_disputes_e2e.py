"""Disputes end to end (issue 12, item 4) over real gRPC on SQLite and PostgreSQL.

A person's value is disputed through a member institution; every indicator
listing it is suspended from matches; each contributor upholds with evidence
or withdraws; an unanswered item lapses and the hub removes its indicator.
Every step is audited without the value or the token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fraudhub.v1 import disputes_pb2, disputes_pb2_grpc
from sqlmodel import select

from client_sdk import Indicator
from client_sdk.client.results import MatchResult
from client_sdk.core.errors import (
    DisputeStateError,
    InvalidRequest,
    NotFound,
    PolicyDenied,
)
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth
from client_sdk.wire.channels import open_channel
from hub.cli import main
from hub.devtools.deployment import LocalDeployment
from hub.services.disputes import sweep_lapsed
from hub.storage import auditlog
from hub.storage.models import Indicator as IndicatorRow
from hub.storage.models import utcnow

pytestmark = pytest.mark.e2e

REPORT = "fraud_reporting"
PAYMENT = "payment_screening"


@pytest.fixture
def world(e2e_world: Any) -> Iterator[LocalDeployment]:
    assert isinstance(e2e_world, LocalDeployment)
    yield e2e_world


def phone(n: int) -> str:
    return f"+86 137 {n // 10000:04d} {n % 10000:04d}"


def screen(world: LocalDeployment, value: str) -> MatchResult:
    [result] = world.client("bank-b").match([("phone", value)], purpose=PAYMENT)
    assert isinstance(result, MatchResult), result
    return result


def listed(world: LocalDeployment, value: str, *contributors: str) -> None:
    world_items = [Indicator("phone", value, "scam_phone", 80)]
    for contributor in contributors:
        world.client(contributor).contribute(world_items, purpose=REPORT)


def events_since(world: LocalDeployment, since: int) -> list[dict[str, Any]]:
    with world.hub.store.session() as session:
        return [json.loads(e.body) for e in auditlog.list_events(session, since, None)]


def audit_size(world: LocalDeployment) -> int:
    with world.hub.store.session() as session:
        return auditlog.tree_size(session)


def rows_listing(world: LocalDeployment, contributor: str) -> list[IndicatorRow]:
    with world.hub.store.session() as session:
        return list(
            session.exec(select(IndicatorRow).where(IndicatorRow.contributor == contributor)).all()
        )


def test_a_dispute_suspends_and_contributors_answer(world: LocalDeployment) -> None:
    value = phone(1)
    listed(world, value, "bank-a", "bank-c")
    assert screen(world, value).contributors == 2
    before = audit_size(world)
    carrier = world.client("carrier-x").disputes
    opened = carrier.open("phone", value, case_reference="DSR-0001")
    assert opened.suspended == 2 and opened.due_at is not None
    assert timedelta(days=29) < opened.due_at - utcnow() <= timedelta(days=30)
    # Suspended from matches at once, for everyone.
    assert not screen(world, value).matched
    # A re-contribution does not lift the suspension.
    listed(world, value, "bank-a")
    assert not screen(world, value).matched

    [a_item], _ = world.client("bank-a").disputes.list()
    [c_item], _ = world.client("bank-c").disputes.list()
    assert world.client("bank-b").disputes.list() == ([], [])
    assert a_item.dispute_id == c_item.dispute_id == opened.dispute_id
    assert (a_item.kind, a_item.category, a_item.state) == ("phone", "scam_phone", "pending")
    _, [mine] = carrier.list()
    assert (mine.id, mine.suspended, mine.outcome) == (opened.dispute_id, 2, "open")

    # Upholding needs evidence, and only the contributor answers its own item.
    with pytest.raises(InvalidRequest):
        world.client("bank-a").disputes._resolve(a_item.id, "uphold", "suspected")
    with pytest.raises(NotFound):
        world.client("bank-b").disputes.withdraw(a_item.id)
    upheld = world.client("bank-a").disputes.uphold(a_item.id, "police_case")
    assert (upheld.state, upheld.evidence) == ("upheld", "police_case")
    with pytest.raises(DisputeStateError):
        world.client("bank-a").disputes.withdraw(a_item.id)
    # bank-a's indicator matches again; bank-c's stays suspended until it answers.
    assert screen(world, value).contributors == 1
    withdrawn = world.client("bank-c").disputes.withdraw(c_item.id)
    assert withdrawn.state == "withdrawn"
    assert not [r for r in rows_listing(world, "bank-c") if r.id == c_item.id]
    assert screen(world, value).contributors == 1
    _, opened_list = carrier.list()
    assert [(d.outcome, d.closed_at is not None) for d in opened_list if d.id == mine.id] == [
        ("partly_upheld", True)
    ]
    answered, _ = world.client("bank-a").disputes.list(include_answered=True)
    assert [i.state for i in answered if i.id == a_item.id] == ["upheld"]
    assert a_item.id not in [i.id for i in world.client("bank-a").disputes.list()[0]]

    steps = [
        (e["institution"], e["action"], e["outcome"], e["item_count"], e["reasons"])
        for e in events_since(world, before)
        if e["action"].startswith("Disputes.") and e["action"] != "Disputes.List"
    ]
    dispute = f"DISPUTE:{opened.dispute_id}"
    assert steps == [
        ("carrier-x", "Disputes.Open", "ok", 2, ["ALLOW_RULE:dispute-listed-value", dispute]),
        ("bank-a", "Disputes.Resolve", "invalid", 0, []),
        ("bank-b", "Disputes.Resolve", "NOT_FOUND", 0, []),
        (
            "bank-a",
            "Disputes.Resolve",
            "ok",
            1,
            [dispute, "OUTCOME:upheld", "EVIDENCE:police_case"],
        ),
        ("bank-a", "Disputes.Resolve", "FAILED_PRECONDITION", 0, []),
        (
            "bank-c",
            "Disputes.Resolve",
            "ok",
            1,
            [dispute, "OUTCOME:withdrawn", "DISPUTE_OUTCOME:partly_upheld"],
        ),
    ]
    [open_event] = [e for e in events_since(world, before) if e["action"] == "Disputes.Open"]
    assert open_event["purpose"] == "redress" and open_event["case_ref_digest"]
    assert open_event["kinds"] == ["phone"] and open_event["tiers"] == ["context_dependent"]


def test_an_unanswered_item_lapses_and_its_indicator_is_removed(world: LocalDeployment) -> None:
    value = phone(2)
    listed(world, value, "bank-a")
    opened = world.client("bank-c").disputes.open("phone", value, case_reference="DSR-0002")
    assert opened.suspended == 1 and opened.due_at is not None
    version = world.hub.policy.current.version
    # Not before the deadline ...
    assert sweep_lapsed(world.hub.store, version, opened.due_at) == 0
    before = audit_size(world)
    # ... and after it, once.
    assert sweep_lapsed(world.hub.store, version, opened.due_at + timedelta(seconds=1)) == 1
    assert sweep_lapsed(world.hub.store, version, opened.due_at + timedelta(days=1)) == 0
    [lapse] = events_since(world, before)
    assert (lapse["institution"], lapse["action"], lapse["reasons"]) == (
        "hub",
        "Hub.DisputeLapse",
        [
            f"DISPUTE:{opened.dispute_id}",
            "CONTRIBUTOR:bank-a",
            "OUTCOME:lapsed",
            "DISPUTE_OUTCOME:removed",
        ],
    )
    [item] = [
        i
        for i in world.client("bank-a").disputes.list(include_answered=True)[0]
        if i.dispute_id == opened.dispute_id
    ]
    assert item.state == "lapsed"
    with pytest.raises(DisputeStateError):
        world.client("bank-a").disputes.uphold(item.id, "victim_report")
    # The indicator is gone: a new contribution is a new listing that matches again.
    assert not screen(world, value).matched
    listed(world, value, "bank-a")
    assert screen(world, value).matched


def test_a_dispute_is_refused_without_the_persons_request_or_by_a_regulator(
    world: LocalDeployment,
) -> None:
    value = phone(3)
    listed(world, value, "bank-a")
    with pytest.raises(PolicyDenied) as refused:
        world.client("carrier-x").disputes.open("phone", value, case_reference="")
    assert refused.value.reasons == ("DENY_CASE_REFERENCE_REQUIRED",)
    stub = disputes_pb2_grpc.DisputesStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["regulator-r"], HUB_AUDIENCE)
        )
    )
    request = disputes_pb2.OpenDisputeRequest(
        purpose="redress",
        case_reference="DSR-3",
        kind="phone",
        tokens=[disputes_pb2.DisputedToken(token=bytes(32), key_epoch=1)],
    )
    with pytest.raises(grpc.RpcError) as role:
        stub.Open(request)
    assert role.value.code() == grpc.StatusCode.PERMISSION_DENIED
    bank = disputes_pb2_grpc.DisputesStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["bank-b"], HUB_AUDIENCE)
        )
    )
    for bad in (
        disputes_pb2.OpenDisputeRequest(purpose="redress", case_reference="D", kind="phone"),
        disputes_pb2.OpenDisputeRequest(
            purpose="redress",
            case_reference="D",
            kind="phone",
            tokens=[disputes_pb2.DisputedToken(token=bytes(31), key_epoch=1)],
        ),
        disputes_pb2.OpenDisputeRequest(
            purpose="redress",
            case_reference="D",
            kind="phone",
            tokens=[disputes_pb2.DisputedToken(token=bytes(32), key_epoch=9)],
        ),
    ):
        with pytest.raises(grpc.RpcError) as malformed:
            bank.Open(bad)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Still listed: nothing was suspended by the refused calls.
    assert screen(world, value).matched


def test_dispute_commands(
    world: LocalDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value, other = phone(4), phone(5)
    listed(world, value, "bank-a")
    listed(world, other, "bank-a")
    carrier = ["--config", str(world.client_config("carrier-x"))]
    assert main(["dispute", "open", *carrier, "--kind", "phone", "--value", value,
                 "--case-reference", "DSR-4"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 indicator(s) suspended" in out and value not in out
    source = tmp_path / "disputes.csv"
    source.write_text(
        f"kind,value,case_reference\nphone,{other},DSR-5\nphone,not-a-phone,DSR-6\n"
        f"phone,{phone(6)},DSR-7\n"
    )
    assert main(["dispute", "open", *carrier, "--file", str(source)]) == 1
    captured = capsys.readouterr()
    assert "row 1: dispute" in captured.out and "1 indicator(s) suspended" in captured.out
    assert "row 3: dispute" in captured.out and "not listed" in captured.out
    assert "row 2 (phone):" in captured.err and "not-a-phone" not in captured.err
    assert other not in captured.out + captured.err
    assert not screen(world, value).matched and not screen(world, other).matched

    bank_a = ["--config", str(world.client_config("bank-a"))]
    assert main(["dispute", "list", *bank_a]) == 0
    listing = capsys.readouterr().out
    pending = [line.split()[0] for line in listing.splitlines()[1:] if "pending" in line]
    assert len(pending) >= 2 and value not in listing
    assert main(["dispute", "resolve", *bank_a, "--item", pending[0], "--uphold",
                 "--evidence", "internal_investigation"]) == 0  # fmt: skip
    assert main(["dispute", "resolve", *bank_a, "--item", pending[1], "--withdraw"]) == 0
    assert "withdrawn" in capsys.readouterr().out
    assert main(["dispute", "resolve", *bank_a, "--item", pending[1], "--withdraw"]) == 2
    assert "only pending items are answered" in capsys.readouterr().err
    assert main(["dispute", "resolve", *bank_a, "--item", pending[0], "--uphold"]) == 2


def test_regulators_see_every_dispute_in_the_report(
    world: LocalDeployment, capsys: pytest.CaptureFixture[str]
) -> None:
    from fraudhub.v1 import audit_pb2, audit_pb2_grpc

    value = phone(7)
    listed(world, value, "bank-a", "bank-c")
    opened = world.client("carrier-x").disputes.open("phone", value, case_reference="DSR-7")
    items, _ = world.client("bank-a").disputes.list()
    [item] = [i for i in items if i.dispute_id == opened.dispute_id]
    world.client("bank-a").disputes.withdraw(item.id)
    [c_item] = [
        i for i in world.client("bank-c").disputes.list()[0] if i.dispute_id == opened.dispute_id
    ]
    world.client("bank-c").disputes.uphold(c_item.id, "victim_report")
    nothing = world.client("carrier-x").disputes.open("phone", phone(8), case_reference="DSR-8")
    assert nothing.suspended == 0
    auditor = audit_pb2_grpc.AuditStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["regulator-r"], HUB_AUDIENCE)
        )
    )
    report = auditor.GetReport(audit_pb2.GetReportRequest())
    by_id = {d.id: d for d in report.disputes}
    done = by_id[opened.dispute_id]
    assert (done.opened_by, done.kind, done.suspended) == ("carrier-x", "phone", 2)
    assert (done.upheld, done.withdrawn, done.lapsed, done.outcome) == (1, 1, 0, "partly_upheld")
    assert done.HasField("resolved_at") and done.resolution_seconds > 0
    empty = by_id[nothing.dispute_id]
    assert (empty.suspended, empty.outcome, empty.resolution_seconds) == (0, "not_listed", 0.0)
    institutions = {r.institution: r for r in report.institutions}
    assert institutions["carrier-x"].disputes_opened >= 2
    assert institutions["bank-a"].disputes_withdrawn >= 1
    assert institutions["bank-c"].disputes_upheld >= 1

    # The regulator's command prints the same, one row per dispute.
    capsys.readouterr()
    key = world.client_dir / "regulator-r.pem"
    ca = world.data_dir / "tls" / "ca.pem"
    who = ["--institution", "regulator-r", "--key", str(key), "--ca", str(ca)]
    command = ["audit", "report", "--hub", world.hub_address, *who, "--disputes"]
    assert main([*command, "--format", "csv"]) == 0
    rows = {line.split(",")[0]: line.split(",") for line in capsys.readouterr().out.splitlines()}
    assert rows["dispute"][8] == "outcome" and rows[opened.dispute_id][8] == "partly_upheld"
    assert rows[nothing.dispute_id][8] == "not_listed" and rows[opened.dispute_id][10] != ""


def test_an_item_number_past_the_signed_64_bit_range_is_invalid_argument(
    world: LocalDeployment,
) -> None:
    channel = open_channel(
        world.hub_address, world.security, BearerAuth(world.keys["bank-a"], HUB_AUDIENCE)
    )
    try:
        stub = disputes_pb2_grpc.DisputesStub(channel)
        request = disputes_pb2.ResolveDisputeRequest(
            item_id=2**64 - 1, step="withdraw", evidence=""
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.Resolve(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "item_id must be" in str(refused.value.details())
    finally:
        channel.close()
