"""A key holder's own registry (hub.keyholder.admission) and its CLI, without servers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from client_sdk.core.errors import ConfigurationError, PermissionDenied, QuotaExhausted
from client_sdk.wire.auth import generate_key, public_key_bytes
from hub.cli import main
from hub.keyholder.admission import (
    REGISTRY_FILENAME,
    HolderRegistry,
    admit,
    fingerprint,
    load_admissions,
    review_proposal,
    set_disabled,
    set_quota,
)
from hub.keyholder.server import QuotaLedger
from hub.wire.auth import Institution, dump_registry

HOLDER = "holder-1.fraudhub.internal"


def _institution(institution_id: str, role: str = "bank", disabled: bool = False) -> Institution:
    return Institution(
        institution_id, institution_id, role, public_key_bytes(generate_key()), disabled
    )


def test_an_empty_holder_admits_no_one(tmp_path: Path) -> None:
    registry = HolderRegistry(tmp_path, HOLDER)
    with pytest.raises(PermissionDenied) as info:
        registry.lookup("bank-a")
    assert str(info.value).startswith(
        f"institution 'bank-a' is not admitted by key holder {HOLDER}"
    )


def test_admissions_take_effect_without_a_restart(tmp_path: Path) -> None:
    registry = HolderRegistry(tmp_path, HOLDER)
    bank = _institution("bank-a")
    admit(tmp_path, bank, daily_quota=7)
    assert registry.lookup("bank-a") == bank
    assert registry.daily_quota("bank-a") == 7
    set_quota(tmp_path, "bank-a", 9)
    set_disabled(tmp_path, "bank-a", True)
    assert registry.daily_quota("bank-a") == 9
    assert registry.lookup("bank-a").disabled
    set_disabled(tmp_path, "bank-a", False)
    assert not registry.lookup("bank-a").disabled


def test_a_second_admission_of_an_id_is_refused(tmp_path: Path) -> None:
    admit(tmp_path, _institution("bank-a"), daily_quota=1)
    with pytest.raises(ConfigurationError, match="already admitted"):
        admit(tmp_path, _institution("bank-a"), daily_quota=1)
    with pytest.raises(ConfigurationError, match="not admitted by this key holder"):
        set_disabled(tmp_path, "bank-z", True)


def test_a_broken_file_keeps_the_last_good_registry(tmp_path: Path) -> None:
    admit(tmp_path, _institution("bank-a"), daily_quota=1)
    registry = HolderRegistry(tmp_path, HOLDER)
    path = tmp_path / REGISTRY_FILENAME
    path.write_text(path.read_text().replace('"daily_quota": 1', '"daily_quota": "lots"'))
    assert registry.lookup("bank-a").id == "bank-a"
    with pytest.raises(ConfigurationError, match=r"institutions\[0\]\.daily_quota"):
        HolderRegistry(tmp_path, HOLDER)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("format"), "format must be"),
        (lambda d: d["institutions"][0].update(daily_quota=0), "at least 1 element"),
        (lambda d: d["institutions"][0].update(daily_quota=True), "whole number"),
        (lambda d: d["institutions"][0].update(role="king"), "role must be one of"),
    ],
)
def test_invalid_registries_name_the_field(tmp_path: Path, change: object, message: str) -> None:
    admit(tmp_path, _institution("bank-a"), daily_quota=1)
    path = tmp_path / REGISTRY_FILENAME
    data = json.loads(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match=message):
        load_admissions(tmp_path)


def test_quota_is_charged_against_each_institutions_own_limit(tmp_path: Path) -> None:
    admit(tmp_path, _institution("bank-a"), daily_quota=3)
    admit(tmp_path, _institution("bank-b"), daily_quota=10)
    registry = HolderRegistry(tmp_path, HOLDER)
    ledger = QuotaLedger(tmp_path / "quota.sqlite3", 1, limits=registry.quota_limits)
    ledger.charge("bank-a", 3)
    ledger.charge("bank-b", 10)
    with pytest.raises(QuotaExhausted, match="of 3 elements"):
        ledger.charge("bank-a", 1)
    ledger.close()


def test_the_hubs_export_is_reviewed_as_a_proposal(tmp_path: Path) -> None:
    mine = _institution("bank-a")
    admit(tmp_path, mine, daily_quota=5)
    admit(tmp_path, _institution("bank-b"), daily_quota=5)
    swapped_key = _institution("bank-b")
    export = dump_registry(
        [mine, swapped_key, _institution("new-bank"), _institution("old-bank", disabled=True)]
    )
    proposal = review_proposal(tmp_path, export, "export.json")
    assert [i.id for i in proposal.new] == ["new-bank"]
    assert [(i.id, reason) for i, reason in proposal.conflicts] == [
        ("bank-b", "its key differs from the one admitted here")
    ]
    assert proposal.unchanged == ("bank-a",)
    assert proposal.skipped_disabled == ("old-bank",)
    assert {a.institution.id for a in load_admissions(tmp_path)} == {"bank-a", "bank-b"}


def test_import_proposal_admits_only_with_yes_and_never_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "holder"
    kept = _institution("bank-b")
    admit(state, kept, daily_quota=5)
    new = _institution("new-bank")
    export = tmp_path / "export.json"
    export.write_text(dump_registry([new, _institution("bank-b")]))
    command = ["keyholder", "institution", "import-proposal", "--state-dir", str(state)]
    assert main([*command, str(export)]) == 0
    out = capsys.readouterr().out
    assert f"would admit  new-bank (bank), key {fingerprint(new.public_key)}" in out
    assert "conflict     bank-b: its key differs" in out and "NOT admitted" in out
    assert {a.institution.id for a in load_admissions(state)} == {"bank-b"}
    reviewed = _reviewed(out)
    assert (
        main([*command, str(export), "--yes", "--reviewed", reviewed, "--daily-quota", "40"]) == 0
    )
    admitted = {a.institution.id: a for a in load_admissions(state)}
    assert admitted["new-bank"].daily_quota == 40
    assert admitted["bank-b"].institution == kept


def _reviewed(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("proposal fingerprint ")]
    return line.split()[-1]


def test_import_proposal_admits_only_what_was_reviewed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Review finding R4: the hub's operator, who writes the export, swaps it
    # between the holder operator's review and the `--yes` run.
    state = tmp_path / "holder"
    export = tmp_path / "export.json"
    export.write_text(dump_registry([_institution("bank-n")]))
    command = ["keyholder", "institution", "import-proposal", "--state-dir", str(state)]
    assert main([*command, str(export)]) == 0
    reviewed = _reviewed(capsys.readouterr().out)
    export.write_text(dump_registry([_institution("bank-n"), _institution("shadow-bank")]))
    assert main([*command, str(export), "--yes", "--reviewed", reviewed]) == 2
    assert "nothing admitted" in capsys.readouterr().err
    assert main([*command, str(export), "--yes"]) == 2  # --yes alone names no review
    assert load_admissions(state) == []
    # The same id with another key is another proposal too.
    export.write_text(dump_registry([_institution("bank-n")]))
    assert main([*command, str(export), "--yes", "--reviewed", reviewed]) == 2
    assert load_admissions(state) == []


def test_cli_add_list_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "holder")
    key = tmp_path / "bank-a.pem"
    assert main(["institution", "keygen", "--out", str(key)]) == 0
    add = ["keyholder", "institution", "add", "--state-dir", state, "--id", "bank-a"]
    assert main([*add, "--role", "bank", "--public-key-file", f"{key}.pub"]) == 0
    assert main([*add, "--role", "bank", "--public-key-file", f"{key}.pub"]) == 2
    assert main([*add[:-2], "--id", "bad-key", "--role", "bank", "--public-key", "AAAA"]) == 2
    capsys.readouterr()
    assert main(["keyholder", "institution", "list", "--state-dir", state]) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert row.split()[:5] == ["bank-a", "bank", "enabled", "200000", "2000000"]
    assert oct(os.stat(state).st_mode & 0o777) == oct(0o700)


def test_fingerprints_are_short_and_differ() -> None:
    a, b = public_key_bytes(generate_key()), public_key_bytes(generate_key())
    assert len(fingerprint(a)) == 39 and fingerprint(a) != fingerprint(b)
