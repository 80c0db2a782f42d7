"""The Exchange's share of the indicator lifecycle (issue 12): evidence, warning lists,
scores and sightings, joined to contributions and matches.

Kept beside :mod:`hub.services.exchange` so the servicer stays a thin adapter:

- :func:`lifecycle_refusal`: why a valid, policy-allowed contribution item is
  still refused: its value is on a warning list (``WARNINGLISTED:<list>``) or
  its evidence class is weaker than the decision's ``min_evidence``
  (``DENY_EVIDENCE:<class>``).  ``impersonation_victim`` is never refused for
  want of proof (it accuses nobody).
- :func:`item_count_codes`: the audit reason codes that count a message's
  items by outcome (``REFUSED_ITEMS:<n>``, ``MALFORMED_ITEMS:<n>``) and the
  stored items by evidence class (``EVIDENCE:<class>/<n>``), which
  :mod:`hub.audit.report` reads; codes, never values.
- :class:`MatchFacts`: what one match message needs from storage, loaded in
  the message's transaction (active indicators, warning list hits, sightings),
  and the per-token summary: each indicator scored by the policy's decay model
  for its kind with the sightings of institutions other than its contributor,
  and the querier's feedback counts from institutions other than itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from fraudhub.v1 import exchange_pb2
from sqlmodel import Session

from client_sdk.core.errors import ItemError
from client_sdk.core.vocabulary import INNOCENT_EVIDENCE, evidence_rank
from hub.core import matching, scores
from hub.policy.engine import Policy
from hub.policy.model import Decision, Disclosure
from hub.storage.feedback import Key, SightingRow, find_sightings, find_warninglisted
from hub.storage.store import find_active

__all__ = ["MatchFacts", "item_count_codes", "lifecycle_refusal", "sighting_counts"]


def lifecycle_refusal(
    item: matching.Contribution, decision: Decision, listed: Mapping[Key, str]
) -> str | None:
    """The reason codes refusing ``item`` (the policy's, comma-separated, if it refused
    the kind), or None to store it."""
    if not decision.allow:
        return ",".join(decision.reasons)
    list_name = listed.get((item.kind, item.token, item.key_epoch))
    if list_name is not None:
        return f"WARNINGLISTED:{list_name}"
    minimum = decision.obligations.min_evidence
    if (
        minimum is not None
        and item.evidence != INNOCENT_EVIDENCE
        and evidence_rank(item.evidence) < evidence_rank(minimum)
    ):
        return f"DENY_EVIDENCE:{minimum}"
    return None


def item_count_codes(
    accepted: Sequence[matching.Contribution],
    rejected: Sequence[exchange_pb2.RejectedItem],
    invalid: Sequence[ItemError],
) -> list[str]:
    """Audit codes counting a contribution message's items (module docstring)."""
    codes = []
    if rejected:
        codes.append(f"REFUSED_ITEMS:{len(rejected)}")
    if invalid:
        codes.append(f"MALFORMED_ITEMS:{len(invalid)}")
    by_class = Counter(item.evidence for item in accepted)
    codes.extend(f"EVIDENCE:{cls}/{n}" for cls, n in sorted(by_class.items()))
    return codes


def sighting_counts(rows: Sequence[SightingRow], *, excluding: str) -> scores.SightingCounts:
    """Counts per type of the sightings not filed by ``excluding`` (one row per reporter)."""
    counted = [row for row in rows if row.reporter != excluding]
    confirmed = [row.seen_at for row in counted if row.type == "confirmed"]
    return scores.SightingCounts(
        confirmed=len(confirmed),
        false_positive=sum(1 for row in counted if row.type == "false_positive"),
        expired=sum(1 for row in counted if row.type == "expired"),
        last_confirmed=max(confirmed, default=None),
    )


@dataclass(frozen=True)
class MatchFacts:
    """Storage facts of one match message (see the module docstring)."""

    policy: Policy
    now: datetime
    indicators: Mapping[Key, list[matching.Sighting]]
    warninglisted: Mapping[Key, str]
    sightings: Mapping[Key, list[SightingRow]]

    @classmethod
    def load(
        cls,
        session: Session,
        policy: Policy,
        keys: Sequence[Key],
        now: datetime,
        *,
        with_indicators: bool = True,
    ) -> MatchFacts:
        """The facts of ``keys``; ``with_indicators`` False: the caller brings its own
        (:meth:`summary`'s ``indicators``)."""
        return cls(
            policy=policy,
            now=now,
            indicators=find_active(session, keys, now) if with_indicators else {},
            warninglisted=find_warninglisted(session, keys),
            sightings=find_sightings(session, keys),
        )

    def summary(
        self,
        requester: str,
        key: Key,
        decision: Decision,
        *,
        indicators: Sequence[matching.Sighting] | None = None,
        disclosure: Disclosure | None = None,
    ) -> matching.MatchSummary:
        """The trimmed aggregate of ``key`` for ``requester`` under ``decision``.

        ``indicators`` replaces the loaded ones (an alert compares the key's
        indicators before and after a change); ``disclosure`` lowers the
        decided level (an alert stops at SUMMARY).  A warning-listed key never
        matches.
        """
        if key in self.warninglisted:
            return matching.MatchSummary()
        kind = key[0]
        model = self.policy.decay_model(kind)
        rows = self.sightings.get(key, [])
        scored = [
            replace(
                indicator,
                score=scores.current_score(
                    indicator.confidence,
                    indicator.observed_at,
                    self.now,
                    model,
                    sighting_counts(rows, excluding=indicator.contributor),
                ),
            )
            if model is not None
            else indicator
            for indicator in (self.indicators.get(key, []) if indicators is None else indicators)
        ]
        return matching.aggregate(
            requester,
            scored,
            disclosure=decision.disclosure if disclosure is None else disclosure,
            min_contributors=decision.obligations.min_contributors,
            min_evidence=decision.obligations.min_evidence,
            threshold=model.threshold if model is not None else 0,
            feedback=sighting_counts(rows, excluding=requester),
        )
