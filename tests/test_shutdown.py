"""Bounded shutdown: ``fraudhub serve`` and ``fraudhub keyholder`` exit on SIGTERM
within the grace period plus a few seconds, whatever their streams are doing.

Issue 13: after an authenticated stream carried one garbage message,
``fraudhub serve`` never exited (7 of 7 runs with two such streams).  Here two
authenticated streams each send a garbage message and then stay open (the
client never half-closes), a third stream is open and idle, and a unary call
is open and idle when SIGTERM arrives: the process exits 0 within grace +
:data:`MARGIN` seconds.  And a call whose handler cannot be cancelled (blocked
in a SQLite lock wait of 30 s, the database locked by another process) does
not hold the hub or a key holder past grace + :data:`MARGIN` either.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fraudhub.v1 import exchange_pb2
from test_demo import ROOT

from client_sdk.wire.auth import (
    HUB_AUDIENCE,
    BearerAuth,
    InstitutionKey,
    generate_key,
    public_key_b64,
)
from client_sdk.wire.channels import ChannelSecurity, open_channel
from hub.cli import main
from hub.keyholder.ceremony import deal_to_directory

pytestmark = pytest.mark.e2e

GRACE = 2.0
MARGIN = 5.0
GARBAGE = b"\xff\xff\xff\xff\x0f"


def _serve(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    _, public = deal_to_directory(1, 1, tmp_path / "keys")
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--data-dir", str(tmp_path / "hub"),
         "--public", str(public), "--listen", "127.0.0.1:0", "--insecure",
         "--grace", str(GRACE)],
        cwd=ROOT, env={"PYTHONPATH": f"{ROOT / 'protos'}:{ROOT}", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("hub listening on port "), line + (process.stderr or "").__str__()
    return process, int(line.rsplit(" ", 1)[1])


def _held_open(first: bytes, release: threading.Event) -> Iterator[bytes]:
    yield first
    release.wait(30)  # never half-closes while the test runs


def test_serve_exits_within_grace_with_broken_streams(tmp_path: Path) -> None:
    key = generate_key()
    process, port = _serve(tmp_path)
    release = threading.Event()
    channel = open_channel(
        f"127.0.0.1:{port}",
        ChannelSecurity(insecure=True),
        BearerAuth(InstitutionKey("bank-a", key), HUB_AUDIENCE),
    )
    try:
        add = ["institution", "add", "--data-dir", str(tmp_path / "hub"), "--id", "bank-a"]
        assert main([*add, "--role", "bank", "--public-key", public_key_b64(key)]) == 0
        contribute: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
            "/fraudhub.v1.Exchange/ContributeStream"
        )
        match: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            "/fraudhub.v1.Exchange/MatchStream"
        )
        upload = contribute.future(_held_open(GARBAGE, release), timeout=60)
        download = match(_held_open(GARBAGE, release), timeout=60)
        valid = exchange_pb2.MatchRequest(
            purpose="payment_screening",
            queries=[exchange_pb2.MatchQuery(token=os.urandom(32), kind="url", key_epoch=1)],
        ).SerializeToString()
        idle = match(_held_open(valid, release), timeout=60)
        assert next(idle)  # answered; the stream stays open
        time.sleep(0.5)  # the garbage messages have reached the hub
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=GRACE + MARGIN + 10) == 0
        took = time.monotonic() - started
        assert took <= GRACE + MARGIN, took
        for finish in (upload.result, lambda: list(download)):
            with pytest.raises(grpc.RpcError) as info:
                finish()
            assert info.value.code() in {
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.CANCELLED,
            }
    finally:
        release.set()
        channel.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def _locked(path: Path) -> sqlite3.Connection:
    """A second connection holding ``path``'s write lock (as a stuck process would)."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("BEGIN EXCLUSIVE")
    return connection


def _stuck_call(call: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(grpc.RpcError):
            call()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)  # the call is in the server, waiting for the lock
    return thread


def _stop_within(process: subprocess.Popen[str], limit: float) -> float:
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert process.wait(timeout=limit + 30) == 0
    return time.monotonic() - started


def test_serve_exits_within_grace_with_a_call_stuck_on_the_database(tmp_path: Path) -> None:
    key = generate_key()
    process, port = _serve(tmp_path)
    channel = open_channel(
        f"127.0.0.1:{port}",
        ChannelSecurity(insecure=True),
        BearerAuth(InstitutionKey("bank-a", key), HUB_AUDIENCE),
    )
    lock = None
    try:
        add = ["institution", "add", "--data-dir", str(tmp_path / "hub"), "--id", "bank-a"]
        assert main([*add, "--role", "bank", "--public-key", public_key_b64(key)]) == 0
        lock = _locked(tmp_path / "hub" / "hub.sqlite3")
        request = exchange_pb2.MatchRequest(
            purpose="payment_screening",
            queries=[exchange_pb2.MatchQuery(token=os.urandom(32), kind="url", key_epoch=1)],
        )
        match: grpc.UnaryUnaryMultiCallable[exchange_pb2.MatchRequest, bytes] = channel.unary_unary(
            "/fraudhub.v1.Exchange/Match",
            request_serializer=exchange_pb2.MatchRequest.SerializeToString,
        )
        _stuck_call(lambda: match(request, timeout=60))
        took = _stop_within(process, GRACE + MARGIN)
        assert took <= GRACE + MARGIN, took
    finally:
        if lock is not None:
            lock.close()
        channel.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    assert "stopping without them" in process.stderr.read()


def test_keyholder_exits_within_grace_with_a_call_stuck_on_its_state(tmp_path: Path) -> None:
    from client_sdk.core.threshold import deal
    from client_sdk.wire.auth import keyholder_audience, public_key_b64
    from client_sdk.wire.channels import holder_server_name
    from hub.keyholder.cli import STOP_GRACE_SECONDS

    state = tmp_path / "state"
    name = holder_server_name(1)
    assert main(["keyholder", "init", "--state-dir", str(state), "--name", name]) == 0
    key = generate_key()
    admit = ["keyholder", "institution", "add", "--state-dir", str(state), "--id", "bank-a"]
    assert main([*admit, "--role", "bank", "--public-key", public_key_b64(key)]) == 0
    shares, public = deal(1, 1)
    share_path, public_path = tmp_path / "share-1.json", tmp_path / "public.json"
    share_path.write_text(shares[0].to_json())
    share_path.chmod(0o600)
    public_path.write_text(public.to_json())
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "keyholder", "serve", "--listen", "127.0.0.1:0",
         "--share", str(share_path), "--public", str(public_path), "--state-dir", str(state)],
        cwd=ROOT, env={"PYTHONPATH": f"{ROOT / 'protos'}:{ROOT}", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock = None
    channel = None
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on port" in line
        port = int(line.rsplit(" ", 1)[1])
        channel = open_channel(
            f"127.0.0.1:{port}",
            ChannelSecurity.from_ca_file(str(state / "tls" / "ca.pem"), name),
            BearerAuth(InstitutionKey("bank-a", key), keyholder_audience(1)),
        )
        info: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/fraudhub.v1.KeyHolder/GetKeyInfo"
        )
        info(b"", timeout=10)  # the state files exist
        lock = _locked(state / "seen-tokens.sqlite3")
        _stuck_call(lambda: info(b"", timeout=60))
        took = _stop_within(process, STOP_GRACE_SECONDS + MARGIN)
        assert took <= STOP_GRACE_SECONDS + MARGIN, took
    finally:
        if lock is not None:
            lock.close()
        if channel is not None:
            channel.close()
        if process.poll() is None:
            process.kill()
            process.wait()
