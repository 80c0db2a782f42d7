"""Properties of the policy engine over generated policies (Hypothesis): strictest wins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core.errors import PolicyError
from hub.policy.engine import Policy
from hub.policy.model import (
    ACTIONS,
    AUDIT_KIND,
    Context,
    Decision,
    Disclosure,
    PolicyLayer,
    Principal,
    Rule,
)
from hub.policy.reader import load_policy

MINIMAL = str(Path(__file__).resolve().parent / "data" / "policies" / "minimal.yaml")


# --- properties over generated policies -------------------------------------------------------

ROLES = ("r1", "r2", "r3")
PURPOSES = ("p1", "p2")
TIER_TABLE = {
    "x1": "prohibited",
    "s1": "sensitive",
    "s2": "sensitive",
    "c1": "context_dependent",
    "u1": "public",
}
OPEN_TIERS = ("sensitive", "context_dependent", "public")
OPEN_KINDS = tuple(k for k, t in TIER_TABLE.items() if t != "prohibited")


def _subset(items: tuple[str, ...]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(items), min_size=1)


@st.composite
def rules(draw: st.DrawFn, prefix: str = "r") -> Rule:
    action = draw(st.sampled_from(("match", "contribute")))
    by_kind = draw(st.booleans())
    effect = draw(st.sampled_from(("allow", "allow", "allow", "deny")))
    allow = effect == "allow"
    return Rule(
        id=f"{prefix}{draw(st.integers(0, 10**6))}",
        action=action,
        roles=draw(_subset(ROLES)),
        purposes=draw(_subset(PURPOSES)),
        effect=effect,
        tiers=frozenset() if by_kind else draw(_subset(OPEN_TIERS)),
        kinds=draw(_subset(OPEN_KINDS)) if by_kind else frozenset(),
        disclosure=Disclosure(draw(st.integers(1, 4)))
        if allow and action == "match"
        else Disclosure.NONE,
        min_contributors=draw(st.integers(1, 3)),
        case_reference_required=draw(st.booleans()),
        daily_quota=draw(st.one_of(st.none(), st.integers(1, 100))),
        retention_days=draw(st.integers(1, 400)) if action == "contribute" else None,
        attribution=draw(st.booleans()),
        legal_basis="basis" if allow else "",
    )


def _layer(source: str, candidates: list[Rule], base: bool) -> PolicyLayer:
    """A layer of the candidates that keep it valid (unique ids, no equal-specificity overlaps)."""
    kept: list[Rule] = []
    ids: set[str] = set()
    for rule in candidates:
        if rule.id in ids:
            continue
        trial = PolicyLayer(source, (*kept, rule))
        try:
            Policy([_base_layer(trial.rules)] if base else [_base_layer(()), trial])
        except PolicyError:
            continue
        kept.append(rule)
        ids.add(rule.id)
    if base:
        return _base_layer(tuple(kept))
    return PolicyLayer(source, tuple(kept))


def _base_layer(rules_: tuple[Rule, ...]) -> PolicyLayer:
    return PolicyLayer(
        "base",
        rules_,
        tiers=TIER_TABLE,
        roles=frozenset(ROLES),
        purposes=frozenset(PURPOSES),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    base = _layer("base", draw(st.lists(rules("b"), max_size=8)), base=True)
    layers = [base]
    for n in range(draw(st.integers(0, 2))):
        layers.append(_layer(f"o{n}", draw(st.lists(rules(f"o{n}-"), max_size=4)), base=False))
    return Policy(layers)


queries = st.tuples(
    st.sampled_from((*ROLES, "unknown-role")),
    st.sampled_from((*ACTIONS, "bogus")),
    st.sampled_from((*TIER_TABLE, "unknown-kind", AUDIT_KIND)),
    st.sampled_from((*PURPOSES, "unknown-purpose")),
    st.sampled_from((None, "", "CASE-1")),
)


def _ask(policy: Policy, q: tuple[str, str, str, str, str | None]) -> Decision:
    role, action, kind, purpose, case = q
    return policy.decide(Principal("inst", role), action, kind, purpose, Context(case))


def _matching_allow_rules(policy: Policy, q: tuple[str, str, str, str, str | None]) -> list[Rule]:
    role, action, kind, purpose, _ = q
    tier = policy.tiers.get(kind, "")
    return [
        r
        for layer in policy.layers
        for r in layer.rules
        if r.allows and r.matches(role, purpose, action, kind, tier)
    ]


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


@PROPERTY_SETTINGS
@given(policies(), queries)
def test_no_decision_exceeds_the_most_permissive_matching_rule(
    policy: Policy, q: tuple[str, str, str, str, str | None]
) -> None:
    # The drawn query plus every query of the policy's space: a random query
    # alone is rarely allowed, which would leave the allow branch untested.
    for each in (q, *_every_query()):
        d = _ask(policy, each)
        if each[1] in ("match", "contribute") and d.allow:
            matching = _matching_allow_rules(policy, each)
            # Something in the operator's layer granted it ...
            assert any(r in policy.layers[0].rules for r in matching)
            # ... and nothing exceeds the most permissive matching rule.
            assert d.disclosure <= max(r.disclosure for r in matching)
            assert d.obligations.min_contributors >= min(r.min_contributors for r in matching)
            if d.obligations.attribution_allowed:
                assert any(r.attribution for r in matching)
        if not d.allow:
            assert d.disclosure == Disclosure.NONE


@PROPERTY_SETTINGS
@given(policies(), queries)
def test_prohibited_kinds_are_always_refused(
    policy: Policy, q: tuple[str, str, str, str, str | None]
) -> None:
    q = (q[0], q[1], "x1", q[3], q[4])
    d = _ask(policy, q)
    assert not d.allow
    if q[0] in ROLES and q[3] in PURPOSES and q[1] in ("match", "contribute", "revoke"):
        assert d.reasons == ("DENY_PROHIBITED_KIND",)


@PROPERTY_SETTINGS
@given(policies(), queries, st.sampled_from(("role", "purpose", "kind")), st.text(max_size=12))
def test_unknown_role_purpose_or_kind_is_refused(
    policy: Policy,
    q: tuple[str, str, str, str, str | None],
    which: str,
    name: str,
) -> None:
    role, action, kind, purpose, case = q
    if which == "role":
        role = "zz-" + name
    elif which == "purpose":
        purpose = "zz-" + name
    else:
        kind = "zz-" + name
    d = _ask(policy, (role, action, kind, purpose, case))
    assert not d.allow
    assert d.disclosure == Disclosure.NONE


@PROPERTY_SETTINGS
@given(policies(), rules("new-"), st.data())
def test_adding_a_rule_never_changes_another_roles_decision(
    policy: Policy, rule: Rule, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(policy.layers) - 1))
    layer = policy.layers[position]
    layers = list(policy.layers)
    layers[position] = replace(layer, rules=(*layer.rules, rule))
    try:
        bigger = Policy(layers)
    except PolicyError:
        return  # the new rule overlaps an existing one: that policy does not exist
    others = [r for r in ROLES if r not in rule.roles]
    for role in others:
        for action in ACTIONS:
            for kind in (*TIER_TABLE, AUDIT_KIND):
                for purpose in PURPOSES:
                    for case in (None, "CASE-1"):
                        q = (role, action, kind, purpose, case)
                        before, after = _ask(policy, q), _ask(bigger, q)
                        assert replace(after, version="") == replace(before, version="")


@PROPERTY_SETTINGS
@given(policies(), st.lists(rules("extra-"), max_size=4), queries)
def test_an_override_layer_never_loosens(
    policy: Policy, extra: list[Rule], q: tuple[str, str, str, str, str | None]
) -> None:
    override = _layer("extra", extra, base=False)
    stricter = Policy([*policy.layers, override])
    before, after = _ask(policy, q), _ask(stricter, q)
    if after.allow:
        assert before.allow
        assert after.disclosure <= before.disclosure
        assert after.obligations.min_contributors >= before.obligations.min_contributors
        assert (
            after.obligations.case_reference_required >= before.obligations.case_reference_required
        )
        assert after.obligations.attribution_allowed <= before.obligations.attribution_allowed


def _every_query() -> list[tuple[str, str, str, str, str | None]]:
    return [
        (role, action, kind, purpose, case)
        for role in ROLES
        for action in ACTIONS
        for kind in (*TIER_TABLE, AUDIT_KIND)
        for purpose in PURPOSES
        for case in (None, "CASE-1")
    ]


def _looser(value: int | None, bound: int | None) -> bool:
    """Is the limit ``value`` (None: unlimited) looser than ``bound``?"""
    return bound is not None and (value is None or value > bound)


@PROPERTY_SETTINGS
@given(
    policies(),
    st.lists(rules("extra-"), max_size=4),
    st.dictionaries(st.sampled_from(OPEN_KINDS), st.sampled_from(OPEN_TIERS), max_size=3),
)
def test_an_override_never_loosens_any_decision(
    policy: Policy, extra: list[Rule], moves: dict[str, str]
) -> None:
    """Rules AND tier moves of an override: over every query, nothing gets looser.

    (A move to a less strict tier is ignored by composition, so any move is drawn.)
    """
    override = replace(_layer("extra", extra, base=False), tiers=moves)
    stricter = Policy([*policy.layers, override])
    for q in _every_query():
        before, after = _ask(policy, q), _ask(stricter, q)
        if not after.allow:
            continue
        assert before.allow, q
        assert after.disclosure <= before.disclosure, q
        b, a = before.obligations, after.obligations
        assert a.min_contributors >= b.min_contributors, q
        assert a.case_reference_required >= b.case_reference_required, q
        assert a.attribution_allowed <= b.attribution_allowed, q
        assert not _looser(a.daily_quota, b.daily_quota), q
        assert not _looser(a.retention_days, b.retention_days), q


def test_moving_a_kind_to_a_stricter_tier_does_not_bring_that_tiers_grants() -> None:
    """The operator grants banks a count on sensitive kinds and nothing on phones;
    a regulator who moves phones to sensitive must not open them to banks."""
    base = _base_layer(
        (
            Rule(
                id="sens",
                action="match",
                roles=frozenset({"r1"}),
                purposes=frozenset({"p1"}),
                effect="allow",
                tiers=frozenset({"sensitive"}),
                kinds=frozenset(),
                disclosure=Disclosure.COUNT,
            ),
        )
    )
    moved = PolicyLayer("reg", (), tiers={"c1": "sensitive"})
    for layers in ([base], [base, moved]):
        decision = Policy(layers).decide(Principal("i", "r1"), "match", "c1", "p1", Context(None))
        assert not decision.allow and decision.reasons == ("DENY_NO_RULE",)
    assert Policy([base, moved]).tier_of("c1") == "sensitive"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))
def test_decide_never_raises(role: str, action: str, kind: str, purpose: str) -> None:
    policy = load_policy(MINIMAL)
    d = policy.decide(Principal("i", role), action, kind, purpose, Context(None))
    assert d.reasons and d.version == policy.version
