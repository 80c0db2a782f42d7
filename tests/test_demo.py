"""``fraudhub demo`` as a user runs it: a subprocess, a new data directory, exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e  # runs fraudhub as a subprocess


def run_fraudhub(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "protos"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_runs_every_step_and_exits_0(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    done = run_fraudhub("demo", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for step in (
        "1. Registering institutions",
        "2. Banks contribute",
        "3. carrier-x screens its subscribers",
        "4. bank-a revokes one indicator",
        "5. regulator-r verifies the audit log over the Audit service",
        "6. bank-a watches its customers (customer_monitoring); carrier-x reports one of them",
        "Demo finished: every step checked.",
    ):
        assert step in out
    # The watch step: the later report raised an alert mapped to bank-a's own reference.
    assert re.search(r"alert #\d+ for bank-a: new phone CUST-0003 \(summary: scam_phone, 1 ", out)
    assert "13700004321" not in out and "137 0000 4321" not in out
    assert "FAILED" not in out and "ok: a value reported by both banks matches" in out
    assert "ok: cosigned by 3 key holder witnesses: fraudhub/keyholder-1/witness" in out
    # One table row per subscriber, by reference only.
    rows = [
        line for line in out.splitlines() if re.match(r"\s+SUB-\d+ +(phone|national_id|url) ", line)
    ]
    assert len(rows) == 10 + 1  # the screening, then the revoked subscriber again
    assert "13800138000" not in out and "110101198503121239" not in out
    assert "ok: shadow-bank, registered only at the hub, is refused by the holders" in out
    # The data directory holds the servers' state and logs, nothing of the clients;
    # each party has its own directory and the hub's holds no key of a holder.
    assert sorted(p.name for p in data_dir.iterdir()) == ["holders", "hub"]
    hub_dir, holders_dir = data_dir / "hub", data_dir / "holders"
    assert sorted(p.name for p in hub_dir.iterdir()) == [
        "hub.sqlite3",
        "log-key.pem",
        "logs",
        "tls",
        "witness-client.pem",
    ]
    assert sorted(p.name for p in (hub_dir / "tls").iterdir()) == ["ca.pem", "hub.key", "hub.pem"]
    assert sorted(p.name for p in holders_dir.iterdir()) == [
        "holder-1",
        "holder-2",
        "holder-3",
        "keys",
    ]
    for i in (1, 2, 3):
        tls = holders_dir / f"holder-{i}" / "tls"
        assert sorted(p.name for p in tls.iterdir()) == ["ca.pem", "keyholder.key", "keyholder.pem"]
    json_files = {str(p.relative_to(data_dir)) for p in data_dir.rglob("*.json")}
    assert json_files == {"holders/keys/public.json"} | {
        f"holders/{name}" for i in (1, 2, 3)
        for name in (f"keys/share-{i}.json", f"holder-{i}/admitted.json", f"holder-{i}/holder.json")
    }  # fmt: skip
    assert not list(data_dir.rglob("bank-*")) and not list(data_dir.rglob("carrier-*"))


def test_demo_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    done = run_fraudhub("demo", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "not empty" in done.stderr
