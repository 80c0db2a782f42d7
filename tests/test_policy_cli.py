"""``fraudhub policy check | test | explain`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub import cli
from hub.policy.reader import load_policy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = str(ROOT / "policies" / "default.yaml")
SCENARIOS = str(ROOT / "policies" / "default.scenarios.yaml")
FIXTURES = ROOT / "tests" / "data" / "policies"
MINIMAL = str(FIXTURES / "minimal.yaml")
OVERRIDE = str(FIXTURES / "regulator_override.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(["policy", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_policy_group_is_registered() -> None:
    assert "hub.cli.policy" in cli.COMMAND_MODULES


def test_check_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "check", DEFAULT)
    assert (status, err) == (0, "")
    assert f"version: {load_policy(DEFAULT).version}" in out
    assert "prohibited 5, sensitive 3, context_dependent 5, public 3" in out


def test_check_json_with_an_override(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "check", MINIMAL, OVERRIDE, "--format", "json")
    assert status == 0
    summary = json.loads(out)
    assert summary["version"] == load_policy(MINIMAL, OVERRIDE).version
    assert summary["files"] == [MINIMAL, OVERRIDE]
    assert summary["tiers"]["prohibited"] == ["health", "health_code"]
    assert "phone" in summary["tiers"]["sensitive"]


def test_check_reports_file_line_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    broken = str(FIXTURES / "disclosure_none.yaml")
    status, out, err = run(capsys, "check", broken)
    assert status == 2
    assert out == ""
    assert err.strip() == (
        f"fraudhub policy: error: {broken}:17: rules[0].disclosure: "
        "use effect: deny to refuse a match"
    )


def test_test_runs_the_default_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "test", DEFAULT, SCENARIOS)
    assert status == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("82 scenarios, 82 passed, 0 failed; policy version ")
    assert "FAIL" not in out


def test_test_with_an_override(capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = str(FIXTURES / "composed.scenarios.yaml")
    status, out, _ = run(capsys, "test", MINIMAL, scenarios, "--override", OVERRIDE)
    assert status == 0, out
    # Without the override the same table fails: it really tests the composition.
    status, out, _ = run(capsys, "test", MINIMAL, scenarios)
    assert status == 1
    assert "3 scenarios, 0 passed, 3 failed" in out


def test_test_reports_failures_with_their_line(capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = str(FIXTURES / "wrong.scenarios.yaml")
    status, out, _ = run(capsys, "test", MINIMAL, scenarios)
    assert status == 1
    assert f"FAIL  deliberately wrong expectation ({scenarios}:11)" in out
    assert "disclosure: expected labels, got count" in out
    assert "obligations.min_contributors: expected 1, got 2" in out
    assert "2 scenarios, 1 passed, 1 failed" in out


def test_explain_json_allow(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys,
        "explain",
        "--policy",
        DEFAULT,
        "--role",
        "bank",
        "--purpose",
        "fraud_investigation",
        "--kind",
        "national_id",
        "--case-reference",
        "CASE-SECRET-42",
        "--format",
        "json",
    )
    assert status == 0
    doc = json.loads(out)
    assert doc["allow"] is True
    assert doc["disclosure"] == "count"
    assert doc["reasons"] == ["ALLOW_RULE:investigation-sensitive"]
    assert doc["obligations"]["min_contributors"] == 2
    assert doc["obligations"]["case_reference_required"] is True
    assert doc["version"] == load_policy(DEFAULT).version
    assert doc["tier"] == "sensitive"
    assert doc["request"]["case_reference_given"] is True
    # The case reference itself is never echoed.
    assert "CASE-SECRET-42" not in out


def test_explain_json_deny_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys,
        "explain",
        "--policy",
        DEFAULT,
        "--role",
        "bank",
        "--purpose",
        "payment_screening",
        "--kind",
        "health",
        "--action",
        "contribute",
        "--format",
        "json",
    )
    assert status == 1
    doc = json.loads(out)
    assert (doc["allow"], doc["disclosure"], doc["reasons"]) == (
        False,
        "none",
        ["DENY_PROHIBITED_KIND"],
    )
    assert doc["explanations"] == [
        "refused: the kind is in the prohibited tier and is never stored or matched"
    ]


def test_explain_text_with_override(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys,
        "explain",
        "--policy",
        MINIMAL,
        "--policy",
        OVERRIDE,
        "--role",
        "bank",
        "--purpose",
        "payment_screening",
        "--kind",
        "bank_account",
        "--case-reference",
        "C-1",
    )
    assert status == 0
    assert "decision: allow (disclosure match)" in out
    assert "LIMIT_RULE:reg-sensitive: narrowed by override rule reg-sensitive" in out
    assert "min_contributors: 3" in out
    assert f"version: {load_policy(MINIMAL, OVERRIDE).version}" in out


def test_explain_audit_needs_no_kind(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--policy", DEFAULT, "--purpose", "audit", "--action", "audit"]
    status, out, _ = run(capsys, *argv, "--role", "regulator")
    assert status == 0
    assert "ALLOW_RULE:regulator-audit" in out
    status, out, _ = run(capsys, *argv, "--role", "bank")
    assert status == 1
    assert "DENY_NO_RULE" in out


def test_explain_missing_policy_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    absent = str(tmp_path / "nope.yaml")
    status, _, err = run(
        capsys, "explain", "--policy", absent, "--role", "bank", "--purpose", "p", "--kind", "url"
    )
    assert status == 2
    assert f"{absent}:1: (file): cannot read" in err
