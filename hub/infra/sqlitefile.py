"""Opening SQLite files the same way everywhere: the hub's database (through
SQLAlchemy, ``hub.storage.store``) and a key holder's state files (``hub.keyholder.server``).

- Writers wait up to :data:`SQLITE_BUSY_TIMEOUT` seconds for each other.
- Files are in WAL mode; switching a new file to WAL waits for other openers
  too (SQLite fails that pragma at once, without its busy handler).
- State files are created mode 0600 in 0700 directories (with their -wal
  and -shm files, which take the database file's mode).
- :func:`immediate` takes the write lock when a transaction starts, so two
  read-then-write transactions cannot deadlock.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError, Unavailable
from hub.infra.privatefiles import create_private_file

__all__ = [
    "SQLITE_BUSY_TIMEOUT",
    "SQLITE_CAUSES",
    "immediate",
    "open_state_file",
    "prepare_connection",
    "sqlite_cause",
]

log = logging.getLogger(__name__)

# Seconds a writer waits for the SQLite lock before failing.
SQLITE_BUSY_TIMEOUT = 30


def prepare_connection(connection: Any) -> None:
    """Busy timeout first, then WAL (a DB-API connection or cursor)."""
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    pause = 0.01
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def open_state_file(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """A prepared connection to ``path`` with ``schema`` applied.

    Raises ConfigurationError naming ``what`` and the file if it cannot be opened.
    """
    try:
        create_private_file(path)
        # isolation_level=None: transactions are begun with immediate().
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        prepare_connection(db)
        db.execute(schema)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigurationError(f"cannot open {what} file {path}: {exc}") from None
    return db


#: SQLite reports its failures as text; the fragment that names each cause
#: (``hub.storage.store.STORAGE_CAUSES`` are the same words).
SQLITE_CAUSES = (
    ("database or disk is full", "disk full"),
    ("database is locked", "database locked"),
    ("database table is locked", "database locked"),
    ("malformed", "corruption"),
    ("file is not a database", "corruption"),
    ("unable to open database", "connection lost"),
)


def sqlite_cause(message: str) -> str:
    """Which storage cause an SQLite error message names ("other" if none)."""
    text = message.lower()
    for fragment, cause in SQLITE_CAUSES:
        if fragment in text:
            return cause
    return "other"


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction: committed if the block succeeds, rolled back otherwise.

    An SQLite failure (the lock wait timing out, a full disk...) raises
    :class:`~client_sdk.core.errors.Unavailable` naming its cause, never the
    driver's text (which can hold parameters); the caller may retry.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        cause = sqlite_cause(str(exc))
        log.error("state file failure: %s (%s)", type(exc).__name__, cause)
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise Unavailable(f"the server's state file failed ({cause}); retry") from None
