"""Anomaly flags over audit events (hub.audit.anomalies): each fires, explains, stays quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.audit.anomalies import Thresholds, detect
from hub.audit.events import AuditEvent, case_ref_digest

DAY0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def ev(
    institution: str,
    day: int,
    *,
    items: int = 10,
    matches: int = 0,
    action: str = "Exchange.Match",
    tiers: tuple[str, ...] = ("public",),
    case: str | None = None,
    outcome: str = "ok",
    reasons: tuple[str, ...] = (),
    minute: int = 0,
) -> AuditEvent:
    return AuditEvent(
        time=DAY0 + timedelta(days=day, minutes=minute),
        institution=institution,
        role="bank",
        action=action,
        purpose="payment_screening",
        legal_basis="",
        case_ref_digest=case_ref_digest(case),
        kinds=("url",),
        tiers=tiers,
        item_count=items,
        match_count=matches,
        outcome=outcome,
        reasons=reasons,
        policy_version="v1",
        request_digest="",
    )


def kinds_of(flags: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(f.kind, f.institution) for f in flags]


def test_volume_spike_against_own_baseline() -> None:
    # bank-big screens 1000 items a day, every day: large but steady, never flagged.
    events = [ev("bank-big", d, items=1000) for d in range(10)]
    # bank-small screens 10 a day, then 400 on day 9.
    events += [ev("bank-small", d, items=10) for d in range(9)]
    events += [ev("bank-small", 9, items=400)]
    flags = detect(events)
    assert kinds_of(flags) == [("volume_spike", "bank-small")]
    assert "400 items on 2026-11-10, 40.0x its own median of 10 per day" in flags[0].explanation
    assert "previous 9 days (threshold 3x)" in flags[0].explanation


def test_no_spike_without_enough_history() -> None:
    events = [
        ev("bank-new", 0, items=10),
        ev("bank-new", 1, items=10),
        ev("bank-new", 2, items=900),
    ]
    assert detect(events) == []


def test_quiet_days_count_as_zero_in_the_baseline() -> None:
    events = [ev("bank-a", 0, items=5), ev("bank-a", 6, items=5), ev("bank-a", 7, items=300)]
    flags = detect(events)
    assert kinds_of(flags) == [("volume_spike", "bank-a")]
    assert "median of 0 per day over the previous 7 days" in flags[0].explanation


def test_match_rate_outlier_high_means_fishing() -> None:
    events = [ev(f"bank-{i}", 0, items=1000, matches=20 + i) for i in range(5)]
    events.append(ev("bank-fisher", 0, items=1000, matches=600))
    flags = detect(events)
    assert kinds_of(flags) == [("match_rate_outlier", "bank-fisher")]
    assert "match rate 60.0% (600 of 1000 items)" in flags[0].explanation
    assert "possible fishing" in flags[0].explanation


def test_match_rate_needs_peers_and_volume() -> None:
    few_peers = [ev("bank-a", 0, items=1000, matches=10), ev("bank-b", 0, items=1000, matches=900)]
    assert detect(few_peers) == []
    small = [ev(f"bank-{i}", 0, items=1000, matches=20) for i in range(4)]
    small.append(ev("bank-tiny", 0, items=20, matches=20))  # below match_rate_min_items
    assert detect(small) == []


def test_match_rate_outlier_with_identical_peers_uses_the_gap() -> None:
    events = [ev(f"bank-{i}", 0, items=1000, matches=50) for i in range(4)]
    events.append(ev("bank-odd", 0, items=1000, matches=500))
    flags = detect(events)
    assert kinds_of(flags) == [("match_rate_outlier", "bank-odd")]
    assert "gap +0.45, threshold 0.25" in flags[0].explanation


def test_sensitive_queries_clustering_on_few_case_references() -> None:
    sensitive = ("sensitive",)
    events = [ev("bank-a", 0, tiers=sensitive, case="CASE-1", minute=m) for m in range(30)]
    events += [ev("bank-a", 0, tiers=sensitive, case="CASE-2", minute=m) for m in range(5)]
    # bank-b uses one case reference per query: fine.
    events += [ev("bank-b", 0, tiers=sensitive, case=f"CASE-B{m}", minute=m) for m in range(30)]
    flags = detect(events)
    assert kinds_of(flags) == [("case_reference_clustering", "bank-a")]
    text = flags[0].explanation
    assert "35 sensitive-tier queries under only 2 case reference(s), 17.5 per reference" in text
    assert f"case reference {case_ref_digest('CASE-1')[:12]}... covers 30" in text
    assert "CASE-1" not in text  # only the digest prefix, never the reference


def test_screening_without_case_references_is_not_clustering() -> None:
    """Declared screening purposes query sensitive kinds with no case reference."""
    sensitive = ("sensitive",)
    events = [ev("bank-a", 100, tiers=sensitive, case=None, minute=m) for m in range(12)]
    assert [f for f in detect(events) if f.kind == "case_reference_clustering"] == []
    # The same requests under one case reference are.
    events = [ev("bank-a", 100, tiers=sensitive, case="CASE-9", minute=m) for m in range(12)]
    assert ("case_reference_clustering", "bank-a") in kinds_of(detect(events))


def test_quota_exhaustion() -> None:
    events = [ev("bank-a", 0, minute=m) for m in range(3)]
    events += [
        ev(
            "bank-a", 0, minute=10, outcome="RESOURCE_EXHAUSTED", reasons=("daily_quota_exhausted",)
        ),
        ev("bank-a", 0, minute=20, outcome="RESOURCE_EXHAUSTED"),
    ]
    flags = detect(events)
    assert kinds_of(flags) == [("quota_exhaustion", "bank-a")]
    assert "2 request(s) refused for an exhausted quota" in flags[0].explanation
    assert "daily_quota_exhausted x1" in flags[0].explanation


def test_thresholds_are_tunable() -> None:
    events = [ev("bank-a", d, items=10) for d in range(5)] + [ev("bank-a", 5, items=25)]
    assert detect(events) == []
    assert kinds_of(detect(events, Thresholds(spike_factor=2.0))) == [("volume_spike", "bank-a")]
