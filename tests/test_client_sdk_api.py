"""The SDK's public surface: ``client_sdk.__all__`` resolves, lazily, and nothing else does."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import client_sdk
from client_sdk.client.audit import AuditLogClient
from client_sdk.core.errors import Unavailable
from client_sdk.wire.channels import ChannelSecurity, open_channel


def test_every_public_name_resolves() -> None:
    for name in client_sdk.__all__:
        assert getattr(client_sdk, name) is not None, name
    assert sorted(dir(client_sdk)) == sorted(client_sdk.__all__)


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError):
        _ = client_sdk.Store


@pytest.mark.e2e
def test_importing_errors_does_not_load_grpc() -> None:
    code = "import sys, client_sdk.core.errors; print('grpc' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.strip() == "False"


@pytest.mark.e2e
def test_regulator_audit_client_is_sdk_only() -> None:
    # A regulator installs the SDK, not the hub: its Audit client must load
    # without importing anything of the hub (or of the hub's CLI).
    code = (
        "import sys, client_sdk.client.audit; "
        "print(sorted(m for m in sys.modules if m == 'hub' or m.startswith('hub.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.strip() == "[]"


def test_regulator_audit_client_raises_fraudhub_errors() -> None:
    # No hub listens on a port just released: every call ends as Unavailable,
    # the streaming one included, never as a raw grpc.RpcError.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open_channel(f"127.0.0.1:{port}", ChannelSecurity(insecure=True)) as channel:
        client = AuditLogClient(channel, timeout=2.0)
        with pytest.raises(Unavailable):
            client.get_checkpoint(fresh=True)
        with pytest.raises(Unavailable):
            list(client.events(0, 1))
        with pytest.raises(Unavailable):
            client.consistency_proof(1, 2)
