"""End-to-end bulk throughput over loopback gRPC with 2-of-3 key holders.

Run: ``.venv/bin/python bench/e2e.py [--n 100000] [--window 32768]``.

Starts ``fraudhub serve`` (SQLite) and three ``fraudhub keyholder`` processes
on 127.0.0.1 with TLS, registers a bank and a carrier, then times two phases
with the SDK's bulk CSV path (``HubClient.contribute_csv`` /
``HubClient.match_csv``: canonicalize, threshold OPRF over the holders with
the crypto spread over all cores, ContributeStream / MatchStream to the hub):

- contribute: the bank contributes ``n`` phone numbers;
- screen: the carrier screens ``n`` phone numbers, half of them contributed.

For each phase it prints items/s and the ratio to the crypto bound: the
primitives every item needs across all processes (client blind H + M, two
holders' evaluation and proof 2 x (2M + A), client verification and combine
6M + 5A: H + 11M + 7A, see bench/oprf.py), measured here with bare libsodium
and divided over the machine's cores (timed before and after the phases; the
faster reading counts).  A ratio of 1.00 would be all cores doing nothing but
those primitives.  Then the peak RSS of every process (the client, its crypto
workers, the hub, each key holder) and the CPU time per item each process
spent in each phase, which shows where the time beyond the bound goes.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "protos"))
sys.path.insert(0, str(ROOT))

from client_sdk import oprf  # noqa: E402
from client_sdk.client.config import ClientConfig, HolderConfig  # noqa: E402
from client_sdk.client.hub import HubClient  # noqa: E402
from client_sdk.core import _sodium as sodium  # noqa: E402
from client_sdk.wire.auth import generate_key, public_key_bytes, save_private_key  # noqa: E402
from client_sdk.wire.channels import holder_server_name  # noqa: E402
from hub.keyholder.admission import admit  # noqa: E402
from hub.keyholder.ceremony import deal_to_directory  # noqa: E402
from hub.keyholder.cli import init_holder  # noqa: E402
from hub.storage.models import Institution, utcnow  # noqa: E402
from hub.storage.store import Store, add_institution, sqlite_url  # noqa: E402
from hub.wire.auth import Institution as AdmittedInstitution  # noqa: E402
from hub.wire.tls import init_tls  # noqa: E402

INSTITUTIONS = {"bank-a": "bank", "carrier-x": "carrier"}


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def crypto_bound_seconds(samples: int = 2000) -> float:
    """Seconds of primitives one item needs, summed over every process: H + 11M + 7A."""
    lib = sodium._lib
    scalars = [sodium.scalar_random() for _ in range(samples)]
    inputs = [os.urandom(24) for _ in range(samples)]
    points = [sodium.element_from_hash(hashlib.sha512(x).digest()) for x in inputs]
    out = ctypes.create_string_buffer(32)
    dst = b"HashToGroup-" + oprf.context_string(oprf.Mode.VOPRF)

    def mult() -> None:
        for s, p in zip(scalars, points, strict=True):
            lib.crypto_scalarmult_ristretto255(out, s, p)

    def add() -> None:
        for p in points:
            lib.crypto_core_ristretto255_add(out, p, p)

    def hash_to_group() -> None:
        for x in inputs:
            lib.crypto_core_ristretto255_from_hash(out, oprf.expand_message_xmd(x, dst, 64))

    m = best_of(3, mult) / samples
    a = best_of(3, add) / samples
    h = best_of(3, hash_to_group) / samples
    return h + 11 * m + 7 * a


def fraudhub(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "protos"), str(ROOT)]))
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def port_of(process: subprocess.Popen[str]) -> int:
    """The port a server prints on its first line ("... port N")."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if "port" not in line:
        raise RuntimeError(f"server did not start: {line!r}")
    return int(line.rsplit(" ", 1)[1])


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a running process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (/proc/PID/stat)."""
    # Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU seconds per process over one phase: this client, its reaped crypto
    workers (RUSAGE_CHILDREN grows when the pool's workers exit) and each server."""

    def __init__(self, servers: dict[str, int]) -> None:
        self._servers = servers
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        readings = {
            "client": own.ru_utime + own.ru_stime,
            "crypto workers": kids.ru_utime + kids.ru_stime,
        }
        readings.update({name: cpu_seconds(pid) for name, pid in self._servers.items()})
        return readings

    def used(self) -> dict[str, float]:
        end = self._read()
        return {name: end[name] - self._start[name] for name in end}


def child_pids() -> set[int]:
    """Current child processes of this process (all threads), from /proc."""
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids.update(int(p) for p in children.read_text().split())
        except OSError:
            continue
    return pids


class WorkerRss:
    """Samples the peak RSS of the client's crypto worker processes while they live.

    ``getrusage(RUSAGE_CHILDREN)`` would report the parent's size for a
    spawned child (the fork before exec counts), so the workers' own VmHWM is
    read from /proc every ``interval`` seconds.
    """

    def __init__(self, exclude: set[int], interval: float = 0.25) -> None:
        self.peak = 0.0
        self._exclude = exclude
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for pid in child_pids() - self._exclude:
                try:
                    self.peak = max(self.peak, peak_rss_mib(pid))
                except OSError:
                    continue

    def __enter__(self) -> WorkerRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def setup(root: Path) -> tuple[Path, Path, Path]:
    """Each party's TLS identity, key shares, institutions registered at the hub and
    admitted at every holder; returns (data, clients, public.json)."""
    data, clients = root / "data", root / "clients"
    init_tls(data)
    for i in (1, 2, 3):
        init_holder(root / f"holder-{i}", holder_server_name(i))
    _, public = deal_to_directory(2, 3, root / "keys")
    clients.mkdir()
    store = Store(sqlite_url(data))
    store.migrate()
    with store.session() as session:
        for institution, role in INSTITUTIONS.items():
            key = generate_key()
            save_private_key(key, clients / f"{institution}.pem")
            add_institution(
                session,
                Institution(
                    id=institution, role=role, public_key=public_key_bytes(key), created_at=utcnow()
                ),
            )
            for i in (1, 2, 3):
                admit(
                    root / f"holder-{i}",
                    AdmittedInstitution(institution, institution, role, public_key_bytes(key)),
                    10**9,
                )
        session.commit()
    store.dispose()
    return data, clients, public


def write_csv(path: Path, n: int, start: int, contribute: bool) -> None:
    with path.open("w") as out:
        out.write("kind,value,category,confidence\n" if contribute else "kind,value\n")
        for i in range(start, start + n):
            value = f"+86139{i:08d}"
            out.write(f"phone,{value},scam_phone,70\n" if contribute else f"phone,{value}\n")


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one benchmark run read top to bottom: set up, measure, print
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000, help="values per phase")
    parser.add_argument("--window", type=int, default=32768, help="CSV rows per window")
    args = parser.parse_args(argv)
    n = args.n
    if n < 2:
        parser.error("--n must be at least 2")
    cores = os.cpu_count() or 1
    bound_before = crypto_bound_seconds()
    with tempfile.TemporaryDirectory(prefix="fraudhub-bench-") as tmp:
        root = Path(tmp)
        data, clients, public = setup(root)
        holders = [
            fraudhub(
                "keyholder", "serve",
                "--share", str(root / "keys" / f"share-{i}.json"),
                "--public", str(public),
                "--state-dir", str(root / f"holder-{i}"),
                "--listen", "127.0.0.1:0",
            )
            for i in (1, 2, 3)
        ]  # fmt: skip
        hub = fraudhub(
            "serve", "--data-dir", str(data), "--public", str(public), "--listen", "127.0.0.1:0"
        )
        processes = {"hub": hub, **{f"keyholder-{i}": p for i, p in enumerate(holders, 1)}}
        try:
            hub_port = port_of(hub)
            endpoints = [
                HolderConfig(i, f"127.0.0.1:{port_of(p)}", root / f"holder-{i}" / "tls" / "ca.pem")
                for i, p in enumerate(holders, 1)
            ]

            def client(institution: str) -> HubClient:
                config = ClientConfig(
                    institution=institution,
                    key=clients / f"{institution}.pem",
                    hub=f"127.0.0.1:{hub_port}",
                    holders=tuple(endpoints),
                    public=public,
                    ca=data / "tls" / "ca.pem",
                )
                return HubClient.from_config(config, batch_size=4096)

            contributions, screening = root / "contribute.csv", root / "screen.csv"
            write_csv(contributions, n, 0, contribute=True)
            write_csv(screening, n, n // 2, contribute=False)
            with WorkerRss({p.pid for p in processes.values()}) as workers:
                servers = {name: p.pid for name, p in processes.items()}
                with client("bank-a") as bank:
                    meter = CpuMeter(servers)
                    start = time.perf_counter()
                    stored = bank.contribute_csv(
                        contributions, purpose="fraud_reporting", window=args.window, progress=False
                    )
                    contribute_s = time.perf_counter() - start
                contribute_cpu = meter.used()
                with client("carrier-x") as carrier:
                    meter = CpuMeter(servers)
                    start = time.perf_counter()
                    screened = carrier.match_csv(
                        screening,
                        io.StringIO(),
                        purpose="sim_activation_screening",
                        window=args.window,
                        progress=False,
                    )
                    screen_s = time.perf_counter() - start
                screen_cpu = meter.used()
            rss = {name: peak_rss_mib(p.pid) for name, p in processes.items()}
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                process.wait(timeout=30)
    if stored.stored != n or screened.rows != n or screened.matched != n - n // 2:
        print(f"unexpected results: {stored} {screened.rows} {screened.matched}", file=sys.stderr)
        return 1
    # The machine is shared: the primitives are timed before and after the phases
    # and the faster reading is the bound (the stricter ratio).
    bound_after = crypto_bound_seconds()
    bound = min(bound_before, bound_after)
    bound_rate = cores / bound
    print(
        f"fraudhub bench/e2e.py  n={n} window={args.window} cores={cores} "
        f"libsodium={sodium.libsodium_version()} python={sys.version.split()[0]}"
    )
    print(
        f"crypto bound per item (all processes): H+11M+7A = {bound * 1e6:.0f} us "
        f"(timed before/after: {bound_before * 1e6:.0f}/{bound_after * 1e6:.0f}) "
        f"-> {bound_rate:.0f} items/s on {cores} core(s)"
    )
    print(f"{'phase':<12}{'items':>9}{'seconds':>10}{'items/s':>10}{'of bound':>10}")
    for phase, seconds in (("contribute", contribute_s), ("screen", screen_s)):
        rate = n / seconds
        print(f"{phase:<12}{n:>9}{seconds:>10.2f}{rate:>10.0f}{rate / bound_rate:>10.2f}")
    print(f"matches: {screened.matched} of {n} screened (expected {n - n // 2})")
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("peak RSS (MiB):")
    print(f"  {'client':<14}{self_rss:>8.0f}")
    if workers.peak:
        print(f"  {'crypto worker':<14}{workers.peak:>8.0f}  (largest of the client's pool)")
    else:
        print(f"  {'crypto worker':<14}{'-':>8}  (windows too small for the process pool)")
    for name, mib in rss.items():
        print(f"  {name:<14}{mib:>8.0f}")
    # Where the time goes: CPU per item in each process, against what the crypto
    # bound says that process must spend (client H + 7M + 5A, holders 2M + A each
    # for the two that answer a batch: together H + 11M + 7A).
    print("CPU per item (us)   contribute    screen")
    for name in contribute_cpu:
        c, s_ = contribute_cpu[name] / n * 1e6, screen_cpu[name] / n * 1e6
        print(f"  {name:<16}{c:>12.0f}{s_:>10.0f}")
    total_c = sum(contribute_cpu.values()) / n * 1e6
    total_s = sum(screen_cpu.values()) / n * 1e6
    print(f"  {'all processes':<16}{total_c:>12.0f}{total_s:>10.0f}  (bound {bound * 1e6:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
