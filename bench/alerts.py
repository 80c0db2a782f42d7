"""Watchlists at scale: alert latency to a live subscriber, and what watches cost
the contribution path.

Run: ``.venv/bin/python bench/alerts.py [--watches 1000000] [--samples 200]
[--items 100000] [--database-url postgresql+psycopg://...]``.

Starts a hub and three key holders (2-of-3) in this process
(``hub.devtools.deployment.LocalDeployment``: real gRPC with TLS on loopback,
SQLite by default) and registers bank-a (the watcher) and bank-b (the
contributor).  Then:

1. *Contribution throughput, watches off*: bank-b contributes ``--items``
   fresh tokens in Contribute requests of 10,000 over gRPC, with an empty
   watch table (the watch lookup still runs; it finds nothing).  The tokens
   are random 32-byte strings sent straight to the Exchange service: the hub
   cannot tell them from OPRF tokens, and the client's OPRF cost (bench/e2e.py)
   is the same with and without watches, so it is left out of the ratio.
2. *Setup*: ``--watches`` watch rows for bank-a are inserted DIRECTLY through
   the storage layer (``hub.storage.alerts.upsert_watches``, 10,000 per
   transaction) for setup speed, not through Watch (which would add the OPRF
   of a million values); plus ``--samples`` real phone numbers watched through
   ``HubClient.watch`` (the SDK path, threshold OPRF).
3. *Contribution throughput, watches on*: as 1, with the million watches in
   place and 1% of the contributed tokens among them (so alerts are recorded
   in those transactions).
4. *Latency*: bank-a follows its alerts (``HubClient.follow_alerts``, a live
   Subscribe stream); bank-b contributes the watched phone numbers one
   Contribute call each; for each, the time from the Contribute call
   returning (the acknowledgement) to the alert reaching the subscriber's
   thread.  The alert commits with the contribution, before the ack is sent,
   so it may arrive first: those count as 0.

5. *Watches off again*: the watch table is emptied and phase 1 repeated, so
   the "on" phase is bracketed by two "off" phases (the load of a shared
   machine drifts); both ratios are printed.

Prints p50/p99 latency, the throughputs and their ratios, and the process's
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

import sqlalchemy as sa  # noqa: E402
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


def contribute_tokens(
    stub: exchange_pb2_grpc.ExchangeStub, tokens: list[bytes], epoch: int
) -> float:
    """Contribute ``tokens`` as domains in requests of :data:`BATCH`; return items/s.

    ``domain`` (public tier): its daily contribution quota (1,000,000) leaves room
    for both phases; the hub's work per item does not depend on the kind.
    """
    observed = timestamp(utcnow() - timedelta(hours=1))
    start = time.perf_counter()
    for offset in range(0, len(tokens), BATCH):
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
                for t in tokens[offset : offset + BATCH]
            ],
        )
        stub.Contribute(request, timeout=600)
    return len(tokens) / (time.perf_counter() - start)


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
        stream = bank_a.follow_alerts(start="now", timeout=600)
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

            off = contribute_tokens(exchange, [os.urandom(32) for _ in range(args.items)], epoch)
            print(f"contribute, watches off: {off:10.0f} items/s ({args.items} items)")

            watched = [os.urandom(32) for _ in range(args.watches)]
            seconds = insert_watches(world, watched, epoch)
            print(
                f"setup: {args.watches} watches inserted through the storage layer in "
                f"{seconds:.0f} s; peak RSS {peak_rss_mib():.0f} MiB"
            )
            bank_a, bank_b = world.client("bank-a"), world.client("bank-b")
            phones = [
                f"+86 139 {9000 + n // 10000:04d} {n % 10000:04d}" for n in range(args.samples)
            ]
            bank_a.watch([("phone", p) for p in phones], purpose=MONITOR)

            fresh = [os.urandom(32) for _ in range(args.items)]
            step = 100  # 1% of the contributed tokens are watched
            for n in range(0, args.items, step):
                fresh[n] = watched[n]
            on = contribute_tokens(exchange, fresh, epoch)
            print(
                f"contribute, watches on:  {on:10.0f} items/s ({args.items} items, 1% watched "
                f"among {args.watches})"
            )

            latencies = measure_latency(bank_a, bank_b, phones)
            # Bracket "on" with a second "off" (watch table emptied again): on a shared
            # machine the load drifts between phases.
            with world.hub.store.session() as session:
                session.execute(sa.delete(alert_store.Watch.__table__))  # type: ignore[attr-defined]
                session.commit()
            off2 = contribute_tokens(exchange, [os.urandom(32) for _ in range(args.items)], epoch)
            print(
                f"contribute, watches off again: {off2:10.0f} items/s; on/off "
                f"{on / off:.2f} and {on / off2:.2f} (before and after)"
            )
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
