"""audit_cosignature.cosigned_at: when the witness made the stored line (review-2, S1)

The hub re-asks witnesses for a fresh cosignature of an unchanged head once
its newest one is older than half the regulators' max age, and keeps the
newest line per checkpoint and witness; it needs each line's timestamp for
that.  Existing rows are backfilled from their lines (C2SP tlog-cosignature:
``— <name> base64(key id (4) || u64 timestamp || signature)``); a line that does
not parse keeps 0, which only makes the hub ask that witness again.

Revision ID: 0008_cosign_refresh
Revises: 0005_watchlists
Create Date: 2026-12-02
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_cosign_refresh"
down_revision: str | None = "0005_watchlists"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY_ID_BYTES = 4
_TIMESTAMP_BYTES = 8


def _timestamp(line: str) -> int:
    """The timestamp of a stored cosignature line, or 0 if it does not parse."""
    try:
        blob = base64.b64decode(line.rstrip("\n").rsplit(" ", 1)[-1], validate=True)
    except (binascii.Error, ValueError):
        return 0
    if len(blob) < _KEY_ID_BYTES + _TIMESTAMP_BYTES:
        return 0
    return int.from_bytes(blob[_KEY_ID_BYTES : _KEY_ID_BYTES + _TIMESTAMP_BYTES], "big")


def upgrade() -> None:
    with op.batch_alter_table("audit_cosignature", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cosigned_at", sa.BigInteger(), nullable=False, server_default="0")
        )
    connection = op.get_bind()
    table = sa.table(
        "audit_cosignature",
        sa.column("id", sa.Integer()),
        sa.column("line", sa.Text()),
        sa.column("cosigned_at", sa.BigInteger()),
    )
    rows = connection.execute(sa.select(table.c.id, table.c.line)).all()
    for row_id, line in rows:
        connection.execute(
            table.update().where(table.c.id == row_id).values(cosigned_at=_timestamp(line))
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_cosignature", schema=None) as batch_op:
        batch_op.drop_column("cosigned_at")
