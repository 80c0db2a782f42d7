"""The exchange's sans-IO core (hub.core.matching): validation, aggregation, trimming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core.errors import ItemError
from client_sdk.core.indicators import CATEGORIES
from hub.core.matching import (
    DEFAULT_RETENTION_DAYS,
    Contribution,
    ContributionItem,
    MatchSummary,
    SealedLabel,
    Sighting,
    aggregate,
    clip_expiry,
    validate_contribution,
)
from hub.policy.model import Disclosure

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TOKEN = bytes(range(32))


def item(**changes: object) -> ContributionItem:
    fields: dict[str, object] = {
        "token": TOKEN,
        "kind": "phone",
        "key_epoch": 1,
        "category": "scam_phone",
        "confidence": 80,
        "observed_at": NOW - timedelta(days=3),
        "expires_at": NOW + timedelta(days=30),
        "sealed_label": None,
    }
    fields.update(changes)
    return ContributionItem(**fields)  # type: ignore[arg-type]


def check(candidate: ContributionItem, retention: int | None = None) -> Contribution | ItemError:
    return validate_contribution(
        7, candidate, now=NOW, categories=CATEGORIES, key_epoch=1, retention_days=retention
    )


def test_valid_item_is_accepted_unchanged() -> None:
    result = check(item())
    assert isinstance(result, Contribution)
    assert result.expires_at == NOW + timedelta(days=30)
    assert result.token == TOKEN


def test_retention_cap_clips_expiry() -> None:
    result = check(item(expires_at=NOW + timedelta(days=400)), retention=180)
    assert isinstance(result, Contribution)
    assert result.expires_at == NOW + timedelta(days=180)


def test_missing_expiry_defaults_to_the_cap_or_the_default() -> None:
    capped = check(item(expires_at=None), retention=30)
    uncapped = check(item(expires_at=None))
    assert isinstance(capped, Contribution) and isinstance(uncapped, Contribution)
    assert capped.expires_at == NOW + timedelta(days=30)
    assert uncapped.expires_at == NOW + timedelta(days=DEFAULT_RETENTION_DAYS)


def test_clip_expiry_without_cap_is_identity() -> None:
    later = NOW + timedelta(days=5000)
    assert clip_expiry(later, NOW, None) == later


def test_each_malformed_field_is_named_without_the_token() -> None:
    cases = {
        "token": item(token=b"short"),
        "key_epoch": item(key_epoch=2),
        "category": item(category="not_a_category"),
        "confidence": item(confidence=101),
        "observed_at": item(observed_at=NOW + timedelta(hours=1)),
        "expires_at": item(expires_at=NOW - timedelta(seconds=1)),
        "sealed_label": item(sealed_label=b"x" * 10),
    }
    for field_name, candidate in cases.items():
        result = check(candidate)
        assert isinstance(result, ItemError), field_name
        assert result.field == field_name
        assert result.index == 7
        assert TOKEN.hex() not in str(result)
    missing = check(item(observed_at=None))
    assert isinstance(missing, ItemError) and missing.field == "observed_at"
    backwards = check(item(expires_at=NOW - timedelta(days=5)))
    assert isinstance(backwards, ItemError) and backwards.field == "expires_at"


def sighting(contributor: str, **changes: object) -> Sighting:
    fields: dict[str, object] = {
        "contributor": contributor,
        "category": "scam_phone",
        "confidence": 50,
        "observed_at": NOW - timedelta(days=1),
        "sealed_label": b"sealed-by-" + contributor.encode(),
    }
    fields.update(changes)
    return Sighting(**fields)  # type: ignore[arg-type]


SIGHTINGS = [
    sighting("bank-b", category="money_mule", confidence=90, observed_at=NOW - timedelta(days=9)),
    sighting("bank-c", confidence=40, observed_at=NOW - timedelta(days=2)),
    sighting("bank-c", category="phishing", confidence=70, sealed_label=None),
    sighting("bank-a", confidence=100, observed_at=NOW - timedelta(days=90)),
]


def test_labels_level_discloses_everything_about_others_only() -> None:
    result = aggregate("bank-a", SIGHTINGS, disclosure=Disclosure.LABELS, min_contributors=1)
    assert result.matched and result.own_contribution
    assert result.disclosure is Disclosure.LABELS
    assert result.contributors == 2
    assert result.categories == ("money_mule", "phishing", "scam_phone")
    assert result.first_seen == NOW - timedelta(days=9)
    assert result.last_seen == NOW - timedelta(days=1)
    # bank-a's own confidence 100 and observation 90 days ago are not others' data.
    assert result.max_confidence == 90
    assert result.labels == (
        SealedLabel("bank-b", b"sealed-by-bank-b"),
        SealedLabel("bank-c", b"sealed-by-bank-c"),
    )


def test_each_level_trims_what_is_above_it() -> None:
    match = aggregate("bank-a", SIGHTINGS, disclosure=Disclosure.MATCH, min_contributors=1)
    assert match == MatchSummary(matched=True, disclosure=Disclosure.MATCH, own_contribution=True)
    count = aggregate("bank-a", SIGHTINGS, disclosure=Disclosure.COUNT, min_contributors=1)
    assert (count.contributors, count.categories, count.labels) == (2, (), ())
    summary = aggregate("bank-a", SIGHTINGS, disclosure=Disclosure.SUMMARY, min_contributors=1)
    assert summary.max_confidence == 90 and summary.labels == ()
    none = aggregate("bank-a", SIGHTINGS, disclosure=Disclosure.NONE, min_contributors=1)
    assert none == MatchSummary(own_contribution=True)


def test_k_threshold_reports_too_few_contributors_as_no_match() -> None:
    assert aggregate("x", SIGHTINGS[:2], disclosure=Disclosure.COUNT, min_contributors=2).matched
    below = aggregate("x", SIGHTINGS[:1], disclosure=Disclosure.COUNT, min_contributors=2)
    assert below == MatchSummary()


def test_own_contribution_never_counts_toward_k() -> None:
    # bank-a and bank-b hold it; for bank-a only one OTHER contributor exists.
    rows = [sighting("bank-a"), sighting("bank-b")]
    result = aggregate("bank-a", rows, disclosure=Disclosure.COUNT, min_contributors=2)
    assert result == MatchSummary(own_contribution=True)
    only_own = aggregate("bank-a", rows[:1], disclosure=Disclosure.LABELS, min_contributors=1)
    assert not only_own.matched and only_own.own_contribution


@settings(max_examples=60, deadline=None)
@given(
    contributors=st.lists(st.sampled_from(["a", "b", "c", "d", "q"]), max_size=8),
    level=st.sampled_from(list(Disclosure)),
    k=st.integers(min_value=0, max_value=4),
)
def test_never_discloses_above_the_decided_level(
    contributors: list[str], level: Disclosure, k: int
) -> None:
    rows = [sighting(c) for c in contributors]
    result = aggregate("q", rows, disclosure=level, min_contributors=k)
    others = {c for c in contributors if c != "q"}
    assert result.matched == (level > Disclosure.NONE and len(others) >= max(k, 1))
    assert result.disclosure <= level
    if result.disclosure < Disclosure.COUNT:
        assert result.contributors == 0
    if result.disclosure < Disclosure.SUMMARY:
        assert result.categories == () and result.first_seen is None
    if result.disclosure < Disclosure.LABELS:
        assert result.labels == ()
    assert all(label.contributor != "q" for label in result.labels)
