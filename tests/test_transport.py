"""Status mapping both ways (hub.wire.status -> client_sdk.wire.status) and the retry helper."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core.errors import (
    AlreadyExists,
    AuthenticationError,
    ConfigurationError,
    FraudhubError,
    HolderError,
    InvalidIndicator,
    InvalidItems,
    InvalidRequest,
    ItemError,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    PolicyError,
    QuotaExhausted,
    ServerError,
    StorageError,
    Unavailable,
)
from client_sdk.wire.channels import ChannelSecurity, RetryPolicy, call_with_retry, open_channel
from client_sdk.wire.status import (
    MAX_FIELD_VIOLATIONS,
    decode_field_violation,
    encode_field_violation,
    errors_from_status,
)
from hub.wire.status import INTERNAL_MESSAGE, ErrorInterceptor
from hub.wire.tls import bind

SECRET = "+8613812345678"  # stands for a value that must never reach logs or clients

Handler = Callable[[bytes, grpc.ServicerContext], Any]


@pytest.fixture
def serve() -> Iterator[Callable[[dict[str, grpc.RpcMethodHandler[Any, Any]]], grpc.Channel]]:
    """Start a plaintext loopback server with the error interceptor and given methods."""
    servers: list[grpc.Server] = []
    channels: list[grpc.Channel] = []

    def start(methods: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> grpc.Channel:
        server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[ErrorInterceptor()])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", methods),))
        port = bind(server, "127.0.0.1:0", None, insecure=True)
        server.start()
        servers.append(server)
        channel = open_channel(f"127.0.0.1:{port}", ChannelSecurity(insecure=True))
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(None)


def _raising(exc: Exception) -> grpc.RpcMethodHandler[Any, Any]:
    def behavior(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise exc

    return grpc.unary_unary_rpc_method_handler(behavior)


def _failure(channel: grpc.Channel, method: str = "/t.T/M") -> FraudhubError:
    with pytest.raises(grpc.RpcError) as info:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        call(b"request", timeout=10)
    return errors_from_status(info.value)


ROUND_TRIPS: list[FraudhubError] = [
    InvalidRequest("batch too large"),
    AuthenticationError("token expired"),
    PermissionDenied("role bank may not call X"),
    PolicyDenied("denied by policy", ("sensitive_kind", "no_case_reference")),
    QuotaExhausted("daily quota spent"),
    NotFound("no such institution"),
    AlreadyExists("institution exists"),
    ConfigurationError("policy missing"),
    PolicyError("policy.yaml line 3: bad field"),
    Unavailable("hub draining"),
    HolderError(2, "evaluation rejected"),
    InvalidIndicator("phone", "not a valid number", 4),
    InvalidItems(
        "2 invalid items",
        (ItemError(0, "phone", "too short", "queries"), ItemError(7, "", "token: 31 bytes")),
    ),
]


@pytest.mark.e2e
@pytest.mark.parametrize("error", ROUND_TRIPS, ids=lambda e: type(e).__name__)
def test_errors_round_trip_with_class_and_details(
    serve: Callable[..., grpc.Channel], error: FraudhubError
) -> None:
    channel = serve({"M": _raising(error)})
    back = _failure(channel)
    assert type(back) is type(error)
    assert str(back) == str(error)
    for attribute in ("reasons", "holder", "items", "kind", "reason", "index"):
        assert getattr(back, attribute, None) == getattr(error, attribute, None)


@pytest.mark.e2e
def test_many_item_errors_are_capped(serve: Callable[..., grpc.Channel]) -> None:
    items = tuple(ItemError(i, "phone", "invalid", "indicators") for i in range(5000))
    back = _failure(serve({"M": _raising(InvalidItems("5000 invalid items", items))}))
    assert isinstance(back, InvalidItems)
    assert back.items == items[:MAX_FIELD_VIOLATIONS]


@pytest.mark.e2e
def test_unexpected_exceptions_are_internal_and_not_echoed(
    serve: Callable[..., grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    channel = serve({"M": _raising(KeyError(SECRET))})
    with caplog.at_level(logging.ERROR, logger="hub.wire.status"):
        back = _failure(channel)
    assert isinstance(back, ServerError)
    assert str(back) == INTERNAL_MESSAGE
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "KeyError" in logged and "/t.T/M" in logged
    assert SECRET not in logged and SECRET not in caplog.text


@pytest.mark.e2e
def test_a_servicer_abort_keeps_its_status(serve: Callable[..., grpc.Channel]) -> None:
    def behavior(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "gone")

    back = _failure(serve({"M": grpc.unary_unary_rpc_method_handler(behavior)}))
    assert isinstance(back, NotFound) and str(back) == "gone"


@pytest.mark.e2e
def test_streaming_responses_are_mapped_too(serve: Callable[..., grpc.Channel]) -> None:
    def behavior(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        raise QuotaExhausted("quota spent mid-stream")

    channel = serve({"S": grpc.unary_stream_rpc_method_handler(behavior)})
    stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream("/t.T/S")
    replies = stream(b"request", timeout=10)
    assert next(replies) == b"first"
    with pytest.raises(grpc.RpcError) as info:
        next(replies)
    assert isinstance(errors_from_status(info.value), QuotaExhausted)


def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = open_channel(f"127.0.0.1:{port}", ChannelSecurity(insecure=True))
    back = _failure(channel)
    assert isinstance(back, Unavailable)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, AuthenticationError),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
    ],
)
def test_plain_statuses_map_by_code(code: grpc.StatusCode, cls: type[FraudhubError]) -> None:
    assert type(errors_from_status(FakeRpcError(code, "x"))) is cls


# --- retries ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_unavailable_is_retried_with_growing_backoff() -> None:
    clock = FakeClock()
    timeouts: list[float] = []

    def call(timeout: float) -> str:
        timeouts.append(timeout)
        if len(timeouts) < 4:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")
        return "ok"

    policy = RetryPolicy(deadline=60, initial_backoff=1, multiplier=2, max_backoff=3)
    result = call_with_retry(call, policy, clock=clock, sleep=clock.sleep, rng=random.Random(7))
    assert result == "ok"
    assert len(clock.sleeps) == 3
    assert [s <= cap for s, cap in zip(clock.sleeps, (1, 2, 3), strict=True)] == [True] * 3
    assert timeouts[0] == 60 and timeouts == sorted(timeouts, reverse=True)


def test_other_errors_are_not_retried() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def call(timeout: float) -> str:
        calls.append(timeout)
        raise FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "no")

    with pytest.raises(PermissionDenied):
        call_with_retry(call, clock=clock, sleep=clock.sleep)
    assert len(calls) == 1 and clock.sleeps == []


def test_retries_stop_at_the_deadline() -> None:
    clock = FakeClock()

    def call(timeout: float) -> str:
        clock.now += 1.0  # each attempt takes a second
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")

    policy = RetryPolicy(deadline=5, initial_backoff=1, max_backoff=1, max_attempts=100)
    with pytest.raises(Unavailable):
        call_with_retry(call, policy, clock=clock, sleep=clock.sleep, rng=random.Random(1))
    assert clock.now <= 5 + 1


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=10_000),
    kind=st.from_regex(r"[a-z_]{0,20}", fullmatch=True),
    reason=st.text(max_size=80),
    field=st.from_regex(r"[a-z_][a-z0-9_.]{0,20}", fullmatch=True),
)
def test_field_violations_round_trip(index: int, kind: str, reason: str, field: str) -> None:
    item = ItemError(index, kind, reason, field)
    assert decode_field_violation(encode_field_violation(item)) == item


def test_an_outage_shorter_than_the_deadline_is_invisible() -> None:
    """Issue 13: eight attempts gave up after ~6 s of backoff; the deadline is 30 s."""
    clock = FakeClock()

    def call(timeout: float) -> str:
        clock.now += 0.01  # a refused connection answers at once
        if clock.now < 25.0:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")
        return "ok"

    result = call_with_retry(call, clock=clock, sleep=clock.sleep, rng=random.Random(5))
    assert result == "ok" and clock.now < 30
    assert max(clock.sleeps) <= RetryPolicy().max_backoff


def test_the_final_error_says_what_was_tried_for_how_long() -> None:
    clock = FakeClock()

    def call(timeout: float) -> str:
        clock.now += 0.5
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")

    with pytest.raises(Unavailable) as error:
        call_with_retry(
            call, RetryPolicy(deadline=10), clock=clock, sleep=clock.sleep, rng=random.Random(2)
        )
    message = str(error.value)
    assert message.startswith("gave up after ") and "attempt(s) over " in message
    # Retried until the next pause would pass the deadline (pauses are at most 2 s;
    # the last attempt may still take its 0.5 s).
    assert "(retry deadline 10s); last: " in message and 8 <= clock.now <= 10.5


def test_a_storage_error_given_up_on_keeps_its_class_and_cause() -> None:
    clock = FakeClock()

    def call(timeout: float) -> str:
        clock.now += 1.0
        raise StorageError("the hub's database failed: disk full", cause="disk full")

    with pytest.raises(StorageError) as error:
        call_with_retry(
            call, RetryPolicy(deadline=5), retry_if=lambda e: True, clock=clock, sleep=clock.sleep
        )
    assert error.value.cause == "disk full"
    assert str(error.value).startswith("the hub's database failed: disk full; gave up after ")
