"""Watches, alerts and per-watcher cursors: tables and the queries over them.

A watch row is ``(watcher, kind, token, key_epoch)`` with its purpose and
expiry: a token the watcher holds a value for, nothing more (no value, no
reference: the watcher's own row reference never leaves it).  An alert row
is what :mod:`hub.core.alerts` decided one watcher may see after a change,
numbered by that watcher's ``sequence``.  ``alert_cursor`` keeps, per
watcher, the newest sequence handed out and the durable acknowledgement.

Guarantees:

- Watches are idempotent per ``(watcher, kind, token, key_epoch)`` (the
  primary key); a repeated watch refreshes purpose and expiry.
- Finding who watches a batch of contributed tokens is ONE query per
  :data:`WATCH_LOOKUP_CHUNK` tokens on the ``token`` index, whatever the
  number of watches (10 million per institution is the design point).
- Sequences are per watcher, 1, 2, 3, ... without gaps, in commit order: they
  are allocated by an atomic increment of the watcher's ``alert_cursor`` row,
  whose row lock (PostgreSQL) or the database lock (SQLite, ``BEGIN
  IMMEDIATE``) is held until the recording transaction commits.  Watchers are
  locked in sorted order, so two transactions cannot deadlock on them.
- The acknowledgement only moves forward and never past the newest sequence.
- Like :mod:`hub.storage.store`, nothing here commits: alerts are recorded in
  the caller's transaction (the contribution's, the revocation's, the sweep's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from client_sdk.core.errors import InvalidRequest
from hub.core.alerts import AlertEvent, AlertView, alert_event
from hub.core.matching import Sighting
from hub.storage.models import Indicator, Institution, UTCDateTime
from hub.storage.store import find_active, upsert_statement

__all__ = [
    "DISPUTE_PURPOSE",
    "WATCH_LOOKUP_CHUNK",
    "Alert",
    "AlertCursor",
    "AlertGroup",
    "DisputeNote",
    "Judge",
    "Key",
    "PendingChange",
    "RecordedAlerts",
    "Watch",
    "WatchCounts",
    "WatchItem",
    "WatchRef",
    "ack",
    "alerts_after",
    "begin_change",
    "cursor_of",
    "delete_expired_alerts",
    "delete_expired_watches",
    "expiring_watched_keys",
    "finish_change",
    "record_disputed",
    "remove_watches",
    "upsert_watches",
    "watch_counts",
    "watchers_of",
]

Key = tuple[str, bytes, int]
#: Tokens per watch lookup: one contribution request (10,000 items) is one query.
WATCH_LOOKUP_CHUNK = 10_000
# Keep other IN lists well under SQLite's host-parameter limit.
_IN_CHUNK = 900
# find_active(..., _EVERYTHING) also returns expired, not yet swept rows.
_EVERYTHING = datetime(1970, 1, 1, tzinfo=UTC)


class Watch(SQLModel, table=True):
    """A token an institution watches (it holds a value with this token)."""

    __tablename__ = "watch"
    __table_args__ = (
        # The contribution path looks watchers up by token.
        sa.Index("ix_watch_token", "token"),
        sa.Index("ix_watch_expires_at", "expires_at"),
    )

    watcher: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=32)
    token: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), primary_key=True))
    key_epoch: int = Field(primary_key=True)
    purpose: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class Alert(SQLModel, table=True):
    """One alert for one watcher; fields above ``disclosure`` stay empty."""

    __tablename__ = "alert"
    __table_args__ = (
        sa.UniqueConstraint("watcher", "sequence", name="uq_alert_sequence"),
        sa.Index("ix_alert_expires_at", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    watcher: str = Field(max_length=64)
    sequence: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    event: str = Field(max_length=16)
    kind: str = Field(max_length=32)
    token: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    key_epoch: int
    purpose: str = Field(max_length=64)
    disclosure: int
    contributors: int = 0
    # Sorted category words joined by ",": words of the fixed vocabulary only.
    categories: str = Field(default="", max_length=400)
    first_seen: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    last_seen: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    max_confidence: int = 0
    # The highest current (decayed) score of the counted indicators, 0..100.
    score: int = Field(
        default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0")
    )
    # "disputed" alerts only: the dispute and its response deadline.
    dispute_id: str = Field(
        default="", sa_column=sa.Column(sa.String(32), nullable=False, server_default="")
    )
    respond_by: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    raised_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    # An alert lives as long as the watch that raised it (its retention cap).
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    policy_version: str = Field(max_length=64)


class AlertCursor(SQLModel, table=True):
    """A watcher's newest alert sequence and its durable acknowledgement."""

    __tablename__ = "alert_cursor"

    watcher: str = Field(primary_key=True, max_length=64)
    latest: int = Field(default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False))
    acked: int = Field(default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False))


@dataclass(frozen=True)
class WatchItem:
    """A validated watch to store (times aware UTC)."""

    kind: str
    token: bytes
    key_epoch: int
    expires_at: datetime


@dataclass(frozen=True)
class WatchCounts:
    added: int
    refreshed: int


@dataclass(frozen=True)
class WatchRef:
    """One watcher of a token: who, under which purpose, until when."""

    watcher: str
    purpose: str
    expires_at: datetime


#: ``judge(watcher, role, purpose, key, sightings)``: what that watcher may see of
#: ``sightings`` (the key's matchable indicators at one moment), computed by the
#: match path's own rules (``hub.services.lifecycle.MatchFacts``), or None if the
#: policy grants it nothing for this kind and purpose (then no alert).
Judge = Callable[[str, str, str, Key, Sequence[Sighting]], AlertView | None]


def _table(model: type[SQLModel]) -> sa.Table:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return table


# --- watches -----------------------------------------------------------------------


def upsert_watches(
    session: Session, watcher: str, purpose: str, items: Sequence[WatchItem], now: datetime
) -> WatchCounts:
    """Store ``watcher``'s watches; existing ones get the new purpose and expiry."""
    latest: dict[Key, WatchItem] = {(i.kind, i.token, i.key_epoch): i for i in items}
    if not latest:
        return WatchCounts(0, 0)
    keys = list(latest)
    existing: set[Key] = set()
    table = _table(Watch)
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        # By token alone (ix_watch_token), the owner filtered here: a plan keyed on
        # the watcher would walk all of its (possibly 10 million) rows, and
        # PostgreSQL picks one when its statistics are stale (e.g. mid bulk load).
        statement = sa.select(
            table.c.watcher, table.c.kind, table.c.token, table.c.key_epoch
        ).where(table.c.token.in_([t for _, t, _ in chunk]))
        existing.update(
            (k, bytes(t), e) for w, k, t, e in session.execute(statement) if w == watcher
        )
    rows = [
        {
            "watcher": watcher,
            "kind": i.kind,
            "token": i.token,
            "key_epoch": i.key_epoch,
            "purpose": purpose,
            "created_at": now,
            "expires_at": i.expires_at,
        }
        for i in latest.values()
    ]
    statement = upsert_statement(session, table)
    statement = statement.on_conflict_do_update(
        index_elements=["watcher", "kind", "token", "key_epoch"],
        set_={"purpose": statement.excluded.purpose, "expires_at": statement.excluded.expires_at},
    )
    session.execute(statement, rows)
    refreshed = sum(1 for key in latest if key in existing)
    # Items repeated inside the request count as refreshes of the first one.
    repeated = len(items) - len(latest)
    return WatchCounts(added=len(latest) - refreshed, refreshed=refreshed + repeated)


def remove_watches(session: Session, watcher: str, keys: Sequence[Key]) -> int:
    """Delete ``watcher``'s watches of ``keys``; return how many existed."""
    table = _table(Watch)
    removed = 0
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        # Row-value IN is not portable to every SQLite build; OR of exact keys is.
        condition = sa.or_(
            *(
                sa.and_(table.c.kind == k, table.c.token == t, table.c.key_epoch == e)
                for k, t, e in chunk
            )
        )
        result = session.execute(sa.delete(table).where(table.c.watcher == watcher, condition))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed


def watch_counts(session: Session, watcher: str, now: datetime) -> list[tuple[str, str, int]]:
    """``(kind, purpose, count)`` of ``watcher``'s active watches, sorted."""
    table = _table(Watch)
    statement = (
        sa.select(table.c.kind, table.c.purpose, sa.func.count())
        .where(table.c.watcher == watcher, table.c.expires_at > now)
        .group_by(table.c.kind, table.c.purpose)
        .order_by(table.c.kind, table.c.purpose)
    )
    return [(kind, purpose, int(count)) for kind, purpose, count in session.execute(statement)]


def watchers_of(
    session: Session, keys: Iterable[Key], now: datetime, *, exclude: str | None = None
) -> dict[Key, list[WatchRef]]:
    """Active watches of each key, except ``exclude``'s own (one query per chunk)."""
    wanted = list(dict.fromkeys(keys))
    found: dict[Key, list[WatchRef]] = {}
    table = _table(Watch)
    for start in range(0, len(wanted), WATCH_LOOKUP_CHUNK):
        chunk = wanted[start : start + WATCH_LOOKUP_CHUNK]
        want = set(chunk)
        statement = sa.select(
            table.c.watcher,
            table.c.kind,
            table.c.token,
            table.c.key_epoch,
            table.c.purpose,
            table.c.expires_at,
        ).where(table.c.token.in_([t for _, t, _ in chunk]))
        # Only the token is a condition: with stale statistics PostgreSQL would
        # AND in a range scan of ix_watch_expires_at over every active watch.
        for watcher, kind, token, epoch, purpose, expires_at in session.execute(statement):
            key = (kind, bytes(token), epoch)
            if key in want and watcher != exclude and expires_at > now:
                found.setdefault(key, []).append(WatchRef(watcher, purpose, expires_at))
    return found


def expiring_watched_keys(session: Session, now: datetime) -> list[Key]:
    """Watched keys with an active (not revoked) indicator whose expiry has passed."""
    ind, watch = _table(Indicator), _table(Watch)
    statement = (
        sa.select(ind.c.kind, ind.c.token, ind.c.key_epoch)
        .join(
            watch,
            sa.and_(
                watch.c.token == ind.c.token,
                watch.c.kind == ind.c.kind,
                watch.c.key_epoch == ind.c.key_epoch,
            ),
        )
        .where(ind.c.expires_at <= now, ind.c.revoked_at.is_(None), watch.c.expires_at > now)
        .distinct()
    )
    return [(kind, bytes(token), epoch) for kind, token, epoch in session.execute(statement)]


def delete_expired_watches(session: Session, now: datetime) -> int:
    """Delete expired watches (their retention cap); return how many."""
    table = _table(Watch)
    result = session.execute(sa.delete(table).where(table.c.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)


def delete_expired_alerts(session: Session, now: datetime) -> int:
    """Delete alerts past their watch's retention; return how many."""
    table = _table(Alert)
    result = session.execute(sa.delete(table).where(table.c.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)


# --- recording alerts ----------------------------------------------------------------


@dataclass
class PendingChange:
    """Watched keys of a change and their sightings before it (see :func:`begin_change`)."""

    watched: dict[Key, list[WatchRef]]
    before: dict[Key, list[Sighting]] = field(default_factory=dict)

    @property
    def keys(self) -> list[Key]:
        return list(self.watched)


def begin_change(
    session: Session,
    keys: Iterable[Key],
    now: datetime,
    *,
    exclude: str | None,
    include_expired: bool = False,
) -> PendingChange:
    """Before changing indicators of ``keys``: who watches them and what was there.

    ``exclude`` is the institution making the change (it is not alerted about
    its own act); ``include_expired`` counts expired, unswept rows as present
    (the expiry sweep, whose change is their removal).  Costs one watch
    lookup; the sightings are read only for watched keys.
    """
    watched = watchers_of(session, keys, now, exclude=exclude)
    if not watched:
        return PendingChange({})
    before = find_active(session, list(watched), _EVERYTHING if include_expired else now)
    return PendingChange(watched, before)


#: The purpose of a ``disputed`` alert (no watch, hence no watch purpose, behind it).
DISPUTE_PURPOSE = "dispute"


@dataclass(frozen=True)
class DisputeNote:
    """A ``disputed`` alert to record: the contributor's own indicator, no more."""

    contributor: str
    kind: str
    token: bytes
    key_epoch: int
    dispute_id: str
    respond_by: datetime
    expires_at: datetime  # the later of the indicator's expiry and the deadline


@dataclass(frozen=True)
class AlertGroup:
    """The alerts recorded for one watcher under one purpose (an audit event's worth)."""

    watcher: str
    role: str
    purpose: str
    count: int
    kinds: frozenset[str]
    events: Mapping[str, int]


@dataclass(frozen=True)
class RecordedAlerts:
    """What :func:`finish_change` recorded, grouped by (watcher, purpose)."""

    groups: tuple[AlertGroup, ...] = ()

    @property
    def count(self) -> int:
        return sum(g.count for g in self.groups)


def finish_change(
    session: Session,
    change: PendingChange,
    now: datetime,
    judge: Judge,
    policy_version: str,
) -> RecordedAlerts:
    """After the change: record an alert for every watcher whose view changed.

    Reads the sightings after the change (watched keys only), asks ``judge``
    what each enabled watcher may see before and after, and inserts the alerts
    with the watchers' next sequence numbers.  Does not commit.
    """
    if not change.watched:
        return RecordedAlerts()
    after = find_active(session, change.keys, now)
    roles = _enabled_roles(session, {r.watcher for refs in change.watched.values() for r in refs})
    rows: list[dict[str, object]] = []
    for key, refs in change.watched.items():
        kind, token, epoch = key
        for ref in refs:
            role = roles.get(ref.watcher)
            if role is None:
                continue
            old = judge(ref.watcher, role, ref.purpose, key, change.before.get(key, []))
            new = judge(ref.watcher, role, ref.purpose, key, after.get(key, []))
            if old is None or new is None:
                continue
            event = alert_event(old, new)
            if event is None:
                continue
            shown = old if event is AlertEvent.WITHDRAWN else new
            rows.append(
                _alert_row(ref, event, shown, now, policy_version)
                | {"token": token, "kind": kind, "key_epoch": epoch}
            )
    _insert_alerts(session, rows)
    return _grouped(rows, roles)


def record_disputed(
    session: Session, notes: Sequence[DisputeNote], now: datetime, policy_version: str
) -> RecordedAlerts:
    """One ``disputed`` alert per note (per contributor), watching or not.  No commit."""
    table = _table(Institution)
    wanted = sorted({n.contributor for n in notes})
    roles = dict(
        session.execute(sa.select(table.c.id, table.c.role).where(table.c.id.in_(wanted))).all()
    )
    rows: list[dict[str, object]] = [
        {
            "watcher": n.contributor,
            "event": AlertEvent.DISPUTED.value,
            "purpose": DISPUTE_PURPOSE,
            "disclosure": 0,
            "kind": n.kind,
            "token": n.token,
            "key_epoch": n.key_epoch,
            "dispute_id": n.dispute_id,
            "respond_by": n.respond_by,
            "raised_at": now,
            "expires_at": n.expires_at,
            "policy_version": policy_version,
        }
        for n in notes
        if n.contributor in roles
    ]
    _insert_alerts(session, rows)
    return _grouped(rows, roles)


def _alert_row(
    ref: WatchRef,
    event: AlertEvent,
    view: AlertView,
    now: datetime,
    policy_version: str,
) -> dict[str, object]:
    # A withdrawn alert keeps the level but no longer states counts or categories.
    shown = view if event is not AlertEvent.WITHDRAWN else AlertView(visible=False)
    return {
        "watcher": ref.watcher,
        "event": event.value,
        "purpose": ref.purpose,
        "disclosure": int(view.disclosure),
        "contributors": shown.contributors,
        "categories": ",".join(shown.categories),
        "first_seen": shown.first_seen,
        "last_seen": shown.last_seen,
        "max_confidence": shown.max_confidence,
        "score": shown.score,
        "raised_at": now,
        "expires_at": ref.expires_at,
        "policy_version": policy_version,
    }


def _enabled_roles(session: Session, watchers: set[str]) -> dict[str, str]:
    table = _table(Institution)
    statement = sa.select(table.c.id, table.c.role).where(
        table.c.id.in_(sorted(watchers)), table.c.enabled.is_(True)
    )
    return {institution: role for institution, role in session.execute(statement)}


def _insert_alerts(session: Session, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    by_watcher: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_watcher.setdefault(str(row["watcher"]), []).append(row)
    # Sorted: concurrent transactions lock the cursor rows in the same order.
    for watcher in sorted(by_watcher):
        batch = by_watcher[watcher]
        latest = _allocate(session, watcher, len(batch))
        for offset, row in enumerate(batch):
            row["sequence"] = latest - len(batch) + 1 + offset
    session.execute(sa.insert(_table(Alert)), rows)


def _grouped(rows: list[dict[str, object]], roles: Mapping[str, str]) -> RecordedAlerts:
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((str(row["watcher"]), str(row["purpose"])), []).append(row)
    out: list[AlertGroup] = []
    for (watcher, purpose), members in sorted(groups.items()):
        events: dict[str, int] = {}
        for row in members:
            events[str(row["event"])] = events.get(str(row["event"]), 0) + 1
        out.append(
            AlertGroup(
                watcher=watcher,
                role=roles[watcher],
                purpose=purpose,
                count=len(members),
                kinds=frozenset(str(r["kind"]) for r in members),
                events=events,
            )
        )
    return RecordedAlerts(tuple(out))


def _allocate(session: Session, watcher: str, count: int) -> int:
    """Reserve ``count`` sequence numbers for ``watcher``; return the last one."""
    table = _table(AlertCursor)
    statement = upsert_statement(session, table).values(watcher=watcher, latest=count, acked=0)
    statement = statement.on_conflict_do_update(
        index_elements=["watcher"], set_={"latest": table.c.latest + count}
    ).returning(table.c.latest)
    return int(session.execute(statement).scalar_one())


# --- delivery ------------------------------------------------------------------------


def cursor_of(session: Session, watcher: str) -> tuple[int, int]:
    """``(latest, acked)`` of ``watcher`` (0, 0 before its first alert)."""
    row = session.get(AlertCursor, watcher)
    return (0, 0) if row is None else (row.latest, row.acked)


def alerts_after(session: Session, watcher: str, after: int, limit: int) -> list[Alert]:
    """Up to ``limit`` of ``watcher``'s alerts with sequence > ``after``, in order."""
    statement = (
        select(Alert)
        .where(Alert.watcher == watcher, col(Alert.sequence) > after)
        .order_by(col(Alert.sequence))
        .limit(limit)
    )
    return list(session.exec(statement).all())


def ack(session: Session, watcher: str, cursor: int) -> int:
    """Move ``watcher``'s acknowledgement forward to ``cursor``; return it.

    Raises InvalidRequest for a cursor past the newest alert (it would
    acknowledge alerts not yet delivered).  A cursor behind the current one
    changes nothing: acknowledgements never move back.
    """
    latest, acked = cursor_of(session, watcher)
    if cursor > latest:
        raise InvalidRequest(f"cursor {cursor} is past the newest alert ({latest})")
    if cursor <= acked:
        return acked
    table = _table(AlertCursor)
    session.execute(
        sa.update(table)
        .where(table.c.watcher == watcher, table.c.acked < cursor)
        .values(acked=cursor)
    )
    return cursor
