"""Per-institution aggregates of audit events (pure; no I/O).

Definitions, used by ``Audit.GetReport`` and ``fraudhub audit report`` alike:

- *requests*: events of the institution (every audited RPC, allowed or refused);
- *items*, *matches*: sums of ``item_count`` and ``match_count`` over its MATCH
  requests (actions ``<Service>.Match*``), and *match rate* = matches / items
  (0 when it screened nothing);
- *contributed*: items its ALLOWED contribution requests (``<Service>.Contribute*``,
  outcome ``ok``) stored: ``item_count`` less the items refused or malformed
  inside them (the ``REFUSED_ITEMS:<n>`` and ``MALFORMED_ITEMS:<n>`` codes);
  a refused request stores nothing and counts under *refusals* only;
- *refused items*, *malformed items*: those counts summed (issue 12: an item
  the policy, its evidence class or a warning list refused inside an allowed
  request is not a refused request, and was counted as contributed before);
- *revoked*: sum of ``item_count`` over its revocations (``<Service>.Revoke*``);
- *evidence*: items stored per evidence class (``EVIDENCE:<class>/<n>``);
- *sightings filed*: its sightings per type (``Feedback.FileSightings``,
  ``SIGHTING:<type>/<n>``); *sightings received*: other institutions'
  sightings on its indicators (``Feedback.SightingReceived``), and
  *false-positive ratio* = received false positives / all received (0 if none);
- *refusals*: requests whose outcome is not ``"ok"``, counted per reason code
  (a refusal without reason codes counts under its outcome);
- *by tier* and *by purpose*: requests per policy tier recorded in the event
  (``"unrecorded"`` if none) and per declared purpose (``"none"`` if empty);
- *disputes opened*: its successful ``Disputes.Open``; *disputes upheld* and
  *withdrawn*: its answers to disputes of its own indicators; *disputes
  lapsed*: its items the hub removed unanswered (``Hub.DisputeLapse`` names
  the contributor).  Each dispute itself: :mod:`hub.audit.dispute_report`.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.audit.dispute_report import tagged
from hub.audit.events import AuditEvent

__all__ = [
    "FORMATS",
    "InstitutionReport",
    "action_family",
    "aggregate",
    "is_match_action",
    "render",
]

FORMATS = ("table", "csv", "json", "jsonl")
NO_TIER = "unrecorded"
NO_PURPOSE = "none"


def action_family(action: str) -> str:
    """``"match"``, ``"contribute"``, ``"revoke"`` or ``"other"`` for an audited action."""
    method = action.rpartition(".")[2]
    for family in ("Match", "Contribute", "Revoke"):
        if method.startswith(family):
            return family.lower()
    return "other"


def is_match_action(action: str) -> bool:
    """True for the screening RPCs (``Exchange.Match``, ``Exchange.MatchStream``...)."""
    return action_family(action) == "match"


@dataclass
class InstitutionReport:
    """The aggregates of one institution (see the module docstring)."""

    institution: str
    requests: int = 0
    items: int = 0
    matches: int = 0
    refusals: int = 0
    contributed: int = 0
    revoked: int = 0
    refusals_by_reason: Counter[str] = field(default_factory=Counter)
    requests_by_tier: Counter[str] = field(default_factory=Counter)
    requests_by_purpose: Counter[str] = field(default_factory=Counter)
    disputes_opened: int = 0
    disputes_upheld: int = 0
    disputes_withdrawn: int = 0
    disputes_lapsed: int = 0
    refused_items: int = 0
    malformed_items: int = 0
    evidence: Counter[str] = field(default_factory=Counter)
    sightings_filed: Counter[str] = field(default_factory=Counter)
    sightings_received: Counter[str] = field(default_factory=Counter)

    @property
    def match_rate(self) -> float:
        return self.matches / self.items if self.items else 0.0

    @property
    def false_positive_ratio(self) -> float:
        total = sum(self.sightings_received.values())
        return self.sightings_received["false_positive"] / total if total else 0.0

    def _add_counts(self, event: AuditEvent) -> tuple[int, int]:
        """Read the count codes of an allowed event; return (refused, malformed) items."""
        refused = malformed = 0
        for code in event.reasons:
            name, _, arg = code.partition(":")
            if name == "REFUSED_ITEMS" and arg.isdigit():
                refused = int(arg)
            elif name == "MALFORMED_ITEMS" and arg.isdigit():
                malformed = int(arg)
            elif name in ("EVIDENCE", "SIGHTING"):
                word, _, number = arg.partition("/")
                if not number.isdigit():
                    continue
                if name == "EVIDENCE":
                    self.evidence[word] += int(number)
                elif event.action == "Feedback.SightingReceived":
                    self.sightings_received[word] += int(number)
                else:
                    self.sightings_filed[word] += int(number)
        self.refused_items += refused
        self.malformed_items += malformed
        return refused, malformed

    def add(self, event: AuditEvent) -> None:
        self.requests += 1
        family = action_family(event.action)
        if family == "match":
            self.items += event.item_count
            self.matches += event.match_count
        elif family == "contribute" and event.outcome == "ok":
            refused, malformed = self._add_counts(event)
            self.contributed += max(event.item_count - refused - malformed, 0)
        elif family == "revoke":
            self.revoked += event.item_count
        if family == "other" and event.outcome == "ok":
            self._add_counts(event)
        if event.outcome != "ok":
            self.refusals += 1
            for reason in event.reasons or (event.outcome,):
                self.refusals_by_reason[reason] += 1
        for tier in event.tiers or (NO_TIER,):
            self.requests_by_tier[tier] += 1
        self.requests_by_purpose[event.purpose or NO_PURPOSE] += 1
        if event.outcome == "ok" and event.action == "Disputes.Open":
            self.disputes_opened += 1
        elif event.outcome == "ok" and event.action == "Disputes.Resolve":
            answer = tagged(event, "OUTCOME")
            self.disputes_upheld += int(answer == "upheld")
            self.disputes_withdrawn += int(answer == "withdrawn")

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "institution": self.institution,
            "requests": self.requests,
            "items": self.items,
            "matches": self.matches,
            "match_rate": round(self.match_rate, 6),
            "refusals": self.refusals,
            "contributed": self.contributed,
            "revoked": self.revoked,
            "refused_items": self.refused_items,
            "malformed_items": self.malformed_items,
            "evidence": dict(sorted(self.evidence.items())),
            "sightings_filed": dict(sorted(self.sightings_filed.items())),
            "sightings_received": dict(sorted(self.sightings_received.items())),
            "false_positive_ratio": round(self.false_positive_ratio, 6),
            "refusals_by_reason": dict(sorted(self.refusals_by_reason.items())),
            "requests_by_tier": dict(sorted(self.requests_by_tier.items())),
            "requests_by_purpose": dict(sorted(self.requests_by_purpose.items())),
            "disputes_opened": self.disputes_opened,
            "disputes_upheld": self.disputes_upheld,
            "disputes_withdrawn": self.disputes_withdrawn,
            "disputes_lapsed": self.disputes_lapsed,
        }


def aggregate(events: Iterable[AuditEvent]) -> list[InstitutionReport]:
    """One report per institution that appears in ``events``, sorted by institution id."""
    reports: dict[str, InstitutionReport] = {}

    def of(institution: str) -> InstitutionReport:
        report = reports.get(institution)
        if report is None:
            report = reports[institution] = InstitutionReport(institution)
        return report

    for event in events:
        of(event.institution).add(event)
        if event.action == "Hub.DisputeLapse" and event.outcome == "ok":
            # The hub's event; the lapse is the contributor's (it did not answer).
            contributor = tagged(event, "CONTRIBUTOR")
            if contributor:
                of(contributor).disputes_lapsed += event.item_count
    return [reports[k] for k in sorted(reports)]


def _counts(counter: Counter[str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counter.items())) or "-"


def render(reports: Sequence[InstitutionReport], fmt: str) -> str:
    """The reports as a text table, CSV or JSON Lines (one row per institution) or JSON.

    Raises ValueError for an unknown format (the CLI offers only :data:`FORMATS`).
    """
    if fmt == "json":
        return json.dumps([r.to_json_obj() for r in reports], indent=2, sort_keys=True) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r.to_json_obj(), sort_keys=True) + "\n" for r in reports)
    header = [
        "institution",
        "requests",
        "items",
        "matches",
        "match_rate",
        "refusals",
        "refusals_by_reason",
        "requests_by_tier",
        "requests_by_purpose",
        "contributed",
        "revoked",
        "disputes_opened",
        "disputes_upheld",
        "disputes_withdrawn",
        "disputes_lapsed",
        "refused_items",
        "malformed_items",
        "evidence",
        "sightings_filed",
        "sightings_received",
        "false_positive_ratio",
    ]
    rows = [
        [
            r.institution,
            str(r.requests),
            str(r.items),
            str(r.matches),
            f"{r.match_rate:.4f}",
            str(r.refusals),
            _counts(r.refusals_by_reason),
            _counts(r.requests_by_tier),
            _counts(r.requests_by_purpose),
            str(r.contributed),
            str(r.revoked),
            str(r.disputes_opened),
            str(r.disputes_upheld),
            str(r.disputes_withdrawn),
            str(r.disputes_lapsed),
            str(r.refused_items),
            str(r.malformed_items),
            _counts(r.evidence),
            _counts(r.sightings_filed),
            _counts(r.sightings_received),
            f"{r.false_positive_ratio:.4f}",
        ]
        for r in reports
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "table":
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        ]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
