"""Anomaly flags over audit events for the regulator (pure; no I/O).

Each :class:`Anomaly` explains itself in one sentence with its numbers and the
threshold it crossed.  Four detectors:

- ``volume_spike``: an institution's items screened (or requests) on one UTC
  day exceed ``spike_factor`` times the median of its OWN previous days
  (days with no activity count as 0), after at least ``baseline_days`` days of
  history.  Each institution is compared with itself, so a large bank is not
  flagged for being large.
- ``match_rate_outlier``: an institution's match rate (matches / items of its
  match requests) is far from its peers', by the robust z-score
  ``0.6745 * (rate - median) / MAD`` beyond ``match_rate_z``.  A rate far above
  peers means it screens values it already expects to find (fishing for
  other institutions' data); far below with volume means indiscriminate bulk
  screening.  With a MAD of 0 the absolute gap ``match_rate_gap`` is used.
- ``case_reference_clustering``: many sensitive-tier queries under few case
  references (queries per distinct case reference at least
  ``queries_per_case_reference``): one case reference stretched to cover a
  sweep of lookups.  Only requests that carry a case reference count (the
  declared screening purposes query sensitive kinds without one, which the
  policy allows); a request counts once, whatever its size.
- ``quota_exhaustion``: requests refused because a quota was spent (outcome
  ``RESOURCE_EXHAUSTED`` or a reason code mentioning ``quota``).
- ``authentication_failure_flood``: calls refused before authentication, from
  one peer within one hour, at least ``auth_failures_per_hour``.  The hub
  counts them per peer and window in :data:`AUTHENTICATION_FAILURES` events
  (``item_count`` calls, the peer as a ``PEER:`` reason code); single
  ``unauthenticated`` refusal events of older logs count one each.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from hub.audit.events import AuditEvent
from hub.audit.report import is_match_action

__all__ = ["AUTHENTICATION_FAILURES", "Anomaly", "Thresholds", "detect"]

#: The audit action of one window's authentication failures from one peer
#: (``hub.services.refusals``).
AUTHENTICATION_FAILURES = "Hub.AuthenticationFailures"
_UNAUTHENTICATED = "unauthenticated"


@dataclass(frozen=True)
class Thresholds:
    """Tunable limits of the detectors (see the module docstring)."""

    spike_factor: float = 3.0
    spike_min_volume: int = 20
    baseline_days: int = 3
    match_rate_z: float = 3.5
    match_rate_gap: float = 0.25
    match_rate_min_items: int = 50
    match_rate_min_peers: int = 3
    sensitive_tier: str = "sensitive"
    sensitive_min_queries: int = 10
    queries_per_case_reference: float = 5.0
    auth_failures_per_hour: int = 100


@dataclass(frozen=True)
class Anomaly:
    """One flag: what (``kind``), who, and why in words."""

    kind: str
    institution: str
    explanation: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.explanation}"


def detect(events: Iterable[AuditEvent], thresholds: Thresholds | None = None) -> list[Anomaly]:
    """All anomalies in ``events``, grouped by detector then institution."""
    t = thresholds or Thresholds()
    materialized = list(events)
    return [
        *_volume_spikes(materialized, t),
        *_match_rate_outliers(materialized, t),
        *_case_reference_clustering(materialized, t),
        *_quota_exhaustion(materialized),
        *_authentication_floods(materialized, t),
    ]


def _days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _first_spike(counts: Counter[date], t: Thresholds) -> tuple[date, int, float, int] | None:
    """The first day whose volume passes the spike rule: (day, volume, baseline, days)."""
    days = _days_between(min(counts), max(counts))
    for i, day in enumerate(days):
        history = [counts.get(d, 0) for d in days[:i]]
        if len(history) < t.baseline_days:
            continue
        volume = counts.get(day, 0)
        baseline = statistics.median(history)
        if volume >= t.spike_min_volume and volume > t.spike_factor * max(baseline, 1):
            return day, volume, baseline, len(history)
    return None


def _volume_spikes(events: Sequence[AuditEvent], t: Thresholds) -> list[Anomaly]:
    items: dict[str, Counter[date]] = defaultdict(Counter)
    requests: dict[str, Counter[date]] = defaultdict(Counter)
    for e in events:
        items[e.institution][e.time.date()] += e.item_count
        requests[e.institution][e.time.date()] += 1
    flags: list[Anomaly] = []
    for institution in sorted(requests):
        # Items and requests usually spike together: flag the first that does, once.
        for metric, counts in (("items", items[institution]), ("requests", requests[institution])):
            spike = _first_spike(counts, t)
            if spike is None:
                continue
            day, volume, baseline, days = spike
            flags.append(
                Anomaly(
                    "volume_spike",
                    institution,
                    f"{institution}: {volume} {metric} on {day.isoformat()}, "
                    f"{volume / max(baseline, 1):.1f}x its own median of {baseline:g} per day "
                    f"over the previous {days} days (threshold {t.spike_factor:g}x)",
                )
            )
            break
    return flags


def _match_rate_outliers(events: Sequence[AuditEvent], t: Thresholds) -> list[Anomaly]:
    items: Counter[str] = Counter()
    matches: Counter[str] = Counter()
    for e in events:
        if is_match_action(e.action) and e.outcome == "ok":
            items[e.institution] += e.item_count
            matches[e.institution] += e.match_count
    rates = {i: matches[i] / items[i] for i in items if items[i] >= t.match_rate_min_items}
    if len(rates) < t.match_rate_min_peers:
        return []
    flags: list[Anomaly] = []
    for institution in sorted(rates):
        rate = rates[institution]
        # Compare with the OTHER institutions, so an outlier does not pull its own baseline.
        peers = [r for i, r in rates.items() if i != institution]
        median = statistics.median(peers)
        mad = statistics.median(abs(r - median) for r in peers)
        if mad > 0:
            score = 0.6745 * (rate - median) / mad
            crossed = abs(score) > t.match_rate_z
            measure = f"robust z {score:+.1f}, threshold {t.match_rate_z:g}"
        else:
            crossed = abs(rate - median) > t.match_rate_gap
            measure = f"gap {rate - median:+.2f}, threshold {t.match_rate_gap:g}"
        if not crossed:
            continue
        if rate > median:
            meaning = "it screens values it already expects to find (possible fishing)"
        else:
            meaning = "indiscriminate bulk screening"
        flags.append(
            Anomaly(
                "match_rate_outlier",
                institution,
                f"{institution}: match rate {rate:.1%} ({matches[institution]} of "
                f"{items[institution]} items) against a peer median of {median:.1%} "
                f"({measure}): {meaning}",
            )
        )
    return flags


def _case_reference_clustering(events: Sequence[AuditEvent], t: Thresholds) -> list[Anomaly]:
    queries: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        if is_match_action(e.action) and t.sensitive_tier in e.tiers and e.case_ref_digest:
            queries[e.institution][e.case_ref_digest] += 1
    flags: list[Anomaly] = []
    for institution in sorted(queries):
        per_ref = queries[institution]
        total = sum(per_ref.values())
        ratio = total / len(per_ref)
        if total < t.sensitive_min_queries or ratio < t.queries_per_case_reference:
            continue
        top_ref, top_count = per_ref.most_common(1)[0]
        top = f"case reference {top_ref[:12]}..."
        flags.append(
            Anomaly(
                "case_reference_clustering",
                institution,
                f"{institution}: {total} {t.sensitive_tier}-tier queries under only "
                f"{len(per_ref)} case reference(s), {ratio:.1f} per reference (threshold "
                f"{t.queries_per_case_reference:g}); {top} covers {top_count}",
            )
        )
    return flags


def _is_quota_refusal(event: AuditEvent) -> bool:
    return event.outcome == "RESOURCE_EXHAUSTED" or any("quota" in r for r in event.reasons)


def _quota_exhaustion(events: Sequence[AuditEvent]) -> list[Anomaly]:
    hits: dict[str, list[AuditEvent]] = defaultdict(list)
    for e in events:
        if e.outcome != "ok" and _is_quota_refusal(e):
            hits[e.institution].append(e)
    flags: list[Anomaly] = []
    for institution in sorted(hits):
        refused = hits[institution]
        first = min(e.time for e in refused).isoformat(timespec="seconds")
        last = max(e.time for e in refused).isoformat(timespec="seconds")
        reasons = Counter(r for e in refused for r in e.reasons if "quota" in r)
        why = ", ".join(f"{r} x{n}" for r, n in sorted(reasons.items())) or "RESOURCE_EXHAUSTED"
        flags.append(
            Anomaly(
                "quota_exhaustion",
                institution,
                f"{institution}: {len(refused)} request(s) refused for an exhausted quota "
                f"between {first} and {last} ({why})",
            )
        )
    return flags


def _authentication_floods(events: Sequence[AuditEvent], t: Thresholds) -> list[Anomaly]:
    hourly: dict[str, Counter[datetime]] = defaultdict(Counter)
    for e in events:
        if e.institution != _UNAUTHENTICATED or e.outcome != "UNAUTHENTICATED":
            continue
        peer = next((r for r in e.reasons if r.startswith("PEER:")), "an unknown peer")
        calls = e.item_count if e.action == AUTHENTICATION_FAILURES else 1
        hourly[peer][e.time.replace(minute=0, second=0, microsecond=0)] += calls
    flags: list[Anomaly] = []
    for peer in sorted(hourly):
        hour, calls = max(hourly[peer].items(), key=lambda hc: (hc[1], -hc[0].timestamp()))
        if calls < t.auth_failures_per_hour:
            continue
        total = sum(hourly[peer].values())
        flags.append(
            Anomaly(
                "authentication_failure_flood",
                _UNAUTHENTICATED,
                f"{peer}: {calls} calls refused for authentication in the hour from "
                f"{hour.isoformat(timespec='minutes')} ({total} in all; threshold "
                f"{t.auth_failures_per_hour} per hour)",
            )
        )
    return flags
