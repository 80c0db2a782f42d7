"""Scores that decay: how much an indicator still counts, from confidence, age and sightings.

Pure functions, no I/O.  The decay curve is MISP's polynomial model (the
``decaying`` models of MISP 2.4.116+, see DOMAIN.md):

    score(t) = base * (1 - (t / tau) ** (1 / delta))      clipped to [0, 100]

with ``tau`` the lifetime in days (the score is 0 from then on) and ``delta``
the decay speed (above 1: fast early drop, then slow).  The models themselves
(which kinds decay how fast, the threshold below which an indicator no longer
counts as a match, and where each number comes from) are policy data: the
``decay`` section of a policy file (:mod:`hub.policy.reader`), so a change is
versioned and audited like any rule.

Sightings (``fraudhub.v1.Feedback``) move the score within bounds:

- each ``confirmed`` sighting raises the base by :data:`CONFIRMED_BONUS` (at
  most 100) and the latest one restarts the clock (it was seen again);
- each ``false_positive`` multiplies the score by :data:`FALSE_POSITIVE_FACTOR`,
  each ``expired`` by :data:`EXPIRED_FACTOR` (the number changed hands).

Guarantees (property-tested in ``tests/test_scores.py``): the score is an
integer in [0, 100]; it never increases with age; a false positive or expired
sighting never raises it; a confirmed sighting never lowers it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from hub.policy.model import MAX_SCORE, DecayModel

__all__ = [
    "CONFIRMED_BONUS",
    "EXPIRED_FACTOR",
    "FALSE_POSITIVE_FACTOR",
    "MAX_SCORE",
    "DecayModel",
    "SightingCounts",
    "current_score",
    "decayed",
]

#: Base points each confirmed sighting adds (bounded by MAX_SCORE).
CONFIRMED_BONUS = 10
#: Each false positive halves the score: two institutions saying "innocent" cut it to a quarter.
FALSE_POSITIVE_FACTOR = 0.5
#: An expired sighting (the value changed hands) cuts harder than a false positive.
EXPIRED_FACTOR = 0.25
_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class SightingCounts:
    """Distinct institutions that filed each sighting type on one token (other than
    the contributor); ``last_confirmed`` is the latest confirmed ``seen_at``."""

    confirmed: int = 0
    false_positive: int = 0
    expired: int = 0
    last_confirmed: datetime | None = None


def decayed(base: float, age_days: float, model: DecayModel) -> float:
    """MISP's polynomial decay of ``base`` after ``age_days``, clipped to [0, 100].

    A negative age (an observation a little in the future: clock skew) counts as 0.
    """
    base = min(max(base, 0.0), float(MAX_SCORE))
    if age_days <= 0:
        return base
    if age_days >= model.lifetime_days:
        return 0.0
    fraction: float = (age_days / model.lifetime_days) ** (1.0 / model.decay_speed)
    return min(max(base * (1.0 - fraction), 0.0), float(MAX_SCORE))


def current_score(
    confidence: int,
    observed_at: datetime,
    now: datetime,
    model: DecayModel,
    sightings: SightingCounts = SightingCounts(),
) -> int:
    """The indicator's score now (an integer in [0, 100]); see the module docstring."""
    base = min(MAX_SCORE, max(confidence, 0) + CONFIRMED_BONUS * max(sightings.confirmed, 0))
    start = observed_at
    if sightings.last_confirmed is not None and sightings.confirmed > 0:
        # Seen again: the clock restarts then (never later than now).
        start = max(start, min(sightings.last_confirmed, now))
    age_days = (now - start).total_seconds() / _SECONDS_PER_DAY
    score = decayed(base, age_days, model)
    score *= FALSE_POSITIVE_FACTOR ** max(sightings.false_positive, 0)
    score *= EXPIRED_FACTOR ** max(sightings.expired, 0)
    # floor is monotone, so the guarantees above survive the rounding.
    return min(MAX_SCORE, max(0, math.floor(score)))
