"""The policy's data: what rules, layers, requests and decisions are.

This module holds values only (frozen dataclasses, tables of constants and
reason texts); it does no I/O and decides nothing.  :mod:`hub.policy.engine`
composes layers and decides, :mod:`hub.policy.reader` builds layers from YAML,
:mod:`hub.policy.scenarios` checks decisions against expectation tables.

Guarantees:

- A :class:`Decision` never discloses labels without allowing attribution
  (a sealed label is bound to its contributor's id); the constructor raises
  ``ValueError`` otherwise, so no code path can build one.
- Reason codes are stable; :data:`REASON_TEXT` documents each one (and
  ``policies/README.md`` too).  A parametrised code is ``CODE:<rule id>``.
- ``canonical()`` of a rule and a layer is what the policy version hashes:
  it leaves out where a rule was read from (``source``, ``line``).

Tiers, disclosure levels and principals are the shared vocabulary
(:mod:`client_sdk.core.vocabulary`); they are re-exported here for the
policy's callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from client_sdk.core.vocabulary import TIERS, Disclosure, Principal, evidence_rank

__all__ = [
    "ACTIONS",
    "AUDIT_KIND",
    "DENIED_OBLIGATIONS",
    "KINDLESS_ACTIONS",
    "MAX_SCORE",
    "POLICY_FORMAT",
    "REASON_TEXT",
    "RULE_ACTIONS",
    "SENSITIVE_MIN_EVIDENCE",
    "TIERS",
    "Context",
    "DecayModel",
    "Decision",
    "Disclosure",
    "Obligations",
    "PolicyLayer",
    "Principal",
    "Rule",
    "explain_reason",
]

#: Every action a caller may ask about (``watch``: watchlists and alerts, issue 11;
#: ``dispute``: opening a data subject's dispute of a listed value under a redress purpose;
#: ``sighting``: file feedback on a token; ``warninglist``: maintain the known-good lists;
#: issue 12).
ACTIONS: Final[tuple[str, ...]] = (
    "contribute",
    "match",
    "watch",
    "revoke",
    "audit",
    "dispute",
    "sighting",
    "warninglist",
)
#: Actions a rule may name (``revoke`` is derived from ``contribute``).
RULE_ACTIONS: Final[tuple[str, ...]] = (
    "contribute",
    "match",
    "watch",
    "audit",
    "dispute",
    "sighting",
    "warninglist",
)
#: Scores (hub.core.scores) are integers from 0 to this.
MAX_SCORE: Final[int] = 100
#: The weakest evidence a sensitive kind may be filed on, whatever a rule says (issue 12).
SENSITIVE_MIN_EVIDENCE: Final[str] = "internal_investigation"
#: Actions about no kind: the audit log, and the warning lists (which hold every kind).
KINDLESS_ACTIONS: Final[frozenset[str]] = frozenset({"audit", "warninglist"})
#: The ``kind`` argument for the ``audit`` action: the audit log is not about a kind.
AUDIT_KIND: Final[str] = ""
#: The ``format`` of a policy file, also hashed into the policy version.
POLICY_FORMAT: Final[str] = "fraudhub-policy/1"


@dataclass(frozen=True)
class Context:
    """Facts about a request that rules may depend on.

    ``case_reference``: the caller's case number; a blank one counts as none.
    The policy only tests its presence; it never stores or returns it.
    """

    case_reference: str | None = None

    @property
    def has_case_reference(self) -> bool:
        return self.case_reference is not None and self.case_reference.strip() != ""


@dataclass(frozen=True)
class Obligations:
    """What the hub must enforce when it acts on an allowed decision.

    ``min_contributors``: a match reported by fewer distinct institutions is
    shown as no match (k-threshold).  ``daily_quota``: items per institution per
    UTC day in ``quota_bucket`` (``None``: no quota).  ``retention_days``: cap on
    how long a contribution is kept (``None``: no cap from the policy).
    ``attribution_allowed``: whether contributor identities may be disclosed.
    ``dispute_response_days``: days a contributor has to uphold or withdraw a
    disputed indicator before the hub removes it (``None``: not a dispute).
    ``min_evidence``: the weakest evidence class a contribution may carry, or
    that a match counts (``None``: any).
    """

    min_contributors: int
    daily_quota: int | None
    quota_bucket: str | None
    retention_days: int | None
    case_reference_required: bool
    attribution_allowed: bool
    legal_basis: str
    dispute_response_days: int | None = None
    min_evidence: str | None = None

    def meet(self, other: Obligations) -> Obligations:
        """The stricter of ``self`` and ``other``, field by field."""
        bases = [b for b in (self.legal_basis, other.legal_basis) if b]
        return Obligations(
            min_contributors=max(self.min_contributors, other.min_contributors),
            daily_quota=_min_optional(self.daily_quota, other.daily_quota),
            quota_bucket=self.quota_bucket,
            retention_days=_min_optional(self.retention_days, other.retention_days),
            case_reference_required=self.case_reference_required or other.case_reference_required,
            attribution_allowed=self.attribution_allowed and other.attribution_allowed,
            legal_basis="; ".join(dict.fromkeys(bases)),
            # Stricter for the data subject: the shorter time to answer.
            dispute_response_days=_min_optional(
                self.dispute_response_days, other.dispute_response_days
            ),
            min_evidence=_stronger_evidence(self.min_evidence, other.min_evidence),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_contributors": self.min_contributors,
            "daily_quota": self.daily_quota,
            "quota_bucket": self.quota_bucket,
            "retention_days": self.retention_days,
            "case_reference_required": self.case_reference_required,
            "attribution_allowed": self.attribution_allowed,
            "legal_basis": self.legal_basis,
            "dispute_response_days": self.dispute_response_days,
            "min_evidence": self.min_evidence,
        }


def _stronger_evidence(a: str | None, b: str | None) -> str | None:
    """The stricter of two minimum evidence classes (``None``: no minimum)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if evidence_rank(a) >= evidence_rank(b) else b


#: Obligations of a refusal: nothing may be done, so nothing is owed.
DENIED_OBLIGATIONS: Final[Obligations] = Obligations(
    min_contributors=1,
    daily_quota=0,
    quota_bucket=None,
    retention_days=None,
    case_reference_required=False,
    attribution_allowed=False,
    legal_basis="",
)


def _min_optional(a: int | None, b: int | None) -> int | None:
    """Minimum where ``None`` means unbounded."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# Reason codes.  A code is stable; a parametrised code is "CODE:<rule id>".
REASON_TEXT: Final[Mapping[str, str]] = {
    "ALLOW_RULE": "allowed by rule {arg} of the operator's policy",
    "LIMIT_RULE": "narrowed by override rule {arg} (the stricter setting wins)",
    "ALLOW_REVOKE": "revocation allowed: the role may contribute this kind (rule {arg})",
    "DENY_RULE": "refused by deny rule {arg}",
    "DENY_NO_RULE": "refused: no rule allows this role, purpose, action and kind (default deny)",
    "DENY_PROHIBITED_KIND": "refused: the kind is in the prohibited tier and is never stored "
    "or matched",
    "DENY_UNKNOWN_ACTION": "refused: the action is not one the policy knows (contribute, "
    "match, watch, revoke, audit, dispute, sighting, warninglist)",
    "DENY_UNKNOWN_ROLE": "refused: the role is not declared by the policy",
    "DENY_UNKNOWN_PURPOSE": "refused: the purpose is not declared by the policy",
    "DENY_UNKNOWN_KIND": "refused: the kind is not in the policy's tier table",
    "DENY_AUDIT_KIND": "refused: the audit and warninglist actions cover no single kind; name none",
    "DENY_CASE_REFERENCE_REQUIRED": "refused: this purpose and kind need a case reference, "
    "and none was given",
    "DENY_EVIDENCE": "refused: the item's evidence class is weaker than the rule's "
    "min_evidence {arg}",
    "WARNINGLISTED": "refused: the value is on the operator's warning list of known-good "
    "values ({arg})",
    "CAP_NO_ATTRIBUTION": "capped at summary: a label names the institution that wrote it, "
    "and the rule does not allow attribution",
}


def explain_reason(code: str) -> str:
    """Human text for a reason code (``ALLOW_RULE:bank-x`` included).

    Raises KeyError for a code this module does not emit.
    """
    name, _, arg = code.partition(":")
    return REASON_TEXT[name].format(arg=arg)


@dataclass(frozen=True)
class Decision:
    """The answer to one ``decide`` call.

    ``disclosure`` is ``NONE`` whenever ``allow`` is false, and for the
    ``contribute``, ``revoke``, ``audit`` and ``dispute`` actions (which disclose no
    indicator data).  ``tier`` is the kind's tier (``""`` for an unknown kind
    and for ``audit``).  ``rules`` are the ids of the rules that decided.
    """

    allow: bool
    disclosure: Disclosure
    reasons: tuple[str, ...]
    obligations: Obligations
    version: str
    tier: str
    rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A sealed label is bound to its contributor's id (the AAD): no decision
        # may show labels without allowing attribution (decide caps it at summary).
        if self.disclosure >= Disclosure.LABELS and not self.obligations.attribution_allowed:
            raise ValueError("a decision disclosing labels must allow attribution")

    @property
    def explanations(self) -> tuple[str, ...]:
        """The reasons as sentences a person can read."""
        return tuple(explain_reason(code) for code in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "allow": self.allow,
            "disclosure": self.disclosure.word,
            "reasons": list(self.reasons),
            "explanations": list(self.explanations),
            "obligations": self.obligations.to_dict(),
            "version": self.version,
            "tier": self.tier,
            "rules": list(self.rules),
        }


@dataclass(frozen=True)
class Rule:
    """One rule of a policy layer.

    A rule matches a request when its ``roles``, ``purposes`` and ``action``
    contain the request's, and (for contribute and match) when ``kinds``
    contains the kind or ``tiers`` contains the kind's tier.  ``source`` and
    ``line`` locate it for error messages; they are not part of the policy
    version.
    """

    id: str
    action: str
    roles: frozenset[str]
    purposes: frozenset[str]
    effect: str = "allow"
    tiers: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    disclosure: Disclosure = Disclosure.NONE
    min_contributors: int = 1
    case_reference_required: bool = False
    daily_quota: int | None = None
    retention_days: int | None = None
    attribution: bool = False
    dispute_response_days: int | None = None
    legal_basis: str = ""
    min_evidence: str | None = None
    description: str = ""
    source: str = "<memory>"
    line: int = 0

    @property
    def allows(self) -> bool:
        return self.effect == "allow"

    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def matches(self, role: str, purpose: str, action: str, kind: str, tier: str) -> bool:
        if action != self.action or role not in self.roles or purpose not in self.purposes:
            return False
        if action in KINDLESS_ACTIONS:
            return True
        return kind in self.kinds or tier in self.tiers

    def specificity(self, kind: str) -> int:
        """2 when the rule names the kind itself, 1 when it names the tier."""
        return 2 if kind in self.kinds else 1

    def obligations(self, purpose: str, tier: str) -> Obligations:
        bucket = (
            f"{self.action}/{purpose}"
            if self.action in KINDLESS_ACTIONS
            else f"{self.action}/{purpose}/{tier}"
        )
        return Obligations(
            min_contributors=self.min_contributors,
            daily_quota=self.daily_quota,
            quota_bucket=bucket,
            retention_days=self.retention_days,
            case_reference_required=self.case_reference_required,
            attribution_allowed=self.attribution,
            legal_basis=self.legal_basis,
            dispute_response_days=self.dispute_response_days,
            min_evidence=self.min_evidence,
        )

    def canonical(self) -> dict[str, Any]:
        # dispute_response_days and min_evidence only where set: the versions of
        # policies without them stay what they were.
        extra: dict[str, Any] = {}
        if self.dispute_response_days is not None:
            extra["dispute_response_days"] = self.dispute_response_days
        if self.min_evidence is not None:
            extra["min_evidence"] = self.min_evidence
        return extra | {
            "id": self.id,
            "effect": self.effect,
            "action": self.action,
            "roles": sorted(self.roles),
            "purposes": sorted(self.purposes),
            "tiers": sorted(self.tiers),
            "kinds": sorted(self.kinds),
            "disclosure": self.disclosure.word,
            "min_contributors": self.min_contributors,
            "case_reference_required": self.case_reference_required,
            "daily_quota": self.daily_quota,
            "retention_days": self.retention_days,
            "attribution": self.attribution,
            "legal_basis": self.legal_basis,
            "description": self.description,
        }


@dataclass(frozen=True)
class DecayModel:
    """One score decay model (:mod:`hub.core.scores` computes with it).

    ``lifetime_days`` is MISP's tau, ``decay_speed`` its delta.

    ``threshold``: an indicator whose current score is below it no longer counts
    as a match (0: every indicator counts until it expires).  ``source`` says
    where the numbers come from; it is part of the policy version.
    """

    name: str
    lifetime_days: float
    decay_speed: float
    threshold: int
    source: str = ""

    def __post_init__(self) -> None:
        if not self.lifetime_days > 0 or not self.decay_speed > 0:
            raise ValueError("a decay model needs a positive lifetime and decay speed")
        if not 0 <= self.threshold <= MAX_SCORE:
            raise ValueError("a decay threshold is between 0 and 100")

    def canonical(self) -> dict[str, object]:
        return {
            "name": self.name,
            "lifetime_days": self.lifetime_days,
            "decay_speed": self.decay_speed,
            "threshold": self.threshold,
            "source": self.source,
        }


@dataclass(frozen=True)
class PolicyLayer:
    """One policy file: the operator's (first) or an override (later).

    ``tiers`` maps kind -> tier; ``None`` for ``tiers``, ``roles`` or
    ``purposes`` means "as the layers before" (only overrides may omit them).
    ``tier_basis`` maps tier -> the legal basis of its classification (text).
    ``decay`` maps kind -> its score decay model (:mod:`hub.core.scores`);
    ``default_decay`` applies to the kinds it does not name (``None``: no decay).
    """

    source: str
    rules: tuple[Rule, ...]
    tiers: Mapping[str, str] | None = None
    roles: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    name: str = ""
    tier_basis: Mapping[str, str] = field(default_factory=dict)
    decay: Mapping[str, DecayModel] = field(default_factory=dict)
    default_decay: DecayModel | None = None

    def canonical(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.decay or self.default_decay is not None:
            # Only when present, so policies without decay keep their version.
            extra["decay"] = {
                "kinds": {kind: model.canonical() for kind, model in sorted(self.decay.items())},
                "default": None if self.default_decay is None else self.default_decay.canonical(),
            }
        return extra | {
            "name": self.name,
            "tier_basis": dict(sorted(self.tier_basis.items())),
            "tiers": None if self.tiers is None else dict(sorted(self.tiers.items())),
            "roles": None if self.roles is None else sorted(self.roles),
            "purposes": None if self.purposes is None else sorted(self.purposes),
            "rules": [rule.canonical() for rule in self.rules],
        }
