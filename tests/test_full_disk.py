"""A hub whose disk is full: callers get UNAVAILABLE naming the cause, the regulator
can still verify the log, and everything works again once space is freed.

Issue 13: on a full disk the hub logged only ``OperationalError``, refused
calls were not audited (nothing can be) without saying why, and ``audit
verify`` could not run because even a read needed a replay-guard write.  The
disk here is a real 16 MiB tmpfs holding the hub's data directory, filled by a
file; mounting needs root (CI runs as root, .ci/run).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _audit_hub import RunningHub
from fraudhub.v1 import audit_pb2, audit_pb2_grpc, exchange_pb2, exchange_pb2_grpc

pytestmark = pytest.mark.e2e


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    filler = mount / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


def _match(stub: exchange_pb2_grpc.ExchangeStub) -> None:
    stub.Match(
        exchange_pb2.MatchRequest(
            purpose="payment_screening",
            queries=[exchange_pb2.MatchQuery(token=os.urandom(32), kind="url", key_epoch=1)],
        ),
        timeout=10,
    )


def test_full_disk(
    disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    hub = RunningHub(disk, capsys)
    hub.state = tmp_path / "audit-state.json"  # the regulator's own disk
    try:
        hub.traffic(5)
        status, output = hub.verify()
        assert status == 0, output
        filler = _fill(disk)
        with hub.channel("bank-a") as channel:
            stub = exchange_pb2_grpc.ExchangeStub(channel)
            # SQLite reuses WAL space it already has: a few writes may still fit.
            for _ in range(200):
                try:
                    _match(stub)
                except grpc.RpcError as exc:
                    failure = exc
                    break
            else:
                pytest.fail("200 audited calls fitted on a full disk")
        assert failure.code() == grpc.StatusCode.UNAVAILABLE
        assert "disk full" in (failure.details() or "")
        assert "database failure: OperationalError (disk full)" in caplog.text
        # A refused caller cannot be audited now; the log says so and why.
        with (
            grpc.insecure_channel(f"127.0.0.1:{hub.port}") as anonymous,
            pytest.raises(grpc.RpcError),
        ):
            refused: grpc.UnaryUnaryMultiCallable[bytes, bytes] = anonymous.unary_unary(
                "/fraudhub.v1.Exchange/Match"
            )
            refused(b"", timeout=5)
        hub.server.refusals.tally.flush()
        assert "could not audit Hub.AuthenticationFailures" in caplog.text
        assert "StorageError (disk full)" in caplog.text
        # The regulator's reads still work: verify (fresh checkpoint, events,
        # consistency proof) and an inclusion proof.
        status, output = hub.verify()
        assert status == 0, output
        with hub.channel("reg-1") as channel:
            proof = audit_pb2_grpc.AuditStub(channel).GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(leaf_index=0, tree_size=2), timeout=10
            )
        assert proof.hashes
        assert "answered without its audit event" in caplog.text
        # Space freed: the same hub serves and audits again, and the log verifies.
        filler.unlink()
        with hub.channel("bank-a") as channel:
            _match(exchange_pb2_grpc.ExchangeStub(channel))
        status, output = hub.verify()
        assert status == 0, output
    finally:
        hub.stop()
