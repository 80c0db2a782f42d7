"""Database failures leave the store as one StorageError naming the cause (ADR 0007).

Real failures on real databases: a full SQLite file, a locked one, a corrupt
one, a PostgreSQL lock timeout.  The driver's text (which can hold SQL
parameters) is never in the message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from conftest import postgres_schema_url
from sqlmodel import Session, text

from hub.infra import sqlitefile
from hub.storage import store
from hub.storage.models import Institution, utcnow

SECRET_ID = "token-id-4242"


def _row(i: int) -> Institution:
    return Institution(
        id=f"bank-{i}",
        role="bank",
        public_key=bytes(32),
        display_name="x" * 200,
        created_at=utcnow(),
    )


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[store.Store]:
    hub_store = store.Store(store.sqlite_url(tmp_path))
    hub_store.migrate()
    yield hub_store
    hub_store.dispose()


def test_a_full_sqlite_database_is_disk_full(sqlite_store: store.Store) -> None:
    with sqlite_store.session() as session:
        pages = int(session.exec(text("PRAGMA page_count")).one()[0])  # type: ignore[call-overload]
    with pytest.raises(store.StorageError) as caught, sqlite_store.session() as session:
        session.exec(text(f"PRAGMA max_page_count={pages + 1}"))  # type: ignore[call-overload]
        for i in range(2000):
            store.add_institution(session, _row(i))
        session.commit()
    assert caught.value.cause == "disk full"
    assert str(caught.value) == "the hub's database failed (disk full)"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_locked_sqlite_database_is_database_locked(
    sqlite_store: store.Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sqlite_store.dispose()
    monkeypatch.setattr(sqlitefile, "SQLITE_BUSY_TIMEOUT", 0)
    impatient = store.Store(store.sqlite_url(tmp_path))
    impatient.engine.dispose()
    impatient.engine = sa.create_engine(
        impatient.url, connect_args={"check_same_thread": False, "timeout": 0.05}
    )
    store._configure_sqlite(impatient.engine)
    holder = sqlite3.connect(tmp_path / store.SQLITE_FILENAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(store.StorageError) as caught, impatient.session() as session:
            store.list_institutions(session)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        impatient.dispose()
    assert caught.value.cause == "database locked"


def test_a_corrupt_sqlite_file_is_corruption(tmp_path: Path) -> None:
    (tmp_path / store.SQLITE_FILENAME).write_bytes(b"this is not a database " * 200)
    broken = store.Store(store.sqlite_url(tmp_path))
    with pytest.raises(store.StorageError) as caught:
        broken.migrate()
    broken.dispose()
    assert caught.value.cause == "corruption"


def test_no_driver_text_reaches_the_message_or_the_log(
    sqlite_store: store.Store, caplog: pytest.LogCaptureFixture
) -> None:
    # A missing table: the driver's message names the statement and its parameters.
    with pytest.raises(store.StorageError) as caught, sqlite_store.session() as session:
        session.execute(text("SELECT * FROM no_such_table WHERE jti = :jti"), {"jti": SECRET_ID})
    assert caught.value.cause == "other"
    assert SECRET_ID not in str(caught.value)
    assert "no_such_table" not in caplog.text and SECRET_ID not in caplog.text
    assert "OperationalError (other)" in caplog.text


@pytest.mark.postgres
def test_a_postgresql_lock_timeout_is_database_locked() -> None:
    with postgres_schema_url("hub_locks") as url:
        hub_store = store.Store(url)
        hub_store.migrate()
        try:
            with Session(hub_store.engine) as holder:
                holder.exec(text("LOCK TABLE institution IN ACCESS EXCLUSIVE MODE"))  # type: ignore[call-overload]
                with pytest.raises(store.StorageError) as caught, hub_store.session() as session:
                    session.exec(text("SET LOCAL lock_timeout = '50ms'"))  # type: ignore[call-overload]
                    store.list_institutions(session)
                holder.rollback()
        finally:
            hub_store.dispose()
    assert caught.value.cause == "database locked"


@pytest.mark.parametrize(
    ("sqlstate", "cause"),
    [
        ("53100", "disk full"),
        ("55P03", "database locked"),
        ("40P01", "database locked"),
        ("57014", "database locked"),
        ("XX001", "corruption"),
        ("XX002", "corruption"),
        ("08006", "connection lost"),
        ("23505", "other"),
    ],
)
def test_postgresql_sqlstates_name_their_cause(sqlstate: str, cause: str) -> None:
    orig = SimpleNamespace(sqlstate=sqlstate)
    error = sa.exc.OperationalError("SELECT 1", {}, orig)  # type: ignore[arg-type]
    assert store.storage_cause(error) == cause
