"""``fraudhub init``, ``keyholder init``, ``institution keygen``, a ``keyholder serve`` process."""

from __future__ import annotations

import base64
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fraudhub.v1 import keyholder_pb2, keyholder_pb2_grpc

from client_sdk.core.threshold import deal
from client_sdk.wire.auth import (
    BearerAuth,
    InstitutionKey,
    keyholder_audience,
    load_private_key,
    public_key_bytes,
)
from client_sdk.wire.channels import ChannelSecurity, holder_server_name, open_channel
from hub.cli import main

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def test_init_and_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["ca.pem", "hub.key", "hub.pem"]
    # The hub's log key too, so witnesses and regulators can pin it before the hub starts.
    assert stat.S_IMODE((tmp_path / "log-key.pem").stat().st_mode) == 0o600
    assert main(["audit", "log-key", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("fraudhub/audit-log+")
    assert main(["init", "--data-dir", str(tmp_path)]) == 2  # refuses to re-initialise
    holder = tmp_path / "holder-2"
    name = "holder-2.fraudhub.internal"
    assert main(["keyholder", "init", "--state-dir", str(holder), "--name", name]) == 0
    assert stat.S_IMODE((holder / "tls" / "keyholder.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(holder.stat().st_mode) == 0o700
    assert main(["keyholder", "init", "--state-dir", str(holder), "--name", name]) == 2
    key_path = tmp_path / "bank-a.pem"
    assert main(["institution", "keygen", "--out", str(key_path)]) == 0
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    public = base64.b64decode((tmp_path / "bank-a.pem.pub").read_text())
    assert public == public_key_bytes(load_private_key(key_path))
    assert base64.b64encode(public).decode() in capsys.readouterr().out


def test_keyholder_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    name = holder_server_name(1)
    assert main(["keyholder", "init", "--state-dir", str(state), "--name", name]) == 0
    key_path = tmp_path / "bank-a.pem"
    assert main(["institution", "keygen", "--out", str(key_path)]) == 0
    key = load_private_key(key_path)
    admit = ["keyholder", "institution", "add", "--state-dir", str(state), "--id", "bank-a"]
    admit += ["--role", "bank", "--public-key-file", str(key_path) + ".pub"]
    assert main(admit) == 0
    shares, public = deal(1, 1)
    share_path, public_path = tmp_path / "share-1.json", tmp_path / "public.json"
    share_path.write_text(shares[0].to_json())
    share_path.chmod(0o600)
    public_path.write_text(public.to_json())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    command = [sys.executable, "-m", "hub.cli", "keyholder", "serve", "--listen", "127.0.0.1:0"]
    command += ["--share", str(share_path), "--public", str(public_path)]
    command += ["--state-dir", str(state)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on port" in line, process.stderr.read() if process.stderr else ""
        port = int(line.rsplit(" ", 1)[1])
        security = ChannelSecurity.from_ca_file(str(state / "tls" / "ca.pem"), name)
        auth = BearerAuth(InstitutionKey("bank-a", key), keyholder_audience(1))
        channel = open_channel(f"127.0.0.1:{port}", security, auth)
        stub = keyholder_pb2_grpc.KeyHolderStub(channel)
        info = stub.GetKeyInfo(keyholder_pb2.GetKeyInfoRequest(), timeout=10)
        assert info.public_share == public.public_shares[1]
        channel.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "state" / "quota.sqlite3").exists()
