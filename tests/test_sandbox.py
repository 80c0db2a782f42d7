"""``fraudhub sandbox`` as a user runs it: a process that reports ready, serves the
written client configurations over TLS, and stops cleanly on SIGTERM or SIGINT;
and the state reuse it relies on (``LocalDeployment(reuse=True)``, ``enroll``)."""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import postgres_schema_url
from test_cli_pipe import run_into_closed_pipe
from test_demo import ROOT, run_fraudhub

from client_sdk.core.errors import ConfigurationError
from hub.devtools.deployment import LocalDeployment
from hub.devtools.sandbox import READY_PREFIX, SANDBOX_INSTITUTIONS

READY_WITHIN = 60.0
EXIT_WITHIN = 10.0


class Sandbox:
    """A ``python -m hub.cli sandbox`` process; stderr goes to a file (never blocks)."""

    def __init__(self, directory: Path, stderr_path: Path, database_url: str | None = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "protos"), str(ROOT)])
        self.stderr_path = stderr_path
        command = [sys.executable, "-m", "hub.cli", "sandbox", "--data-dir", str(directory)]
        if database_url is not None:
            command += ["--database-url", database_url]
        with stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._ready.set()
        self._ready.set()

    def wait_ready(self) -> str:
        """The first stdout line, within READY_WITHIN seconds."""
        if not self._ready.wait(READY_WITHIN) or not self.lines:
            self.process.kill()
            pytest.fail(f"no ready line; stderr:\n{self.stderr_path.read_text()}")
        return self.lines[0]

    def stop(self, signum: int) -> int:
        """Send ``signum``; the exit status, which must come within EXIT_WITHIN seconds."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"sandbox did not exit within {EXIT_WITHIN} s of signal {signum}")


def _raw_values() -> set[str]:
    """Every raw value of the example files the test sends."""
    values: set[str] = set()
    for name in ("bank_a.csv", "carrier_subscribers.csv"):
        with (ROOT / "examples" / name).open(newline="", encoding="utf-8") as handle:
            values.update(row["value"] for row in csv.DictReader(handle))
    return values


def _matched_rows(path: Path) -> int:
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index("matched")
    return sum(1 for line in lines[1:] if line.split(",")[column] == "yes")


@pytest.mark.e2e
def test_sandbox_serves_its_configurations_and_stops_on_sigterm_then_sigint(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "sandbox"
    clients = directory / "clients"
    sandbox = Sandbox(directory, tmp_path / "first.err")
    try:
        assert sandbox.wait_ready() == f"{READY_PREFIX}{directory}\n"
        for institution in SANDBOX_INSTITUTIONS:
            config = json.loads((clients / f"{institution}.json").read_text())
            assert config["institution"] == institution and len(config["holders"]) == 3
        # Created files and directories are private to the user.
        for path in [directory, clients, *clients.iterdir(), *(directory / "state").rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path} has mode {mode:o}"

        contributed = run_fraudhub(
            "contribute", "--config", str(clients / "bank-a.json"), "--no-progress",
            "--purpose", "fraud_reporting", str(ROOT / "examples" / "bank_a.csv"),
        )  # fmt: skip
        assert contributed.returncode == 0, contributed.stderr
        assert "7 of 7 rows stored, 0 failed" in contributed.stdout
        out = tmp_path / "matches.csv"
        # A copy: a stopped job leaves its journal beside its input, never in the checkout.
        subscribers = tmp_path / "carrier_subscribers.csv"
        subscribers.write_bytes((ROOT / "examples" / "carrier_subscribers.csv").read_bytes())
        matched = run_fraudhub(
            "match", "--config", str(clients / "carrier-c.json"), "--no-progress",
            "--purpose", "sim_activation_screening", "--out", str(out),
            str(subscribers),
        )  # fmt: skip
        assert matched.returncode == 0, matched.stderr
        assert _matched_rows(out) >= 3
        # 'fraudhub match ... | head': the reader left; no traceback.
        status, err = run_into_closed_pipe(
            "match", "--config", str(clients / "carrier-c.json"), "--no-progress",
            "--purpose", "sim_activation_screening",
            str(subscribers),
        )  # fmt: skip
        assert status == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
        assert "13800138000" not in out.read_text()
        # The regulator drives the audit commands from what the sandbox wrote.
        verified = run_fraudhub(
            "audit", "verify", "--config", str(clients / "reg-r.json"),
            "--log-key", f"@{clients / 'audit-log-key.txt'}",
            "--state", str(tmp_path / "audit-state.json"),
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr
        assert "audit log verified" in verified.stdout
        # A second sandbox on the same directory is refused while this one runs.
        second = run_fraudhub("sandbox", "--data-dir", str(directory), timeout=60)
        assert second.returncode == 2 and "in use by another sandbox" in second.stderr
    finally:
        status = sandbox.stop(signal.SIGTERM)
    assert status == 0, sandbox.stderr_path.read_text()
    assert sandbox.lines == [f"{READY_PREFIX}{directory}\n"]
    # Neither what the sandbox printed nor the servers' log holds a raw value.
    printed = sandbox.stderr_path.read_text()
    server_log = (directory / "state" / "logs" / "servers.log").read_text()
    assert "hub serving on port" in server_log
    for value in _raw_values():
        assert value not in printed and value not in server_log

    # Run again on the same directory: same keys and database, new ports.
    again = Sandbox(directory, tmp_path / "second.err")
    try:
        assert again.wait_ready() == f"{READY_PREFIX}{directory}\n"
        rematched = run_fraudhub(
            "match", "--config", str(clients / "carrier-c.json"), "--no-progress",
            "--purpose", "sim_activation_screening", "--out", str(out),
            str(subscribers),
        )  # fmt: skip
        assert rematched.returncode == 0, rematched.stderr
        assert _matched_rows(out) >= 3  # bank-a's contribution survived the restart
    finally:
        status = again.stop(signal.SIGINT)
    assert status == 0, again.stderr_path.read_text()


@pytest.mark.e2e
@pytest.mark.postgres
def test_sandbox_on_postgresql_reports_ready_and_stops(tmp_path: Path) -> None:
    with postgres_schema_url("sandbox") as url:
        sandbox = Sandbox(tmp_path / "sandbox", tmp_path / "sandbox.err", database_url=url)
        try:
            assert sandbox.wait_ready() == f"{READY_PREFIX}{tmp_path / 'sandbox'}\n"
            # The database is PostgreSQL: no SQLite file was made.
            assert not list((tmp_path / "sandbox" / "state").glob("*.sqlite3"))
        finally:
            status = sandbox.stop(signal.SIGTERM)
        assert status == 0, sandbox.stderr_path.read_text()


@pytest.mark.e2e
def test_reuse_loads_the_state_and_enroll_keeps_registered_keys(tmp_path: Path) -> None:
    state, clients = tmp_path / "state", tmp_path / "clients"
    with LocalDeployment(state, clients, log_to_file=False) as first:
        key = first.register("bank-a", "bank")
        public = first.public
    # Without reuse an existing deployment is refused, never overwritten.
    with pytest.raises(ConfigurationError):
        LocalDeployment(state, clients, log_to_file=False)
    with LocalDeployment(state, clients, log_to_file=False, reuse=True) as second:
        assert second.public == public
        assert second.enroll("bank-a", "bank").private_key.private_bytes_raw() == (
            key.private_key.private_bytes_raw()
        )
        with pytest.raises(ConfigurationError, match="another role or key"):
            second.enroll("bank-a", "carrier")
        second.enroll("carrier-c", "carrier")  # not registered yet: registered now
        (clients / "carrier-c.pem").unlink()
        with pytest.raises(ConfigurationError, match=r"key .* is missing"):
            second.enroll("carrier-c", "carrier")
