"""Per-institution report aggregation and rendering (hub.audit.report)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from hub.audit.events import AuditEvent
from hub.audit.report import action_family, aggregate, is_match_action, render

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def ev(
    institution: str,
    action: str = "Exchange.Match",
    *,
    items: int = 0,
    matches: int = 0,
    outcome: str = "ok",
    reasons: tuple[str, ...] = (),
    tiers: tuple[str, ...] = ("public",),
    purpose: str = "payment_screening",
) -> AuditEvent:
    return AuditEvent(
        time=T,
        institution=institution,
        role="bank",
        action=action,
        purpose=purpose,
        legal_basis="",
        case_ref_digest="",
        kinds=(),
        item_count=items,
        match_count=matches,
        outcome=outcome,
        reasons=reasons,
        policy_version="v1",
        request_digest="",
        tiers=tiers,
    )


EVENTS = [
    ev("bank-a", items=100, matches=5),
    ev("bank-a", "Exchange.MatchStream", items=300, matches=15, tiers=("sensitive", "public")),
    ev("bank-a", "Exchange.Contribute", items=50, purpose="fraud_reporting"),
    ev("bank-a", outcome="denied", reasons=("purpose_not_allowed", "tier_sensitive")),
    ev("carrier-b", outcome="RESOURCE_EXHAUSTED", tiers=(), purpose=""),
    ev("carrier-b", "Exchange.ContributeStream", items=70, purpose="fraud_reporting"),
    ev("carrier-b", "Exchange.Revoke", items=2, purpose="fraud_reporting"),
]


def test_match_actions() -> None:
    assert is_match_action("Exchange.Match") and is_match_action("Exchange.MatchStream")
    assert not is_match_action("Exchange.Contribute") and not is_match_action("Audit.GetReport")
    assert [action_family(a) for a in ("Exchange.ContributeStream", "Exchange.Revoke")] == [
        "contribute",
        "revoke",
    ]
    assert action_family("Admin.AddInstitution") == "other"


def test_aggregate() -> None:
    a, c = aggregate(EVENTS)
    assert (a.institution, a.requests, a.items, a.matches, a.refusals) == ("bank-a", 4, 400, 20, 1)
    assert a.match_rate == pytest.approx(0.05)
    assert dict(a.refusals_by_reason) == {"purpose_not_allowed": 1, "tier_sensitive": 1}
    assert dict(a.requests_by_tier) == {"public": 4, "sensitive": 1}
    assert dict(a.requests_by_purpose) == {"payment_screening": 3, "fraud_reporting": 1}
    assert (a.contributed, a.revoked) == (50, 0)
    assert (c.institution, c.requests, c.items, c.match_rate) == ("carrier-b", 3, 0, 0.0)
    assert (c.contributed, c.revoked) == (70, 2)
    assert dict(c.refusals_by_reason) == {"RESOURCE_EXHAUSTED": 1}
    assert dict(c.requests_by_tier) == {"unrecorded": 1, "public": 2}
    assert dict(c.requests_by_purpose) == {"none": 1, "fraud_reporting": 2}


def test_render_formats() -> None:
    reports = aggregate(EVENTS)
    as_json = json.loads(render(reports, "json"))
    assert as_json[0]["match_rate"] == 0.05 and as_json[1]["institution"] == "carrier-b"
    rows = list(csv.DictReader(io.StringIO(render(reports, "csv"))))
    assert rows[0]["refusals_by_reason"] == "purpose_not_allowed=1 tier_sensitive=1"
    assert (rows[1]["contributed"], rows[1]["revoked"]) == ("70", "2")
    assert as_json[1]["contributed"] == 70
    table = render(reports, "table").splitlines()
    assert table[0].split()[:3] == ["institution", "requests", "items"]
    assert table[1].split()[:5] == ["bank-a", "4", "400", "20", "0.0500"]
    with pytest.raises(ValueError, match="unknown report format"):
        render(reports, "xml")


def test_items_refused_inside_an_allowed_request_are_not_contributed() -> None:
    # Issue 12: refusals counted whole requests only, and contributed counted
    # every item of a contribution request, refused or malformed items and
    # wholly refused requests included.
    events = [
        ev(
            "bank-a",
            "Exchange.Contribute",
            items=10,
            purpose="fraud_reporting",
            reasons=(
                "ALLOW_RULE:contribute-public",
                "INVALID_ITEMS",
                "WARNINGLISTED:known-good",
                "REFUSED_ITEMS:3",
                "MALFORMED_ITEMS:1",
                "EVIDENCE:police_case/4",
                "EVIDENCE:suspected/2",
            ),
        ),
        ev("bank-a", "Exchange.Contribute", items=5, outcome="denied", reasons=("DENY_NO_RULE",)),
    ]
    [a] = aggregate(events)
    assert (a.contributed, a.refused_items, a.malformed_items) == (6, 3, 1)
    assert (a.refusals, dict(a.refusals_by_reason)) == (1, {"DENY_NO_RULE": 1})
    assert dict(a.evidence) == {"police_case": 4, "suspected": 2}


def test_sightings_and_false_positive_ratios_per_contributor() -> None:
    events = [
        ev(
            "carrier-b",
            "Feedback.FileSightings",
            items=3,
            reasons=("SIGHTING:false_positive/2", "SIGHTING:confirmed/1"),
        ),
        ev(
            "bank-a",
            "Feedback.SightingReceived",
            items=2,
            reasons=("SIGHTING:false_positive/2", "REPORTER:carrier-b"),
        ),
        ev(
            "bank-c",
            "Feedback.SightingReceived",
            items=1,
            reasons=("SIGHTING:confirmed/1", "REPORTER:carrier-b"),
        ),
    ]
    a, c, carrier = aggregate(events)
    assert dict(carrier.sightings_filed) == {"false_positive": 2, "confirmed": 1}
    assert (a.false_positive_ratio, c.false_positive_ratio) == (1.0, 0.0)
    assert carrier.false_positive_ratio == 0.0  # it received none
    [row_a, _, _] = list(csv.DictReader(io.StringIO(render([a, c, carrier], "csv"))))
    assert row_a["sightings_received"] == "false_positive=2"
    assert row_a["false_positive_ratio"] == "1.0000"
    as_json = json.loads(render([a], "json"))
    assert as_json[0]["false_positive_ratio"] == 1.0
