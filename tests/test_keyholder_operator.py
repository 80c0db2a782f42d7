"""Issue 12: the operator may evaluate (it tokenizes the warning lists), under a small quota."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_sdk.core.errors import QuotaExhausted
from hub.keyholder.server import METHOD_ROLES, OPERATOR_DAILY_QUOTA, SERVICE_NAME, QuotaLedger


def test_operator_may_evaluate_but_regulator_may_not() -> None:
    roles = METHOD_ROLES[f"/{SERVICE_NAME}/BlindEvaluate"]
    assert "operator" in roles and "regulator" not in roles


def test_a_smaller_limit_caps_the_daily_quota(tmp_path: Path) -> None:
    ledger = QuotaLedger(tmp_path / "quota.sqlite3", 5_000_000, today=lambda: "2026-12-01")
    ledger.charge("hub-operator", OPERATOR_DAILY_QUOTA, cap=OPERATOR_DAILY_QUOTA)
    with pytest.raises(QuotaExhausted):
        ledger.charge("hub-operator", 1, cap=OPERATOR_DAILY_QUOTA)
    ledger.charge("bank-a", OPERATOR_DAILY_QUOTA + 1)  # others keep the full quota
    assert ledger.used("bank-a") == OPERATOR_DAILY_QUOTA + 1
    ledger.close()
