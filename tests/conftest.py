"""Shared test setup: make the generated ``fraudhub.v1`` package importable.

pyproject maps the ``fraudhub`` package to ``protos/fraudhub``; the repository
is not pip-installed in development, so ``protos/`` goes on ``sys.path``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

_PROTOS = str(Path(__file__).resolve().parent.parent / "protos")
if _PROTOS not in sys.path:
    sys.path.insert(0, _PROTOS)


# --- databases (hub store and end-to-end tests) --------------------------------

PG_URL = os.environ.get("FRAUDHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def postgres_schema_url(prefix: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema of the shared test database.

    Other suites use the same database at the same time, so every user gets
    its own schema, dropped afterwards.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty hub database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        from hub.store import sqlite_url

        yield sqlite_url(tmp_path)
        return
    with postgres_schema_url("hub_test") as url:
        yield url
