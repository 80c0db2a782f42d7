"""Screening across an OPRF key change: one answer from the answers of two epochs.

During a key change (ADR 0013) the hub accepts the current and the previous
key epoch, and a token matches only contributions made under its own epoch.
A client configured with the previous epoch screens each value under both
and combines the two answers with :func:`combine`.  Guarantees:

- Each answer already respects the policy on its own (disclosure level,
  k-threshold), so the combination never discloses more than the policy lets
  either answer disclose: ``contributors`` is the larger of the two counts,
  not their sum (an institution that re-contributed under the new epoch is
  listed in both), so it may undercount, never overcount.
- A value matched under either epoch is matched.  Labels of both answers are
  kept (each was opened with the keys of its own epoch); categories, first
  and last seen, and the maximum confidence are merged.
- A failure of one epoch's answer (e.g. the hub no longer accepts the
  previous epoch) yields the other answer; if both failed, the current one's
  failure stands.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from client_sdk.client.results import ItemFailure, MatchResult

__all__ = ["combine"]


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min((t for t in (a, b) if t is not None), default=None)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((t for t in (a, b) if t is not None), default=None)


def combine(
    current: MatchResult | ItemFailure, previous: MatchResult | ItemFailure
) -> MatchResult | ItemFailure:
    """The answer for one value screened under the current and the previous epoch."""
    if isinstance(previous, ItemFailure):
        return current
    if isinstance(current, ItemFailure):
        return replace(previous, index=current.index)
    if not previous.matched:
        return current
    if not current.matched:
        return replace(previous, index=current.index)
    labels = tuple(dict.fromkeys((*current.labels, *previous.labels)))
    return replace(
        current,
        contributors=max(current.contributors, previous.contributors),
        categories=tuple(sorted(set(current.categories) | set(previous.categories))),
        first_seen=_earliest(current.first_seen, previous.first_seen),
        last_seen=_latest(current.last_seen, previous.last_seen),
        max_confidence=max(current.max_confidence, previous.max_confidence),
        labels=labels,
        reasons=tuple(dict.fromkeys((*current.reasons, *previous.reasons))),
    )
