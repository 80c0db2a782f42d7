"""A ``fraudhub keyholder serve --witness-log-key`` process witnesses the log over TLS.

Real process, real TLS (the holder's own ``keyholder init`` identity), real JWTs
of institutions the holder admitted itself: the hub's
operator gets a cosignature that verifies under the witness key the process
prints; a stale old size is answered with the witness's size; a bank may not
ask; the witness state is in the holder's state directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fraudhub.v1 import witness_pb2, witness_pb2_grpc

from client_sdk.core.threshold import deal
from client_sdk.wire.auth import BearerAuth, InstitutionKey, keyholder_audience, public_key_bytes
from client_sdk.wire.channels import ChannelSecurity, open_channel
from hub.audit.checkpoint import Checkpoint, LogSigner
from hub.audit.cosignature import CosignatureVerifier, check_quorum
from hub.cli import main
from hub.keyholder.admission import admit
from hub.keyholder.witness import WITNESS_KEY_FILENAME, WITNESS_STATE_FILENAME
from hub.services.audit import DEFAULT_ORIGIN
from hub.wire.auth import Institution

REPO = Path(__file__).resolve().parent.parent
NAME = "holder-1.fraudhub.internal"

pytestmark = pytest.mark.e2e


def test_keyholder_process_cosigns_for_the_operator_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert main(["keyholder", "init", "--state-dir", str(state), "--name", NAME]) == 0
    operator, bank = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    admit(state, Institution("hub-operator", "hub", "operator", public_key_bytes(operator)), 10)
    admit(state, Institution("bank-a", "Bank A", "bank", public_key_bytes(bank)), 10)
    shares, public = deal(1, 1)
    share_path, public_path = tmp_path / "share-1.json", tmp_path / "public.json"
    share_path.write_text(shares[0].to_json())
    share_path.chmod(0o600)
    public_path.write_text(public.to_json())
    log = LogSigner(DEFAULT_ORIGIN, Ed25519PrivateKey.generate())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    command = [sys.executable, "-m", "hub.cli", "keyholder", "serve", "--listen", "127.0.0.1:0"]
    command += ["--share", str(share_path), "--public", str(public_path)]
    command += ["--state-dir", str(state), "--witness-log-key", log.verifier_key()]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on port" in line, process.stderr.read() if process.stderr else ""
        port = int(line.rsplit(" ", 1)[1])
        vkey = process.stdout.readline().strip().removeprefix("witness key ")
        witness = CosignatureVerifier.from_verifier_key(vkey)
        assert witness.name == "fraudhub/keyholder-1/witness"
        security = ChannelSecurity.from_ca_file(str(state / "tls" / "ca.pem"), NAME)

        def ask(key: Ed25519PrivateKey, who: str, old: int, note: str) -> object:
            auth = BearerAuth(InstitutionKey(who, key), keyholder_audience(1))
            with open_channel(f"127.0.0.1:{port}", security, auth) as channel:
                return witness_pb2_grpc.WitnessStub(channel).AddCheckpoint(
                    witness_pb2.AddCheckpointRequest(old_size=old, checkpoint=note), timeout=10
                )

        note = log.sign_checkpoint(Checkpoint(DEFAULT_ORIGIN, 3, b"\x11" * 32))
        reply = ask(operator, "hub-operator", 0, note)
        assert isinstance(reply, witness_pb2.AddCheckpointResponse)
        assert check_quorum(note + reply.cosignature, [witness], 1).cosigned == (witness.label(),)
        stale = ask(operator, "hub-operator", 0, note)
        assert isinstance(stale, witness_pb2.AddCheckpointResponse)
        assert stale.WhichOneof("result") == "conflict" and stale.conflict.witness_size == 3
        with pytest.raises(grpc.RpcError) as caught:
            ask(bank, "bank-a", 3, note)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        forged = LogSigner(DEFAULT_ORIGIN, Ed25519PrivateKey.generate())
        with pytest.raises(grpc.RpcError) as caught:
            ask(
                operator,
                "hub-operator",
                3,
                forged.sign_checkpoint(Checkpoint(DEFAULT_ORIGIN, 3, b"\x11" * 32)),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown key" in str(caught.value.details())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "state" / WITNESS_KEY_FILENAME).exists()
    assert (tmp_path / "state" / WITNESS_STATE_FILENAME).exists()
