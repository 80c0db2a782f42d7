"""The hub's tables (SQLModel), identical on SQLite and PostgreSQL.

What the hub stores about an indicator is exactly what it needs to match and
aggregate: the 32-byte match token, the kind, the key epoch the token was made
under, the contributing institution, the clear metadata of DESIGN.md
(category, confidence, observed_at, expires_at), the sealed label it cannot
open, and the revocation state.  No raw value ever reaches this module.

Guarantees:

- ``(contributor, kind, token, key_epoch)`` is unique, so a retried
  contribution updates the row instead of duplicating it.
- Indexes follow the access paths: ``(kind, token)`` for matching,
  ``contributor`` (the leading column of the unique constraint) for revocation,
  ``expires_at`` for expiry sweeps.
- Every timestamp is UTC.  :class:`UTCDateTime` stores naive UTC on both
  backends (SQLite has no time zone type) and always hands back an aware
  ``datetime`` in UTC; giving it a naive datetime is a programming error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from client_sdk.core.vocabulary import DEFAULT_EVIDENCE, ROLES

__all__ = [
    "ROLES",
    "Dispute",
    "DisputeItem",
    "Indicator",
    "Institution",
    "PolicyText",
    "QuotaUsage",
    "SeenToken",
    "TokenSighting",
    "UTCDateTime",
    "WarningListEntry",
    "utcnow",
]

# Roles of DESIGN.md "Auth"; the per-RPC role table lives in hub/auth.py.


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as an aware UTC datetime."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous; refusing it keeps every stored time UTC.
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def _utc_column(*, nullable: bool, index: bool = False) -> Any:
    return sa.Column(UTCDateTime(), nullable=nullable, index=index)


class Institution(SQLModel, table=True):
    """A registered institution: its role and the Ed25519 key its JWTs are signed with."""

    __tablename__ = "institution"

    id: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=16)
    # Raw 32-byte Ed25519 public key.
    public_key: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    display_name: str = Field(default="", max_length=200)
    enabled: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    disabled_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))


class Indicator(SQLModel, table=True):
    """One contributed indicator, identified only by its match token."""

    __tablename__ = "indicator"
    __table_args__ = (
        sa.UniqueConstraint(
            "contributor", "kind", "token", "key_epoch", name="uq_indicator_contribution"
        ),
        # Matching looks tokens up by kind.
        sa.Index("ix_indicator_kind_token", "kind", "token"),
        # Expiry sweeps and the "not expired" filter of exports.
        sa.Index("ix_indicator_expires_at", "expires_at"),
        # No separate contributor index: the unique constraint leads with
        # ``contributor``, so it already serves revocation and export lookups.
    )

    id: int | None = Field(default=None, primary_key=True)
    token: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    kind: str = Field(max_length=32)
    key_epoch: int
    contributor: str = Field(max_length=64)
    category: str = Field(max_length=32)
    confidence: int
    observed_at: datetime = Field(sa_column=_utc_column(nullable=False))
    expires_at: datetime = Field(sa_column=_utc_column(nullable=False))
    sealed_label: bytes | None = Field(
        default=None, sa_column=sa.Column(sa.LargeBinary(), nullable=True)
    )
    revoked_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    revoke_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    # Set while a data subject's dispute of it is pending: it does not match
    # (hub.storage.store.matchable).  A re-contribution does not clear it.
    disputed_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))

    # Evidence class (client_sdk.core.vocabulary.EVIDENCE_CLASSES); rows from before
    # evidence classes read as the documented default.
    evidence: str = Field(
        default=DEFAULT_EVIDENCE,
        sa_column=sa.Column(
            sa.String(32), nullable=False, server_default=sa.text(f"'{DEFAULT_EVIDENCE}'")
        ),
    )


class Dispute(SQLModel, table=True):
    """A data subject's dispute of a listed value, opened by an institution (issue 12).

    It holds no value and no token: the indicators it suspended are its items.
    """

    __tablename__ = "dispute"

    id: str = Field(primary_key=True, max_length=32)
    opened_by: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=32)
    case_ref_digest: str = Field(default="", max_length=64)
    opened_at: datetime = Field(sa_column=_utc_column(nullable=False))
    closed_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))


class DisputeItem(SQLModel, table=True):
    """One contributor's disputed indicator and its answer (hub.core.disputes states).

    ``indicator_id`` is kept after a withdrawn or lapsed indicator is deleted
    (no foreign key): the item is the record that it was removed.
    """

    __tablename__ = "dispute_item"
    __table_args__ = (
        # The sweep's lookup of overdue pending items.
        sa.Index("ix_dispute_item_state_due_at", "state", "due_at"),
        # A contributor's list of the items it must answer.
        sa.Index("ix_dispute_item_contributor_state", "contributor", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    dispute_id: str = Field(max_length=32, foreign_key="dispute.id", index=True)
    indicator_id: int = Field(index=True)
    contributor: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    category: str = Field(max_length=32)
    observed_at: datetime = Field(sa_column=_utc_column(nullable=False))
    contributed_at: datetime = Field(sa_column=_utc_column(nullable=False))
    state: str = Field(max_length=16)
    evidence: str = Field(default="", max_length=32)
    due_at: datetime = Field(sa_column=_utc_column(nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))


class QuotaUsage(SQLModel, table=True):
    """Items an institution used from one policy quota bucket on one UTC day."""

    __tablename__ = "quota_usage"

    institution: str = Field(primary_key=True, max_length=64)
    bucket: str = Field(primary_key=True, max_length=128)
    day: str = Field(primary_key=True, max_length=10)  # ISO date, UTC
    used: int = Field(default=0)


class SeenToken(SQLModel, table=True):
    """A JWT id (``jti``) the hub accepted, kept until its token can no longer be used.

    Shared by every hub replica on the same database and kept across restarts,
    so a captured token cannot be replayed at another replica or after a restart.
    """

    __tablename__ = "seen_token"

    issuer: str = Field(primary_key=True, max_length=64)
    jti: str = Field(primary_key=True, max_length=128)
    forget_after: datetime = Field(sa_column=_utc_column(nullable=False, index=True))


class PolicyText(SQLModel, table=True):
    """A policy the hub has run: its canonical text, whose SHA-256 is ``version``.

    Audit events name the policy version that decided; auditors read the text
    here (Audit.GetPolicy) and can hash it themselves.
    """

    __tablename__ = "policy_text"

    version: str = Field(primary_key=True, max_length=64)
    first_used: datetime = Field(sa_column=_utc_column(nullable=False))
    canonical_text: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))


class TokenSighting(SQLModel, table=True):
    """One institution's latest sighting of a token (issue 12; MISP sightings).

    One row per (reporter, kind, token, key_epoch): a later filing replaces the
    earlier one, so one institution cannot push a score by repeating itself.
    Kept whether or not anybody contributed the token (filing discloses nothing).
    """

    __tablename__ = "token_sighting"
    __table_args__ = (
        sa.UniqueConstraint("reporter", "kind", "token", "key_epoch", name="uq_token_sighting"),
        sa.Index("ix_token_sighting_kind_token", "kind", "token"),
    )

    id: int | None = Field(default=None, primary_key=True)
    token: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    kind: str = Field(max_length=32)
    key_epoch: int
    reporter: str = Field(max_length=64)
    # confirmed | false_positive | expired (vocabulary.SIGHTING_TYPES)
    type: str = Field(max_length=16)
    seen_at: datetime = Field(sa_column=_utc_column(nullable=False))
    created_at: datetime = Field(sa_column=_utc_column(nullable=False))


class WarningListEntry(SQLModel, table=True):
    """A known-good value on one of the operator's warning lists, as its token."""

    __tablename__ = "warninglist_entry"
    __table_args__ = (
        sa.UniqueConstraint("list_name", "kind", "token", "key_epoch", name="uq_warninglist_entry"),
        sa.Index("ix_warninglist_entry_kind_token", "kind", "token"),
    )

    id: int | None = Field(default=None, primary_key=True)
    list_name: str = Field(max_length=64)
    token: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    kind: str = Field(max_length=32)
    key_epoch: int
    added_by: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_utc_column(nullable=False))
