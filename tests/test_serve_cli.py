"""``fraudhub serve`` as a process (TLS, health, SIGHUP reload, SIGTERM stop) and
``fraudhub institution add|list|disable|export`` on the hub's database."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_demo import ROOT

from client_sdk.wire.auth import generate_key, public_key_b64
from client_sdk.wire.channels import HUB_SERVER_NAME, ChannelSecurity, open_channel
from hub.cli import main
from hub.keyholder.ceremony import deal_to_directory
from hub.services.config import default_policy
from hub.storage import auditlog
from hub.storage.store import Store, sqlite_url
from hub.wire.auth import parse_registry
from hub.wire.tls import init_tls


def test_institution_registry_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    # Reading or changing the registry of a data dir without a database (a typo)
    # is refused and creates nothing; only `add` starts a database.
    for action in (["list"], ["export"], ["disable", "--id", "bank-a"]):
        assert main(["institution", *action, *data]) == 2
        assert "no hub database at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    key = public_key_b64(generate_key())
    assert (
        main(["institution", "add", *data, "--id", "bank-a", "--role", "bank", "--public-key", key])
        == 0
    )
    pub = tmp_path / "carrier.pub"
    pub.write_text(public_key_b64(generate_key()) + "\n")
    add_carrier = ["--id", "carrier-x", "--role", "carrier", "--public-key-file", str(pub)]
    assert main(["institution", "add", *data, *add_carrier, "--name", "Carrier X"]) == 0
    # A second registration of the same id is refused with exit status 2.
    assert (
        main(["institution", "add", *data, "--id", "bank-a", "--role", "bank", "--public-key", key])
        == 2
    )
    assert "already exists" in capsys.readouterr().err
    assert main(["institution", "disable", *data, "--id", "carrier-x"]) == 0
    capsys.readouterr()
    assert main(["institution", "list", *data]) == 0
    listing = capsys.readouterr().out
    assert "bank-a" in listing and "carrier-x" not in listing
    assert main(["institution", "list", *data, "--all"]) == 0
    assert "disabled" in capsys.readouterr().out
    out = tmp_path / "registry.json"
    assert main(["institution", "export", *data, "--out", str(out)]) == 0
    registry = {i.id: i for i in parse_registry(out.read_text())}
    assert registry["carrier-x"].disabled and not registry["bank-a"].disabled
    assert registry["carrier-x"].name == "Carrier X"
    store = Store(sqlite_url(tmp_path))
    with store.session() as session:
        events = [json.loads(e.body) for e in auditlog.list_events(session, 0, None)]
    store.dispose()
    # The refused second registration is audited too (ADR 0007), as over RPC.
    assert [(e["institution"], e["action"], e["outcome"]) for e in events] == [
        ("local-operator", "Admin.AddInstitution", "ok"),
        ("local-operator", "Admin.AddInstitution", "ok"),
        ("local-operator", "Admin.AddInstitution", "ALREADY_EXISTS"),
        ("local-operator", "Admin.DisableInstitution", "ok"),
    ]


def test_bad_public_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["institution", "add", "--data-dir", str(tmp_path), "--id", "bank-a", "--role", "bank"]
    assert main([*args, "--public-key", "not base64!"]) == 2
    assert main([*args, "--public-key", public_key_b64(generate_key())[:-8]]) == 2
    assert "base64" in capsys.readouterr().err


def _health(port: int, ca: Path) -> int:
    security = ChannelSecurity.from_ca_file(str(ca), HUB_SERVER_NAME)
    channel = open_channel(f"127.0.0.1:{port}", security)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="fraudhub.v1.Exchange"), timeout=5
        )
        return int(reply.status)
    finally:
        channel.close()


def _checkpoint_size(tmp_path: Path, at_least: int, within: float = 10.0) -> int:
    store = Store(sqlite_url(tmp_path))
    deadline = time.monotonic() + within
    try:
        while True:
            with store.session() as session:
                row = auditlog.latest_checkpoint(session)
            if (row is not None and row.tree_size >= at_least) or time.monotonic() > deadline:
                return 0 if row is None else row.tree_size
            time.sleep(0.1)
    finally:
        store.dispose()


@pytest.mark.e2e
def test_serve_reloads_on_sighup_and_stops_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_tls(tmp_path)
    _, public = deal_to_directory(2, 3, tmp_path / "keys")
    policy = tmp_path / "policy.yaml"
    shutil.copyfile(default_policy(), policy)
    env_path = f"{ROOT / 'protos'}:{ROOT}"
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--data-dir", str(tmp_path),
         "--public", str(public), "--listen", "127.0.0.1:0", "--policy", str(policy),
         "--checkpoint-every", "1", "--checkpoint-seconds", "3600"],
        cwd=ROOT, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("hub listening on port "), line
        port = int(line.rsplit(" ", 1)[1])
        # The log key regulators pin, as the operator's command prints it too.
        key_line = process.stdout.readline().strip()
        assert main(["audit", "log-key", "--data-dir", str(tmp_path)]) == 0
        assert key_line == f"audit log key {capsys.readouterr().out.strip()}"
        # --checkpoint-every 1: each audited event gets its checkpoint within a tick,
        # where the default (1000 events or 60 s) would wait a minute.
        for n, institution in enumerate(("bank-x", "bank-y"), start=1):
            key = public_key_b64(generate_key())
            add = ["institution", "add", "--data-dir", str(tmp_path), "--id", institution]
            assert main([*add, "--role", "bank", "--public-key", key]) == 0
            assert _checkpoint_size(tmp_path, at_least=n) == n
        ca = tmp_path / "tls" / "ca.pem"
        assert _health(port, ca) == health_pb2.HealthCheckResponse.SERVING
        # Plaintext is refused by a TLS server.
        insecure = open_channel(f"127.0.0.1:{port}", ChannelSecurity(insecure=True))
        with pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(insecure).Check(health_pb2.HealthCheckRequest(), timeout=2)
        insecure.close()
        policy.write_text("format: fraudhub-policy/1\nrules: [\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.poll() is None
        assert _health(port, ca) == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    errors = process.stderr.read()
    assert "policy reload refused, the running policy stays" in errors


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--checkpoint-every", "0"], "--checkpoint-every: must be at least 1, got 0"),
        (["serve", "--checkpoint-seconds", "-1"], "--checkpoint-seconds: must be a finite number"),
        (["serve", "--checkpoint-seconds", "nan"], "--checkpoint-seconds: must be a finite number"),
        (["serve", "--workers", "two"], "--workers: not a whole number: 'two'"),
        (
            [
                "keyholder",
                "institution",
                "quota",
                "--state-dir",
                "s",
                "--id",
                "b",
                "--daily-quota",
                "0",
            ],
            "--daily-quota: must be at least 1, got 0",
        ),
        (["keyholder", "serve", "--workers", "0"], "--workers: must be at least 1, got 0"),
        (["audit", "anomalies", "--days", "-3"], "--days: must be at least 1, got -3"),
        (["audit", "anomalies", "--spike-factor", "0"], "--spike-factor: must be a finite number"),
    ],
)
def test_cli_numbers_are_validated(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_institution_enable_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    key = public_key_b64(generate_key())
    assert main(["institution", "add", *data, "--id", "bank-a", "--role", "bank",
                 "--public-key", key]) == 0  # fmt: skip
    assert main(["institution", "disable", *data, "--id", "bank-a"]) == 0
    assert main(["institution", "enable", *data, "--id", "bank-a"]) == 0
    assert main(["institution", "enable", *data, "--id", "bank-zz"]) == 2
    assert "not registered" in capsys.readouterr().err
    out = tmp_path / "registry.json"
    assert main(["institution", "export", *data, "--out", str(out)]) == 0
    [bank] = parse_registry(out.read_text())
    assert not bank.disabled and public_key_b64_of(bank.public_key) == key
    store = Store(sqlite_url(tmp_path))
    with store.session() as session:
        events = [json.loads(e.body) for e in auditlog.list_events(session, 0, None)]
    store.dispose()
    assert [(e["action"], e["outcome"]) for e in events][-2:] == [
        ("Admin.EnableInstitution", "ok"),
        ("Admin.EnableInstitution", "NOT_FOUND"),
    ]


def public_key_b64_of(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def test_institution_rotate_key_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    old, new = public_key_b64(generate_key()), public_key_b64(generate_key())
    assert main(["institution", "add", *data, "--id", "bank-a", "--role", "bank",
                 "--public-key", old]) == 0  # fmt: skip
    weak = public_key_b64_of(b"\x01" + bytes(31))
    rotate = ["institution", "rotate-key", *data, "--id", "bank-a"]
    assert main([*rotate, "--public-key", weak]) == 2
    assert "weak Ed25519 key" in capsys.readouterr().err
    pub = tmp_path / "new.pub"
    pub.write_text(new + "\n")
    assert main([*rotate, "--public-key-file", str(pub)]) == 0
    assert "institution export" in capsys.readouterr().out
    assert main([*rotate, "--public-key", new]) == 2
    assert main(["institution", "rotate-key", *data, "--id", "bank-zz", "--public-key", old]) == 2
    out = tmp_path / "registry.json"
    assert main(["institution", "export", *data, "--out", str(out)]) == 0
    [bank] = parse_registry(out.read_text())
    assert public_key_b64_of(bank.public_key) == new and bank.id == "bank-a"
    store = Store(sqlite_url(tmp_path))
    with store.session() as session:
        events = [json.loads(e.body) for e in auditlog.list_events(session, 0, None)]
    store.dispose()
    # The weak key never reached the database, so its refusal is not an audited change.
    assert [(e["action"], e["outcome"]) for e in events][1:] == [
        ("Admin.RotateInstitutionKey", "ok"),
        ("Admin.RotateInstitutionKey", "ALREADY_EXISTS"),
        ("Admin.RotateInstitutionKey", "NOT_FOUND"),
    ]
    assert all(new not in e["reasons"] and old not in str(e) for e in events)
