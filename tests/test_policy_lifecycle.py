"""Issue 12's policy additions: min_evidence, the decay section, sighting and warninglist
rules (schema errors with file:line: field, and decisions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from client_sdk.core.errors import PolicyError
from hub.core import matching
from hub.core.matching import Sighting
from hub.policy.engine import Policy
from hub.policy.model import Disclosure, Principal
from hub.policy.reader import load_policy, parse_layer

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = (ROOT / "tests" / "data" / "policies" / "minimal.yaml").read_text(encoding="utf-8")
BANK = Principal("bank-a", "bank")
NOW = datetime(2026, 12, 1, tzinfo=UTC)

DECAY = """
decay:
  default: {lifetime_days: 730, decay_speed: 1, threshold: 0, source: linear}
  models:
    - name: vishing
      kinds: [phone]
      lifetime_days: 10
      decay_speed: 2.3
      threshold: 30
      source: MISP vishing
"""


def layer(extra: str = "", rules: str = "") -> Policy:
    return Policy(
        [parse_layer(MINIMAL.replace("rules:\n", extra + "rules:\n" + rules, 1), "p.yaml")]
    )


def error_of(extra: str = "", rules: str = "") -> str:
    with pytest.raises(PolicyError) as caught:
        layer(extra, rules)
    return str(caught.value)


def test_decay_models_are_read_per_kind_with_a_default() -> None:
    policy = layer(DECAY)
    phone = policy.decay_model("phone")
    assert phone is not None and (phone.lifetime_days, phone.decay_speed, phone.threshold) == (
        10,
        2.3,
        30,
    )
    assert phone.source == "MISP vishing"
    default = policy.decay_model("url")
    assert default is not None and default.name == "default"
    assert layer().decay_model("phone") is None
    # Decay models are policy data: they change the version.
    assert layer(DECAY).version != layer().version


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (DECAY.replace("lifetime_days: 10", "lifetime_days: 0"), "must be greater than 0"),
        (
            DECAY.replace("threshold: 30", "threshold: 101"),
            "decay.models[0].threshold: must be at most 100",
        ),
        (DECAY.replace("kinds: [phone]", "kinds: [fax]"), "undeclared kind 'fax'"),
        (DECAY.replace("kinds: [phone]", "kinds: [health]"), "never stored, so never scored"),
        (DECAY.replace("      source: MISP vishing\n", ""), "decay.models[0].source: required"),
        (DECAY.replace("kinds: [phone]", "kinds: [phone]\n      colour: red"), "unknown key"),
        (
            DECAY + "    - name: again\n      kinds: [phone]\n      lifetime_days: 1\n"
            "      decay_speed: 1\n      threshold: 0\n      source: x\n",
            "already decays by model",
        ),
    ],
)
def test_decay_errors_name_file_line_and_field(section: str, message: str) -> None:
    error = error_of(section)
    assert error.startswith("p.yaml:") and message in error


def test_an_override_may_not_set_decay() -> None:
    base = parse_layer(MINIMAL, "p.yaml")
    override = "format: fraudhub-policy/1\nname: o\n" + DECAY + "rules: []\n"
    with pytest.raises(PolicyError, match="only the operator's policy sets decay models"):
        parse_layer(override, "o.yaml", override=True, before=[base])


def test_min_evidence_is_read_and_checked() -> None:
    rule = """  - id: contribute-url
    action: contribute
    roles: [regulator]
    purposes: [fraud_investigation]
    kinds: [url]
    retention_days: 30
    min_evidence: police_case
    legal_basis: b
"""
    policy = layer(rules=rule)
    decision = policy.decide(
        Principal("r", "regulator"), "contribute", "url", "fraud_investigation"
    )
    assert decision.allow and decision.obligations.min_evidence == "police_case"
    assert "expected one of suspected" in error_of(rules=rule.replace("police_case", "gossip"))
    # impersonation_victim is not a minimum: it accuses nobody.
    assert "expected one of" in error_of(rules=rule.replace("police_case", "impersonation_victim"))
    sensitive = rule.replace("kinds: [url]", "kinds: [national_id]").replace(
        "police_case", "suspected"
    )
    assert "rules[0].min_evidence: sensitive kinds are never filed as suspected" in error_of(
        rules=sensitive
    )


def test_sensitive_contributions_get_the_evidence_floor_without_a_rule_saying_so() -> None:
    policy = layer()
    sensitive = policy.decide(BANK, "contribute", "national_id", "fraud_investigation")
    public = policy.decide(BANK, "contribute", "url", "fraud_investigation")
    assert sensitive.obligations.min_evidence == "internal_investigation"
    assert public.obligations.min_evidence is None


def test_warninglist_rules_name_no_kind_and_sighting_rules_need_one() -> None:
    wl = """  - id: wl
    action: warninglist
    roles: [regulator]
    purposes: [audit]
    kinds: [phone]
    legal_basis: b
"""
    assert "warninglist rules cover every list and kind" in error_of(rules=wl)
    sighting = """  - id: s
    action: sighting
    roles: [bank]
    purposes: [payment_screening]
    legal_basis: b
"""
    assert "a sighting rule names exactly one of tiers, kinds" in error_of(rules=sighting)


def test_default_policy_has_the_misp_vishing_model() -> None:
    policy = load_policy(str(ROOT / "policies" / "default.yaml"))
    phone = policy.decay_model("phone")
    assert phone is not None and (phone.lifetime_days, phone.decay_speed, phone.threshold) == (
        10,
        2.3,
        30,
    )
    account = policy.decay_model("bank_account")
    assert account is not None and account.threshold == 0


# --- what counts toward a match ------------------------------------------------------------


def indicator(who: str, evidence: str, score: int | None = None) -> Sighting:
    return Sighting(who, "scam_phone", 80, NOW - timedelta(days=1), None, evidence, score)


def test_impersonation_victims_never_count_and_are_flagged_at_summary() -> None:
    only_victim = [indicator("bank-b", "impersonation_victim")]
    flagged = matching.aggregate(
        "bank-a", only_victim, disclosure=Disclosure.SUMMARY, min_contributors=1
    )
    assert not flagged.matched and flagged.impersonated and flagged.contributors == 0
    hidden = matching.aggregate(
        "bank-a", only_victim, disclosure=Disclosure.COUNT, min_contributors=1
    )
    assert not hidden.matched and not hidden.impersonated


def test_min_evidence_and_score_threshold_filter_what_counts() -> None:
    rows = [indicator("bank-b", "suspected", 90), indicator("bank-c", "police_case", 20)]
    weak_only = matching.aggregate(
        "bank-a",
        rows,
        disclosure=Disclosure.SUMMARY,
        min_contributors=1,
        min_evidence="victim_report",
    )
    assert weak_only.contributors == 1 and weak_only.evidence == ("police_case",)
    none_left = matching.aggregate(
        "bank-a",
        rows,
        disclosure=Disclosure.SUMMARY,
        min_contributors=1,
        min_evidence="victim_report",
        threshold=30,
    )
    assert not none_left.matched
    both = matching.aggregate("bank-a", rows, disclosure=Disclosure.SUMMARY, min_contributors=2)
    assert both.matched and both.score == 90 and both.evidence == ("suspected", "police_case")
