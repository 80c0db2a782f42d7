"""The tiered privacy policy (hub.policy: model, engine, reader, scenarios).

Three layers of tests: the scenario table of ``policies/default.yaml`` (one
test per row), the validator against the broken fixtures in
``tests/data/policies/`` (each fixture states the error it must produce and
marks the offending line with ``# <-- error``), and hypothesis properties over
generated policies.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core.errors import InvalidRequest, PolicyError
from hub.policy import reader
from hub.policy.engine import Policy, decide
from hub.policy.model import (
    ACTIONS,
    AUDIT_KIND,
    REASON_TEXT,
    Context,
    Decision,
    Disclosure,
    Obligations,
    PolicyLayer,
    Principal,
    Rule,
    explain_reason,
)
from hub.policy.reader import load_policy, parse_layer
from hub.policy.scenarios import Scenario, parse_scenarios, read_scenarios, run_scenarios

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = str(ROOT / "policies" / "default.yaml")
SCENARIOS = str(ROOT / "policies" / "default.scenarios.yaml")
FIXTURES = ROOT / "tests" / "data" / "policies"
MINIMAL = str(FIXTURES / "minimal.yaml")
OVERRIDE = str(FIXTURES / "regulator_override.yaml")

BANK = Principal("bank-a", "bank")
CARRIER = Principal("carrier-a", "carrier")
REGULATOR = Principal("regulator-a", "regulator")


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return load_policy(DEFAULT)


# --- the default policy's scenario table ----------------------------------------------------

_SCENARIOS = read_scenarios(SCENARIOS)


def test_scenario_table_is_large_and_covers_every_tier_and_action() -> None:
    assert len(_SCENARIOS) >= 40
    policy = load_policy(DEFAULT)
    tiers = {policy.tiers.get(s.kind, "") for s in _SCENARIOS}
    assert {"prohibited", "sensitive", "context_dependent", "public"} <= tiers
    assert set(ACTIONS) <= {s.action for s in _SCENARIOS}
    assert {True, False} == {s.expect["allow"] for s in _SCENARIOS}


@pytest.mark.parametrize("scenario", _SCENARIOS, ids=[s.name for s in _SCENARIOS])
def test_default_policy_scenario(default_policy: Policy, scenario: Scenario) -> None:
    (result,) = run_scenarios(default_policy, [scenario])
    assert result.mismatches == (), f"{SCENARIOS}:{result.scenario.line}"


def test_a_wrong_expectation_is_reported(default_policy: Policy) -> None:
    text = """
format: fraudhub-policy-scenarios/1
scenarios:
  - name: wrong on purpose
    role: bank
    action: match
    kind: bank_account
    purpose: payment_screening
    expect:
      allow: true
      disclosure: labels
      reasons: [DENY_NO_RULE]
      obligations: {min_contributors: 1}
"""
    (result,) = run_scenarios(default_policy, parse_scenarios(text))
    assert not result.passed
    assert result.mismatches == (
        "disclosure: expected labels, got count",
        "reasons: expected ['DENY_NO_RULE'], got ['ALLOW_RULE:bank-payment-accounts']",
        "obligations.min_contributors: expected 1, got 2",
    )


# --- requirements of the issue, stated directly against the default policy --------------------


def test_prohibited_kinds_are_never_stored_or_matched(default_policy: Policy) -> None:
    assert default_policy.prohibited_kinds == {
        "genetic",
        "health",
        "criminal_record",
        "biometric",
        "religion",
    }
    for kind in default_policy.prohibited_kinds:
        for role in default_policy.roles:
            for purpose in default_policy.purposes:
                for action in ("contribute", "match", "revoke"):
                    d = default_policy.decide(
                        Principal("x", role), action, kind, purpose, Context("CASE-1")
                    )
                    assert (d.allow, d.reasons) == (False, ("DENY_PROHIBITED_KIND",))


def test_sensitive_kinds_disclose_at_most_a_count_with_k_at_least_two(
    default_policy: Policy,
) -> None:
    sensitive = [k for k, t in default_policy.tiers.items() if t == "sensitive"]
    assert set(sensitive) == {"national_id", "bank_card", "bank_account"}
    allowed = 0
    for kind in sensitive:
        for role in default_policy.roles:
            for purpose in default_policy.purposes:
                d = default_policy.decide(
                    Principal("x", role), "match", kind, purpose, Context("CASE-1")
                )
                if d.allow:
                    allowed += 1
                    assert d.disclosure <= Disclosure.COUNT
                    assert d.obligations.min_contributors >= 2
                    assert not d.obligations.attribution_allowed
                screening = purpose.endswith("_screening")
                if d.allow and not screening:
                    # Outside the screening purposes a case reference is needed.
                    assert d.obligations.case_reference_required
                    bare = default_policy.decide(Principal("x", role), "match", kind, purpose)
                    assert bare.reasons == ("DENY_CASE_REFERENCE_REQUIRED",)
    assert allowed >= 5


def test_carrier_learns_more_about_phones_and_devices_than_id_numbers(
    default_policy: Policy,
) -> None:
    def level(kind: str) -> Disclosure:
        d = default_policy.decide(CARRIER, "match", kind, "sim_activation_screening")
        assert d.allow
        return d.disclosure

    assert level("phone") > level("national_id")
    assert level("device_id") > level("national_id")


def test_banks_screening_payments(default_policy: Policy) -> None:
    for kind in ("url", "domain", "wallet"):
        d = default_policy.decide(BANK, "match", kind, "payment_screening")
        assert d.disclosure == Disclosure.LABELS
    for kind in ("bank_account", "bank_card"):
        d = default_policy.decide(BANK, "match", kind, "payment_screening")
        assert d.allow and d.disclosure <= Disclosure.COUNT


def test_regulators_audit_but_do_not_screen(default_policy: Policy) -> None:
    assert default_policy.decide_audit(REGULATOR, "audit").allow
    for principal in (BANK, CARRIER, Principal("op", "operator")):
        assert not default_policy.decide_audit(principal, "audit").allow
    for purpose in default_policy.purposes:
        for kind in default_policy.kinds:
            assert not default_policy.decide(REGULATOR, "match", kind, purpose, Context("C")).allow


def test_module_level_decide_and_version(default_policy: Policy) -> None:
    d = decide(default_policy, BANK, "match", "url", "payment_screening")
    assert d == default_policy.decide(BANK, "match", "url", "payment_screening")
    assert re.fullmatch(r"[0-9a-f]{64}", d.version)
    assert d.version == default_policy.version
    assert default_policy.purposes == {
        "fraud_reporting",
        "fraud_investigation",
        "sim_activation_screening",
        "payment_screening",
        "account_opening_screening",
        "audit",
        "redress",
        "warninglist",
        "customer_monitoring",
    }


def test_tier_of(default_policy: Policy) -> None:
    assert default_policy.tier_of("phone") == "context_dependent"
    assert default_policy.tier_of("health") == "prohibited"
    with pytest.raises(InvalidRequest):
        default_policy.tier_of("licence_plate")


# --- versions ---------------------------------------------------------------------------------


def test_version_ignores_comments_and_layout_but_not_content() -> None:
    text = Path(DEFAULT).read_text(encoding="utf-8")
    base = Policy([parse_layer(text)])
    stripped = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert Policy([parse_layer(stripped + "\n\n")]).version == base.version
    changed = text.replace("retention_days: 180", "retention_days: 181")
    assert Policy([parse_layer(changed)]).version != base.version


def test_composed_version_differs_from_the_base() -> None:
    assert load_policy(MINIMAL, OVERRIDE).version != load_policy(MINIMAL).version
    assert load_policy(MINIMAL, OVERRIDE).version == load_policy(MINIMAL, OVERRIDE).version


# --- reasons ----------------------------------------------------------------------------------


def test_every_reason_code_has_readable_text() -> None:
    for code in REASON_TEXT:
        assert explain_reason(f"{code}:rule-x").strip()
    assert "bank-x" in explain_reason("ALLOW_RULE:bank-x")
    with pytest.raises(KeyError):
        explain_reason("NOT_A_CODE")


def test_no_decision_shows_labels_without_attribution(default_policy: Policy) -> None:
    granted = default_policy.decide(BANK, "match", "url", "payment_screening")
    assert granted.disclosure == Disclosure.LABELS and granted.obligations.attribution_allowed
    anonymous = replace(granted.obligations, attribution_allowed=False)
    with pytest.raises(ValueError, match="must allow attribution"):
        replace(granted, obligations=anonymous)
    assert replace(granted, obligations=anonymous, disclosure=Disclosure.SUMMARY).allow


def test_decision_to_dict_is_json_ready(default_policy: Policy) -> None:
    d = default_policy.decide(BANK, "match", "phone", "payment_screening")
    out = d.to_dict()
    assert out["allow"] is True
    # The rule says labels without attribution: labels name their writer, so summary.
    assert out["disclosure"] == "summary"
    assert out["reasons"] == ["ALLOW_RULE:bank-payment-context-dependent", "CAP_NO_ATTRIBUTION"]
    assert out["explanations"] == list(d.explanations)
    assert out["obligations"]["quota_bucket"] == "match/payment_screening/context_dependent"
    assert out["version"] == default_policy.version


# --- composition: stricter wins ------------------------------------------------------------


@pytest.fixture(scope="module")
def composed() -> Policy:
    return load_policy(MINIMAL, OVERRIDE)


def test_override_narrows_every_obligation(composed: Policy) -> None:
    d = composed.decide(BANK, "match", "bank_account", "payment_screening", Context("CASE-9"))
    assert d.allow
    assert d.disclosure == Disclosure.MATCH  # min(count, match)
    assert d.reasons == ("ALLOW_RULE:bank-sensitive", "LIMIT_RULE:reg-sensitive")
    assert d.obligations == Obligations(
        min_contributors=3,  # max(2, 3)
        daily_quota=500,  # min(1000, 500)
        quota_bucket="match/payment_screening/sensitive",
        retention_days=None,
        case_reference_required=True,  # False OR True
        attribution_allowed=False,
        legal_basis="test basis A; regulator basis B",
    )
    assert not composed.decide(BANK, "match", "bank_account", "payment_screening").allow


def test_override_cannot_loosen(composed: Policy) -> None:
    # The override's public rule says labels with k=1, as the base does; attribution is
    # ANDed, so the override takes it away, and labels without attribution are a summary.
    d = composed.decide(BANK, "match", "url", "payment_screening")
    assert d.obligations.attribution_allowed is False
    assert d.disclosure == Disclosure.SUMMARY and d.reasons[-1] == "CAP_NO_ATTRIBUTION"
    # A looser tier in the override is ignored: national_id stays sensitive.
    assert composed.tier_of("national_id") == "sensitive"
    # An override's allow rule cannot grant what the operator's policy does not.
    d = composed.decide(CARRIER, "match", "url", "audit")
    assert d.reasons == ("DENY_NO_RULE",)


def test_override_tiers_are_stricter(composed: Policy) -> None:
    # phone moved to sensitive: the operator's kind rule still matches it, and the override's
    # sensitive-tier rule now narrows it too.
    assert composed.tier_of("phone") == "sensitive"
    d = composed.decide(BANK, "match", "phone", "payment_screening", Context("CASE-9"))
    assert d.allow and d.disclosure == Disclosure.MATCH
    assert d.reasons == ("ALLOW_RULE:bank-phone", "LIMIT_RULE:reg-sensitive")
    # A new prohibited kind.
    assert composed.decide(BANK, "match", "health_code", "payment_screening").reasons == (
        "DENY_PROHIBITED_KIND",
    )


def test_override_deny_overrides_allow(composed: Policy) -> None:
    assert load_policy(MINIMAL).decide(CARRIER, "match", "url", "fraud_investigation").allow
    d = composed.decide(CARRIER, "match", "url", "fraud_investigation")
    assert (d.allow, d.reasons) == (False, ("DENY_RULE:reg-no-carrier-investigation",))
    assert d.rules == ("reg-no-carrier-investigation",)


def test_override_without_a_matching_rule_abstains(composed: Policy) -> None:
    d = composed.decide(REGULATOR, "audit", AUDIT_KIND, "audit")
    assert d.allow and d.reasons == ("ALLOW_RULE:audit",)


def test_override_may_narrow_roles_and_purposes() -> None:
    base = load_policy(MINIMAL).layers[0]
    override = PolicyLayer(
        source="override", rules=(), roles=frozenset({"bank", "regulator"}), purposes=None
    )
    policy = Policy([base, override])
    assert policy.roles == {"bank", "regulator"}
    d = policy.decide(CARRIER, "contribute", "url", "fraud_investigation")
    assert d.reasons == ("DENY_UNKNOWN_ROLE",)
    narrowed = Policy([base, replace(override, roles=None, purposes=frozenset({"audit"}))])
    d = narrowed.decide(BANK, "match", "url", "payment_screening")
    assert d.reasons == ("DENY_UNKNOWN_PURPOSE",)


def test_pure_core_refuses_bad_compositions() -> None:
    base = load_policy(MINIMAL).layers[0]
    with pytest.raises(PolicyError, match="at least the operator"):
        Policy([])
    with pytest.raises(PolicyError, match="must declare tiers, roles and purposes"):
        Policy([replace(base, roles=None)])
    with pytest.raises(PolicyError, match="cannot declare insurer"):
        Policy([base, PolicyLayer("o", (), roles=frozenset({"insurer"}))])
    with pytest.raises(PolicyError, match="only as prohibited"):
        Policy([base, PolicyLayer("o", (), tiers={"iban": "public"})])


# --- revoke and audit -------------------------------------------------------------------------


def test_revoke_follows_contribute_and_needs_no_case_reference(default_policy: Policy) -> None:
    for role in default_policy.roles:
        for kind in default_policy.kinds:
            may_contribute = any(
                default_policy.decide(
                    Principal("x", role), "contribute", kind, purpose, Context("C")
                ).allow
                for purpose in default_policy.purposes
            )
            revoke = default_policy.decide(Principal("x", role), "revoke", kind, "audit")
            assert revoke.allow == may_contribute
            if revoke.allow:
                assert revoke.disclosure == Disclosure.NONE
                assert revoke.obligations.daily_quota is None


def test_audit_takes_no_kind(default_policy: Policy) -> None:
    d = default_policy.decide(REGULATOR, "audit", "phone", "audit")
    assert d.reasons == ("DENY_AUDIT_KIND",)


# --- the validator against broken fixtures ----------------------------------------------------

_BROKEN = sorted(
    p for p in FIXTURES.glob("*.yaml") if p.read_text(encoding="utf-8").startswith("# expect: ")
)


def _expectation(path: Path) -> tuple[str, str | None, int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    expect = lines[0].removeprefix("# expect: ")
    base = next((ln.removeprefix("# base: ") for ln in lines if ln.startswith("# base: ")), None)
    marked = [i + 1 for i, ln in enumerate(lines) if "# <-- error" in ln]
    return expect, base, marked[0] if marked else 1


def test_there_are_many_broken_fixtures() -> None:
    assert len(_BROKEN) >= 30


@pytest.mark.parametrize("path", _BROKEN, ids=[p.stem for p in _BROKEN])
def test_broken_policy_is_refused_with_file_line_and_field(path: Path) -> None:
    expect, base, line = _expectation(path)
    paths = [str(FIXTURES / base), str(path)] if base else [str(path)]
    with pytest.raises(PolicyError) as info:
        load_policy(*paths)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expect in message


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(PolicyError, match=r"absent\.yaml:1: \(file\): cannot read"):
        load_policy(str(missing))
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy()


def test_override_needs_a_base() -> None:
    with pytest.raises(PolicyError, match="needs the operator's policy first"):
        parse_layer(Path(OVERRIDE).read_text(encoding="utf-8"), "o.yaml", override=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "format: x\nscenarios: []\n",
            "<string>:1: format: expected 'fraudhub-policy-scenarios/1'",
        ),
        (
            "format: fraudhub-policy-scenarios/1\nscenarios: []\n",
            "<string>:2: scenarios: expected a non-empty list",
        ),
        (
            "format: fraudhub-policy-scenarios/1\nscenarios:\n"
            "  - {name: a, role: b, action: m, kind: u, purpose: p, expect: {allow: true}}\n"
            "  - {name: a, role: b, action: m, kind: u, purpose: p, expect: {allow: true}}\n",
            "<string>:4: scenarios[1].name: duplicate scenario name (line 3)",
        ),
        (
            "format: fraudhub-policy-scenarios/1\nscenarios:\n"
            "  - {name: a, role: bank, action: match, kind: url, purpose: p,\n"
            "     expect: {allow: true, disclosure: all}}\n",
            "<string>:4: scenarios[0].expect.disclosure: unknown disclosure level",
        ),
        (
            "format: fraudhub-policy-scenarios/1\nscenarios:\n"
            "  - {name: a, role: bank, action: match, kind: url, purpose: p,\n"
            "     expect: {allow: true, obligations: {k: 2}}}\n",
            "<string>:4: scenarios[0].expect.obligations.k: unknown key",
        ),
    ],
)
def test_broken_scenarios_are_refused(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_scenarios(text)
    assert str(info.value).startswith(expected)


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


@pytest.mark.e2e
def test_engine_imports_neither_reader_nor_yaml() -> None:
    # The decision is pure: loading the engine (and the model) must not pull in
    # the YAML reader, so a process that only decides never parses files.
    code = (
        "import sys, hub.policy.engine, hub.policy.model; "
        "print(sorted(m for m in ('yaml', 'hub.policy.reader', 'hub.policy.scenarios') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_policy_modules_import_without_a_cycle() -> None:
    # Each module imports only the ones before it:
    # model <- engine <- lifecycle <- reader <- scenarios.
    order = ("model", "engine", "lifecycle", "reader", "scenarios")
    for position, name in enumerate(order):
        tree = ast.parse((ROOT / "hub" / "policy" / f"{name}.py").read_text())
        imported = {
            node.module.rsplit(".", 1)[1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module is not None
            and node.module.startswith("hub.policy.")
        }
        assert imported <= set(order[:position]), (name, imported)


def test_every_rule_key_has_a_reader_or_is_structural() -> None:
    # _parse_rule reads values from its table: a key accepted by the schema but
    # missing from the table would be silently dropped.
    structural = {"id", "effect", "action", "roles", "purposes", "tiers", "kinds"}
    assert set(reader._RULE_FIELDS) | structural == reader._ALL_RULE_KEYS
    assert not set(reader._RULE_FIELDS) & structural
    assert set(reader._ALLOW_REQUIRES) == set(reader._ALLOW_KEYS)
    for action, required in reader._ALLOW_REQUIRES.items():
        assert set(required) <= reader._ALLOW_KEYS[action]
