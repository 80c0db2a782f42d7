"""Every dispute of a window and its outcome, read from audit events alone (pure; no I/O).

The Disputes servicer and the hub's lapse sweep (``hub.services.disputes``)
write, for each dispute: one ``Disputes.Open`` event (``DISPUTE:<id>``, the
opener, the kind, ``item_count`` = indicators suspended), one event per
answered item (``Disputes.Resolve`` by the contributor, or ``Hub.DisputeLapse``
naming ``CONTRIBUTOR:<id>``) with ``OUTCOME:<state>``, and on the event that
closes it ``DISPUTE_OUTCOME:<outcome>``.  :class:`DisputeLedger` folds those
into one :class:`DisputeReport` per dispute opened inside the window: who
opened it, what it suspended, how each item ended, the outcome, and the time
from opening to resolution.  A dispute opened before the window is not listed
(its answers still count in the institutions' report).  Failed calls (outcome
not ``ok``) change nothing here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hub.audit.events import AuditEvent

__all__ = [
    "DISPUTE_ACTIONS",
    "DisputeLedger",
    "DisputeReport",
    "dispute_reports",
    "render_disputes",
    "tagged",
]

#: The audited actions that open or answer a dispute.
DISPUTE_ACTIONS = ("Disputes.Open", "Disputes.Resolve", "Hub.DisputeLapse")
_FORMATS = ("table", "csv", "json")


def tagged(event: AuditEvent, tag: str) -> str:
    """The value of reason ``TAG:<value>`` of ``event`` ("" if it has none)."""
    prefix = f"{tag}:"
    for reason in event.reasons:
        if reason.startswith(prefix):
            return reason[len(prefix) :]
    return ""


@dataclass
class DisputeReport:
    """One dispute: opened by whom and when, what it suspended, how it ended."""

    id: str
    opened_by: str
    kind: str
    opened_at: datetime
    suspended: int
    upheld: int = 0
    withdrawn: int = 0
    lapsed: int = 0
    outcome: str = "open"
    resolved_at: datetime | None = None

    @property
    def resolution_seconds(self) -> float | None:
        """Seconds from opening to the last answer (None while open)."""
        if self.resolved_at is None:
            return None
        return (self.resolved_at - self.opened_at).total_seconds()

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "opened_by": self.opened_by,
            "kind": self.kind,
            "opened_at": self.opened_at.isoformat(),
            "suspended": self.suspended,
            "upheld": self.upheld,
            "withdrawn": self.withdrawn,
            "lapsed": self.lapsed,
            "outcome": self.outcome,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "resolution_seconds": self.resolution_seconds,
        }


class DisputeLedger:
    """Folds audit events into :class:`DisputeReport` (see the module docstring)."""

    def __init__(self) -> None:
        self._disputes: dict[str, DisputeReport] = {}

    def add(self, event: AuditEvent) -> None:
        if event.action not in DISPUTE_ACTIONS or event.outcome != "ok":
            return
        dispute_id = tagged(event, "DISPUTE")
        if not dispute_id:
            return
        if event.action == "Disputes.Open":
            report = DisputeReport(
                id=dispute_id,
                opened_by=event.institution,
                kind=event.kinds[0] if event.kinds else "",
                opened_at=event.time,
                suspended=event.item_count,
            )
            self._disputes[dispute_id] = report
        else:
            found = self._disputes.get(dispute_id)
            if found is None:  # opened before the window
                return
            report = found
            state = tagged(event, "OUTCOME")
            if state in ("upheld", "withdrawn", "lapsed"):
                setattr(report, state, getattr(report, state) + 1)
        outcome = tagged(event, "DISPUTE_OUTCOME")
        if outcome:
            report.outcome = outcome
            report.resolved_at = event.time

    def watch(self, events: Iterable[AuditEvent]) -> Iterator[AuditEvent]:
        """Yield ``events`` unchanged, recording each (one pass serves two reports)."""
        for event in events:
            self.add(event)
            yield event

    def reports(self) -> list[DisputeReport]:
        """The disputes, in the order they were opened."""
        return sorted(self._disputes.values(), key=lambda d: (d.opened_at, d.id))


def dispute_reports(events: Iterable[AuditEvent]) -> list[DisputeReport]:
    """One :class:`DisputeReport` per dispute opened among ``events``."""
    ledger = DisputeLedger()
    for event in events:
        ledger.add(event)
    return ledger.reports()


def render_disputes(disputes: list[DisputeReport], fmt: str) -> str:
    """The disputes as a text table, CSV or JSON; raises ValueError for another format."""
    if fmt == "json":
        return json.dumps([d.to_json_obj() for d in disputes], indent=2, sort_keys=True) + "\n"
    if fmt not in _FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(_FORMATS)}")
    header = ["dispute", "opened_by", "kind", "opened_at", "suspended", "upheld", "withdrawn",
              "lapsed", "outcome", "resolved_at", "resolution_hours"]  # fmt: skip
    rows = [
        [
            d.id,
            d.opened_by,
            d.kind,
            d.opened_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            str(d.suspended),
            str(d.upheld),
            str(d.withdrawn),
            str(d.lapsed),
            d.outcome,
            d.resolved_at.strftime("%Y-%m-%dT%H:%M:%SZ") if d.resolved_at else "",
            f"{d.resolution_seconds / 3600:.1f}" if d.resolution_seconds is not None else "",
        ]
        for d in disputes
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in [header, *rows]
    )
