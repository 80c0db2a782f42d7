"""Bad wire input gets INVALID_ARGUMENT after authentication, item by item (issue 13).

Before: any undecodable message got INTERNAL "Exception deserializing
request!" on every RPC of hub and holders, before the token was checked;
timestamps outside years 1-9999 (or nanos outside [0, 1e9)) gave INTERNAL in
Contribute, ContributeStream, ListEvents and GetReport, and Contribute rolled
back its valid items and audited nothing; ListEvents with start or end >= 2**63
raised SQLite's OverflowError.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from _wire_targets import Target, Targets, call_raw, running_targets
from fraudhub.v1 import audit_pb2, common_pb2, exchange_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hub.audit.events import AuditEvent, decode
from hub.storage import auditlog

pytestmark = pytest.mark.e2e

GARBAGE = b"\xff\xff\xff\xff\x0f"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    with running_targets(tmp_path_factory.mktemp("bad-input")) as targets:
        yield targets


def _target(running: Targets, suffix: str) -> Target:
    return next(t for t in running.targets if t.method.endswith(suffix))


def _last_event(running: Targets) -> AuditEvent:
    with running.hub.store.session() as session:
        size = auditlog.tree_size(session)
        (row,) = auditlog.list_events(session, size - 1, None)
    return decode(row.body)


def _stamp(seconds: int, nanos: int = 0) -> Timestamp:
    stamp = Timestamp()
    stamp.seconds, stamp.nanos = seconds, nanos
    return stamp


def _indicator(**fields: Any) -> exchange_pb2.Indicator:
    item = exchange_pb2.Indicator(
        token=os.urandom(32),
        kind="phone",
        category=common_pb2.SCAM_PHONE,
        confidence=50,
        key_epoch=1,
        **fields,
    )
    if not item.HasField("observed_at"):
        item.observed_at.GetCurrentTime()
    return item


def _details(error: grpc.RpcError) -> tuple[list[str], list[Any]]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    others: list[Any] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
        elif detail.Is(exchange_pb2.ContributeResponse.DESCRIPTOR):
            partial = exchange_pb2.ContributeResponse()
            detail.Unpack(partial)
            others.append(partial)
    return fields, others


@pytest.mark.parametrize(
    "suffix",
    [
        "Exchange/Match",
        "Audit/GetReport",
        "KeyHolder/BlindEvaluate",
        "Alerts/Watch",
        "Alerts/Subscribe",
    ],
)
def test_undecodable_requests_are_invalid_argument_after_authentication(
    running: Targets, suffix: str
) -> None:
    target = _target(running, suffix)
    code, details = call_raw(running.channel(target, authenticated=True), target, [GARBAGE])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.endswith("the request message does not decode")
    # The token is checked first: without one, the bytes are never looked at.
    code, _ = call_raw(running.channel(target, authenticated=False), target, [GARBAGE])
    assert code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("suffix", ["Admin/ListInstitutions", "Alerts/Ack"])
def test_a_message_over_its_method_s_limit_is_invalid_argument(
    running: Targets, suffix: str
) -> None:
    target = _target(running, suffix)
    code, details = call_raw(
        running.channel(target, authenticated=True), target, [b"\x0a" * (70 * 1024)]
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 65536 bytes" in details


@pytest.mark.parametrize("streamed", [False, True])
def test_out_of_range_timestamps_are_item_errors_and_valid_items_are_stored(
    running: Targets, streamed: bool
) -> None:
    request = exchange_pb2.ContributeRequest(
        purpose="fraud_reporting",
        indicators=[
            _indicator(),
            _indicator(observed_at=_stamp(2**62)),
            _indicator(expires_at=_stamp(0, -1)),
            _indicator(observed_at=_stamp(-(2**40))),
        ],
    )
    method = "ContributeStream" if streamed else "Contribute"
    target = _target(running, f"Exchange/{method}")
    channel = running.channel(target, authenticated=True)
    payload = request.SerializeToString()
    try:
        if streamed:
            upload: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
                target.method
            )
            upload(iter([payload]), timeout=10)
        else:
            unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(target.method)
            unary(payload, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields, partials = _details(exc)
    else:
        pytest.fail("malformed items were accepted")
    assert fields == ["indicators[1]", "indicators[2]", "indicators[3]"]
    (partial,) = partials
    assert partial.accepted == 1
    assert [m.index for m in partial.malformed] == [1, 2, 3]
    event = _last_event(running)
    assert (event.action, event.outcome, event.item_count) == (f"Exchange.{method}", "ok", 4)
    assert "INVALID_ITEMS" in event.reasons


@pytest.mark.parametrize(
    "request_fields",
    [{"start": 2**63}, {"end": 2**64 - 1}, {"limit": 2**63}],
)
def test_list_events_bounds_are_invalid_argument_and_audited(
    running: Targets, request_fields: dict[str, int]
) -> None:
    target = _target(running, "Audit/ListEvents")
    request = audit_pb2.ListEventsRequest()
    for name, value in request_fields.items():
        setattr(request, name, value)
    code, details = call_raw(
        running.channel(target, authenticated=True), target, [request.SerializeToString()]
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    event = _last_event(running)
    assert (event.action, event.outcome) == ("Audit.ListEvents", "invalid")


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        (
            "ListEvents",
            audit_pb2.ListEventsRequest(filter=audit_pb2.EventFilter(since=_stamp(2**62))),
        ),
        ("GetReport", audit_pb2.GetReportRequest(**{"from": _stamp(0, 10**9)})),
        ("GetReport", audit_pb2.GetReportRequest(to=_stamp(-(2**62)))),
    ],
)
def test_audit_timestamps_out_of_range_are_invalid_argument_and_audited(
    running: Targets, method: str, request_message: Any
) -> None:
    target = _target(running, f"Audit/{method}")
    code, details = call_raw(
        running.channel(target, authenticated=True),
        target,
        [request_message.SerializeToString()],
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside" in details
    event = _last_event(running)
    assert (event.action, event.outcome) == (f"Audit.{method}", "invalid")
