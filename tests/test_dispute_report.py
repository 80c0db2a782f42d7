"""hub.audit.dispute_report: every dispute, its outcome and time to resolution, from events."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from hub.audit.dispute_report import dispute_reports, render_disputes
from hub.audit.events import AuditEvent
from hub.audit.report import aggregate

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
D1, D2, D3 = "a" * 32, "b" * 32, "c" * 32


def event(
    action: str, who: str, at: timedelta, *reasons: str, items: int = 1, outcome: str = "ok"
) -> AuditEvent:
    return AuditEvent.of(
        time=T0 + at,
        institution=who,
        role="operator" if who == "hub" else "bank",
        action=action,
        outcome=outcome,
        purpose="redress",
        kinds=("phone",),
        item_count=items,
        reasons=reasons,
    )


OPEN, RESOLVE, LAPSE = "Disputes.Open", "Disputes.Resolve", "Hub.DisputeLapse"
EVENTS = [
    event(OPEN, "carrier-x", timedelta(0), f"DISPUTE:{D1}", items=2),
    event(OPEN, "bank-b", timedelta(hours=1), f"DISPUTE:{D2}", "DISPUTE_OUTCOME:not_listed",
          items=0),
    event(OPEN, "bank-b", timedelta(hours=2), f"DISPUTE:{D3}", items=1),
    event(RESOLVE, "bank-a", timedelta(days=2), f"DISPUTE:{D1}", "OUTCOME:upheld",
          "EVIDENCE:police_case"),
    # A failed answer changes nothing.
    event(RESOLVE, "bank-a", timedelta(days=2, hours=1), outcome="FAILED_PRECONDITION"),
    event(LAPSE, "hub", timedelta(days=31), f"DISPUTE:{D1}", "CONTRIBUTOR:bank-c",
          "OUTCOME:lapsed", "DISPUTE_OUTCOME:partly_upheld"),
    # Answer to a dispute opened before the window: counted for the institution only.
    event(RESOLVE, "bank-c", timedelta(days=32), f"DISPUTE:{'d' * 32}", "OUTCOME:withdrawn"),
]  # fmt: skip


def test_every_dispute_with_outcome_and_time_to_resolution() -> None:
    first, empty, pending = dispute_reports(EVENTS)
    assert (first.id, first.opened_by, first.kind, first.suspended) == (D1, "carrier-x", "phone", 2)
    assert (first.upheld, first.withdrawn, first.lapsed) == (1, 0, 1)
    assert first.outcome == "partly_upheld"
    assert first.resolution_seconds == timedelta(days=31).total_seconds()
    assert (empty.outcome, empty.resolution_seconds) == ("not_listed", 0.0)
    assert (pending.outcome, pending.resolved_at, pending.resolution_seconds) == (
        "open",
        None,
        None,
    )


def test_institutions_count_their_disputes() -> None:
    reports = {r.institution: r for r in aggregate(EVENTS)}
    assert reports["carrier-x"].disputes_opened == 1 and reports["bank-b"].disputes_opened == 2
    assert (reports["bank-a"].disputes_upheld, reports["bank-a"].disputes_withdrawn) == (1, 0)
    assert (reports["bank-c"].disputes_lapsed, reports["bank-c"].disputes_withdrawn) == (1, 1)
    assert reports["hub"].disputes_lapsed == 0


def test_render() -> None:
    disputes = dispute_reports(EVENTS)
    rows = list(csv.DictReader(io.StringIO(render_disputes(disputes, "csv"))))
    assert [r["outcome"] for r in rows] == ["partly_upheld", "not_listed", "open"]
    assert rows[0]["resolution_hours"] == "744.0" and rows[2]["resolution_hours"] == ""
    as_json = json.loads(render_disputes(disputes, "json"))
    assert as_json[0]["resolution_seconds"] == 31 * 86400
    table = render_disputes(disputes, "table").splitlines()
    assert table[0].split()[:3] == ["dispute", "opened_by", "kind"] and len(table) == 4
    with pytest.raises(ValueError, match="unknown report format"):
        render_disputes(disputes, "xml")
