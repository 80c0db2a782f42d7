"""The tiered privacy policy: a pure decision function over declarative rules.

What this module guarantees (DESIGN.md, "Tiered privacy policy"):

- **Default deny.**  An action, role, purpose or kind the policy does not
  declare is refused, and so is anything no ``allow`` rule matches.
- **Prohibited kinds are never stored or matched.**  A kind in the
  ``prohibited`` tier is refused for every role, purpose and action, before any
  rule is looked at; no rule may allow one.
- **Stricter wins when policies compose.**  The first layer is the operator's
  policy; every later layer (e.g. a regulator's overrides) can only narrow it:
  for the same (role, purpose, action, kind) the composed grant takes the
  minimum disclosure, the maximum ``min_contributors``, the minimum quota and
  retention, the OR of ``case_reference_required``, the AND of attribution, and
  any matching ``deny`` rule in any layer overrides every allow.  A later layer
  can never grant what the operator's policy does not.
- **Deterministic and versioned.**  Every :class:`Decision` names the policy
  version: the hex SHA-256 of the canonical JSON of all layers (comments,
  key order and formatting of the YAML files do not change it).
- **Readable reasons.**  A decision carries stable reason codes
  (:data:`REASON_TEXT` documents each one; ``policies/README.md`` too).

The decision logic does no I/O.  :func:`load_policy` is the one function that
reads files; it delegates YAML parsing and line-accurate validation to
:mod:`hub.policy.reader`, imported lazily so that this module is usable
without touching YAML.

Within one layer, the most specific matching ``allow`` rule decides: a rule
naming the kind beats a rule naming its tier.  Two ``allow`` rules of the same
specificity that overlap on a (role, purpose, action, kind) are refused when
the policy is built, so no decision depends on rule order.

Actions:

- ``match``: screen values; the grant carries a disclosure level.
- ``contribute``: upload indicators; the grant carries a retention cap.
- ``revoke``: withdraw one's own indicators.  Not written as rules: a role may
  revoke a kind whenever the composed policy lets it contribute that kind under
  at least one declared purpose (without a case reference or quota, because
  removing data never discloses anything).  Ownership of the indicators is the
  store's check, not the policy's.
- ``audit``: read the audit log (Audit RPCs).  Audit rules name no tier or
  kind, because the log holds no indicator values; callers pass ``kind=""``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from client_sdk.core.errors import InvalidRequest, PolicyError
from client_sdk.core.vocabulary import TIERS, Disclosure, Principal

__all__ = [
    "ACTIONS",
    "AUDIT_KIND",
    "DENIED_OBLIGATIONS",
    "REASON_TEXT",
    "RULE_ACTIONS",
    "TIERS",
    "Context",
    "Decision",
    "Disclosure",
    "Obligations",
    "Policy",
    "PolicyLayer",
    "Principal",
    "Rule",
    "decide",
    "explain_reason",
    "load_policy",
]

#: Every action a caller may ask about.
ACTIONS: Final[tuple[str, ...]] = ("contribute", "match", "revoke", "audit")
#: Actions a rule may name (``revoke`` is derived from ``contribute``).
RULE_ACTIONS: Final[tuple[str, ...]] = ("contribute", "match", "audit")
#: The ``kind`` argument for the ``audit`` action: the audit log is not about a kind.
AUDIT_KIND: Final[str] = ""

_STRICTNESS: Final[Mapping[str, int]] = {tier: i for i, tier in enumerate(TIERS)}
_FORMAT: Final[str] = "fraudhub-policy/1"


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
    """

    min_contributors: int
    daily_quota: int | None
    quota_bucket: str | None
    retention_days: int | None
    case_reference_required: bool
    attribution_allowed: bool
    legal_basis: str

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
        }


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
    "DENY_UNKNOWN_ACTION": "refused: the action is not one of contribute, match, revoke, audit",
    "DENY_UNKNOWN_ROLE": "refused: the role is not declared by the policy",
    "DENY_UNKNOWN_PURPOSE": "refused: the purpose is not declared by the policy",
    "DENY_UNKNOWN_KIND": "refused: the kind is not in the policy's tier table",
    "DENY_AUDIT_KIND": "refused: the audit action covers the whole log and takes no kind",
    "DENY_CASE_REFERENCE_REQUIRED": "refused: this purpose and kind need a case reference, "
    "and none was given",
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
    ``contribute``, ``revoke`` and ``audit`` actions (which disclose no
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
    legal_basis: str = ""
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
        if action == "audit":
            return True
        return kind in self.kinds or tier in self.tiers

    def specificity(self, kind: str) -> int:
        """2 when the rule names the kind itself, 1 when it names the tier."""
        return 2 if kind in self.kinds else 1

    def obligations(self, purpose: str, tier: str) -> Obligations:
        bucket = f"audit/{purpose}" if self.action == "audit" else f"{self.action}/{purpose}/{tier}"
        return Obligations(
            min_contributors=self.min_contributors,
            daily_quota=self.daily_quota,
            quota_bucket=bucket,
            retention_days=self.retention_days,
            case_reference_required=self.case_reference_required,
            attribution_allowed=self.attribution,
            legal_basis=self.legal_basis,
        )

    def canonical(self) -> dict[str, Any]:
        return {
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
class PolicyLayer:
    """One policy file: the operator's (first) or an override (later).

    ``tiers`` maps kind -> tier; ``None`` for ``tiers``, ``roles`` or
    ``purposes`` means "as the layers before" (only overrides may omit them).
    ``tier_basis`` maps tier -> the legal basis of its classification (text).
    """

    source: str
    rules: tuple[Rule, ...]
    tiers: Mapping[str, str] | None = None
    roles: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    name: str = ""
    tier_basis: Mapping[str, str] = field(default_factory=dict)

    def canonical(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tier_basis": dict(sorted(self.tier_basis.items())),
            "tiers": None if self.tiers is None else dict(sorted(self.tiers.items())),
            "roles": None if self.roles is None else sorted(self.roles),
            "purposes": None if self.purposes is None else sorted(self.purposes),
            "rules": [rule.canonical() for rule in self.rules],
        }


@dataclass(frozen=True)
class _Grant:
    disclosure: Disclosure
    obligations: Obligations
    reasons: tuple[str, ...]
    rules: tuple[str, ...]


class Policy:
    """A composed, validated policy.  Immutable; ``decide`` is pure.

    Raises :class:`PolicyError` from the constructor when the layers do not
    compose (see :meth:`_check`).
    """

    def __init__(self, layers: Sequence[PolicyLayer]) -> None:
        if not layers:
            raise PolicyError("a policy needs at least the operator's layer")
        base = layers[0]
        if base.tiers is None or base.roles is None or base.purposes is None:
            raise PolicyError(
                f"{base.source}: the operator's policy must declare tiers, roles and purposes"
            )
        self.layers: tuple[PolicyLayer, ...] = tuple(layers)
        tiers: dict[str, str] = dict(base.tiers)
        roles: frozenset[str] = base.roles
        purposes: frozenset[str] = base.purposes
        for layer in self.layers[1:]:
            if layer.roles is not None:
                _check_subset(layer, "roles", layer.roles, roles)
                roles = roles & layer.roles
            if layer.purposes is not None:
                _check_subset(layer, "purposes", layer.purposes, purposes)
                purposes = purposes & layer.purposes
            for kind, tier in (layer.tiers or {}).items():
                if kind not in tiers:
                    if tier != "prohibited":
                        raise PolicyError(
                            f"{layer.source}: tiers.{tier}: an override may add a new kind "
                            f"({kind}) only as prohibited"
                        )
                    tiers[kind] = tier
                elif _STRICTNESS[tier] < _STRICTNESS[tiers[kind]]:
                    tiers[kind] = tier
        self._tiers: dict[str, str] = tiers
        self.roles: frozenset[str] = roles
        self.purposes: frozenset[str] = purposes
        for layer in self.layers:
            _check_overlaps(layer)
        canonical = {"format": _FORMAT, "layers": [layer.canonical() for layer in self.layers]}
        encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        #: The text ``version`` hashes (the hub keeps it for auditors: Audit.GetPolicy).
        self.canonical_text: str = encoded
        self.version: str = hashlib.sha256(encoded.encode("utf-8")).hexdigest()

    # --- the tier table ---------------------------------------------------

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind the tier table names, prohibited ones included (sorted)."""
        return tuple(sorted(self._tiers))

    @property
    def tiers(self) -> Mapping[str, str]:
        """The composed tier table, kind -> tier."""
        return dict(self._tiers)

    @property
    def prohibited_kinds(self) -> frozenset[str]:
        return frozenset(k for k, t in self._tiers.items() if t == "prohibited")

    def tier_of(self, kind: str) -> str:
        """The kind's tier; raises InvalidRequest for a kind the policy does not know."""
        try:
            return self._tiers[kind]
        except KeyError:
            raise InvalidRequest("the kind is not in the policy's tier table") from None

    # --- decisions --------------------------------------------------------

    def decide(  # noqa: PLR0911 - one early return per documented DENY_ reason, in precedence order
        self,
        principal: Principal,
        action: str,
        kind: str,
        purpose: str,
        context: Context | None = None,
    ) -> Decision:
        """Decide one request.  Never raises; every refusal is a Decision."""
        context = context or Context()
        tier = self._tiers.get(kind, "")
        if action not in ACTIONS:
            return self._deny("DENY_UNKNOWN_ACTION", tier)
        if principal.role not in self.roles:
            return self._deny("DENY_UNKNOWN_ROLE", tier)
        if purpose not in self.purposes:
            return self._deny("DENY_UNKNOWN_PURPOSE", tier)
        if action == "audit":
            if kind != AUDIT_KIND:
                return self._deny("DENY_AUDIT_KIND", tier)
        elif kind not in self._tiers:
            return self._deny("DENY_UNKNOWN_KIND", "")
        elif tier == "prohibited":
            return self._deny("DENY_PROHIBITED_KIND", tier)
        if action == "revoke":
            return self._decide_revoke(principal.role, kind, tier)
        grant = self._grant(principal.role, purpose, action, kind, tier)
        if isinstance(grant, Decision):
            return grant
        if grant.obligations.case_reference_required and not context.has_case_reference:
            return Decision(
                allow=False,
                disclosure=Disclosure.NONE,
                reasons=("DENY_CASE_REFERENCE_REQUIRED",),
                obligations=grant.obligations,
                version=self.version,
                tier=tier,
                rules=grant.rules,
            )
        disclosure = grant.disclosure if action == "match" else Disclosure.NONE
        reasons = grant.reasons
        if disclosure >= Disclosure.LABELS and not grant.obligations.attribution_allowed:
            # A sealed label is bound to its contributor's id (the AAD), so it
            # cannot be shown without saying who wrote it.
            disclosure = Disclosure.SUMMARY
            reasons = (*reasons, "CAP_NO_ATTRIBUTION")
        return Decision(
            allow=True,
            disclosure=disclosure,
            reasons=reasons,
            obligations=grant.obligations,
            version=self.version,
            tier=tier,
            rules=grant.rules,
        )

    def decide_audit(
        self, principal: Principal, purpose: str, context: Context | None = None
    ) -> Decision:
        """``decide(principal, "audit", AUDIT_KIND, purpose, context)``."""
        return self.decide(principal, "audit", AUDIT_KIND, purpose, context)

    def _deny(self, code: str, tier: str) -> Decision:
        return Decision(
            allow=False,
            disclosure=Disclosure.NONE,
            reasons=(code,),
            obligations=DENIED_OBLIGATIONS,
            version=self.version,
            tier=tier,
        )

    def _grant(
        self, role: str, purpose: str, action: str, kind: str, tier: str
    ) -> _Grant | Decision:
        """The composed grant of every layer, or the refusal.

        An override that moves a kind to a stricter tier must not bring the
        operator's rules for that tier with it when they are looser than the
        rules the kind had: the rules are applied under every tier any layer
        gives the kind, and the strictest outcome stands (stricter wins).
        """
        # Tiers looser than the operator's are ignored by the tier table, and here too.
        operator_tier = (self.layers[0].tiers or {}).get(kind, tier)
        classified = {tier} | {
            layer.tiers[kind]
            for layer in self.layers
            if layer.tiers
            and kind in layer.tiers
            and _STRICTNESS[layer.tiers[kind]] <= _STRICTNESS.get(operator_tier, 0)
        }
        result: _Grant | None = None
        # Strictest first: its quota bucket is the one the grant keeps.
        for each in sorted(classified, key=lambda t: _STRICTNESS.get(t, 0)):
            grant = self._grant_under(role, purpose, action, kind, each)
            if isinstance(grant, Decision):
                return replace(grant, tier=tier)
            if result is None:
                result = grant
            else:
                result = _Grant(
                    min(result.disclosure, grant.disclosure),
                    result.obligations.meet(grant.obligations),
                    tuple(dict.fromkeys((*result.reasons, *grant.reasons))),
                    tuple(dict.fromkeys((*result.rules, *grant.rules))),
                )
        assert result is not None  # ``classified`` holds at least ``tier``
        return result

    def _grant_under(
        self, role: str, purpose: str, action: str, kind: str, tier: str
    ) -> _Grant | Decision:
        """The composed grant of every layer with ``kind`` in ``tier``, or the refusal."""
        denials: list[str] = []
        grant: _Grant | None = None
        for position, layer in enumerate(self.layers):
            matching = [r for r in layer.rules if r.matches(role, purpose, action, kind, tier)]
            denials.extend(f"DENY_RULE:{r.id}" for r in matching if not r.allows)
            allows = [r for r in matching if r.allows]
            if not allows:
                continue
            # Overlaps of equal specificity are refused at build time, so the
            # most specific rule is unique.
            rule = max(allows, key=lambda r: r.specificity(kind))
            obligations = rule.obligations(purpose, tier)
            if position == 0:
                grant = _Grant(rule.disclosure, obligations, (f"ALLOW_RULE:{rule.id}",), (rule.id,))
            elif grant is not None:
                grant = _Grant(
                    min(grant.disclosure, rule.disclosure),
                    grant.obligations.meet(obligations),
                    (*grant.reasons, f"LIMIT_RULE:{rule.id}"),
                    (*grant.rules, rule.id),
                )
        if denials:
            return Decision(
                allow=False,
                disclosure=Disclosure.NONE,
                reasons=tuple(denials),
                obligations=DENIED_OBLIGATIONS,
                version=self.version,
                tier=tier,
                rules=tuple(code.partition(":")[2] for code in denials),
            )
        if grant is None:
            return self._deny("DENY_NO_RULE", tier)
        return grant

    def _decide_revoke(self, role: str, kind: str, tier: str) -> Decision:
        for purpose in sorted(self.purposes):
            grant = self._grant(role, purpose, "contribute", kind, tier)
            if isinstance(grant, _Grant):
                obligations = replace(
                    DENIED_OBLIGATIONS,
                    daily_quota=None,
                    legal_basis=grant.obligations.legal_basis,
                )
                return Decision(
                    allow=True,
                    disclosure=Disclosure.NONE,
                    reasons=(f"ALLOW_REVOKE:{grant.rules[0]}",),
                    obligations=obligations,
                    version=self.version,
                    tier=tier,
                    rules=grant.rules[:1],
                )
        return self._deny("DENY_NO_RULE", tier)


def decide(
    policy: Policy,
    principal: Principal,
    action: str,
    kind: str,
    purpose: str,
    context: Context | None = None,
) -> Decision:
    """Module-level spelling of :meth:`Policy.decide`."""
    return policy.decide(principal, action, kind, purpose, context)


def _check_subset(
    layer: PolicyLayer, what: str, declared: Iterable[str], known: frozenset[str]
) -> None:
    extra = sorted(set(declared) - known)
    if extra:
        raise PolicyError(
            f"{layer.source}: {what}: an override cannot declare {', '.join(extra)} "
            f"(not declared by the policies before it)"
        )


def _check_overlaps(layer: PolicyLayer) -> None:
    """Refuse two allow rules of equal specificity that match the same request.

    Raises PolicyError naming both rules' lines and one overlapping cell.
    """
    seen: dict[tuple[str, str, str, str, str], Rule] = {}
    for rule in layer.rules:
        if not rule.allows:
            continue
        if rule.action == "audit":
            targets = [("", "audit")]
        else:
            targets = [(k, "kind") for k in rule.kinds] + [(t, "tier") for t in rule.tiers]
        for role in rule.roles:
            for purpose in rule.purposes:
                for target, level in targets:
                    key = (rule.action, role, purpose, level, target)
                    other = seen.get(key)
                    if other is not None:
                        raise PolicyError(
                            f"{rule.where()}: rules.{rule.id}: overlaps rule {other.id} "
                            f"(line {other.line}) for role {role}, purpose {purpose}, action "
                            f"{rule.action}, {level} {target or '(log)'}; split or narrow one"
                        )
                    seen[key] = rule


def load_policy(*paths: str) -> Policy:
    """Read, validate and compose policy files.

    The first path is the operator's policy; later paths are overrides
    (stricter wins).  Raises PolicyError as ``file:line: field: message`` for
    a file that does not parse or validate, or layers that do not compose.
    """
    from hub.policy.reader import read_layer

    if not paths:
        raise PolicyError("no policy file given")
    layers: list[PolicyLayer] = []
    for position, path in enumerate(paths):
        layers.append(read_layer(path, override=position > 0, before=layers))
    return Policy(layers)
