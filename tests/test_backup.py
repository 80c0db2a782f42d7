"""``fraudhub db status|upgrade`` on SQLite and PostgreSQL, and ``fraudhub backup``
then ``restore`` of a running hub, which ``audit verify`` accepts afterwards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _audit_hub import RunningHub
from alembic import command

from hub.cli import main
from hub.cli.backup import MANIFEST
from hub.services.config import HubConfig
from hub.services.server import HubServer
from hub.storage.store import SQLITE_FILENAME, Store, alembic_config


def test_db_status_and_upgrade(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "missing"
    # A mistyped data dir is refused, and nothing is created.
    for action in ("status", "upgrade"):
        assert main(["db", action, "--data-dir", str(data)]) == 2
        assert "no hub database at" in capsys.readouterr().err
    assert not data.exists()
    store = Store(database_url)
    with store.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0003")  # an older release's schema
    current, head = store.revisions()
    store.dispose()
    assert (current, head != "0003") == ("0003", True)
    options = ["--data-dir", str(tmp_path), "--database-url", database_url]
    assert main(["db", "status", *options]) == 3
    out = capsys.readouterr().out
    assert f"schema revision: 0003 (this version: {head})" in out
    assert "upgrade pending" in out
    assert main(["db", "upgrade", *options]) == 0
    assert f"upgraded from revision 0003 to {head}" in capsys.readouterr().out
    assert main(["db", "status", *options]) == 0
    assert capsys.readouterr().out.endswith("up to date\n")
    assert main(["db", "upgrade", *options]) == 0
    assert f"already at revision {head}" in capsys.readouterr().out


def test_db_status_hides_the_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://fraudhub:hunter2@127.0.0.1:1/none?connect_timeout=1"
    assert main(["db", "status", "--data-dir", str(tmp_path), "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "database failed" in err


@pytest.mark.e2e
def test_backup_of_a_running_hub_restores_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = RunningHub(tmp_path, capsys)
    backup = tmp_path / "backup"
    at_backup = tmp_path / "state-at-backup.json"
    try:
        hub.traffic(3)
        assert hub.verify()[0] == 0
        shutil.copyfile(hub.state, at_backup)  # the regulator's verified state, then
        data = str(hub.config.data_dir)
        assert main(["backup", "--data-dir", data, "--to", str(backup)]) == 0
        assert "backed up" in capsys.readouterr().out
        # Not over an existing backup, not inside the data dir.
        assert main(["backup", "--data-dir", data, "--to", str(backup)]) == 2
        assert main(["backup", "--data-dir", data, "--to", f"{data}/b"]) == 2
        hub.traffic(2)  # writes the backup does not hold
        assert hub.verify()[0] == 0
    finally:
        hub.stop()
    manifest = json.loads((backup / MANIFEST).read_text())
    assert {SQLITE_FILENAME, "log-key.pem"} <= set(manifest["files"])
    assert not any(name.endswith(("-wal", "-shm")) for name in manifest["files"])
    assert manifest["audit_log_size"] >= 3 + 1
    # A tampered backup is refused before anything is written.
    fresh = tmp_path / "restored"
    (backup / "log-key.pem").write_bytes((backup / "log-key.pem").read_bytes() + b"\n")
    assert main(["restore", "--from", str(backup), "--data-dir", str(fresh)]) == 2
    assert "changed since the backup" in capsys.readouterr().err
    assert not fresh.exists()
    (backup / "log-key.pem").write_bytes((backup / "log-key.pem").read_bytes()[:-1])
    assert main(["restore", "--from", str(backup), "--data-dir", str(fresh)]) == 0
    # The hub on the restored directory: the same log key, the log as of the backup.
    restored = HubServer(HubConfig(data_dir=fresh, public_key=hub.config.public_key,
                                   listen="127.0.0.1:0", insecure=True))  # fmt: skip
    hub.server, hub.port = restored, restored.start()
    try:
        after_backup = tmp_path / "state-after-backup.json"
        shutil.copyfile(hub.state, after_backup)
        # A state saved at backup time verifies against the restored log...
        shutil.copyfile(at_backup, hub.state)
        status, out = hub.verify()
        assert status == 0, out
        # ... and a state saved after the backup sees that the restore lost events
        # (the restored log has since grown a different branch: a rewrite).
        shutil.copyfile(after_backup, hub.state)
        status, out = hub.verify()
        assert status == 1
        assert "rewritten log" in out or "truncated log" in out, out
    finally:
        restored.stop(0)
