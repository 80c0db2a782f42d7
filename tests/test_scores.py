"""hub.core.scores: MISP's decay curve and the sighting adjustments, by property."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.core.scores import DecayModel, SightingCounts, current_score, decayed

NOW = datetime(2026, 12, 1, tzinfo=UTC)
VISHING = DecayModel("vishing", lifetime_days=10, decay_speed=2.3, threshold=30, source="MISP")

models = st.builds(
    DecayModel,
    name=st.just("m"),
    lifetime_days=st.floats(min_value=0.5, max_value=5000),
    decay_speed=st.floats(min_value=0.1, max_value=10),
    threshold=st.integers(0, 100),
)
ages = st.floats(min_value=-2, max_value=6000, allow_nan=False)
counts = st.builds(
    SightingCounts,
    confirmed=st.integers(0, 20),
    false_positive=st.integers(0, 20),
    expired=st.integers(0, 20),
    last_confirmed=st.none() | st.integers(-4000, 10).map(lambda days: NOW + timedelta(days=days)),
)


def test_misp_vishing_curve() -> None:
    # MISP's formula by hand: 80 * (1 - (3/10) ** (1/2.3)) = 32.67...
    assert decayed(80, 3, VISHING) == pytest.approx(80 * (1 - 0.3 ** (1 / 2.3)))
    assert current_score(80, NOW - timedelta(days=3), NOW, VISHING) == 32
    assert current_score(80, NOW - timedelta(days=4), NOW, VISHING) < VISHING.threshold
    assert current_score(80, NOW - timedelta(days=10), NOW, VISHING) == 0
    assert current_score(80, NOW, NOW, VISHING) == 80


def test_model_refuses_impossible_numbers() -> None:
    with pytest.raises(ValueError):
        DecayModel("m", lifetime_days=0, decay_speed=1, threshold=0)
    with pytest.raises(ValueError):
        DecayModel("m", lifetime_days=1, decay_speed=1, threshold=101)


@given(st.integers(0, 100), ages, ages, models, counts)
def test_monotone_non_increasing_in_age(
    confidence: int, a: float, b: float, model: DecayModel, seen: SightingCounts
) -> None:
    younger, older = sorted((a, b))
    s_young = current_score(confidence, NOW - timedelta(days=younger), NOW, model, seen)
    s_old = current_score(confidence, NOW - timedelta(days=older), NOW, model, seen)
    assert s_old <= s_young


@given(st.integers(-50, 200), ages, models, counts)
def test_bounded(confidence: int, age: float, model: DecayModel, seen: SightingCounts) -> None:
    assert 0 <= current_score(confidence, NOW - timedelta(days=age), NOW, model, seen) <= 100


@given(st.integers(0, 100), ages, models, counts, st.sampled_from(["false_positive", "expired"]))
def test_false_positive_or_expired_never_raises(
    confidence: int, age: float, model: DecayModel, seen: SightingCounts, kind: str
) -> None:
    more = SightingCounts(
        confirmed=seen.confirmed,
        false_positive=seen.false_positive + (kind == "false_positive"),
        expired=seen.expired + (kind == "expired"),
        last_confirmed=seen.last_confirmed,
    )
    observed = NOW - timedelta(days=age)
    assert current_score(confidence, observed, NOW, model, more) <= current_score(
        confidence, observed, NOW, model, seen
    )


@given(st.integers(0, 100), ages, models, counts, st.integers(-4000, 10))
def test_confirmed_never_lowers(
    confidence: int, age: float, model: DecayModel, seen: SightingCounts, seen_days: int
) -> None:
    new_seen = NOW + timedelta(days=seen_days)
    latest = new_seen if seen.last_confirmed is None else max(seen.last_confirmed, new_seen)
    more = SightingCounts(
        confirmed=seen.confirmed + 1,
        false_positive=seen.false_positive,
        expired=seen.expired,
        last_confirmed=latest,
    )
    observed = NOW - timedelta(days=age)
    assert current_score(confidence, observed, NOW, model, more) >= current_score(
        confidence, observed, NOW, model, seen
    )
