"""Issue 12 end to end over real gRPC (SQLite and PostgreSQL): evidence classes,
sightings, decaying scores and warning lists.

Every value here is used by this file only: the deployment is shared with
tests/test_e2e.py (tests/conftest.py ``e2e_world``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fraudhub.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    exchange_pb2,
    exchange_pb2_grpc,
    feedback_pb2,
    feedback_pb2_grpc,
)
from sqlmodel import select

from client_sdk import Indicator
from client_sdk.client import feedback
from client_sdk.client.feedback import Sighting, SightingReview
from client_sdk.client.results import Contributed, ItemFailure, MatchResult
from client_sdk.core.errors import InvalidRequest, PermissionDenied, PolicyDenied
from client_sdk.core.tokens import TOKEN_BYTES
from client_sdk.core.vocabulary import DEFAULT_EVIDENCE
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth
from client_sdk.wire.channels import open_channel
from hub.cli import main
from hub.devtools.deployment import LocalDeployment
from hub.storage import auditlog
from hub.storage.models import Indicator as IndicatorRow

pytestmark = pytest.mark.e2e

REPORT = "fraud_reporting"
SIM = "sim_activation_screening"
PAYMENT = "payment_screening"


@pytest.fixture
def world(e2e_world: Any) -> Iterator[LocalDeployment]:
    assert isinstance(e2e_world, LocalDeployment)
    yield e2e_world


def phone(n: int) -> str:
    return f"+86 137 7700 {n:04d}"


def only(results: list[MatchResult | ItemFailure]) -> MatchResult:
    [result] = results
    assert isinstance(result, MatchResult), result
    return result


def events_since(world: LocalDeployment, start: int) -> list[dict[str, Any]]:
    with world.hub.store.session() as session:
        size = auditlog.tree_size(session)
        return [json.loads(e.body) for e in auditlog.list_events(session, start, size)]


def audit_size(world: LocalDeployment) -> int:
    with world.hub.store.session() as session:
        return auditlog.tree_size(session)


def regulator_report(world: LocalDeployment) -> dict[str, audit_pb2.InstitutionReport]:
    audit = audit_pb2_grpc.AuditStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["regulator-r"], HUB_AUDIENCE)
        )
    )
    report = audit.GetReport(audit_pb2.GetReportRequest())
    return {r.institution: r for r in report.institutions}


# --- evidence classes --------------------------------------------------------------------


def test_evidence_travels_and_weak_evidence_is_refused_per_item(world: LocalDeployment) -> None:
    bank_a, bank_b = world.client("bank-a"), world.client("bank-b")
    value = phone(1)
    outcomes = bank_a.contribute(
        [
            Indicator("phone", value, "scam_phone", 90, evidence="police_case"),
            # Sensitive kinds are never filed on suspicion alone (policy floor).
            Indicator("national_id", "110101199003074477", "identity_theft", evidence="suspected"),
        ],
        purpose=REPORT,
    )
    assert outcomes[0] == Contributed(0, "phone")
    refused = outcomes[1]
    assert isinstance(refused, ItemFailure) and isinstance(refused.error, PolicyDenied)
    assert refused.error.reasons == ("DENY_EVIDENCE:internal_investigation",)
    bank_b.contribute(
        [Indicator("phone", value, "scam_phone", 70, evidence="victim_report")], purpose=REPORT
    )
    seen = only(world.client("carrier-x").match([("phone", value)], purpose=SIM))
    assert seen.matched and seen.disclosure == "summary"
    assert seen.evidence == ("victim_report", "police_case")
    assert 80 <= seen.score <= 90  # fresh: base 90, hardly decayed
    [unknown] = bank_a.contribute(
        [Indicator("phone", value, "scam_phone", evidence="rumour")], purpose=REPORT
    )
    assert isinstance(unknown, ItemFailure) and isinstance(unknown.error, InvalidRequest)
    assert "evidence must be one of" in unknown.reason
    report = regulator_report(world)
    assert report["bank-a"].evidence["police_case"] >= 1
    assert report["bank-a"].refused_items >= 1  # the suspected national_id


def test_an_old_client_without_evidence_gets_the_documented_default(
    world: LocalDeployment,
) -> None:
    [keys] = world.client("bank-c")._tokenizer.tokenize([("phone", "+8613777000002")])
    stub = exchange_pb2_grpc.ExchangeStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["bank-c"], HUB_AUDIENCE)
        )
    )
    item = exchange_pb2.Indicator(
        token=keys.match_token,
        kind="phone",
        category=common_pb2.SCAM_PHONE,
        confidence=60,
        key_epoch=1,
    )
    item.observed_at.FromDatetime(datetime.now(UTC))
    response = stub.Contribute(exchange_pb2.ContributeRequest(purpose=REPORT, indicators=[item]))
    assert response.accepted == 1
    with world.hub.store.session() as session:
        row = session.exec(select(IndicatorRow).where(IndicatorRow.token == keys.match_token)).one()
    assert row.evidence == DEFAULT_EVIDENCE == "internal_investigation"


def test_an_impersonation_victim_is_never_a_fraud_match(world: LocalDeployment) -> None:
    value = phone(3)
    world.client("bank-a").contribute(
        [Indicator("phone", value, "identity_theft", 90, evidence="impersonation_victim")],
        purpose=REPORT,
    )
    seen = only(world.client("carrier-x").match([("phone", value)], purpose=SIM))
    assert not seen.matched and seen.impersonated and seen.contributors == 0
    # Below summary the flag is not shown, and still no match.
    as_match = only(world.client("carrier-x").match([("email", "x@example.org")], purpose=SIM))
    assert not as_match.impersonated
    # A fraud record beside it makes a match, still flagged.
    world.client("bank-b").contribute(
        [Indicator("phone", value, "scam_phone", 80, evidence="victim_report")], purpose=REPORT
    )
    both = only(world.client("carrier-x").match([("phone", value)], purpose=SIM))
    assert both.matched and both.impersonated and both.contributors == 1
    assert both.evidence == ("victim_report",)


# --- sightings and scores ------------------------------------------------------------------


def test_sightings_move_scores_and_reach_contributor_matcher_and_log(
    world: LocalDeployment,
) -> None:
    value = phone(4)
    bank_a, bank_b, carrier = (world.client(i) for i in ("bank-a", "bank-b", "carrier-x"))
    bank_a.contribute([Indicator("phone", value, "scam_phone", 80)], purpose=REPORT)
    before = only(carrier.match([("phone", value)], purpose=SIM))
    assert before.matched and before.score >= 79
    start = audit_size(world)
    filed = carrier.file_sightings([Sighting("phone", value, "false_positive")], purpose=SIM)
    assert filed.recorded == 1 and filed.failures == ()
    after = only(carrier.match([("phone", value)], purpose=SIM))
    # 80 halved: below the vishing threshold of 30?  No: 40, still a match, lower.
    assert after.matched and after.score < before.score
    assert after.sightings_false_positive == 0  # the querier's own sighting is not shown back
    other = only(bank_b.match([("phone", value)], purpose=PAYMENT))
    assert (
        other.sightings_confirmed,
        other.sightings_false_positive,
        other.sightings_expired,
    ) == (0, 1, 0)
    [review] = bank_a.review_sightings([("phone", value)], purpose=REPORT)
    assert review == SightingReview(0, "phone", True, 0, 1, 0)
    # Someone else's value: no feedback shown.
    [foreign] = bank_b.review_sightings([("phone", value)], purpose=REPORT)
    assert foreign == SightingReview(0, "phone", False, 0, 0, 0)
    events = events_since(world, start)
    filed_event = next(e for e in events if e["action"] == "Feedback.FileSightings")
    assert filed_event["institution"] == "carrier-x"
    assert "SIGHTING:false_positive/1" in filed_event["reasons"]
    received = next(e for e in events if e["action"] == "Feedback.SightingReceived")
    assert received["institution"] == "bank-a"
    assert "SIGHTING:false_positive/1" in received["reasons"]
    # The regulator's report: bank-a received a false positive, carrier-x filed one.
    report = regulator_report(world)
    assert report["bank-a"].sightings_received["false_positive"] >= 1
    assert 0 < report["bank-a"].false_positive_ratio <= 1
    assert report["carrier-x"].sightings_filed["false_positive"] >= 1
    # A second institution confirming never lowers the score.
    bank_b.file_sightings([Sighting("phone", value, "confirmed")], purpose=PAYMENT)
    confirmed = only(carrier.match([("phone", value)], purpose=SIM))
    assert confirmed.score >= after.score and confirmed.sightings_confirmed == 1


def test_a_decayed_phone_stops_matching_until_confirmed(world: LocalDeployment) -> None:
    value = phone(5)
    five_days = datetime.now(UTC) - timedelta(days=5)
    world.client("bank-a").contribute(
        [Indicator("phone", value, "scam_phone", 80, five_days)], purpose=REPORT
    )
    carrier = world.client("carrier-x")
    # MISP vishing: 80 * (1 - 0.5 ** (1/2.3)) = 21 < 30.
    stale = only(carrier.match([("phone", value)], purpose=SIM))
    assert not stale.matched
    world.client("bank-b").file_sightings([Sighting("phone", value, "confirmed")], purpose=PAYMENT)
    fresh = only(carrier.match([("phone", value)], purpose=SIM))
    assert fresh.matched and fresh.score >= 80


def test_filing_discloses_nothing_and_is_policy_governed(world: LocalDeployment) -> None:
    carrier = world.client("carrier-x")
    unknown = carrier.file_sightings([Sighting("phone", phone(6), "expired")], purpose=SIM)
    assert unknown.recorded == 1  # the same answer as for a known token
    with pytest.raises(InvalidRequest):
        carrier.file_sightings([Sighting("phone", phone(6), "seen")], purpose=SIM)
    stub = feedback_pb2_grpc.FeedbackStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["regulator-r"], HUB_AUDIENCE)
        )
    )
    with pytest.raises(grpc.RpcError) as denied:
        stub.FileSightings(feedback_pb2.FileSightingsRequest(purpose="audit"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    own = feedback_pb2_grpc.FeedbackStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["carrier-x"], HUB_AUDIENCE)
        )
    )
    bad = feedback_pb2.SightingItem(token=b"short", kind="phone", key_epoch=1, type="confirmed")
    good = feedback_pb2.SightingItem(
        token=bytes(TOKEN_BYTES), kind="phone", key_epoch=1, type="confirmed"
    )
    with pytest.raises(grpc.RpcError) as malformed:
        own.FileSightings(feedback_pb2.FileSightingsRequest(purpose=SIM, items=[good, bad]))
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A purpose the policy does not allow for sightings: the whole request is refused.
    [refused] = carrier.file_sightings(
        [Sighting("phone", phone(6), "confirmed")], purpose="audit"
    ).failures
    assert isinstance(refused.error, PolicyDenied)


# --- warning lists -------------------------------------------------------------------------


def test_warning_lists_refuse_contributions_and_hide_matches(world: LocalDeployment) -> None:
    operator = world.client("operator-o")
    before = phone(7)
    world.client("bank-a").contribute(
        [Indicator("phone", before, "scam_phone", 90)], purpose=REPORT
    )
    listed = [("phone", "+86 96110"), ("phone", before), ("domain", "gov.cn")]
    member = world.client("bank-c")
    change = feedback.warninglist_change(
        operator, listed, list_name="known-good", add=True, tokenizer=member
    )
    assert (change.changed, change.unchanged) == (3, 0)
    again = feedback.warninglist_change(
        operator, listed[:1], list_name="known-good", add=True, tokenizer=member
    )
    assert (again.changed, again.unchanged) == (0, 1)
    [refused] = world.client("bank-b").contribute(
        [Indicator("phone", "+86 96110", "scam_phone", 90)], purpose=REPORT
    )
    assert isinstance(refused, ItemFailure) and isinstance(refused.error, PolicyDenied)
    assert refused.error.reasons == ("WARNINGLISTED:known-good",)
    hidden = only(world.client("carrier-x").match([("phone", before)], purpose=SIM))
    assert not hidden.matched and "WARNINGLISTED:known-good" in hidden.reasons
    counts = feedback.warninglist_counts(operator)
    assert ("known-good", "domain", 1) in counts
    removed = feedback.warninglist_change(
        operator, listed[1:2], list_name="known-good", add=False, tokenizer=member
    )
    assert removed.changed == 1
    assert only(world.client("carrier-x").match([("phone", before)], purpose=SIM)).matched
    with pytest.raises(PermissionDenied):  # the role table: only the operator
        feedback.warninglist_change(
            world.client("bank-a"), listed[:1], list_name="known-good", add=True
        )


# --- the command line ----------------------------------------------------------------------


def test_cli_sighting_add_and_warninglist(
    world: LocalDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = phone(8)
    world.client("bank-a").contribute([Indicator("phone", value, "scam_phone", 90)], purpose=REPORT)
    sightings = tmp_path / "sightings.csv"
    sightings.write_text(
        "kind,value,type,seen_at\n"
        f"phone,{value},confirmed,{datetime.now(UTC).isoformat()}\n"
        f"phone,{value[:-2]},confirmed,\n"
        f"phone,{phone(9)},maybe,\n"
    )
    status = main(
        [
            "sighting",
            "add",
            "--config",
            str(world.client_config("carrier-x")),
            "--purpose",
            SIM,
            str(sightings),
        ]
    )
    out, err = capsys.readouterr()
    assert status == 1
    assert "1 of 3 sightings recorded, 2 failed" in out
    assert "row 2 (phone)" in err and "row 3 (phone): type must be one of" in err
    assert value not in out + err and value[:-2] not in err
    wl = tmp_path / "warninglist.csv"
    wl.write_text("kind,value\nphone,+86 95588\nphone,+86 95533\n")
    config = str(world.client_config("operator-o"))
    member = str(world.client_config("bank-c"))
    add = ["warninglist", "add", "--config", config, "--tokenize-with", member, str(wl)]
    assert main(add) == 0
    assert "2 of 2 values added (known-good)" in capsys.readouterr().out
    assert main(["warninglist", "list", "--config", config]) == 0
    assert "known-good\tphone\t" in capsys.readouterr().out
