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

This module does no I/O and imports neither YAML nor the reader: layers come
from :mod:`hub.policy.reader` (``load_policy`` reads and composes files) or
are built in memory; the data types live in :mod:`hub.policy.model`.

Within one layer, the most specific matching ``allow`` rule decides: a rule
naming the kind beats a rule naming its tier.  Two ``allow`` rules of the same
specificity that overlap on a (role, purpose, action, kind) are refused when
the policy is built, so no decision depends on rule order.

Actions:

- ``match``: screen values; the grant carries a disclosure level.
- ``contribute``: upload indicators; the grant carries a retention cap.
- ``watch``: a standing match (watchlists, alerts); the grant carries a
  disclosure level and k-threshold like ``match`` (what alerts may say) and a
  retention cap (how long a watch lives).
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
from dataclasses import dataclass, replace
from typing import Final

from client_sdk.core.errors import InvalidRequest, PolicyError
from hub.policy.model import (
    ACTIONS,
    AUDIT_KIND,
    DENIED_OBLIGATIONS,
    KINDLESS_ACTIONS,
    POLICY_FORMAT,
    SENSITIVE_MIN_EVIDENCE,
    TIERS,
    Context,
    DecayModel,
    Decision,
    Disclosure,
    Obligations,
    PolicyLayer,
    Principal,
    Rule,
)

# The model's names stay importable from here, where callers found them first.
__all__ = [
    "Policy",
    "decide",
]

_STRICTNESS: Final[Mapping[str, int]] = {tier: i for i, tier in enumerate(TIERS)}


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
        canonical = {
            "format": POLICY_FORMAT,
            "layers": [layer.canonical() for layer in self.layers],
        }
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

    def decay_model(self, kind: str) -> DecayModel | None:
        """The score decay model of ``kind`` (the operator's ``decay`` section), or None."""
        base = self.layers[0]
        return base.decay.get(kind, base.default_decay)

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
        if action in KINDLESS_ACTIONS:
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
        disclosure = grant.disclosure if action in ("match", "watch") else Disclosure.NONE
        reasons = grant.reasons
        obligations = grant.obligations
        if action == "contribute" and tier == "sensitive":
            # Sensitive kinds are never filed on suspicion alone (issue 12).
            obligations = obligations.meet(
                replace(obligations, min_evidence=SENSITIVE_MIN_EVIDENCE)
            )
        if disclosure >= Disclosure.LABELS and not grant.obligations.attribution_allowed:
            # A sealed label is bound to its contributor's id (the AAD), so it
            # cannot be shown without saying who wrote it.
            disclosure = Disclosure.SUMMARY
            reasons = (*reasons, "CAP_NO_ATTRIBUTION")
        return Decision(
            allow=True,
            disclosure=disclosure,
            reasons=reasons,
            obligations=obligations,
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
        if rule.action in KINDLESS_ACTIONS:
            targets = [("", rule.action)]
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
