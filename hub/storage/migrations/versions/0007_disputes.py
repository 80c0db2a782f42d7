"""disputes: a data subject's disputes, their items, and the indicators they suspend

Revision ID: 0007_disputes
Revises: 0004_cosignatures
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import hub.storage.models

revision: str = "0007_disputes"
down_revision: str | None = "0004_cosignatures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    with op.batch_alter_table("indicator", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("disputed_at", hub.storage.models.UTCDateTime(), nullable=True)
        )
    op.create_table(
        "dispute",
        sa.Column("id", _text(32), nullable=False),
        sa.Column("opened_by", _text(64), nullable=False),
        sa.Column("kind", _text(32), nullable=False),
        sa.Column("case_ref_digest", _text(64), nullable=False),
        sa.Column("opened_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.Column("closed_at", hub.storage.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dispute", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispute_opened_by"), ["opened_by"], unique=False)
    op.create_table(
        "dispute_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", _text(32), nullable=False),
        sa.Column("indicator_id", sa.Integer(), nullable=False),
        sa.Column("contributor", _text(64), nullable=False),
        sa.Column("kind", _text(32), nullable=False),
        sa.Column("category", _text(32), nullable=False),
        sa.Column("observed_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.Column("contributed_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.Column("state", _text(16), nullable=False),
        sa.Column("evidence", _text(32), nullable=False),
        sa.Column("due_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.Column("resolved_at", hub.storage.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["dispute_id"], ["dispute.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dispute_item", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dispute_item_dispute_id"), ["dispute_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dispute_item_indicator_id"), ["indicator_id"], unique=False
        )
        batch_op.create_index("ix_dispute_item_state_due_at", ["state", "due_at"], unique=False)
        batch_op.create_index(
            "ix_dispute_item_contributor_state", ["contributor", "state"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dispute_item", schema=None) as batch_op:
        batch_op.drop_index("ix_dispute_item_contributor_state")
        batch_op.drop_index("ix_dispute_item_state_due_at")
        batch_op.drop_index(batch_op.f("ix_dispute_item_indicator_id"))
        batch_op.drop_index(batch_op.f("ix_dispute_item_dispute_id"))
    op.drop_table("dispute_item")
    with op.batch_alter_table("dispute", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispute_opened_by"))
    op.drop_table("dispute")
    with op.batch_alter_table("indicator", schema=None) as batch_op:
        batch_op.drop_column("disputed_at")
