"""alert.dispute_id, alert.respond_by: a dispute notifies each contributor (issue 12)

Opening a dispute records a ``disputed`` alert for every contributor of a
suspended indicator, naming the dispute and its response deadline.  Existing
alerts keep "" and NULL.

Revision ID: 0010_alert_dispute
Revises: 0009_alert_score
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.storage.models

revision: str = "0010_alert_dispute"
down_revision: str | None = "0009_alert_score"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dispute_id", sa.String(32), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("respond_by", hub.storage.models.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_column("respond_by")
        batch_op.drop_column("dispute_id")
