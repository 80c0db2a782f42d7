"""What :class:`~client_sdk.client.hub.HubClient` takes and gives back: plain values.

An :class:`Indicator` to contribute; per input, exactly one typed outcome
(:class:`Contributed`, :class:`MatchResult`) or one :class:`ItemFailure`;
:class:`RevokeResult` and the bulk runs' :class:`BulkSummary`.  Frozen
dataclasses without I/O.  Raw values and label texts are kept out of their
``repr`` (they end up in logs and tracebacks); an ItemFailure's error never
holds the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from client_sdk.core import indicators
from client_sdk.core.errors import FraudhubError, InvalidIndicator

__all__ = [
    "DEFAULT_CONFIDENCE",
    "BulkSummary",
    "Contributed",
    "Indicator",
    "ItemFailure",
    "Label",
    "MatchResult",
    "RevokeResult",
]

DEFAULT_CONFIDENCE = 50


@dataclass(frozen=True)
class Indicator:
    """One indicator to contribute: a raw value of ``kind`` and its metadata.

    ``label`` is free text (a case reference, a note) sealed before it leaves
    the process.  ``observed_at`` defaults to now; ``expires_at`` to as long as
    the hub's policy allows.  ``evidence`` is the evidence class
    (``client_sdk.core.vocabulary.EVIDENCE_CLASSES``); ``None`` sends none and
    the hub reads it as ``DEFAULT_EVIDENCE``.
    """

    kind: str
    value: str = field(repr=False)
    category: str
    confidence: int = DEFAULT_CONFIDENCE
    observed_at: datetime | None = None
    expires_at: datetime | None = None
    label: str | None = field(default=None, repr=False)
    evidence: str | None = None


@dataclass(frozen=True)
class ItemFailure:
    """Why input ``index`` got no result; ``error`` never holds the value.

    ``kind`` is ``"unknown"`` when the caller's kind is not one fraudhub
    knows: a misplaced column can put a value there, and failures get printed.
    """

    index: int
    kind: str
    error: FraudhubError

    def __post_init__(self) -> None:
        if self.kind not in indicators.ALL_KINDS:
            object.__setattr__(self, "kind", indicators.UNKNOWN_KIND)

    @property
    def reason(self) -> str:
        """The error without its own position prefix (``index`` and ``kind`` say where)."""
        if isinstance(self.error, InvalidIndicator):
            return self.error.reason
        return str(self.error)


@dataclass(frozen=True)
class Contributed:
    """Input ``index`` is stored; ``expires_at`` is set when the hub clipped it."""

    index: int
    kind: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Label:
    """A contributor's label; ``text`` is None if it does not open (tampered)."""

    contributor: str
    text: str | None


@dataclass(frozen=True)
class MatchResult:
    """What the hub disclosed about input ``index`` (fields above ``disclosure`` stay empty).

    From ``summary``: ``evidence`` (the counted indicators' classes), ``impersonated``
    (someone filed the value as an impersonation victim's: never a fraud match),
    ``score`` (highest current decayed score) and ``sightings_*`` (how many other
    institutions filed each sighting type).
    """

    index: int
    kind: str
    matched: bool
    disclosure: str
    contributors: int = 0
    categories: tuple[str, ...] = ()
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    max_confidence: int = 0
    labels: tuple[Label, ...] = ()
    reasons: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    impersonated: bool = False
    score: int = 0
    sightings_confirmed: int = 0
    sightings_false_positive: int = 0
    sightings_expired: int = 0


@dataclass(frozen=True)
class RevokeResult:
    """How many of the valid inputs were revoked; ``failures`` are the invalid ones."""

    revoked: int
    not_found: int
    failures: tuple[ItemFailure, ...] = ()


@dataclass
class BulkSummary:
    """Counts of a bulk run; ``failures`` lists each failed row (1-based data row)."""

    rows: int = 0
    stored: int = 0
    matched: int = 0
    # Revocation runs only: rows whose indicator was withdrawn / was not (or no longer) there.
    revoked: int = 0
    not_found: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
