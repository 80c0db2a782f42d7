"""What :class:`~client_sdk.client.hub.HubClient` takes and gives back: plain values.

An :class:`Indicator` to contribute; per input, exactly one typed outcome
(:class:`Contributed`, :class:`MatchResult`) or one :class:`ItemFailure`;
:class:`RevokeResult` and the bulk runs' :class:`BulkSummary`.  Frozen
dataclasses without I/O.  Raw values and label texts are kept out of their
``repr`` (they end up in logs and tracebacks); an ItemFailure's error never
holds the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from client_sdk.core import indicators
from client_sdk.core.errors import FraudhubError, InvalidIndicator, InvalidRequest, PolicyDenied

__all__ = [
    "DEFAULT_CONFIDENCE",
    "BulkSummary",
    "Contributed",
    "Indicator",
    "ItemFailure",
    "Label",
    "MatchResult",
    "RevokeResult",
    "RowOutcome",
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
    """Counts of a bulk run: ``rows`` done of ``total`` (None: not known, stdin),
    ``counts`` by status, and each refused or failed row in ``failures`` (its
    1-based data row number, kind and reason)."""

    rows: int = 0
    stored: int = 0
    matched: int = 0
    # Revocation runs only: rows whose indicator was withdrawn / was not (or no longer) there.
    revoked: int = 0
    not_found: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
    total: int | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: RowOutcome) -> None:
        """Count one row's outcome (a refused or failed row joins ``failures``)."""
        self.rows += 1
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if outcome.status == "stored":
            self.stored += 1
        elif outcome.status == "revoked":
            # The hub counts per window; the window's last revoked row carries them.
            self.revoked += int(outcome.result.get("window_revoked", 0))
            self.not_found += int(outcome.result.get("window_not_found", 0))
        elif outcome.status == "match":
            self.matched += 1
        elif outcome.status == "refused":
            denied = PolicyDenied("refused by the policy", tuple(outcome.reasons))
            self.failures.append(ItemFailure(outcome.row, outcome.kind, denied))
        elif outcome.status == "error":
            error = InvalidRequest("; ".join(outcome.reasons))
            self.failures.append(ItemFailure(outcome.row, outcome.kind, error))

    @property
    def complete(self) -> bool:
        """Whether every row was answered (none refused or failed)."""
        return not self.failures


@dataclass(frozen=True)
class RowOutcome:
    """How one data row of a bulk job ended.

    ``status`` is a word of the job (``match``, ``no_match``, ``stored``,
    ``refused``, ``error``...); ``reasons`` the policy's codes for a refusal or
    the one-line problem of an error (never the value); ``result`` the output
    columns a screening filled.
    """

    row: int
    kind: str
    status: str
    reasons: tuple[str, ...] = ()
    result: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "kind": self.kind,
            "status": self.status,
            "reasons": list(self.reasons),
            "result": dict(self.result),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RowOutcome:
        """Raises KeyError/TypeError/ValueError for a line that is not an outcome."""
        result = data["result"]
        if not isinstance(result, dict):
            raise TypeError("result")
        return cls(
            int(data["row"]),
            str(data["kind"]),
            str(data["status"]),
            tuple(str(r) for r in data["reasons"]),
            {str(k): str(v) for k, v in result.items()},
        )
