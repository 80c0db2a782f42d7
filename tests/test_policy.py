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

from client_sdk.core.errors import InvalidRequest, PolicyError
from hub.policy import reader
from hub.policy.engine import Policy, decide
from hub.policy.model import (
    ACTIONS,
    AUDIT_KIND,
    REASON_TEXT,
    Context,
    Disclosure,
    Obligations,
    PolicyLayer,
    Principal,
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
