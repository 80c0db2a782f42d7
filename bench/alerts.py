"""Watchlists at scale: alert latency to a live subscriber, and what watches cost
the contribution path.

Run: ``.venv/bin/python bench/alerts.py [--watches 1000000] [--samples 200]
[--items 100000] [--database-url postgresql+psycopg://...]``.

Starts a hub and three key holders (2-of-3) in this process
(``hub.devtools.deployment.LocalDeployment``: real gRPC with TLS on loopback,
SQLite by default) and registers bank-a (the watcher) and bank-b (the
contributor).  Then:

1. *Setup*: ``--watches`` watch rows for bank-a are inserted DIRECTLY through
   the storage layer (``hub.storage.alerts.upsert_watches``, 10,000 per
   transaction) for setup speed, not through Watch (which would add the OPRF
   of a million values).
2. *Contribution throughput, alerts off vs on*: bank-b contributes
   ``--items`` fresh tokens in Contribute requests of 10,000 over gRPC,
   alternating requests with alert recording off (``HubServer.exchange.alerts
   = None``: the contribution path without watchlists) and on (one watch
   lookup per request, sightings before/after and alert rows for watched
   tokens); 1% of every request's tokens are among the million watched.
   Alternating gives both modes the same database and the same machine load.
   The tokens are random 32-byte strings sent straight to the Exchange
   service: the hub cannot tell them from OPRF tokens, and the client's OPRF
   cost (bench/e2e.py) does not depend on watches, so it is left out.
3. *Latency*: ``--samples`` real phone numbers are watched through
   ``HubClient.watch`` (the SDK path, threshold OPRF); bank-a follows its
   alerts (``HubClient.alerts.follow``, a live Subscribe stream); bank-b
   contributes the watched numbers one Contribute call each; for each, the
   time from the Contribute call returning (the acknowledgement) to the alert
   reaching the subscriber's thread.  The alert commits with the
   contribution, before the ack is sent, so it may arrive first: those count
   as 0.

Prints the throughputs and their ratio, p50/p99 latency, and the process's
peak RSS after setup and at the end.
"""

from __future__ import annotations

import argparse
import os
import queue
import resource
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "protos"))
sys.path.insert(0, str(ROOT))

from fraudhub.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc  # noqa: E402

from client_sdk import Indicator  # noqa: E402
from client_sdk.client.hub import HubClient  # noqa: E402
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth  # noqa: E402
from client_sdk.wire.channels import open_channel  # noqa: E402
from client_sdk.wire.codecs import timestamp  # noqa: E402
from hub.devtools.deployment import LocalDeployment  # noqa: E402
from hub.storage import alerts as alert_store  # noqa: E402
from hub.storage.models import utcnow  # noqa: E402

BATCH = 10_000
REPORT = "fraud_reporting"
MONITOR = "customer_monitoring"
# The kind of the throughput phases and of the watches inserted directly.
KIND = "domain"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def contribute_batch(
    stub: exchange_pb2_grpc.ExchangeStub, tokens: list[bytes], epoch: int
) -> float:
    """Contribute ``tokens`` as domains in one Contribute call; return its seconds.

    ``domain`` (public tier): its daily contribution quota (1,000,000) leaves room
    for both modes; the hub's work per item does not depend on the kind.
    """
    observed = timestamp(utcnow() - timedelta(hours=1))
    request = exchange_pb2.ContributeRequest(
        purpose=REPORT,
        indicators=[
            exchange_pb2.Indicator(
                token=t,
                kind=KIND,
                category=common_pb2.PHISHING,
                confidence=60,
                observed_at=observed,
                key_epoch=epoch,
            )
            for t in tokens
        ],
    )
    start = time.perf_counter()
    stub.Contribute(request, timeout=600)
    return time.perf_counter() - start


def throughput(
    world: LocalDeployment,
    stub: exchange_pb2_grpc.ExchangeStub,
    watched: list[bytes],
    items: int,
    epoch: int,
) -> tuple[float, float]:
    """Items/s with alert recording off and on, in alternating requests of
    :data:`BATCH` (the same database and the same machine load for both modes);
    1% of every request's tokens are watched."""
    recorder = world.hub.exchange.alerts
    seconds = {False: 0.0, True: 0.0}
    counted = {False: 0, True: 0}
    used = 0
    for round_ in range(max(2, items // BATCH)):
        recording = round_ % 2 == 1
        tokens = [os.urandom(32) for _ in range(BATCH)]
        for n in range(0, BATCH, 100):
            tokens[n] = watched[used % len(watched)]
            used += 1
        world.hub.exchange.alerts = recorder if recording else None
        seconds[recording] += contribute_batch(stub, tokens, epoch)
        counted[recording] += BATCH
    world.hub.exchange.alerts = recorder
    return counted[False] / seconds[False], counted[True] / seconds[True]


def insert_watches(world: LocalDeployment, tokens: list[bytes], epoch: int) -> float:
    """Watch rows for bank-a straight through the storage layer; return seconds."""
    expires = utcnow() + timedelta(days=365)
    start = time.perf_counter()
    for offset in range(0, len(tokens), BATCH):
        items = [
            alert_store.WatchItem(KIND, t, epoch, expires) for t in tokens[offset : offset + BATCH]
        ]
        with world.hub.store.session() as session:
            alert_store.upsert_watches(session, "bank-a", MONITOR, items, utcnow())
            session.commit()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_latency(bank_a: HubClient, bank_b: HubClient, phones: list[str]) -> list[float]:
    """Milliseconds from each Contribute ack (bank-b) to the alert at bank-a's live
    subscriber (0 when the alert came first: it commits before the ack is sent)."""
    arrivals: queue.Queue[float] = queue.Queue()
    ready = threading.Event()

    def follow() -> None:
        stream = bank_a.alerts.follow(start="now", timeout=600)
        ready.set()
        received = 0
        for alert in stream:
            if alert.kind == "phone" and alert.event == "new":
                arrivals.put(time.perf_counter())
                received += 1
                if received == len(phones):
                    break

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    ready.wait()
    time.sleep(1.0)  # the Subscribe stream is open and idle
    latencies: list[float] = []
    for phone in phones:
        bank_b.contribute([Indicator("phone", phone, "money_mule", 90)], purpose=REPORT)
        acked = time.perf_counter()
        arrived = arrivals.get(timeout=30)
        latencies.append(max(0.0, arrived - acked) * 1000)
    thread.join(timeout=30)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--watches", type=int, default=1_000_000, help="watched tokens")
    parser.add_argument("--samples", type=int, default=200, help="latency samples")
    parser.add_argument("--items", type=int, default=100_000, help="items per throughput phase")
    parser.add_argument("--database-url", help="hub database (default: SQLite in a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fraudhub-bench-alerts-") as tmp:
        root = Path(tmp)
        with LocalDeployment(
            root / "data", root / "clients", database_url=args.database_url, log_to_file=False
        ) as world:
            world.start()
            world.register("bank-a", "bank")
            world.register("bank-b", "bank")
            epoch = world.hub.key_info.epoch
            backend = "postgresql" if args.database_url else "sqlite"
            print(f"fraudhub bench/alerts.py  backend={backend}  python={sys.version.split()[0]}")
            channel = open_channel(
                world.hub_address, world.security, BearerAuth(world.keys["bank-b"], HUB_AUDIENCE)
            )
            exchange = exchange_pb2_grpc.ExchangeStub(channel)

            watched = [os.urandom(32) for _ in range(args.watches)]
            seconds = insert_watches(world, watched, epoch)
            print(
                f"setup: {args.watches} watches inserted through the storage layer in "
                f"{seconds:.0f} s; peak RSS {peak_rss_mib():.0f} MiB"
            )
            off, on = throughput(world, exchange, watched, args.items, epoch)
            print(
                f"contribute, alerts off: {off:8.0f} items/s; on: {on:8.0f} items/s "
                f"(1% of the tokens watched, {args.watches} watches); on/off {on / off:.2f}"
            )
            bank_a, bank_b = world.client("bank-a"), world.client("bank-b")
            phones = [
                f"+86 139 {9000 + n // 10000:04d} {n % 10000:04d}" for n in range(args.samples)
            ]
            bank_a.watch([("phone", p) for p in phones], purpose=MONITOR)
            latencies = measure_latency(bank_a, bank_b, phones)
            early = sum(1 for v in latencies if v == 0.0)
            print(
                f"alert latency after the Contribute ack: p50 {percentile(latencies, 0.5):.2f} ms"
                f"  p99 {percentile(latencies, 0.99):.2f} ms  mean {statistics.mean(latencies):.2f}"
                f" ms  ({len(latencies)} alerts; {early} arrived before the ack)"
            )
            print(f"peak RSS of this process (hub, holders, clients): {peak_rss_mib():.0f} MiB")
            channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
