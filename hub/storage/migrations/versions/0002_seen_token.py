"""seen_token: JWT ids shared by hub replicas (replay protection)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import hub.storage.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seen_token",
        sa.Column("issuer", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("jti", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("forget_after", hub.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti"),
    )
    with op.batch_alter_table("seen_token", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_seen_token_forget_after"), ["forget_after"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("seen_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seen_token_forget_after"))
    op.drop_table("seen_token")
