"""Unauthenticated request bodies are never buffered whole by the hub (issue 13).

Before: the hub parsed up to 64 MiB per message before authenticating; six
unauthenticated 60 MB calls grew a ``fraudhub serve`` from 308 to 564 MB, and
it stayed there.  Now requests are read only after the token verified
(``hub.wire.decode``): six concurrent 15 MB bodies without a valid token (each
under the hub's largest per-method limit, so only authentication stops them)
are refused UNAUTHENTICATED and the process grows by far less than one body
per call.  Measured on the development machine: +8 to +17 MB now, +175 MB
(and INTERNAL) before.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from test_shutdown import _serve

pytestmark = pytest.mark.e2e

CALLS = 6
BODY = 15 * 1024 * 1024
# What reading the bodies would cost is CALLS * BODY = 90 MiB.
MAX_GROWTH_MB = 45


def _rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_unauthenticated_bodies_are_not_read(tmp_path: Path) -> None:
    process, port = _serve(tmp_path)
    codes: list[grpc.StatusCode] = []
    try:
        before = _rss_mb(process.pid)
        body = b"\x1a" + b"x" * BODY
        options = [("grpc.max_send_message_length", 2 * BODY)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            contribute: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/fraudhub.v1.Exchange/Contribute"
            )

            def call() -> None:
                try:
                    contribute(body, metadata=(("authorization", "Bearer x"),), timeout=30)
                except grpc.RpcError as exc:
                    codes.append(exc.code())

            threads = [threading.Thread(target=call) for _ in range(CALLS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        after = _rss_mb(process.pid)
    finally:
        process.kill()
        process.wait()
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * CALLS
    assert after - before <= MAX_GROWTH_MB, (before, after)
