"""Opening SQLite files the same way everywhere: the hub's database (through
SQLAlchemy, ``hub.storage.store``) and a key holder's state files (``hub.keyholder.server``).

- Writers wait up to :data:`SQLITE_BUSY_TIMEOUT` seconds for each other.
- Files are in WAL mode; switching a new file to WAL waits for other openers
  too (SQLite fails that pragma at once, without its busy handler).
- :func:`immediate` takes the write lock when a transaction starts, so two
  read-then-write transactions cannot deadlock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError

__all__ = ["SQLITE_BUSY_TIMEOUT", "immediate", "open_state_file", "prepare_connection"]

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
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun with immediate().
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        prepare_connection(db)
        db.execute(schema)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigurationError(f"cannot open {what} file {path}: {exc}") from None
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction: committed if the block succeeds, rolled back otherwise."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
