"""alert.score: the current (decayed) score an alert reports at summary and above

An alert states what a match would (issue 11 meets issue 12), including the
highest current score of the indicators it counts.  Existing alerts keep 0
(no score was recorded when they were raised).

Revision ID: 0009_alert_score
Revises: 0006_feedback
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_alert_score"
down_revision: str | None = "0006_feedback"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.add_column(sa.Column("score", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_column("score")
