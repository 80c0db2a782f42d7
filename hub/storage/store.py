"""The hub's storage: engine, sessions, migrations and the queries the hub runs.

One :class:`Store` per process.  SQLite (WAL, a file in the data directory)
by default; PostgreSQL when given a ``postgresql+psycopg://`` URL; the same
code and the same tests run on both.

Guarantees:

- Query functions take the caller's :class:`~sqlmodel.Session` and never
  commit: the Exchange servicer commits a batch, its audit event and its quota
  use in one transaction (DESIGN.md, "Storage"), so nothing is half-written.
- On SQLite every transaction starts with ``BEGIN IMMEDIATE``: writers queue
  on the database lock (``busy_timeout``) instead of failing when a read
  transaction tries to upgrade after another writer committed.
- Contributions are idempotent per ``(contributor, kind, token, key_epoch)``:
  the write is an ``INSERT ... ON CONFLICT DO UPDATE``, so a retried or
  concurrent batch refreshes the row and never duplicates it.
- Revoked, expired and disputed indicators are never returned by
  :func:`find_active`: :func:`matchable` is the one predicate of "may match";
  :func:`delete_expired` removes expired ones for good.
- Query functions raise fraudhub errors for the caller's mistakes
  (:class:`~client_sdk.core.errors.AlreadyExists`, ``NotFound``,
  ``QuotaExhausted``).  No SQLAlchemy error leaves this layer: whatever the
  database raises inside :meth:`Store.session` or :meth:`Store.migrate` (a
  query, the commit, the rollback) becomes one :class:`StorageError` (a
  ServerError) naming its cause (:data:`STORAGE_CAUSES`) and never the
  driver's message, which can hold SQL parameters (tokens, token ids).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from client_sdk.core.errors import (
    AlreadyExists,
    NotFound,
    QuotaExhausted,
    StorageCorruption,
    StorageError,
)
from hub.core.matching import Contribution, Sighting
from hub.infra.privatefiles import create_private_file
from hub.infra.sqlitefile import SQLITE_BUSY_TIMEOUT, prepare_connection, sqlite_cause
from hub.storage.models import Indicator, Institution, PolicyText, QuotaUsage, SeenToken

__all__ = [
    "SQLITE_FILENAME",
    "STORAGE_CAUSES",
    "ContributionCounts",
    "StorageError",
    "Store",
    "add_institution",
    "consume_quota",
    "delete_expired",
    "disable_institution",
    "enable_institution",
    "find_active",
    "forget_expired_tokens",
    "get_institution",
    "get_policy_text",
    "list_institutions",
    "matchable",
    "record_policy_text",
    "remember_token",
    "revoke",
    "rotate_institution_key",
    "sqlite_url",
    "storage_cause",
    "storage_error",
    "token_remembered",
    "upsert_contributions",
    "upsert_statement",
]

log = logging.getLogger(__name__)

SQLITE_FILENAME = "hub.sqlite3"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key serializing schema migrations ("fhmigrat" in ASCII).
MIGRATION_LOCK_KEY = int.from_bytes(b"fhmigrat", "big") & (2**63 - 1)
# Keep IN lists well under SQLite's 32766 host-parameter limit.
_IN_CHUNK = 900


#: The causes a :class:`StorageError` names.
STORAGE_CAUSES = ("disk full", "database locked", "corruption", "connection lost", "other")

# PostgreSQL SQLSTATE codes (Appendix A of its manual) and classes.
_PG_CAUSES = {
    "53100": "disk full",  # disk_full
    "55P03": "database locked",  # lock_not_available (lock_timeout)
    "40P01": "database locked",  # deadlock_detected
    "57014": "database locked",  # query_canceled (statement_timeout)
    "XX001": "corruption",  # data_corrupted
    "XX002": "corruption",  # index_corrupted
}


def storage_cause(exc: sa.exc.SQLAlchemyError) -> str:
    """Which of :data:`STORAGE_CAUSES` a database error is (never its text)."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return "connection lost"
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if isinstance(sqlstate, str):
            if sqlstate in _PG_CAUSES:
                return _PG_CAUSES[sqlstate]
            if sqlstate.startswith("08"):  # connection_exception class
                return "connection lost"
            return "other"
        return sqlite_cause(str(exc.orig))
    return "other"


def storage_error(exc: sa.exc.SQLAlchemyError) -> StorageError:
    """The :class:`StorageError` for ``exc``, logged by type and cause only."""
    cause = storage_cause(exc)
    # The type and cause only: the driver's text can carry SQL parameters.
    log.error("database failure: %s (%s)", type(exc).__name__, cause)
    cls = StorageCorruption if cause == "corruption" else StorageError
    return cls(f"the hub's database failed ({cause})", cause)


def sqlite_url(data_dir: Path) -> str:
    """The URL of the default SQLite database in ``data_dir``."""
    return f"sqlite:///{(Path(data_dir) / SQLITE_FILENAME).resolve()}"


class Store:
    """Engine and sessions for one database URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                # Mode 0600 in a 0700 directory; the WAL and SHM files follow it.
                create_private_file(Path(self.url.database))
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT,
            }
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction the caller commits; rolled back on error.

        Raises :class:`StorageError` for any database error inside the block
        (the commit included), after the rollback.
        """
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                try:
                    yield session
                except Exception:
                    session.rollback()
                    raise
        except sa.exc.SQLAlchemyError as exc:
            raise storage_error(exc) from None

    def migrate(self) -> None:
        """Bring the schema to the newest alembic revision (``upgrade head``).

        Raises :class:`StorageError` if the database fails.
        """
        from alembic import command

        try:
            with self.engine.begin() as connection:
                if not self.is_sqlite:
                    # Replicas starting together migrate one after the other.
                    connection.exec_driver_sql(
                        f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                    )
                command.upgrade(alembic_config(connection), "head")
        except sa.exc.SQLAlchemyError as exc:
            raise storage_error(exc) from None

    def revisions(self) -> tuple[str | None, str]:
        """``(current, head)``: the schema revision of the database (None: no schema
        yet) and the newest one this version knows.  Raises :class:`StorageError`."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        try:
            with self.engine.connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
        except sa.exc.SQLAlchemyError as exc:
            raise storage_error(exc) from None
        return current, str(head)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(connection: sa.Connection | None = None) -> Any:
    """The programmatic alembic configuration (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN, so it can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        prepare_connection(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upsert_statement(session: Session, table: Any) -> Any:
    """A dialect ``INSERT`` that supports ``on_conflict_do_update``."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise StorageError(f"unsupported database backend {name!r}")


@dataclass(frozen=True)
class ContributionCounts:
    """How many contributions were new and how many refreshed an existing row."""

    accepted: int
    duplicates: int


def upsert_contributions(
    session: Session, contributor: str, items: Sequence[Contribution], now: datetime
) -> ContributionCounts:
    """Store ``items`` for ``contributor``; existing rows are refreshed.

    A re-contributed indicator gets the new metadata and label and is
    un-revoked: the contributor observed it again.  Within one call the last
    item for a key wins.  Does not commit.
    """
    latest: dict[tuple[str, bytes, int], Contribution] = {}
    for item in items:
        latest[(item.kind, item.token, item.key_epoch)] = item
    if not latest:
        return ContributionCounts(0, 0)
    existing = _existing_keys(session, contributor, list(latest))
    rows = [
        {
            "token": c.token,
            "kind": c.kind,
            "key_epoch": c.key_epoch,
            "contributor": contributor,
            "category": c.category,
            "confidence": c.confidence,
            "observed_at": c.observed_at,
            "expires_at": c.expires_at,
            "sealed_label": c.sealed_label,
            "revoked_at": None,
            "revoke_reason": None,
            "created_at": now,
            "evidence": c.evidence,
        }
        for c in latest.values()
    ]
    table = Indicator.__table__  # type: ignore[attr-defined]
    statement = upsert_statement(session, table)
    statement = statement.on_conflict_do_update(
        index_elements=["contributor", "kind", "token", "key_epoch"],
        set_={
            name: statement.excluded[name]
            for name in (
                "category",
                "confidence",
                "observed_at",
                "expires_at",
                "sealed_label",
                "revoked_at",
                "revoke_reason",
                "evidence",
            )
        },
    )
    session.execute(statement, rows)
    duplicates = sum(1 for key in latest if key in existing)
    # Items repeated inside the batch count as duplicates of the first one.
    duplicates += len(items) - len(latest)
    return ContributionCounts(accepted=len(items) - duplicates, duplicates=duplicates)


def _existing_keys(
    session: Session, contributor: str, keys: Sequence[tuple[str, bytes, int]]
) -> set[tuple[str, bytes, int]]:
    found: set[tuple[str, bytes, int]] = set()
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        # contributor = and kind IN lead the unique index, so this is index lookups.
        statement = select(Indicator.kind, Indicator.token, Indicator.key_epoch).where(
            Indicator.contributor == contributor,
            col(Indicator.kind).in_({kind for kind, _, _ in chunk}),
            col(Indicator.token).in_([token for _, token, _ in chunk]),
        )
        found.update((k, bytes(t), e) for k, t, e in session.exec(statement))
    return found & set(keys)


def revoke(
    session: Session,
    contributor: str,
    keys: Sequence[tuple[str, bytes, int]],
    reason: str,
    now: datetime,
) -> int:
    """Revoke ``contributor``'s own active indicators among ``keys``.

    Returns how many were revoked; keys the contributor never contributed, or
    already revoked, are not counted.  Another institution's row is never
    touched: the contributor is part of every lookup.  Does not commit.
    """
    revoked = 0
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        wanted = set(chunk)
        rows = session.exec(
            select(Indicator).where(
                Indicator.contributor == contributor,
                col(Indicator.kind).in_({kind for kind, _, _ in chunk}),
                col(Indicator.token).in_([token for _, token, _ in chunk]),
                col(Indicator.revoked_at).is_(None),
            )
        ).all()
        for row in rows:
            if (row.kind, bytes(row.token), row.key_epoch) in wanted:
                row.revoked_at = now
                row.revoke_reason = reason
                session.add(row)
                revoked += 1
    session.flush()
    return revoked


def matchable(table: Any, now: datetime) -> sa.ColumnElement[bool]:
    """The one predicate of an indicator that may match (and alert) at ``now``.

    Not revoked, not expired, and not suspended by a pending dispute
    (``hub.core.disputes``).  Every query that answers "is it listed" uses it.
    """
    return sa.and_(
        table.c.revoked_at.is_(None),
        table.c.disputed_at.is_(None),
        table.c.expires_at > now,
    )


def find_active(
    session: Session, queries: Sequence[tuple[str, bytes, int]], now: datetime
) -> dict[tuple[str, bytes, int], list[Sighting]]:
    """Matchable (:func:`matchable`) sightings for each queried key."""
    found: dict[tuple[str, bytes, int], list[Sighting]] = {}
    keys = list(dict.fromkeys(queries))
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        wanted = set(chunk)
        table = Indicator.__table__  # type: ignore[attr-defined]
        statement = sa.select(
            table.c.kind,
            table.c.token,
            table.c.key_epoch,
            table.c.contributor,
            table.c.category,
            table.c.confidence,
            table.c.observed_at,
            table.c.sealed_label,
            table.c.evidence,
        ).where(
            table.c.kind.in_({kind for kind, _, _ in chunk}),
            table.c.token.in_([token for _, token, _ in chunk]),
            matchable(table, now),
        )
        for (
            kind,
            token,
            epoch,
            contributor,
            category,
            confidence,
            observed,
            label,
            evidence,
        ) in session.execute(statement):
            key = (kind, bytes(token), epoch)
            if key in wanted:
                found.setdefault(key, []).append(
                    Sighting(contributor, category, confidence, observed, label, evidence)
                )
    return found


def delete_expired(session: Session, now: datetime) -> int:
    """Delete every indicator whose ``expires_at`` has passed; return how many.

    Expired rows never match already; deleting them is the retention cap
    taking effect (data minimisation).  Uses the ``expires_at`` index.  Does
    not commit.
    """
    table = Indicator.__table__  # type: ignore[attr-defined]
    result = session.execute(sa.delete(table).where(table.c.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)


def record_policy_text(session: Session, version: str, text: str, now: datetime) -> None:
    """Keep the text of policy ``version`` (first use wins; a version's text never
    changes, it is its hash).  Does not commit."""
    table = PolicyText.__table__  # type: ignore[attr-defined]
    statement = (
        upsert_statement(session, table)
        .values(version=version, first_used=now, canonical_text=text)
        .on_conflict_do_nothing(index_elements=["version"])
    )
    session.execute(statement)


def get_policy_text(session: Session, version: str) -> PolicyText:
    """The stored policy ``version``; raises NotFound if the hub never ran it."""
    row = session.get(PolicyText, version)
    if row is None:
        raise NotFound(
            "no policy text recorded for that version (texts are kept from the release "
            "that added Audit.GetPolicy on)"
        )
    return row


def remember_token(
    session: Session, issuer: str, jti: str, forget_after: datetime, now: datetime
) -> bool:
    """Record that ``issuer`` used token id ``jti``; False if it is still recorded.

    One ``INSERT ... ON CONFLICT`` on the primary key, so two replicas racing
    on the same token cannot both succeed; a record already past its
    ``forget_after`` (not yet swept) counts as forgotten.  Does not commit.
    """
    table = SeenToken.__table__  # type: ignore[attr-defined]
    insert = upsert_statement(session, table).values(
        issuer=issuer, jti=jti, forget_after=forget_after
    )
    statement = insert.on_conflict_do_update(
        index_elements=["issuer", "jti"],
        set_={"forget_after": insert.excluded.forget_after},
        where=table.c.forget_after < now,
    ).returning(table.c.jti)
    # RETURNING, not rowcount: psycopg reports -1 for an upsert's rowcount.
    return session.execute(statement).first() is not None


def token_remembered(session: Session, issuer: str, jti: str, now: datetime) -> bool:
    """Whether ``issuer``'s token id ``jti`` is recorded and not yet forgotten (a read)."""
    table = SeenToken.__table__  # type: ignore[attr-defined]
    query = sa.select(table.c.jti).where(
        table.c.issuer == issuer, table.c.jti == jti, table.c.forget_after >= now
    )
    return session.execute(query).first() is not None


def forget_expired_tokens(session: Session, now: datetime) -> int:
    """Delete token ids whose tokens expired before ``now``; return how many.  No commit."""
    table = SeenToken.__table__  # type: ignore[attr-defined]
    result = session.execute(sa.delete(table).where(table.c.forget_after < now))
    return int(getattr(result, "rowcount", 0) or 0)


def consume_quota(
    session: Session, institution: str, bucket: str, day: str, amount: int, limit: int
) -> int:
    """Count ``amount`` items against a daily quota; return the new total.

    Raises :class:`QuotaExhausted` if the total would pass ``limit``; the
    caller's transaction is then rolled back with its work, so a refused call
    uses nothing.  The increment is one atomic upsert, so concurrent hub
    replicas on PostgreSQL cannot both spend the last unit.  Does not commit.
    """
    if amount <= 0:
        return 0
    table = QuotaUsage.__table__  # type: ignore[attr-defined]
    statement = upsert_statement(session, table).values(
        institution=institution, bucket=bucket, day=day, used=amount
    )
    statement = statement.on_conflict_do_update(
        index_elements=["institution", "bucket", "day"],
        set_={"used": table.c.used + amount},
    ).returning(table.c.used)
    used = int(session.execute(statement).scalar_one())
    if used > limit:
        raise QuotaExhausted(f"daily quota {bucket!r} of {limit} items is spent")
    return used


# --- institution registry ----------------------------------------------------


def add_institution(session: Session, institution: Institution) -> Institution:
    """Register ``institution``; raises :class:`AlreadyExists` if the id is taken."""
    if session.get(Institution, institution.id) is not None:
        raise AlreadyExists(f"institution {institution.id!r} already exists")
    session.add(institution)
    session.flush()
    return institution


def get_institution(session: Session, institution_id: str) -> Institution:
    """The registered institution ``institution_id``; raises NotFound."""
    found = session.get(Institution, institution_id)
    if found is None:
        raise NotFound(f"institution {institution_id!r} is not registered")
    return found


def list_institutions(session: Session, *, include_disabled: bool = False) -> list[Institution]:
    statement = select(Institution).order_by(col(Institution.id))
    if not include_disabled:
        statement = statement.where(col(Institution.enabled).is_(True))
    return list(session.exec(statement).all())


def disable_institution(session: Session, institution_id: str, now: datetime) -> Institution:
    """Disable ``institution_id`` (idempotent); raises NotFound."""
    found = get_institution(session, institution_id)
    if found.enabled:
        found.enabled = False
        found.disabled_at = now
        session.add(found)
        session.flush()
    return found


def enable_institution(session: Session, institution_id: str) -> Institution:
    """Enable ``institution_id`` again (idempotent); raises NotFound.

    Its id, key, history and contributions are those it had when disabled.
    """
    found = get_institution(session, institution_id)
    if not found.enabled:
        found.enabled = True
        found.disabled_at = None
        session.add(found)
        session.flush()
    return found


def rotate_institution_key(session: Session, institution_id: str, public_key: bytes) -> Institution:
    """Replace ``institution_id``'s signing key (id, role, history and contributions stay).

    The caller validated the key.  Raises NotFound, AlreadyExists if it is the
    key the institution has now.  Does not commit.
    """
    found = get_institution(session, institution_id)
    if bytes(found.public_key) == public_key:
        raise AlreadyExists(f"institution {institution_id!r} already has that key")
    found.public_key = public_key
    session.add(found)
    session.flush()
    return found
