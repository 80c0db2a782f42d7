"""The dispute protocol core: states, transitions and deadlines (sans-IO).

A data subject's dispute of a listed value (issue 12, DESIGN.md "due process")
suspends every matching indicator; each contributor then answers for its own
indicator.  This module is that answer's state machine and nothing else: no
database, no grpc.  The store keeps the states, :mod:`hub.services.disputes`
drives the transitions.

Guarantees:

- One table, :data:`TRANSITIONS`, says which step moves an item from which
  state; a step the table does not list raises
  :class:`~client_sdk.core.errors.DisputeStateError` (FAILED_PRECONDITION).
  Only ``pending`` items move; every other state is final.
- An item is suspended from matches exactly while it is ``pending``
  (:func:`suspends`); ``upheld`` gives the indicator back to matching,
  ``withdrawn`` and ``lapsed`` remove it (:func:`removes`).
- An upheld item names evidence from
  :data:`~client_sdk.core.vocabulary.UPHOLD_EVIDENCE`; the other steps name none.
- :func:`due_at` is the deadline, :func:`lapsed` says whether it passed (the
  deadline itself is still in time); :func:`dispute_outcome` summarises a
  dispute from its items' states.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Final

from client_sdk.core.errors import DisputeStateError, InvalidRequest
from client_sdk.core.vocabulary import UPHOLD_EVIDENCE

__all__ = [
    "FINAL_STATES",
    "ITEM_STATES",
    "OUTCOMES",
    "PENDING",
    "STEPS",
    "TRANSITIONS",
    "UPHOLD_EVIDENCE",
    "check_evidence",
    "dispute_outcome",
    "due_at",
    "lapsed",
    "next_state",
    "removes",
    "suspends",
]

PENDING: Final = "pending"
#: Every state of a dispute item; only ``pending`` is not final.
ITEM_STATES: Final[tuple[str, ...]] = (PENDING, "upheld", "withdrawn", "lapsed")
FINAL_STATES: Final[frozenset[str]] = frozenset(ITEM_STATES) - {PENDING}
#: Steps: the contributor upholds or withdraws; the hub's sweep lapses an item past its deadline.
STEPS: Final[tuple[str, ...]] = ("uphold", "withdraw", "lapse")
#: (state, step) -> next state.  Anything else is refused.
TRANSITIONS: Final[Mapping[tuple[str, str], str]] = {
    (PENDING, "uphold"): "upheld",
    (PENDING, "withdraw"): "withdrawn",
    (PENDING, "lapse"): "lapsed",
}
#: The outcome of a whole dispute: still open, nothing was listed, or its items' answers.
OUTCOMES: Final[tuple[str, ...]] = (
    "open",
    "not_listed",
    "upheld",
    "removed",
    "partly_upheld",
)


def next_state(state: str, step: str) -> str:
    """The state after ``step``; raises DisputeStateError if ``state`` does not allow it."""
    if step not in STEPS:
        raise InvalidRequest(f"a dispute step is one of {', '.join(STEPS)}")
    try:
        return TRANSITIONS[(state, step)]
    except KeyError:
        raise DisputeStateError(
            f"the dispute item is {state}, so it cannot be {step}d: only pending items are answered"
        ) from None


def check_evidence(step: str, evidence: str) -> str:
    """The evidence to record for ``step``: a class of UPHOLD_EVIDENCE to uphold, none else.

    Raises InvalidRequest otherwise.
    """
    if step == "uphold":
        if evidence not in UPHOLD_EVIDENCE:
            raise InvalidRequest(
                "upholding a disputed indicator needs evidence, one of "
                + ", ".join(UPHOLD_EVIDENCE)
            )
        return evidence
    if evidence:
        raise InvalidRequest(f"only upholding names evidence, not {step}")
    return ""


def suspends(state: str) -> bool:
    """Whether an item in ``state`` keeps its indicator out of matches."""
    return state == PENDING


def removes(state: str) -> bool:
    """Whether reaching ``state`` removes the indicator from the hub."""
    return state in ("withdrawn", "lapsed")


def due_at(opened_at: datetime, response_days: int) -> datetime:
    """The deadline of an item opened at ``opened_at``; raises InvalidRequest for days < 1."""
    if response_days < 1:
        raise InvalidRequest("dispute_response_days must be at least 1")
    return opened_at + timedelta(days=response_days)


def lapsed(due: datetime, now: datetime) -> bool:
    """Whether an item due at ``due`` is past its deadline at ``now``."""
    return now > due


def dispute_outcome(states: Iterable[str]) -> str:
    """The outcome (one of :data:`OUTCOMES`) of a dispute whose items are in ``states``."""
    seen = list(states)
    if not seen:
        return "not_listed"
    if any(s == PENDING for s in seen):
        return "open"
    upheld = sum(1 for s in seen if s == "upheld")
    if upheld == len(seen):
        return "upheld"
    if upheld == 0:
        return "removed"
    return "partly_upheld"
