"""Audit log costs: append rate with the Merkle log on and off, proof latency at scale.

Run: ``.venv/bin/python bench/audit.py [--backend sqlite|postgresql] [--append N]
[--sizes 1000000 10000000] [--proofs K] [--witnesses W]``.

1. Append rate.  Events are written one transaction per event (one RPC = one
   transaction in the hub) and then 100 per transaction (bulk streams), first
   with the Merkle log OFF (the event row only, leaf index from a counter) then
   ON (:func:`hub.storage.auditlog.append`: advisory lock on PostgreSQL, tree size read,
   left siblings read, event row and new node rows written).  The ratio on/off
   is the price of the verifiable log.
2. Proof latency at n events.  The node table of an n-leaf tree is bulk-loaded
   (complete subtrees only, as appends leave it; event bodies are not needed by
   proofs and are left out so 10M fits on a laptop disk), checked against an
   independent root, then K random inclusion proofs (leaf i of size n) and K
   consistency proofs (random old size to n) are timed, with the node rows each
   reads; and one append on top of the n-leaf tree.
3. Witness cosigning (``--witnesses W``, ADR 0010; SQLite only).  W key holders
   witnessing over loopback TLS (``LocalDeployment``): the time to sign one
   checkpoint alone, and to sign it and collect W cosignatures (consistency
   proof per witness, witness verifies and fsyncs its state), median of
   ``--checkpoints`` runs; then the append rate (one event per transaction)
   while a checkpoint thread signs every 100 events, without and with cosigning.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from sqlmodel import Session, SQLModel

from hub.audit import merkle
from hub.audit.events import AuditEvent, request_digest
from hub.storage import auditlog
from hub.storage.store import Store, sqlite_url

PG_URL = os.environ.get("FRAUDHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TABLES = [
    auditlog.AuditEventRow.__table__,  # type: ignore[attr-defined]
    auditlog.AuditNodeRow.__table__,  # type: ignore[attr-defined]
    auditlog.AuditCheckpointRow.__table__,  # type: ignore[attr-defined]
]


def event(i: int) -> AuditEvent:
    return AuditEvent(
        time=datetime.now(UTC),
        institution=f"bank-{i % 17}",
        role="bank",
        action="Exchange.Match",
        purpose="payment_screening",
        legal_basis="policy:match-context-dependent-payment",
        case_ref_digest=hashlib.sha256(b"case-%d" % (i % 97)).hexdigest(),
        kinds=("phone", "url"),
        tiers=("context_dependent", "public"),
        item_count=500,
        match_count=i % 5,
        outcome="ok",
        reasons=(),
        policy_version="c0ffee" * 10 + "beef",
        request_digest=request_digest(i.to_bytes(8, "big")),
    )


@contextmanager
def database(backend: str) -> Iterator[sa.Engine]:
    """A fresh database with the audit tables: a SQLite file (hub settings) or a PG schema."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="fraudhub-bench-") as tmp:
            store = Store(sqlite_url(Path(tmp)))
            SQLModel.metadata.create_all(store.engine, tables=TABLES)
            try:
                yield store.engine
            finally:
                store.dispose()
        return
    schema = f"audit_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = sa.create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    SQLModel.metadata.create_all(engine, tables=TABLES)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def append_rate(backend: str, count: int, per_txn: int, merkle_on: bool) -> float:
    """Events per second written ``per_txn`` per transaction."""
    events = [event(i) for i in range(count)]
    # Built once, as auditlog builds its own statements once.
    insert_event = sa.insert(auditlog.AuditEventRow.__table__)  # type: ignore[attr-defined]
    with database(backend) as engine:
        start = time.perf_counter()
        for first in range(0, count, per_txn):
            with Session(engine) as session:
                for i in range(first, min(count, first + per_txn)):
                    e = events[i]
                    if merkle_on:
                        auditlog.append(session, e)
                    else:
                        session.execute(
                            insert_event,
                            [
                                {
                                    "leaf_index": i,
                                    "time": e.time,
                                    "institution": e.institution,
                                    "role": e.role,
                                    "action": e.action,
                                    "outcome": e.outcome,
                                    "kinds": "," + ",".join(e.kinds) + ",",
                                    "tiers": "," + ",".join(e.tiers) + ",",
                                    "body": e.encode(),
                                }
                            ],
                        )
                session.commit()
        return count / (time.perf_counter() - start)


def synthetic_leaf(i: int) -> bytes:
    return merkle.leaf_hash(b"fraudhub bench event %d" % i)


def node_rows(size: int) -> Iterator[tuple[int, int, bytes]]:
    """Every complete subtree of a ``size``-leaf tree, level by level."""
    level_hashes = [synthetic_leaf(i) for i in range(size)]
    level = 0
    while level_hashes:
        for i, h in enumerate(level_hashes):
            yield level, i, h
        sha = hashlib.sha256
        level_hashes = [
            sha(b"\x01" + level_hashes[i] + level_hashes[i + 1]).digest()
            for i in range(0, len(level_hashes) - 1, 2)
        ]
        level += 1


def bulk_load(engine: sa.Engine, size: int) -> None:
    """Write the node table of a ``size``-leaf tree as fast as the backend allows."""
    raw: Any = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            with (
                raw.cursor() as cur,
                cur.copy("COPY audit_node (level, node_index, hash) FROM STDIN") as copy,
            ):
                for row in node_rows(size):
                    copy.write_row(row)
        else:
            cur = raw.cursor()
            batch: list[tuple[int, int, bytes]] = []
            for row in node_rows(size):
                batch.append(row)
                if len(batch) >= 100_000:
                    cur.executemany(
                        "INSERT INTO audit_node (level, node_index, hash) VALUES (?, ?, ?)", batch
                    )
                    batch.clear()
            if batch:
                cur.executemany(
                    "INSERT INTO audit_node (level, node_index, hash) VALUES (?, ?, ?)", batch
                )
        raw.commit()
    finally:
        raw.close()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE audit_node"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def proof_latency(backend: str, size: int, proofs: int, rng: random.Random) -> dict[str, Any]:
    with database(backend) as engine:
        load_start = time.perf_counter()
        bulk_load(engine, size)
        load_seconds = time.perf_counter() - load_start
        expected = merkle.CompactRange()
        for i in range(size):
            expected.append(synthetic_leaf(i))
        with Session(engine) as session:
            assert auditlog.tree_size(session) == size
            root = auditlog.root_at(session, size)
            assert root == expected.root(), "bulk-loaded tree does not match its leaves"
            inclusion_ms: list[float] = []
            inclusion_reads: list[int] = []
            for _ in range(proofs):
                index = rng.randrange(size)
                source = auditlog.SessionNodeSource(session)
                start = time.perf_counter()
                proof = merkle.inclusion_proof(index, size, source)
                inclusion_ms.append((time.perf_counter() - start) * 1e3)
                inclusion_reads.append(source.reads)
                merkle.verify_inclusion(synthetic_leaf(index), index, size, proof, root)
            consistency_ms: list[float] = []
            consistency_reads: list[int] = []
            for _ in range(proofs):
                old = rng.randrange(1, size)
                source = auditlog.SessionNodeSource(session)
                start = time.perf_counter()
                merkle.consistency_proof(old, size, source)
                consistency_ms.append((time.perf_counter() - start) * 1e3)
                consistency_reads.append(source.reads)
            start = time.perf_counter()
            auditlog.append(session, event(size))
            append_ms = (time.perf_counter() - start) * 1e3
            session.rollback()
    return {
        "size": size,
        "load_s": load_seconds,
        "incl_p50": statistics.median(inclusion_ms),
        "incl_p99": percentile(inclusion_ms, 0.99),
        "incl_reads": max(inclusion_reads),
        "cons_p50": statistics.median(consistency_ms),
        "cons_p99": percentile(consistency_ms, 0.99),
        "cons_reads": max(consistency_reads),
        "append_ms": append_ms,
    }


def witness_cost(witnesses: int, checkpoints: int, appends: int) -> dict[str, float]:
    """Median ms per checkpoint signed alone / signed and cosigned, and ev/s without / with."""
    from hub.devtools.deployment import LocalDeployment
    from hub.services.audit import Checkpointer, log_signer
    from hub.services.witnesses import CosignatureCollector

    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fraudhub-bench-") as tmp:
        root = Path(tmp)
        world = LocalDeployment(
            root / "data",
            root / "clients",
            threshold=min(2, witnesses),
            holders=witnesses,
            log_to_file=False,
        )
        try:
            for running in world.holders.values():
                running.server.start()
            store, config = world.hub.store, world.hub.config
            assert config.witness_identity is not None
            collector = CosignatureCollector(
                store,
                config.witnesses,
                config.witness_identity,
                default_ca=world.data_dir / "tls" / "ca.pem",
            )
            signer = log_signer(world.data_dir)
            counter = iter(range(10**9))

            def append(count: int) -> None:
                for _ in range(count):
                    with store.session() as session:
                        auditlog.append(session, event(next(counter)))
                        session.commit()

            for label, cosigner in (("sign_ms", None), ("cosign_ms", collector)):
                checkpointer = Checkpointer(
                    store, signer, every_events=1, every_seconds=1e9, collector=cosigner
                )
                times = []
                for _ in range(checkpoints):
                    append(10)
                    start = time.perf_counter()
                    checkpointer.run_once()
                    times.append((time.perf_counter() - start) * 1000)
                result[label] = statistics.median(times)
            for label, cosigner in (("rate_off", None), ("rate_on", collector)):
                checkpointer = Checkpointer(
                    store, signer, every_events=100, every_seconds=1e9, collector=cosigner
                )
                stop = threading.Event()
                thread = threading.Thread(
                    target=checkpointer.run_until, args=(stop.wait,), kwargs={"tick": 0.01}
                )
                thread.start()
                start = time.perf_counter()
                append(appends)
                result[label] = appends / (time.perf_counter() - start)
                stop.set()
                thread.join()
            collector.close()
        finally:
            world.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--append", type=int, default=2000, help="events per append run")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--proofs", type=int, default=200, help="proofs timed per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--witnesses", type=int, default=0, help="also measure cosigning by W witnesses"
    )
    parser.add_argument("--checkpoints", type=int, default=50, help="checkpoints timed")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print(f"fraudhub bench/audit.py  backend={args.backend}  python={sys.version.split()[0]}")
    if args.append > 0:
        print(f"{'append mode':<26}{'off ev/s':>10}{'on ev/s':>10}{'on/off':>8}")
        for per_txn in (1, 100):
            off = append_rate(args.backend, args.append, per_txn, merkle_on=False)
            on = append_rate(args.backend, args.append, per_txn, merkle_on=True)
            label = f"{per_txn} event(s) per txn"
            print(f"{label:<26}{off:>10.0f}{on:>10.0f}{on / off:>8.2f}", flush=True)
    if args.witnesses > 0:
        w = witness_cost(args.witnesses, args.checkpoints, args.append)
        print(
            f"checkpoint with {args.witnesses} witness(es): sign {w['sign_ms']:.2f} ms, "
            f"sign+cosign {w['cosign_ms']:.2f} ms (median of {args.checkpoints}); appends "
            f"with a checkpoint every 100 events: {w['rate_off']:.0f} ev/s without, "
            f"{w['rate_on']:.0f} ev/s with cosigning ({w['rate_on'] / w['rate_off']:.2f})",
            flush=True,
        )
    if args.sizes:
        print(
            f"{'events':>10}{'load s':>8}{'incl p50 ms':>12}{'p99':>7}{'rows':>6}"
            f"{'cons p50 ms':>12}{'p99':>7}{'rows':>6}{'append ms':>10}"
        )
        for size in args.sizes:
            r = proof_latency(args.backend, size, args.proofs, rng)
            print(
                f"{r['size']:>10}{r['load_s']:>8.0f}{r['incl_p50']:>12.2f}{r['incl_p99']:>7.2f}"
                f"{r['incl_reads']:>6}{r['cons_p50']:>12.2f}{r['cons_p99']:>7.2f}"
                f"{r['cons_reads']:>6}{r['append_ms']:>10.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
