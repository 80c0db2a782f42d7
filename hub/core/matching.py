"""The exchange's protocol core: validate contributions, aggregate matches, trim.

Sans-IO: no grpc, no database.  The Exchange servicer (``hub/exchange.py``)
turns requests into the values below, the store turns rows into
:class:`Sighting`, and this module decides what an institution learns.

Guarantees:

- A contribution item is either accepted as a :class:`Contribution` (with its
  ``expires_at`` clipped to the policy's retention cap) or rejected with an
  :class:`~client_sdk.core.errors.ItemError` naming its position, kind and reason,
  never its token.
- :func:`aggregate` counts only *other* institutions.  The querying
  institution's own contributions never count toward the k-threshold
  (``min_contributors``) and never appear in the aggregate: otherwise a single
  other contributor could be singled out by a querier who contributed the same
  value itself, which is what the k-threshold exists to prevent.  That the
  querier contributed the value itself is reported separately
  (``own_contribution``); it is the querier's own data.
- Fewer distinct other contributors than ``min_contributors`` is reported
  exactly like no match.
- What is returned never exceeds the decided :class:`~hub.policy.model.Disclosure`:
  ``match`` a boolean, ``count`` the number of contributors, ``summary`` the
  categories, first/last seen and maximum confidence, ``labels`` the sealed
  labels with the contributor id each was sealed to (without it the querier
  cannot open them).
- Evidence (issue 12): a record filed as ``impersonation_victim`` accuses
  nobody: it never makes ``matched`` true and never counts toward k; at
  ``summary`` and above it shows as ``impersonated``.  Indicators below the
  decided ``min_evidence`` or below the decay model's score ``threshold``
  (``Sighting.score``, computed by :mod:`hub.core.scores`) do not count either.
  ``summary`` adds the evidence classes, the highest score and the sighting
  counts (other institutions' feedback on the token).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from client_sdk.core.errors import ItemError
from client_sdk.core.tokens import MAX_LABEL_BYTES, TOKEN_BYTES
from client_sdk.core.vocabulary import (
    DEFAULT_EVIDENCE,
    EVIDENCE_CLASSES,
    INNOCENT_EVIDENCE,
    evidence_rank,
)
from hub.core.scores import SightingCounts
from hub.policy.model import Disclosure

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "MAX_CLOCK_SKEW",
    "SEALED_LABEL_OVERHEAD",
    "Contribution",
    "ContributionItem",
    "MatchSummary",
    "SealedLabel",
    "Sighting",
    "aggregate",
    "clip_expiry",
    "counts_against",
    "validate_contribution",
]

# nonce (12) + Poly1305 tag (16), see client_sdk/tokens.py.
SEALED_LABEL_OVERHEAD = 28
# A contributor's clock may run a little ahead of the hub's.
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_CONFIDENCE = 100
# Lifetime of an indicator contributed without expires_at when the policy sets
# no retention cap (with a cap, the cap is the default).
DEFAULT_RETENTION_DAYS = 365


@dataclass(frozen=True)
class ContributionItem:
    """One item of a contribution request, as the transport decoded it."""

    token: bytes
    kind: str
    key_epoch: int
    category: str
    confidence: int
    observed_at: datetime | None
    expires_at: datetime | None
    sealed_label: bytes | None = None
    # "" (an SDK older than evidence classes) reads as DEFAULT_EVIDENCE.
    evidence: str = ""


@dataclass(frozen=True)
class Contribution:
    """A validated contribution item, ready to store (all times aware UTC)."""

    token: bytes
    kind: str
    key_epoch: int
    category: str
    confidence: int
    observed_at: datetime
    expires_at: datetime
    sealed_label: bytes | None = None
    evidence: str = DEFAULT_EVIDENCE


@dataclass(frozen=True)
class Sighting:
    """One active (not revoked, not expired) stored indicator matching a query.

    ``score``: its current decayed score (:mod:`hub.core.scores`), ``None`` when
    the hub does not score (then only the evidence rules apply).
    """

    contributor: str
    category: str
    confidence: int
    observed_at: datetime
    sealed_label: bytes | None = None
    evidence: str = DEFAULT_EVIDENCE
    score: int | None = None


@dataclass(frozen=True)
class SealedLabel:
    """A sealed label and the contributor id that is part of its AAD."""

    contributor: str
    sealed: bytes


@dataclass(frozen=True)
class MatchSummary:
    """What one query token discloses; fields above ``disclosure`` stay empty."""

    matched: bool = False
    disclosure: Disclosure = Disclosure.NONE
    own_contribution: bool = False
    contributors: int = 0
    categories: tuple[str, ...] = ()
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    max_confidence: int = 0
    labels: tuple[SealedLabel, ...] = field(default=())
    evidence: tuple[str, ...] = ()
    impersonated: bool = False
    score: int = 0
    feedback: SightingCounts = field(default_factory=SightingCounts)


def clip_expiry(expires_at: datetime, now: datetime, retention_days: int | None) -> datetime:
    """``expires_at`` capped at ``now + retention_days`` (no cap when ``None``)."""
    if retention_days is None:
        return expires_at
    return min(expires_at, now + timedelta(days=retention_days))


def validate_contribution(  # noqa: PLR0911 - one early return per documented item error
    index: int,
    item: ContributionItem,
    *,
    now: datetime,
    categories: Iterable[str],
    key_epoch: int,
    retention_days: int | None,
    also_accepted: Collection[int] = (),
) -> Contribution | ItemError:
    """Check one contribution item; return it ready to store, or why not.

    ``key_epoch`` is the hub's current OPRF key epoch: a token made under
    another epoch would never match current queries.  ``also_accepted`` are
    the earlier epochs the hub still accepts during a key change (ADR 0013).
    A missing ``expires_at`` means "as long as allowed" (the retention cap, else
    :data:`DEFAULT_RETENTION_DAYS`); a given one is clipped to the retention
    cap.  Never raises for a bad item.
    """

    def bad(reason: str, field_name: str) -> ItemError:
        return ItemError(index, item.kind, reason, field_name)

    if len(item.token) != TOKEN_BYTES:
        return bad(f"token must be {TOKEN_BYTES} bytes", "token")
    if item.key_epoch != key_epoch and item.key_epoch not in also_accepted:
        return bad(
            f"token made under key epoch {item.key_epoch}, hub is at {key_epoch}", "key_epoch"
        )
    if item.category not in tuple(categories):
        return bad("unknown category", "category")
    if not 0 <= item.confidence <= MAX_CONFIDENCE:
        return bad("confidence must be between 0 and 100", "confidence")
    if item.observed_at is None:
        return bad("observed_at is required", "observed_at")
    if item.observed_at > now + MAX_CLOCK_SKEW:
        return bad("observed_at is in the future", "observed_at")
    expires_at = item.expires_at
    if expires_at is None:
        expires_at = now + timedelta(days=retention_days or DEFAULT_RETENTION_DAYS)
    if expires_at <= item.observed_at:
        return bad("expires_at must be after observed_at", "expires_at")
    if expires_at <= now:
        return bad("expires_at is in the past", "expires_at")
    label = item.sealed_label or None
    if label is not None and not (
        SEALED_LABEL_OVERHEAD < len(label) <= MAX_LABEL_BYTES + SEALED_LABEL_OVERHEAD
    ):
        return bad("sealed label has an impossible length", "sealed_label")
    evidence = item.evidence or DEFAULT_EVIDENCE
    if evidence not in EVIDENCE_CLASSES:
        return bad("unknown evidence class", "evidence")
    return Contribution(
        token=item.token,
        kind=item.kind,
        key_epoch=item.key_epoch,
        category=item.category,
        confidence=item.confidence,
        observed_at=item.observed_at,
        expires_at=clip_expiry(expires_at, now, retention_days),
        sealed_label=label,
        evidence=evidence,
    )


def counts_against(sighting: Sighting, *, min_evidence: str | None, threshold: int) -> bool:
    """Whether a stored indicator counts toward a match (see the module docstring)."""
    if sighting.evidence == INNOCENT_EVIDENCE:
        return False
    if min_evidence is not None and evidence_rank(sighting.evidence) < evidence_rank(min_evidence):
        return False
    return sighting.score is None or sighting.score >= threshold


def aggregate(
    requester: str,
    sightings: Sequence[Sighting],
    *,
    disclosure: Disclosure,
    min_contributors: int,
    min_evidence: str | None = None,
    threshold: int = 0,
    feedback: SightingCounts | None = None,
) -> MatchSummary:
    """Aggregate the active sightings of one token for ``requester``, trimmed.

    ``disclosure`` is the decided level for this item; ``min_contributors`` the
    k-threshold (values below 1 act as 1: a match needs someone else);
    ``min_evidence`` and ``threshold`` which indicators count (module
    docstring); ``feedback`` the sighting counts shown at ``summary``.
    """
    own = any(s.contributor == requester for s in sightings)
    everyone_else = [s for s in sightings if s.contributor != requester]
    others = [
        s
        for s in everyone_else
        if counts_against(s, min_evidence=min_evidence, threshold=threshold)
    ]
    innocent = {s.contributor for s in everyone_else if s.evidence == INNOCENT_EVIDENCE}
    contributors = len({s.contributor for s in others})
    if (
        disclosure >= Disclosure.SUMMARY
        and not others
        and innocent
        and len(innocent) >= min_contributors
    ):
        # Flagged innocent (Cifas's protective registration): no fraud match.
        return MatchSummary(disclosure=Disclosure.SUMMARY, own_contribution=own, impersonated=True)
    if disclosure <= Disclosure.NONE or contributors == 0 or contributors < min_contributors:
        return MatchSummary(own_contribution=own)
    level = Disclosure(min(disclosure, Disclosure.LABELS))
    summary = MatchSummary(matched=True, disclosure=level, own_contribution=own)
    if level >= Disclosure.COUNT:
        summary = replace(summary, contributors=contributors)
    if level >= Disclosure.SUMMARY:
        summary = replace(
            summary,
            categories=tuple(sorted({s.category for s in others})),
            first_seen=min(s.observed_at for s in others),
            last_seen=max(s.observed_at for s in others),
            max_confidence=max(s.confidence for s in others),
            evidence=tuple(sorted({s.evidence for s in others}, key=EVIDENCE_CLASSES.index)),
            impersonated=bool(innocent) and len(innocent) >= min_contributors,
            score=max((s.score for s in others if s.score is not None), default=0),
            feedback=feedback or SightingCounts(),
        )
    if level >= Disclosure.LABELS:
        summary = replace(
            summary,
            labels=tuple(
                SealedLabel(s.contributor, s.sealed_label)
                for s in sorted(others, key=lambda s: s.contributor)
                if s.sealed_label
            ),
        )
    return summary
