"""watchlists: watch, alert and alert_cursor (issue 11)

Revision ID: 0005_watchlists
Revises: 0007_disputes (rechained onto main's head)
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import hub.storage.models

revision: str = "0005_watchlists"
down_revision: str | None = "0007_disputes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watch",
        sa.Column("watcher", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("token", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_epoch", sa.Integer(), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("watcher", "kind", "token", "key_epoch"),
    )
    with op.batch_alter_table("watch", schema=None) as batch_op:
        batch_op.create_index("ix_watch_token", ["token"], unique=False)
        batch_op.create_index("ix_watch_expires_at", ["expires_at"], unique=False)
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("watcher", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("token", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_epoch", sa.Integer(), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("disclosure", sa.Integer(), nullable=False),
        sa.Column("contributors", sa.Integer(), nullable=False),
        sa.Column("categories", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("first_seen", hub.storage.models.UTCDateTime(), nullable=True),
        sa.Column("last_seen", hub.storage.models.UTCDateTime(), nullable=True),
        sa.Column("max_confidence", sa.Integer(), nullable=False),
        sa.Column("raised_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.Column("policy_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("watcher", "sequence", name="uq_alert_sequence"),
    )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index("ix_alert_expires_at", ["expires_at"], unique=False)
    op.create_table(
        "alert_cursor",
        sa.Column("watcher", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("latest", sa.BigInteger(), nullable=False),
        sa.Column("acked", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("watcher"),
    )


def downgrade() -> None:
    op.drop_table("alert_cursor")
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_expires_at")
    op.drop_table("alert")
    with op.batch_alter_table("watch", schema=None) as batch_op:
        batch_op.drop_index("ix_watch_expires_at")
        batch_op.drop_index("ix_watch_token")
    op.drop_table("watch")
