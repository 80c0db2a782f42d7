"""The Prometheus endpoints of the hub and the key holders, scraped over real HTTP
after real RPCs, and the one log line per RPC (``hub.wire.metrics``)."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from _audit_hub import RunningHub
from _keyholders import make_world
from fraudhub.v1 import exchange_pb2, exchange_pb2_grpc, keyholder_pb2, keyholder_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from client_sdk.core import threshold
from client_sdk.wire.auth import keyholder_audience
from client_sdk.wire.channels import ChannelSecurity, holder_server_name, open_channel
from hub.infra.logs import JsonFormatter
from hub.keyholder.admission import HolderRegistry
from hub.keyholder.server import KeyHolderServer, KeyHolderServicer, QuotaLedger
from hub.wire.auth import TokenVerifier
from hub.wire.metrics import RPC_LOGGER, ServerMetrics
from hub.wire.tls import HOLDER_STEM, load_server_credentials, tls_files

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(
    port: int, done: Callable[[Samples], bool], within: float = 10.0
) -> tuple[str, Samples]:
    """Scrape until ``done``: a call is counted when it terminates on the server,
    which may be just after its caller got the answer."""
    deadline = time.monotonic() + within
    while True:
        text, samples = scrape(port)
        if done(samples):
            return text, samples
        assert time.monotonic() < deadline, f"metrics incomplete after {within} s:\n{text}"
        time.sleep(0.05)


@pytest.mark.e2e
def test_hub_metrics_endpoint_and_request_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    hub = RunningHub(tmp_path, capsys)
    try:
        # The config path of `serve --metrics-port 0`; a checkpoint after every event.
        hub.config = replace(hub.config, metrics_port=0, checkpoint_every_events=1)
        hub.restart()
        port = hub.server.metrics_port
        assert port is not None
        caplog.set_level(logging.INFO, logger=RPC_LOGGER)
        hub.traffic(3)
        # A refused call: no token.
        bare = open_channel(f"127.0.0.1:{hub.port}", ChannelSecurity(insecure=True))
        with bare, pytest.raises(grpc.RpcError) as refused:
            exchange_pb2_grpc.ExchangeStub(bare).Match(
                exchange_pb2.MatchRequest(purpose="payment_screening"), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        text, samples = scrape_until(
            port,
            lambda now: (
                ("fraudhub_checkpoint_age_seconds", frozenset()) in now
                and value(now, "fraudhub_rpc_duration_seconds_count", method="Exchange/Match") == 4
            ),
        )
    finally:
        hub.stop()
    match = {"method": "Exchange/Match"}
    assert value(samples, "fraudhub_rpcs_total", **match, code="OK") == 3
    assert value(samples, "fraudhub_rpcs_total", **match, code="UNAUTHENTICATED") == 1
    assert value(samples, "fraudhub_rpc_duration_seconds_count", **match) == 4
    assert value(samples, "fraudhub_rpc_duration_seconds_sum", **match) > 0
    assert value(samples, "fraudhub_items_total", **match) == 3
    assert value(samples, "fraudhub_matches_total") == 0  # random tokens never match
    # The 3 matches were audited (the refusal is counted into a windowed event later).
    assert value(samples, "fraudhub_audit_log_size") >= 3
    assert 0 <= value(samples, "fraudhub_checkpoint_age_seconds") < 60
    # Labels name methods and codes only: never an institution or a token.
    assert "bank-a" not in text and "reg-1" not in text
    # One line per RPC, with the caller, the code, the items, the duration.
    lines = [r for r in caplog.records if r.name == RPC_LOGGER]
    # A line is written when the server finishes the call, so concurrent calls
    # may log in either order: compare as a multiset.
    logged = sorted((r.rpc["institution"], r.rpc["code"], r.rpc["items"]) for r in lines)  # type: ignore[attr-defined]
    assert logged == [
        ("-", "UNAUTHENTICATED", 0),
        ("bank-a", "OK", 1),
        ("bank-a", "OK", 1),
        ("bank-a", "OK", 1),
    ]
    ok = next(r for r in lines if r.rpc["code"] == "OK")  # type: ignore[attr-defined]
    rendered = json.loads(JsonFormatter().format(ok))
    assert rendered["method"] == "Exchange/Match" and rendered["code"] == "OK"
    assert rendered["duration_ms"] > 0 and rendered["level"] == "INFO"


@pytest.mark.e2e
def test_keyholder_metrics_count_rpcs_items_and_quota(tmp_path: Path) -> None:
    world = make_world(tmp_path, holders=1, threshold=1)
    share = world.shares[0]
    directory = world.holder_dirs[share.index]
    quota = QuotaLedger(tmp_path / "quota.sqlite3", 1000)
    metrics = ServerMetrics("keyholder")
    server = KeyHolderServer.create(
        KeyHolderServicer(share, world.public, quota),
        TokenVerifier(
            HolderRegistry(directory, holder_server_name(share.index)),
            keyholder_audience(share.index),
        ),
        "127.0.0.1:0",
        load_server_credentials(tls_files(directory, HOLDER_STEM)),
        metrics=metrics,
    )
    server.start()
    port = metrics.serve(0)
    try:
        with world.channel(1, server.port, "bank-a", keyholder_audience(1)) as channel:
            stub = keyholder_pb2_grpc.KeyHolderStub(channel)
            elements = threshold.blind_batch([b"a", b"b", b"c"]).blinded_elements
            stub.BlindEvaluate(
                keyholder_pb2.BlindEvaluateRequest(epoch=1, blinded_elements=elements), timeout=10
            )
            with pytest.raises(grpc.RpcError) as wrong_epoch:
                stub.BlindEvaluate(
                    keyholder_pb2.BlindEvaluateRequest(epoch=9, blinded_elements=elements),
                    timeout=10,
                )
        assert wrong_epoch.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        text, samples = scrape_until(
            port,
            lambda now: (
                value(now, "fraudhub_rpc_duration_seconds_count", method="KeyHolder/BlindEvaluate")
                == 2
            ),
        )
    finally:
        server.stop(None)
        metrics.close()
        quota.close()
    evaluate = {"method": "KeyHolder/BlindEvaluate"}
    assert value(samples, "fraudhub_rpcs_total", **evaluate, code="OK") == 1
    assert value(samples, "fraudhub_rpcs_total", **evaluate, code="INVALID_ARGUMENT") == 1
    assert value(samples, "fraudhub_items_total", **evaluate) == 3
    assert value(samples, "fraudhub_quota_used_elements_total") == 3
    assert value(samples, "fraudhub_server_info", role="keyholder") == 1
    assert "bank-a" not in text
    # The endpoint is closed with the server.
    with pytest.raises(OSError):
        scrape(port)
