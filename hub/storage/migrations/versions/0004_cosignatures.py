"""audit_cosignature: witnesses' cosignature lines of the audit checkpoints (ADR 0010)

Revision ID: 0004_cosignatures
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import hub.storage.models

revision: str = "0004_cosignatures"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_cosignature",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("witness", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("created_at", hub.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("checkpoint_digest", "witness"),
    )
    with op.batch_alter_table("audit_cosignature", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_cosignature_checkpoint_digest"),
            ["checkpoint_digest"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_cosignature", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_cosignature_checkpoint_digest"))
    op.drop_table("audit_cosignature")
