"""feedback: evidence classes on indicators, token sightings, warning lists (issue 12)

Revision ID: 0006_feedback
Revises: 0008_cosign_refresh (0004_cosignatures, 0007_disputes, 0005_watchlists, 0008, this)
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import hub.storage.models

revision: str = "0006_feedback"
down_revision: str | None = "0008_cosign_refresh"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("indicator", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "evidence",
                sa.String(length=32),
                server_default=sa.text("'internal_investigation'"),
                nullable=False,
            )
        )
    op.create_table(
        "token_sighting",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.LargeBinary(length=32), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("key_epoch", sa.Integer(), nullable=False),
        sa.Column("reporter", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("seen_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.Column("created_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reporter", "kind", "token", "key_epoch", name="uq_token_sighting"),
    )
    op.create_index("ix_token_sighting_kind_token", "token_sighting", ["kind", "token"])
    op.create_table(
        "warninglist_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("list_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("token", sa.LargeBinary(length=32), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("key_epoch", sa.Integer(), nullable=False),
        sa.Column("added_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("list_name", "kind", "token", "key_epoch", name="uq_warninglist_entry"),
    )
    op.create_index("ix_warninglist_entry_kind_token", "warninglist_entry", ["kind", "token"])


def downgrade() -> None:
    op.drop_index("ix_warninglist_entry_kind_token", table_name="warninglist_entry")
    op.drop_table("warninglist_entry")
    op.drop_index("ix_token_sighting_kind_token", table_name="token_sighting")
    op.drop_table("token_sighting")
    with op.batch_alter_table("indicator", schema=None) as batch_op:
        batch_op.drop_column("evidence")
