"""Queries of the feedback tables: token sightings and warning lists (issue 12).

Like :mod:`hub.storage.store`: functions take the caller's session and never
commit (the servicer commits the effect with its audit event, ADR 0007); the
store's :meth:`~hub.storage.store.Store.session` turns database errors into
:class:`~client_sdk.core.errors.StorageError`.  Tokens are only ever bound as
parameters, never formatted into SQL or messages.

Guarantees:

- One sighting per (reporter, kind, token, key epoch): filing again replaces
  the type and time (``INSERT ... ON CONFLICT DO UPDATE``).
- Warning list entries are unique per (list, kind, token, key epoch); adding
  one twice or removing an absent one changes nothing and is counted as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from hub.storage.models import TokenSighting, WarningListEntry
from hub.storage.store import upsert_statement

__all__ = [
    "Key",
    "SightingRow",
    "add_warninglist_entries",
    "count_warninglist_entries",
    "find_sightings",
    "find_warninglisted",
    "record_sightings",
    "remove_warninglist_entries",
]

#: (kind, token, key_epoch): how every table here is keyed.
Key = tuple[str, bytes, int]
# Keep IN lists well under SQLite's host-parameter limit (as the store does).
_IN_CHUNK = 900


@dataclass(frozen=True)
class SightingRow:
    """One stored sighting: who filed which type when."""

    reporter: str
    type: str
    seen_at: datetime


def _chunks(keys: Sequence[Key]) -> list[list[Key]]:
    unique = list(dict.fromkeys(keys))
    return [unique[i : i + _IN_CHUNK] for i in range(0, len(unique), _IN_CHUNK)]


def record_sightings(
    session: Session, reporter: str, items: Sequence[tuple[Key, str, datetime]], now: datetime
) -> int:
    """Store ``reporter``'s sightings ((key, type, seen_at)); return how many were written.

    Within one call the last item for a key wins.  Does not commit.
    """
    latest: dict[Key, tuple[str, datetime]] = {}
    for key, kind_of_sighting, seen_at in items:
        latest[key] = (kind_of_sighting, seen_at)
    if not latest:
        return 0
    rows = [
        {
            "token": token,
            "kind": kind,
            "key_epoch": epoch,
            "reporter": reporter,
            "type": type_,
            "seen_at": seen_at,
            "created_at": now,
        }
        for (kind, token, epoch), (type_, seen_at) in latest.items()
    ]
    table = TokenSighting.__table__  # type: ignore[attr-defined]
    statement = upsert_statement(session, table)
    statement = statement.on_conflict_do_update(
        index_elements=["reporter", "kind", "token", "key_epoch"],
        set_={name: statement.excluded[name] for name in ("type", "seen_at", "created_at")},
    )
    session.execute(statement, rows)
    return len(latest)


def find_sightings(session: Session, keys: Sequence[Key]) -> dict[Key, list[SightingRow]]:
    """Every stored sighting of each key."""
    table = TokenSighting.__table__  # type: ignore[attr-defined]
    found: dict[Key, list[SightingRow]] = {}
    for chunk in _chunks(keys):
        wanted = set(chunk)
        statement = sa.select(
            table.c.kind,
            table.c.token,
            table.c.key_epoch,
            table.c.reporter,
            table.c.type,
            table.c.seen_at,
        ).where(
            table.c.kind.in_({kind for kind, _, _ in chunk}),
            table.c.token.in_([token for _, token, _ in chunk]),
        )
        for kind, token, epoch, reporter, type_, seen_at in session.execute(statement):
            key = (kind, bytes(token), epoch)
            if key in wanted:
                found.setdefault(key, []).append(SightingRow(reporter, type_, seen_at))
    return found


def find_warninglisted(session: Session, keys: Sequence[Key]) -> dict[Key, str]:
    """The keys on a warning list, each with the (alphabetically first) list's name."""
    table = WarningListEntry.__table__  # type: ignore[attr-defined]
    found: dict[Key, str] = {}
    for chunk in _chunks(keys):
        wanted = set(chunk)
        statement = sa.select(
            table.c.kind, table.c.token, table.c.key_epoch, table.c.list_name
        ).where(
            table.c.kind.in_({kind for kind, _, _ in chunk}),
            table.c.token.in_([token for _, token, _ in chunk]),
        )
        for kind, token, epoch, list_name in session.execute(statement):
            key = (kind, bytes(token), epoch)
            if key in wanted and (key not in found or list_name < found[key]):
                found[key] = list_name
    return found


def add_warninglist_entries(
    session: Session, list_name: str, keys: Sequence[Key], added_by: str, now: datetime
) -> int:
    """Add ``keys`` to ``list_name``; return how many were new.  Does not commit."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return 0
    existing = _listed(session, list_name, unique)
    rows = [
        {
            "list_name": list_name,
            "token": token,
            "kind": kind,
            "key_epoch": epoch,
            "added_by": added_by,
            "created_at": now,
        }
        for kind, token, epoch in unique
        if (kind, token, epoch) not in existing
    ]
    if rows:
        table = WarningListEntry.__table__  # type: ignore[attr-defined]
        statement = upsert_statement(session, table).on_conflict_do_nothing(
            index_elements=["list_name", "kind", "token", "key_epoch"]
        )
        session.execute(statement, rows)
    return len(rows)


def remove_warninglist_entries(session: Session, list_name: str, keys: Sequence[Key]) -> int:
    """Remove ``keys`` from ``list_name``; return how many were there.  Does not commit."""
    table = WarningListEntry.__table__  # type: ignore[attr-defined]
    removed = 0
    for key in _listed(session, list_name, list(dict.fromkeys(keys))):
        kind, token, epoch = key
        session.execute(
            sa.delete(table).where(
                table.c.list_name == list_name,
                table.c.kind == kind,
                table.c.token == token,
                table.c.key_epoch == epoch,
            )
        )
        removed += 1
    return removed


def count_warninglist_entries(session: Session) -> list[tuple[str, str, int]]:
    """(list, kind, entries) for every list and kind, sorted."""
    table = WarningListEntry.__table__  # type: ignore[attr-defined]
    statement = (
        sa.select(table.c.list_name, table.c.kind, sa.func.count())
        .group_by(table.c.list_name, table.c.kind)
        .order_by(table.c.list_name, table.c.kind)
    )
    return [(name, kind, int(n)) for name, kind, n in session.execute(statement)]


def _listed(session: Session, list_name: str, keys: Sequence[Key]) -> set[Key]:
    table = WarningListEntry.__table__  # type: ignore[attr-defined]
    found: set[Key] = set()
    for chunk in _chunks(keys):
        statement = sa.select(table.c.kind, table.c.token, table.c.key_epoch).where(
            table.c.list_name == list_name,
            table.c.kind.in_({kind for kind, _, _ in chunk}),
            table.c.token.in_([token for _, token, _ in chunk]),
        )
        found.update((k, bytes(t), e) for k, t, e in session.execute(statement))
    return found & set(keys)
