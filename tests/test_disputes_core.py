"""The dispute state machine (hub.core.disputes): every (state, step) pair, deadlines, outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.core.errors import DisputeStateError, InvalidRequest
from hub.core import disputes

T0 = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("state", disputes.ITEM_STATES)
@pytest.mark.parametrize("step", disputes.STEPS)
def test_every_state_and_step(state: str, step: str) -> None:
    if (state, step) in disputes.TRANSITIONS:
        after = disputes.next_state(state, step)
        assert state == disputes.PENDING and after in disputes.FINAL_STATES
        assert disputes.suspends(state) and not disputes.suspends(after)
        assert disputes.removes(after) == (step != "uphold")
    else:
        # Final states never move: an answer cannot be changed, a lapse not undone.
        assert state in disputes.FINAL_STATES
        with pytest.raises(DisputeStateError):
            disputes.next_state(state, step)


def test_unknown_step_is_invalid() -> None:
    with pytest.raises(InvalidRequest):
        disputes.next_state(disputes.PENDING, "ignore")


@pytest.mark.parametrize(
    ("step", "evidence", "recorded"),
    [
        ("uphold", "police_case", "police_case"),
        ("uphold", "victim_report", "victim_report"),
        ("uphold", "internal_investigation", "internal_investigation"),
        ("withdraw", "", ""),
        ("lapse", "", ""),
    ],
)
def test_evidence_that_fits(step: str, evidence: str, recorded: str) -> None:
    assert disputes.check_evidence(step, evidence) == recorded


@pytest.mark.parametrize(
    ("step", "evidence"),
    [
        ("uphold", ""),
        ("uphold", "suspected"),  # no proof
        ("uphold", "impersonation_victim"),  # must never count against the person
        ("uphold", "Police Case 123"),
        ("withdraw", "police_case"),
    ],
)
def test_evidence_that_does_not_fit(step: str, evidence: str) -> None:
    with pytest.raises(InvalidRequest):
        disputes.check_evidence(step, evidence)


def test_deadline_is_inclusive() -> None:
    due = disputes.due_at(T0, 30)
    assert due == T0 + timedelta(days=30)
    assert not disputes.lapsed(due, due)
    assert disputes.lapsed(due, due + timedelta(microseconds=1))
    with pytest.raises(InvalidRequest):
        disputes.due_at(T0, 0)


@pytest.mark.parametrize(
    ("states", "outcome"),
    [
        ([], "not_listed"),
        (["pending", "upheld"], "open"),
        (["upheld", "upheld"], "upheld"),
        (["withdrawn", "lapsed"], "removed"),
        (["upheld", "lapsed"], "partly_upheld"),
    ],
)
def test_outcomes(states: list[str], outcome: str) -> None:
    assert disputes.dispute_outcome(states) == outcome


@given(st.lists(st.sampled_from(disputes.STEPS), max_size=6))
def test_an_item_is_answered_at_most_once(steps: list[str]) -> None:
    state = disputes.PENDING
    moved = 0
    for step in steps:
        try:
            state = disputes.next_state(state, step)
            moved += 1
        except DisputeStateError:
            assert state in disputes.FINAL_STATES
    assert moved == (1 if steps else 0)
    assert disputes.dispute_outcome([state]) in disputes.OUTCOMES
