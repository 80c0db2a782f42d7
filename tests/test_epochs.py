"""client_sdk.client.epochs.combine: one answer from the answers of two key epochs (ADR 0013)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from client_sdk.client.epochs import combine
from client_sdk.client.results import ItemFailure, Label, MatchResult
from client_sdk.core.errors import InvalidRequest

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def result(matched: bool, contributors: int = 0, days: int = 0, **kw: object) -> MatchResult:
    return MatchResult(
        index=0,
        kind="phone",
        matched=matched,
        disclosure="labels",
        contributors=contributors,
        first_seen=T0 + timedelta(days=days) if matched else None,
        last_seen=T0 + timedelta(days=days) if matched else None,
        **kw,  # type: ignore[arg-type]
    )


FAILED = ItemFailure(0, "phone", InvalidRequest("token made under key epoch 1, hub is at 2"))


def test_both_matched_merge_without_overcounting() -> None:
    current = result(True, 1, 5, categories=("scam_phone",), max_confidence=90,
                     labels=(Label("bank-a", "new"),))  # fmt: skip
    previous = result(True, 2, 1, categories=("money_mule",), max_confidence=60,
                      labels=(Label("bank-a", "new"), Label("bank-c", "old")))  # fmt: skip
    both = combine(current, previous)
    assert isinstance(both, MatchResult) and both.matched
    assert both.contributors == 2 and both.max_confidence == 90
    assert both.categories == ("money_mule", "scam_phone")
    assert (both.first_seen, both.last_seen) == (T0 + timedelta(days=1), T0 + timedelta(days=5))
    assert both.labels == (Label("bank-a", "new"), Label("bank-c", "old"))


def test_one_side_matched_or_failed() -> None:
    hit = result(True, 1)
    assert combine(result(False), hit) == hit
    assert combine(hit, result(False)) == hit
    assert combine(hit, FAILED) == hit
    assert combine(FAILED, hit) == hit
    assert combine(FAILED, FAILED) is FAILED


@given(st.booleans(), st.integers(0, 5), st.booleans(), st.integers(0, 5), st.integers(0, 3))
def test_never_more_than_either_answer_disclosed(
    a_hit: bool, a_count: int, b_hit: bool, b_count: int, index: int
) -> None:
    a = MatchResult(index, "phone", a_hit, "count", a_count if a_hit else 0)
    b = MatchResult(index, "phone", b_hit, "count", b_count if b_hit else 0)
    both = combine(a, b)
    assert isinstance(both, MatchResult) and both.index == index
    assert both.matched == (a_hit or b_hit)
    assert both.contributors <= max(a.contributors, b.contributors)


def test_serve_accepts_earlier_epochs_on_the_command_line() -> None:
    from hub.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--data-dir", "d", "--public", "p.json", "--accept-epoch", "1",
         "--accept-epoch", "2"]
    )  # fmt: skip
    assert args.accept_epoch == [1, 2]
    assert (
        build_parser().parse_args(["serve", "--data-dir", "d", "--public", "p"]).accept_epoch
        is None
    )
