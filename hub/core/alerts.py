"""What a watcher is told when a watched indicator changes (sans-IO).

A watch is a standing match query: the watcher holds a value whose token it
registered.  When the aggregate of that token changes (a contribution, a
revocation, an expiry), the hub compares what the watcher could see before
and after, each computed exactly as a match of that token by the watcher
would be (``hub.services.lifecycle.MatchFacts.summary``: the matchable
indicators of :func:`hub.storage.store.matchable`, evidence classes,
``min_evidence``, warning lists, decayed scores and the threshold) under the
decision the policy gives the watcher for the action ``watch`` under the
watch's purpose, its level capped by :func:`alert_disclosure`.  An alert
therefore never reports an indicator a match would not.

Guarantees:

- An alert never carries more than that policy decision discloses, and never
  more than :data:`MAX_ALERT_DISCLOSURE` (SUMMARY): sealed labels name their
  contributor, and an alert is pushed, not asked for.
- The watcher's own contributions never count (``aggregate`` excludes the
  requester), so an institution is never alerted about itself, and a change
  the watcher cannot see (e.g. a single contributor below k = 2, or a new
  contributor when only MATCH is granted) raises nothing.
- :func:`alert_event` is ``new`` when the token becomes visible, ``withdrawn``
  when it stops being visible, ``changed`` when a visible field changes, else
  ``None``: the same before/after never alerts twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from hub.core.matching import MatchSummary
from hub.policy.model import Disclosure

__all__ = [
    "MAX_ALERT_DISCLOSURE",
    "AlertEvent",
    "AlertView",
    "alert_disclosure",
    "alert_event",
]

#: Alerts stop at SUMMARY: LABELS would name contributors to a pushed message.
MAX_ALERT_DISCLOSURE = Disclosure.SUMMARY


class AlertEvent(StrEnum):
    """Why an alert was raised (the ``event`` of alerts.proto, lower case)."""

    NEW = "new"
    CHANGED = "changed"
    WITHDRAWN = "withdrawn"
    #: A dispute suspended the recipient's own contribution (no watch behind it).
    DISPUTED = "disputed"


@dataclass(frozen=True)
class AlertView:
    """What one watcher may see of one token: a trimmed summary, no labels."""

    visible: bool
    disclosure: Disclosure = Disclosure.NONE
    contributors: int = 0
    categories: tuple[str, ...] = ()
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    max_confidence: int = 0
    #: The highest current score of the counted indicators (SUMMARY).  Not compared:
    #: a score decays by the minute, and decay alone is no change to alert about.
    score: int = field(default=0, compare=False)

    @classmethod
    def of(cls, summary: MatchSummary) -> AlertView:
        """The alert fields of a match summary (never its labels)."""
        if not summary.matched:
            return cls(visible=False)
        return cls(
            visible=True,
            disclosure=summary.disclosure,
            contributors=summary.contributors,
            categories=summary.categories,
            first_seen=summary.first_seen,
            last_seen=summary.last_seen,
            max_confidence=summary.max_confidence,
            score=summary.score,
        )


def alert_disclosure(granted: Disclosure) -> Disclosure:
    """The level an alert is computed at: what was granted, at most SUMMARY."""
    return Disclosure(min(granted, MAX_ALERT_DISCLOSURE))


def alert_event(before: AlertView, after: AlertView) -> AlertEvent | None:
    """The alert ``before`` -> ``after`` raises, or None if the watcher sees no change."""
    if not before.visible and not after.visible:
        return None
    if not before.visible:
        return AlertEvent.NEW
    if not after.visible:
        return AlertEvent.WITHDRAWN
    return None if before == after else AlertEvent.CHANGED
