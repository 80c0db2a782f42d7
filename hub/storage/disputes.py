"""The queries of disputes (issue 12): open, list, answer and lapse.

Like :mod:`hub.storage.store`, every function takes the caller's session and
never commits: the Disputes servicer commits each step with its audit event
(ADR 0007).  The states and transitions are :mod:`hub.core.disputes`'s.

Guarantees:

- :func:`open_dispute` suspends every indicator of the kind and tokens that is
  listed now (not revoked, not expired; one already suspended by another
  dispute is disputed again), whoever contributed it: the indicator's
  ``disputed_at`` is set, so :func:`hub.storage.store.matchable` leaves it out.
  A re-contribution does not lift the suspension.
- An item is answered only by its contributor: another institution's item is
  NotFound (it does not learn that the item exists).
- Withdrawn and lapsed items delete their indicator; an upheld item lifts the
  suspension once no other dispute of the same indicator is pending.
- A dispute is closed (``closed_at``) when its last pending item is answered or
  lapses, or at once when nothing was listed.
- Nothing here logs; no token is returned to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from client_sdk.core.errors import NotFound
from hub.core import disputes as core
from hub.storage.models import Dispute, DisputeItem, Indicator

__all__ = [
    "Answered",
    "answer_item",
    "disputes_opened_by",
    "get_dispute",
    "items_of",
    "lapse_overdue",
    "open_dispute",
    "pending_items_for",
    "states_of",
]


def open_dispute(
    session: Session,
    dispute: Dispute,
    tokens: Sequence[tuple[bytes, int]],
    response_days: int,
) -> list[DisputeItem]:
    """Store ``dispute`` and suspend the indicators of its kind and ``tokens`` (token, epoch).

    Returns the items made, one per suspended indicator.  Does not commit.
    """
    now = dispute.opened_at
    session.add(dispute)
    table = Indicator.__table__  # type: ignore[attr-defined]
    wanted = set(tokens)
    rows = session.exec(
        select(Indicator).where(
            Indicator.kind == dispute.kind,
            col(Indicator.token).in_([token for token, _ in wanted]),
            col(Indicator.revoked_at).is_(None),
            table.c.expires_at > now,
        )
    ).all()
    items: list[DisputeItem] = []
    for row in rows:
        if (bytes(row.token), row.key_epoch) not in wanted:
            continue
        assert row.id is not None
        items.append(
            DisputeItem(
                dispute_id=dispute.id,
                indicator_id=row.id,
                contributor=row.contributor,
                kind=row.kind,
                category=row.category,
                observed_at=row.observed_at,
                contributed_at=row.created_at,
                state=core.PENDING,
                due_at=core.due_at(now, response_days),
            )
        )
        if row.disputed_at is None:
            row.disputed_at = now
            session.add(row)
    if not items:
        dispute.closed_at = now  # nothing listed: nothing to answer
    session.add_all(items)
    session.flush()
    return items


@dataclass(frozen=True)
class Answered:
    """An item after a step, and whether its dispute closed with it."""

    item: DisputeItem
    dispute_closed: bool


def answer_item(
    session: Session, item_id: int, contributor: str, step: str, evidence: str, now: datetime
) -> Answered:
    """Apply ``step`` (uphold, withdraw) to ``contributor``'s item ``item_id``.

    Raises NotFound if it is not that contributor's item, DisputeStateError if
    it was answered already, InvalidRequest for evidence that does not fit the
    step.  Does not commit.
    """
    item = session.get(DisputeItem, item_id)
    if item is None or item.contributor != contributor:
        raise NotFound("no dispute item with that id for this institution")
    recorded = core.check_evidence(step, evidence)
    return _move(session, item, step, recorded, now)


def _move(session: Session, item: DisputeItem, step: str, evidence: str, now: datetime) -> Answered:
    item.state = core.next_state(item.state, step)
    item.evidence = evidence
    item.resolved_at = now
    session.add(item)
    session.flush()
    indicator = session.get(Indicator, item.indicator_id)
    if indicator is not None:
        if core.removes(item.state):
            session.delete(indicator)
        elif not pending_items_for(session, item.indicator_id):
            indicator.disputed_at = None
            session.add(indicator)
    closed = False
    if not session.exec(
        select(DisputeItem.id).where(
            DisputeItem.dispute_id == item.dispute_id, DisputeItem.state == core.PENDING
        )
    ).first():
        dispute = session.get(Dispute, item.dispute_id)
        if dispute is not None and dispute.closed_at is None:
            dispute.closed_at = now
            session.add(dispute)
            closed = True
    session.flush()
    return Answered(item, closed)


def pending_items_for(session: Session, indicator_id: int) -> list[DisputeItem]:
    """The pending items of one indicator (any dispute)."""
    return list(
        session.exec(
            select(DisputeItem).where(
                DisputeItem.indicator_id == indicator_id, DisputeItem.state == core.PENDING
            )
        ).all()
    )


def lapse_overdue(session: Session, now: datetime) -> list[Answered]:
    """Lapse every pending item past its deadline (removing its indicator).  No commit."""
    overdue = session.exec(
        select(DisputeItem)
        .where(DisputeItem.state == core.PENDING, col(DisputeItem.due_at) < now)
        .order_by(col(DisputeItem.id))
    ).all()
    return [_move(session, item, "lapse", "", now) for item in overdue]


def items_of(session: Session, contributor: str, *, include_answered: bool) -> list[DisputeItem]:
    """The dispute items of ``contributor``'s indicators, oldest first."""
    statement = select(DisputeItem).where(DisputeItem.contributor == contributor)
    if not include_answered:
        statement = statement.where(DisputeItem.state == core.PENDING)
    return list(session.exec(statement.order_by(col(DisputeItem.id))).all())


def states_of(session: Session, dispute_id: str) -> list[str]:
    """The states of a dispute's items."""
    return list(
        session.exec(select(DisputeItem.state).where(DisputeItem.dispute_id == dispute_id)).all()
    )


def disputes_opened_by(session: Session, institution: str) -> list[tuple[Dispute, list[str]]]:
    """The disputes ``institution`` opened, each with its items' states, oldest first."""
    disputes = session.exec(
        select(Dispute).where(Dispute.opened_by == institution).order_by(col(Dispute.opened_at))
    ).all()
    states: dict[str, list[str]] = {d.id: [] for d in disputes}
    if states:
        for dispute_id, state in session.exec(
            select(DisputeItem.dispute_id, DisputeItem.state).where(
                col(DisputeItem.dispute_id).in_(list(states))
            )
        ):
            states[dispute_id].append(state)
    return [(d, states[d.id]) for d in disputes]


def get_dispute(session: Session, dispute_id: str) -> Dispute:
    """The dispute ``dispute_id``; raises NotFound."""
    found = session.get(Dispute, dispute_id)
    if found is None:
        raise NotFound("no dispute with that id")
    return found
