"""No raw value reaches the hub's or the key holders' disks or logs.

Runs an end-to-end scenario (contributions with labels, matches, revocations,
malformed and refused calls, a bulk CSV run) and ``fraudhub demo``, then reads
every file of the hub's and the key holders' directories (SQLite database, WAL
and shared memory, audit key, the holders' own registries, quota and token-id
files, logs) and fails if any raw value, its digits-only form
or a label text appears in one (``tests/leakcheck.py``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fraudhub.v1 import exchange_pb2, exchange_pb2_grpc
from leakcheck import assert_no_leak, digits_of
from test_demo import ROOT, run_fraudhub

from client_sdk import Indicator
from client_sdk.client import feedback
from client_sdk.client.alerts import RefMap
from client_sdk.client.bulk import JobStopped, run_job, screening_job
from client_sdk.client.csvrows import CsvSource
from client_sdk.client.feedback import Sighting
from client_sdk.client.results import ItemFailure
from client_sdk.core.errors import InvalidRequest, PermissionDenied, PolicyDenied
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, mint_jwt
from client_sdk.wire.channels import open_channel
from hub.devtools.deployment import LocalDeployment
from hub.infra.logs import JsonFormatter
from hub.storage.models import utcnow
from hub.storage.store import disable_institution

EXAMPLES = ROOT / "examples"

SCENARIO = {
    "phone": ["+86 135 5501 2345", "13655012346", "+86-137-5501-2347"],
    "bank_card": ["6258 0740 3980 1163", "6288889912271554"],
    "national_id": ["330106200109202340", "310104199207074563"],
    "email": ["Mule.Account@Example-Leak.cn"],
    "url": ["https://leak-check.example-phish.cn/pay?id=77"],
}
LABELS = ["victim paid 12000 yuan on 3 Oct", "contact officer Wang 021-5550199"]
# An institution's own references of watched rows: they never leave it.
WATCH_REFS = ["LEAKREF-Zhang-San-0417", "LEAKREF-acct-holder-9931"]


def example_values() -> list[str]:
    values: list[str] = []
    for path in EXAMPLES.glob("*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                values.append(row["value"])
                if row.get("label"):
                    values.append(row["label"])
                if row.get("ref"):  # a watcher's own reference stays on its side
                    values.append(row["ref"])
    return values


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def scenario(world: LocalDeployment, tmp_path: Path) -> list[Path]:
    """Drive every flow; return the client-side files a bulk job wrote (journal, output)."""
    for institution, role in (("bank-a", "bank"), ("bank-b", "bank"), ("carrier-x", "carrier")):
        world.register(institution, role)
    items = [
        Indicator(kind, value, "money_mule", 70, label=LABELS[i % 2])
        for i, (kind, value) in enumerate((k, v) for k, vs in SCENARIO.items() for v in vs)
    ]
    for bank in ("bank-a", "bank-b"):
        world.client(bank).contribute(items, purpose="fraud_reporting", case_reference="CASE-9")
    pairs = [(k, v) for k, vs in SCENARIO.items() for v in vs]
    world.client("carrier-x").match(pairs, purpose="sim_activation_screening")
    world.client("bank-b").match(pairs, purpose="payment_screening")
    world.client("bank-a").revoke(pairs[:2], reason="false_positive")
    # Invalid values never leave the client; refused calls are audited without them.
    world.client("bank-a").contribute(
        [Indicator("phone", "12345678901234567", "scam_phone")], purpose="fraud_reporting"
    )
    refused = world.client("carrier-x").match(pairs[3:5], purpose="payment_screening")
    assert all(isinstance(r, ItemFailure) for r in refused)
    bulk = tmp_path / "bulk.csv"
    bulk.write_text(
        "kind,value,category,label\n" + "".join(f"{k},{v},phishing,{LABELS[0]}\n" for k, v in pairs)
    )
    world.client("bank-a").contribute_csv(bulk, purpose="fraud_reporting", progress=False)
    world.client("bank-b").match_csv(
        bulk, io.StringIO(), purpose="payment_screening", progress=False
    )
    # Values typed where free text goes: a purpose, a revocation reason, a kind column.
    number = digits_of(SCENARIO["phone"][0])
    [undeclared] = world.client("bank-b").match(pairs[:1], purpose=number)
    assert isinstance(undeclared, ItemFailure) and isinstance(undeclared.error, PolicyDenied)
    with pytest.raises(InvalidRequest):
        world.client("bank-a").revoke(pairs[2:3], reason=number)
    swapped = tmp_path / "swapped.csv"
    swapped.write_text(f"kind,value,category\n{SCENARIO['phone'][1]},phone,phishing\n")
    summary = world.client("bank-a").contribute_csv(
        swapped, purpose="fraud_reporting", progress=False
    )
    assert [(f.kind, number in f.reason) for f in summary.failures] == [("unknown", False)]
    # An institution only the hub registered: every holder refuses it (issue 10).
    world.register("shadow-bank", "bank", admitted_by=())
    with pytest.raises(PermissionDenied):
        world.client("shadow-bank").match(pairs, purpose="payment_screening")
    watch_scenario(world, tmp_path, pairs)
    exchange = exchange_pb2_grpc.ExchangeStub(open_channel(world.hub_address, world.security))
    token = mint_jwt(world.keys["carrier-x"].private_key, "carrier-x", "wrong-audience")
    with pytest.raises(grpc.RpcError):
        exchange.Match(
            exchange_pb2.MatchRequest(purpose="x", queries=[]),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    disputes_of(world, pairs)
    stream_ended_by_a_disable(world, pairs)
    feedback_flows(world, pairs)
    return stopped_bulk_job(world, bulk, tmp_path)


def feedback_flows(world: LocalDeployment, pairs: list[tuple[str, str]]) -> None:
    """Issue 12: evidence classes, sightings, reviews and warning lists carry tokens only."""
    world.client("bank-b").contribute(
        [Indicator("phone", SCENARIO["phone"][2], "scam_phone", 90, evidence="police_case")],
        purpose="fraud_reporting",
    )
    filed = world.client("carrier-x").file_sightings(
        [Sighting(kind, value, "false_positive") for kind, value in pairs[:3]],
        purpose="sim_activation_screening",
    )
    assert filed.recorded == 3
    world.client("bank-b").review_sightings(pairs[:3], purpose="fraud_reporting")
    world.register("operator-leak", "operator")
    operator = world.client("operator-leak")
    member = world.client("bank-b")
    change = feedback.warninglist_change(
        operator, pairs[3:5], list_name="known-good", add=True, tokenizer=member
    )
    assert change.changed == 2
    feedback.warninglist_change(
        operator, pairs[3:4], list_name="known-good", add=False, tokenizer=member
    )
    refused = world.client("bank-a").contribute(
        [Indicator(*pairs[4], "money_mule")], purpose="fraud_reporting"
    )
    assert isinstance(refused[0], ItemFailure)


def stopped_bulk_job(world: LocalDeployment, bulk: Path, tmp_path: Path) -> list[Path]:
    """A screening stopped after its first window leaves a journal; it and the output
    are the client-side files a bulk job writes (tests/test_bulk_jobs.py: resume)."""
    client = world.client("bank-b")
    stop = threading.Event()

    def screening(pairs: Sequence[tuple[str, str]]) -> Callable[[], list[Any]]:
        stop.set()  # the job stops once this window is answered and journaled
        return client._screening(pairs, "payment_screening", None, streaming=True)

    out, journal = tmp_path / "stopped.csv", tmp_path / "stopped.csv.journal"
    with out.open("w", newline="") as handle, pytest.raises(JobStopped):
        spec = screening_job("payment_screening", screening)
        run_job(CsvSource(bulk), spec, out=handle, journal=journal, window=3, stop=stop,
                progress=False)  # fmt: skip
    assert len(journal.read_text().splitlines()) == 1 + 3
    return [out, journal]


def disputes_of(world: LocalDeployment, pairs: list[tuple[str, str]]) -> None:
    """Disputes open, list, answer and lapse without a value reaching the hub (issue 12)."""
    from hub.services.disputes import sweep_lapsed

    kind, value = pairs[2]  # still listed by bank-b
    # The person's value typed into the case reference too: only its digest is kept.
    opened = world.client("carrier-x").disputes.open(kind, value, case_reference=f"DSR {value}")
    assert opened.suspended >= 1 and opened.due_at is not None
    with pytest.raises(PolicyDenied):
        world.client("carrier-x").disputes.open(
            kind, value, case_reference="DSR-2", purpose=digits_of(value)
        )
    items, _ = world.client("bank-b").disputes.list()
    world.client("bank-b").disputes.uphold(items[0].id, "police_case")
    other_kind, other = pairs[5]
    lapsing = world.client("bank-a").disputes.open(other_kind, other, case_reference="DSR-3")
    assert lapsing.due_at is not None
    sweep_lapsed(world.hub.store, world.hub.policy.current.version, lapsing.due_at + timedelta(1))


def stream_ended_by_a_disable(world: LocalDeployment, pairs: list[tuple[str, str]]) -> None:
    """A MatchStream of real tokens refused mid-stream (ADR 0011) logs and audits no value."""
    world.register("bank-gone", "bank")
    phones = [(k, v) for k, v in pairs if k == "phone"]
    tokens = world.client("bank-gone")._tokenizer.tokenize(phones)
    queries = [
        exchange_pb2.MatchQuery(token=t.match_token, kind="phone", key_epoch=world.public.epoch)
        for t in tokens
    ]
    requests = [exchange_pb2.MatchRequest(purpose="payment_screening", queries=queries)] * 2
    auth = BearerAuth(world.keys["bank-gone"], HUB_AUDIENCE)
    stub = exchange_pb2_grpc.ExchangeStub(open_channel(world.hub_address, world.security, auth))

    def feed() -> Iterator[exchange_pb2.MatchRequest]:
        yield requests[0]
        with world.hub.store.session() as session:
            disable_institution(session, "bank-gone", utcnow())
            session.commit()
        world.hub.registry.invalidate()
        yield requests[1]

    with pytest.raises(grpc.RpcError) as ended:
        list(stub.MatchStream(feed(), timeout=30))
    assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED


def watch_scenario(world: LocalDeployment, tmp_path: Path, pairs: list[tuple[str, str]]) -> None:
    """Watches with references, alerts raised, delivered and acknowledged, a refusal."""
    refs = RefMap(tmp_path / "clients-refs.sqlite3")
    try:
        carrier = world.client("carrier-x")
        watched = carrier.watch(
            pairs,
            purpose="customer_monitoring",
            reference=(WATCH_REFS * len(pairs))[: len(pairs)],
            ref_map=refs,
        )
        assert any(isinstance(f.error, PolicyDenied) for f in watched.failures)  # bank_card
        assert watched.added > 0
        world.client("bank-b").contribute(
            [Indicator(k, v, "scam_phone", 60) for k, v in pairs], purpose="fraud_reporting"
        )
        world.client("bank-a").watch(
            pairs, purpose="customer_monitoring", ref_map=refs, initial=True
        )
        page = carrier.alerts.list(ref_map=refs, limit=1000)
        assert page.alerts and {a.ref for a in page.alerts} <= set(WATCH_REFS)
        carrier.alerts.ack(page.alerts[-1].sequence)
        stream = carrier.alerts.follow(start=0, timeout=5, ref_map=refs)
        assert next(stream).ref in WATCH_REFS
        stream.close()
        world.client("bank-b").revoke(pairs[:1], reason="false_positive")  # a withdrawn alert
        assert carrier.unwatch(pairs, ref_map=refs) > 0
    finally:
        refs.close()


@pytest.mark.e2e
def test_no_raw_value_in_databases_wal_or_logs(tmp_path: Path) -> None:
    hub_dir, holders_dir = tmp_path / "e2e", tmp_path / "e2e-holders"
    # The servers' records as `--log-format json` writes them, per-RPC lines included.
    json_log = logging.FileHandler(hub_dir / "servers.jsonl", encoding="utf-8", delay=True)
    json_log.setFormatter(JsonFormatter())
    logging.getLogger("hub").addHandler(json_log)
    try:
        with LocalDeployment(hub_dir, tmp_path / "clients", holders_dir=holders_dir) as world:
            world.start()
            client_files = scenario(world, tmp_path)
            # Read the WAL before shutdown checkpoints it into the database.
            live = {p: p.read_bytes() for p in all_files(hub_dir) + all_files(holders_dir)}
    finally:
        logging.getLogger("hub").removeHandler(json_log)
        json_log.close()
    rpc_lines = [
        line
        for line in map(json.loads, (hub_dir / "servers.jsonl").read_text().splitlines())
        if "method" in line
    ]
    assert {"Exchange/Match", "Exchange/Contribute", "KeyHolder/BlindEvaluate"} <= {
        line["method"] for line in rpc_lines
    }
    assert {"bank-a", "carrier-x"} <= {line["institution"] for line in rpc_lines}
    demo_dir = tmp_path / "demo"
    done = run_fraudhub("demo", "--data-dir", str(demo_dir))
    assert done.returncode == 0, done.stderr

    after = all_files(hub_dir) + all_files(holders_dir) + all_files(demo_dir)
    files = {**live, **{p: p.read_bytes() for p in after}}
    names = {p.name for p in files}
    expected = {"hub.sqlite3", "hub.sqlite3-wal", "servers.log", "servers.jsonl", "quota.sqlite3"}
    assert expected <= names
    assert {"admitted.json", "seen-tokens.sqlite3", "holder.json"} <= names
    # The demo's key came from the DKG: its state and round files are read too.
    assert {"dkg-state.json", "deal-holder-1.json", "reveal-holder-3.json", "share-2.json"} <= names
    secrets = [v for vs in SCENARIO.values() for v in vs] + LABELS + WATCH_REFS + example_values()
    assert len(secrets) > 30
    for path, data in files.items():
        text = data.decode("latin-1")
        try:
            assert_no_leak(text, secrets)
        except AssertionError:
            raise AssertionError(f"a raw value leaked into {path}") from None
    # A bulk job's journal and output hold row numbers and the hub's answers: no raw
    # value; a label text only where the policy disclosed it, as in the output itself.
    values = [v for vs in SCENARIO.values() for v in vs] + example_values()
    output, journal = (p.read_text(encoding="utf-8") for p in client_files)
    assert_no_leak(output + journal, values)
    assert all(label in output for label in LABELS if label in journal)
    # The check itself sees a value when there is one.
    with pytest.raises(AssertionError):
        assert_no_leak("x" + digits_of(SCENARIO["phone"][0]) + "x", secrets)
