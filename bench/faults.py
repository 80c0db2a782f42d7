"""Fault figures: what callers see, and what is kept, when things break (issue 13).

Run: ``.venv/bin/python bench/faults.py [--kills 20] [--clients 50] [--seconds 60]
[--only kill,holder,load,disk]``.  Loopback only, bounded in count and time.

1. ``kill``: a ``fraudhub serve`` process (SQLite, plaintext on 127.0.0.1) is
   killed with SIGKILL ``--kills`` times while a client contributes batches of
   100 random tokens, retrying each batch (UNAVAILABLE, DEADLINE_EXCEEDED)
   until the hub acknowledges it; the hub is restarted on the same port at
   once.  After each restart ``fraudhub audit verify`` runs as a regulator
   (consistency with the state it verified before the kill).  Reported:
   batches acknowledged, acknowledged tokens missing from the database (lost),
   rows stored more than once (duplicates), verify failures.
2. ``holder``: a 2-of-3 ``LocalDeployment``; a bank contributes 400 phone
   numbers, a carrier screens 800 (half contributed) in batches of 50, and
   key holder 2 is stopped after the first batch.  Reported: results
   returned, wrong results (a contributed number not matched or the reverse).
3. ``load``: ``--clients`` threads, each with its own channel and bank key,
   send Match requests of 10 random tokens for ``--seconds`` seconds to one
   ``fraudhub serve``.  Reported: requests, errors by status code, p50/p99.
4. ``disk``: the hub's data directory on a 24 MiB tmpfs (needs root), 4 MiB
   of it held by another file; a client contributes until the hub refuses,
   the regulator verifies the log, the 4 MiB are freed and the client retries
   (30 s at most).  Reported: what the client saw (code and message), whether
   the regulator could verify the log while the disk was full, and whether
   contributions and verification resumed once space was freed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "protos"))
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from fraudhub.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc  # noqa: E402

from client_sdk import Indicator  # noqa: E402
from client_sdk.wire.auth import (  # noqa: E402
    HUB_AUDIENCE,
    BearerAuth,
    InstitutionKey,
    generate_key,
    public_key_bytes,
    save_private_key,
)
from client_sdk.wire.channels import ChannelSecurity, open_channel  # noqa: E402
from hub.cli import main as cli  # noqa: E402
from hub.keyholder.ceremony import deal_to_directory  # noqa: E402
from hub.storage.models import Institution  # noqa: E402
from hub.storage.store import SQLITE_FILENAME, Store, add_institution, sqlite_url  # noqa: E402

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
BATCH = 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Hub:
    """A ``fraudhub serve`` subprocess on a fixed port, its bank(s) and regulator."""

    def __init__(self, root: Path, banks: int = 1) -> None:
        self.root = root
        self.data = root / "hub"
        _, self.public = deal_to_directory(1, 1, root / "keys")
        self.port = _free_port()
        self.process: subprocess.Popen[str] | None = None
        self.log_key = ""
        self.keys: dict[str, InstitutionKey] = {}
        store = Store(sqlite_url(self.data))
        store.migrate()
        with store.session() as session:
            names = [*(f"bank-{i}" for i in range(banks)), "reg-1"]
            for name in names:
                key = generate_key()
                save_private_key(key, root / f"{name}.pem")
                role = "regulator" if name == "reg-1" else "bank"
                add_institution(
                    session, Institution(id=name, role=role, public_key=public_key_bytes(key))
                )
                self.keys[name] = InstitutionKey(name, key)
            session.commit()
        store.dispose()

    def start(self) -> None:
        command = [
            sys.executable, "-m", "hub.cli", "serve", "--data-dir", str(self.data),
            "--public", str(self.public), "--listen", f"127.0.0.1:{self.port}",
            "--insecure", "--grace", "1", "--workers", "16",
        ]  # fmt: skip
        env = {"PYTHONPATH": f"{ROOT / 'protos'}:{ROOT}", "PATH": "/usr/bin:/bin"}
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("hub listening"):
            raise RuntimeError(f"hub did not start: {line!r}")
        self.log_key = self.process.stdout.readline().strip().rsplit(" ", 1)[1]

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def channel(self, name: str) -> grpc.Channel:
        auth = BearerAuth(self.keys[name], HUB_AUDIENCE)
        return open_channel(f"127.0.0.1:{self.port}", ChannelSecurity(insecure=True), auth)

    def verify(self, state: Path) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = cli(
                [
                    "audit", "verify", "--hub", f"127.0.0.1:{self.port}", "--insecure",
                    "--institution", "reg-1", "--key", str(self.root / "reg-1.pem"),
                    "--log-key", self.log_key, "--state", str(state),
                ]
            )  # fmt: skip
        return status, out.getvalue()


def _batch() -> exchange_pb2.ContributeRequest:
    request = exchange_pb2.ContributeRequest(purpose="fraud_reporting")
    for _ in range(BATCH):
        item = request.indicators.add(
            token=os.urandom(32),
            kind="phone",
            category=common_pb2.SCAM_PHONE,
            confidence=50,
            key_epoch=1,
        )
        item.observed_at.GetCurrentTime()
    return request


def _contribute_until_acknowledged(
    hub: Hub, request: exchange_pb2.ContributeRequest, stop: threading.Event
) -> tuple[bool, int, Counter[str]]:
    """Send until acknowledged; (acknowledged, attempts, codes seen)."""
    codes: Counter[str] = Counter()
    attempts = 0
    while not stop.is_set():
        attempts += 1
        try:
            with hub.channel("bank-0") as channel:
                exchange_pb2_grpc.ExchangeStub(channel).Contribute(request, timeout=5)
            return True, attempts, codes
        except grpc.RpcError as exc:
            code = exc.code()
            codes[code.name] += 1
            if code not in RETRYABLE:
                return False, attempts, codes
            time.sleep(0.05)
    return False, attempts, codes


def bench_kill(kills: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(Path(tmp))
        hub.start()
        state = Path(tmp) / "verified.json"
        acknowledged: list[bytes] = []
        codes: Counter[str] = Counter()
        retried = 0
        stop = threading.Event()

        def ingest() -> None:
            nonlocal retried
            while not stop.is_set():
                request = _batch()
                done, attempts, seen = _contribute_until_acknowledged(hub, request, stop)
                codes.update(seen)
                retried += attempts > 1
                if done:
                    acknowledged.extend(i.token for i in request.indicators)

        client = threading.Thread(target=ingest)
        client.start()
        verify_failures = 0
        started = time.monotonic()
        for _ in range(kills):
            time.sleep(0.4 + 0.4 * os.urandom(1)[0] / 255)
            hub.kill()
            hub.start()
            status, output = hub.verify(state)
            if status != 0:
                verify_failures += 1
                print("  verify failed:", output.strip().splitlines()[-1:])
        time.sleep(0.5)
        stop.set()
        client.join(30)
        elapsed = time.monotonic() - started
        hub.stop()
        db = sqlite3.connect(hub.data / SQLITE_FILENAME)
        stored = Counter(bytes(t) for (t,) in db.execute("SELECT token FROM indicator"))
        db.close()
        lost = sum(1 for t in acknowledged if t not in stored)
        duplicates = sum(n - 1 for n in stored.values() if n > 1)
        print(
            f"kill: {kills} SIGKILLs in {elapsed:.1f}s; {len(acknowledged) // BATCH} batches "
            f"({len(acknowledged)} tokens) acknowledged, {retried} batches retried, "
            f"codes seen while retrying {dict(codes)}; lost {lost}, duplicate rows "
            f"{duplicates}, rows stored {sum(stored.values())}; audit verify failed "
            f"{verify_failures} of {kills}"
        )


def bench_holder() -> None:
    from hub.devtools.deployment import LocalDeployment

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with LocalDeployment(root / "data", root / "clients", log_to_file=False, grace=0.2) as w:
            w.start()
            w.register("bank-a", "bank")
            w.register("carrier-x", "carrier")
            numbers = [f"+1 202 555 {i:04d}" for i in range(800)]
            contributed = set(numbers[::2])
            bank = w.client("bank-a")
            bank.contribute(
                [Indicator("phone", n, "scam_phone") for n in sorted(contributed)],
                purpose="fraud_reporting",
            )
            carrier = w.client("carrier-x")
            results: list[object] = []
            started = time.monotonic()
            for start in range(0, len(numbers), 50):
                chunk = numbers[start : start + 50]
                results.extend(
                    carrier.match([("phone", n) for n in chunk], purpose="sim_activation_screening")
                )
                if start == 0:
                    w.stop_holder(2)
            elapsed = time.monotonic() - started
            wrong = 0
            for number, result in zip(numbers, results, strict=True):
                matched = getattr(result, "matched", None)
                if matched is None or matched != (number in contributed):
                    wrong += 1
            print(
                f"holder: 1 of 3 key holders stopped after the first of 16 batches; "
                f"{len(results)} of {len(numbers)} results, {wrong} wrong or failed, "
                f"{elapsed:.1f}s"
            )


def bench_load(clients: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(Path(tmp), banks=clients)
        hub.start()
        latencies: list[float] = []
        codes: Counter[str] = Counter()
        lock = threading.Lock()
        end = time.monotonic() + seconds

        def client(index: int) -> None:
            with hub.channel(f"bank-{index}") as channel:
                stub = exchange_pb2_grpc.ExchangeStub(channel)
                while time.monotonic() < end:
                    request = exchange_pb2.MatchRequest(
                        purpose="payment_screening",
                        queries=[
                            exchange_pb2.MatchQuery(token=os.urandom(32), kind="url", key_epoch=1)
                            for _ in range(10)
                        ],
                    )
                    began = time.perf_counter()
                    try:
                        stub.Match(request, timeout=30)
                        code = "OK"
                    except grpc.RpcError as exc:
                        code = exc.code().name
                    took = time.perf_counter() - began
                    with lock:
                        latencies.append(took)
                        codes[code] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)
        hub.stop()
        latencies.sort()
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
        print(
            f"load: {clients} clients x {seconds:g}s: {len(latencies)} requests "
            f"({len(latencies) / seconds:.0f}/s), codes {dict(codes)}, "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        )


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[bool]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def bench_disk() -> None:
    with tempfile.TemporaryDirectory() as tmp, _tmpfs(Path(tmp) / "disk", "24m") as ok:
        if not ok:
            print("disk: skipped (mounting a tmpfs needs root)")
            return
        hub = Hub(Path(tmp) / "disk")
        hub.start()
        state = Path(tmp) / "verified.json"
        try:
            assert hub.verify(state)[0] == 0
            # Space the operator can free later: 4 MiB held by another file.
            reserve = Path(tmp) / "disk" / "reserve"
            reserve.write_bytes(b"\0" * (4 << 20))
            accepted = 0
            seen = ""
            while True:  # until the hub refuses (the disk fills with indicators)
                try:
                    with hub.channel("bank-0") as channel:
                        exchange_pb2_grpc.ExchangeStub(channel).Contribute(_batch(), timeout=10)
                    accepted += BATCH
                except grpc.RpcError as exc:
                    seen = f"{exc.code().name} {exc.details()!r}"
                    break
            status, output = hub.verify(state)
            verify_full = "ok" if status == 0 else f"FAILED {output.strip()[-200:]!r}"
            reserve.unlink()
            stop = threading.Event()
            threading.Timer(30, stop.set).start()
            freed = time.monotonic()
            done, attempts, _codes = _contribute_until_acknowledged(hub, _batch(), stop)
            recovered = time.monotonic() - freed
            stop.set()
            status, _ = hub.verify(state)
            print(
                f"disk: 24 MiB tmpfs; {accepted} tokens accepted, then the client saw {seen}; "
                f"audit verify on the full disk: {verify_full}; after freeing 4 MiB a batch "
                f"was {'acknowledged' if done else 'REFUSED'} ({attempts} attempt(s), "
                f"{recovered:.2f}s), verify {'ok' if status == 0 else 'FAILED'}"
            )
        finally:
            hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--only", default="kill,holder,load,disk")
    args = parser.parse_args()
    # One warning per channel about plaintext loopback is noise here.
    logging.disable(logging.WARNING)
    chosen = set(args.only.split(","))
    if "kill" in chosen:
        bench_kill(min(args.kills, 100))
    if "holder" in chosen:
        bench_holder()
    if "load" in chosen:
        bench_load(min(args.clients, 200), min(args.seconds, 600.0))
    if "disk" in chosen:
        bench_disk()


if __name__ == "__main__":
    main()
