"""Alembic environment for the hub schema.

The target metadata is ``SQLModel.metadata`` with every hub table imported
(:mod:`hub.storage.models` and the audit log's tables), so ``alembic revision
--autogenerate`` and ``compare_metadata`` see the whole schema.  The
connection comes from :func:`hub.storage.store.alembic_config` (``attributes
["connection"]``), or from ``FRAUDHUB_DATABASE_URL`` when run by the alembic
command line.  SQLite runs in batch mode so later ``ALTER``s work there too.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import hub.storage.alerts
import hub.storage.auditlog
import hub.storage.models

# Imported for their table definitions only.
_TABLE_MODULES = (hub.storage.models, hub.storage.auditlog, hub.storage.alerts)

target_metadata = SQLModel.metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("FRAUDHUB_DATABASE_URL")
    if not url:
        raise RuntimeError("set FRAUDHUB_DATABASE_URL or pass a connection")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()


run_migrations_online()
