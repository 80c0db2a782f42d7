"""Fuzz: every RPC of the hub and the key holder, raw and mutated protobuf bytes.

Drives each method of every service the two servers decode (hub: Exchange,
Admin, Audit and whatever else its role table lists; key holder: KeyHolder
and Witness),
with a valid token of an allowed role and with none, and asserts that only
``hub.wire.status.DOCUMENTED_CODES`` come back, that gRPC never logs a
deserialization traceback, and that both servers still answer afterwards.

Inputs: random bytes; random protobuf encodings (fields 1..12 of every wire
type, varints up to 2**64, nested messages two deep, so timestamps with
seconds or nanos out of range reach Contribute, ListEvents and GetReport);
valid requests with bytes flipped, cut or inserted.  Bounded: 1,000 calls by
default (a few seconds); ``FRAUDHUB_FUZZ_EXAMPLES=20000`` for a long run.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator

import grpc
import pytest
from _wire_targets import Target, Targets, call_raw, running_targets
from fraudhub.v1 import alerts_pb2, audit_pb2, exchange_pb2, keyholder_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.core import oprf
from hub.wire.status import DOCUMENTED_CODES

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("FRAUDHUB_FUZZ_EXAMPLES", "1000"))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Targets, _Records]]:
    records = _Records()
    logging.getLogger().addHandler(records)
    try:
        with running_targets(tmp_path_factory.mktemp("fuzz")) as running:
            yield running, records
    finally:
        logging.getLogger().removeHandler(records)


# --- inputs ------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


_INTS = st.one_of(
    st.integers(0, 300),
    st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), -1),  # int64 negatives as two's complement varints
)


def _message(depth: int) -> st.SearchStrategy[bytes]:
    leaf = st.one_of(
        st.tuples(st.integers(1, 12), _INTS).map(lambda f: _field(f[0], 0, _varint(f[1]))),
        st.tuples(st.integers(1, 12), st.binary(max_size=40)).map(
            lambda f: _field(f[0], 2, _varint(len(f[1])) + f[1])
        ),
        st.tuples(st.integers(1, 12), st.binary(min_size=8, max_size=8)).map(
            lambda f: _field(f[0], 1, f[1])
        ),
        st.tuples(st.integers(1, 12), st.binary(min_size=4, max_size=4)).map(
            lambda f: _field(f[0], 5, f[1])
        ),
    )
    if depth > 0:
        nested = st.tuples(st.integers(1, 12), _message(depth - 1)).map(
            lambda f: _field(f[0], 2, _varint(len(f[1])) + f[1])
        )
        leaf = st.one_of(leaf, nested)
    return st.lists(leaf, max_size=6).map(b"".join)


def _stamp(seconds: int, nanos: int) -> Timestamp:
    stamp = Timestamp()
    stamp.seconds, stamp.nanos = seconds, nanos
    return stamp


def _samples() -> list[bytes]:
    """Valid requests of the methods that carry data, to mutate."""
    token = bytes(range(32))
    bad_stamp = _stamp(2**62, 0)
    return [
        exchange_pb2.ContributeRequest(
            purpose="payment_screening",
            indicators=[
                exchange_pb2.Indicator(token=token, kind="url", key_epoch=1, confidence=50),
                exchange_pb2.Indicator(token=token, kind="url", key_epoch=1, observed_at=bad_stamp),
            ],
        ).SerializeToString(),
        exchange_pb2.MatchRequest(
            purpose="payment_screening",
            queries=[exchange_pb2.MatchQuery(token=token, kind="url", key_epoch=1)],
        ).SerializeToString(),
        alerts_pb2.WatchRequest(
            purpose="customer_monitoring",
            items=[alerts_pb2.WatchItem(token=token, kind="url", key_epoch=1)],
            expires_at=bad_stamp,
        ).SerializeToString(),
        audit_pb2.ListEventsRequest(start=2**63, end=2**64 - 1).SerializeToString(),
        audit_pb2.GetReportRequest(**{"from": _stamp(0, -1)}).SerializeToString(),
        keyholder_pb2.BlindEvaluateRequest(
            epoch=1, blinded_elements=[oprf.GENERATOR]
        ).SerializeToString(),
    ]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_samples())))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=9))
    return bytes(data)


_PAYLOAD = st.one_of(
    st.binary(max_size=200),
    _message(2),
    _mutated(),
    st.just(struct.pack("<I", 0xFFFFFFFF)),
)


# --- the test ------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(data=st.data())
def test_every_rpc_answers_only_documented_codes(
    targets: tuple[Targets, _Records], data: st.DataObject
) -> None:
    running, _ = targets
    # Alerts.Subscribe is a standing stream: a request that decodes holds a hub worker
    # until the caller's deadline, which would starve this loop; its decoding is
    # covered by test_wire_bad_input (undecodable bytes, INVALID_ARGUMENT).
    fuzzed = [t for t in running.targets if t.method != "/fraudhub.v1.Alerts/Subscribe"]
    assert len(fuzzed) == len(running.targets) - 1
    target: Target = data.draw(st.sampled_from(fuzzed), label="target")
    authenticated = data.draw(st.booleans(), label="authenticated")
    messages = data.draw(st.lists(_PAYLOAD, min_size=1, max_size=3), label="messages")
    code, details = call_raw(running.channel(target, authenticated), target, messages)
    assert code in DOCUMENTED_CODES, (target.method, authenticated, code, details)
    if not authenticated:
        assert code == grpc.StatusCode.UNAUTHENTICATED, (target.method, code, details)


def test_servers_stay_up_and_log_no_deserialization_traceback(
    targets: tuple[Targets, _Records],
) -> None:
    running, records = targets
    # Runs after the fuzz test in this module (file order).
    for server in ("hub", "holder"):
        stub = health_pb2_grpc.HealthStub(running.anonymous[server])
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    grpc_errors = [
        r.getMessage()
        for r in records.records
        if r.name.startswith("grpc") and r.levelno >= logging.ERROR
    ]
    assert grpc_errors == []
    unexpected = [
        r.getMessage() for r in records.records if r.getMessage().startswith("unexpected ")
    ]
    assert unexpected == []


def test_fuzz_targets_cover_both_servers(targets: tuple[Targets, _Records]) -> None:
    running, _ = targets
    servers = {t.server for t in running.targets}
    assert servers == {"hub", "holder"}
    services = {t.method.split("/")[1] for t in running.targets}
    assert {"fraudhub.v1.Exchange", "fraudhub.v1.Admin", "fraudhub.v1.Audit"} <= services
    assert "fraudhub.v1.Alerts" in services
    assert {"fraudhub.v1.KeyHolder", "fraudhub.v1.Witness"} <= services
