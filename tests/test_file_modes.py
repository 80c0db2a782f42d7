"""State files are created mode 0600 in 0700 directories, whatever the umask lets
through: the hub's database with its WAL and SHM, the log key, key holder state,
key shares, exported registries, the regulator's verified state."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk.wire.auth import generate_key, public_key_b64, public_key_bytes
from hub.cli import main
from hub.infra.privatefiles import write_private_atomically
from hub.keyholder.admission import admit
from hub.keyholder.ceremony import deal_to_directory
from hub.keyholder.server import QuotaLedger, SeenTokenFile
from hub.keyholder.witness import open_witness
from hub.services.audit import log_signer
from hub.storage import auditlog
from hub.storage.store import SQLITE_FILENAME, Store, sqlite_url
from hub.wire.auth import Institution


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    # The common default, which left hub.sqlite3 world-readable (0644).
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_hub_database_wal_shm_and_log_key_are_private(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "hub"
    store = Store(sqlite_url(data))
    store.migrate()
    with store.session() as session:  # a write, so the WAL and SHM exist
        assert auditlog.tree_size(session) == 0
    log_signer(data)
    names = {p.name for p in data.iterdir()}
    assert {SQLITE_FILENAME, f"{SQLITE_FILENAME}-wal", f"{SQLITE_FILENAME}-shm"} <= names
    for path in data.iterdir():
        assert mode(path) == 0o600, path.name
    assert mode(data) == 0o700 and mode(data.parent) == 0o700
    store.dispose()


def test_key_holder_state_and_shares_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    quota = QuotaLedger(state / "quota.sqlite3", 10)
    quota.charge("bank-a", 1)
    seen = SeenTokenFile(state / "seen-tokens.sqlite3")
    _, witness_state = open_witness(state, "w.test/witness", [])
    bank = Institution("bank-a", "Bank A", "bank", public_key_bytes(generate_key()))
    admit(state, bank, daily_quota=10)  # the holder's own registry
    try:
        assert mode(state) == 0o700
        assert (state / "admitted.json").exists()
        for path in state.iterdir():
            assert mode(path) == 0o600, path.name
    finally:
        quota.close()
        seen.close()
        witness_state.close()
    shares, _ = deal_to_directory(2, 3, tmp_path / "keys")
    assert mode(tmp_path / "keys") == 0o700
    assert {mode(p) for p in shares} == {0o600}


def test_exported_registry_and_regulator_state_are_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "hub")]
    key = public_key_b64(generate_key())
    assert (
        main(["institution", "add", *data, "--id", "b", "--role", "bank", "--public-key", key]) == 0
    )
    out = tmp_path / "registry.json"
    assert main(["institution", "export", *data, "--out", str(out)]) == 0
    assert mode(out) == 0o600
    state = tmp_path / "regulator" / "audit-state.json"
    write_private_atomically(state, "{}")
    assert mode(state) == 0o600 and mode(state.parent) == 0o700
