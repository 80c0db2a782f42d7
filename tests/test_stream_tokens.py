"""Stream tokens outlive one bulk window (issue 10 follow-up to finding 5).

Servers now end a stream once its token expires, and one bulk window (up to
200,000 items) is one stream, so the SDK mints a streaming call's token with
``MAX_TOKEN_TTL`` and a unary call's with the short default.  The e2e test
runs a short-TTL configuration (a client clock set so that a unary-lifetime
token expires about a second into the stream) instead of a slow run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from _audit_hub import RunningHub
from fraudhub.v1 import exchange_pb2, exchange_pb2_grpc

from client_sdk.wire.auth import (
    DEFAULT_TOKEN_TTL,
    HUB_AUDIENCE,
    MAX_TOKEN_TTL,
    BearerAuth,
    InstitutionKey,
    generate_key,
)
from client_sdk.wire.channels import BearerInterceptor, ChannelSecurity, open_channel
from hub.wire.auth import LEEWAY

SHORT_TTL = 1


def lifetime(metadata: tuple[tuple[str, str], ...]) -> int:
    (header,) = (v for k, v in metadata if k == "authorization")
    claims = jwt.decode(header.removeprefix("Bearer "), options={"verify_signature": False})
    return int(claims["exp"] - claims["iat"])


def test_stream_calls_get_max_ttl_tokens_and_unary_calls_short_ones() -> None:
    auth = BearerAuth(InstitutionKey("bank-a", generate_key()), HUB_AUDIENCE)
    assert lifetime(auth.metadata()) == DEFAULT_TOKEN_TTL
    assert lifetime(auth.metadata(streaming=True)) == MAX_TOKEN_TTL

    seen: list[int] = []

    def continuation(details: Any, request: Any) -> None:
        seen.append(lifetime(details.metadata))

    interceptor = BearerInterceptor(auth)
    details: Any = type("Details", (), {"method": "/m", "timeout": None, "metadata": None,
                                         "credentials": None})()  # fmt: skip
    interceptor.intercept_unary_unary(continuation, details, None)
    interceptor.intercept_unary_stream(continuation, details, None)
    interceptor.intercept_stream_unary(continuation, details, iter(()))
    interceptor.intercept_stream_stream(continuation, details, iter(()))
    assert seen == [DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL, MAX_TOKEN_TTL, MAX_TOKEN_TTL]


@pytest.fixture
def hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path, capsys)
    yield running
    running.stop()


def _request() -> exchange_pb2.MatchRequest:
    query = exchange_pb2.MatchQuery(token=os.urandom(32), kind="url", key_epoch=1)
    return exchange_pb2.MatchRequest(purpose="payment_screening", queries=[query])


def _screen_slowly(hub: RunningHub, stream_ttl: int) -> int:
    """A MatchStream (the bulk path's stream) whose second window is sent 2 s in.

    The client's clock is set so that a token of the short unary lifetime
    expires 0.5 to 1.5 s into the stream (``iat`` is whole seconds).
    """
    skew = LEEWAY + SHORT_TTL - 1.5
    auth = BearerAuth(
        InstitutionKey.load("bank-a", hub.root / "bank-a.pem"),
        HUB_AUDIENCE,
        ttl=SHORT_TTL,
        clock=lambda: time.time() - skew,
        stream_ttl=stream_ttl,
    )

    def requests() -> Iterator[exchange_pb2.MatchRequest]:
        yield _request()
        time.sleep(2.0)  # a long window: the short token has expired, leeway included
        yield _request()

    channel = open_channel(f"127.0.0.1:{hub.port}", ChannelSecurity(insecure=True), auth)
    with channel:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        return sum(1 for _ in stub.MatchStream(requests(), timeout=30))


@pytest.mark.e2e
def test_a_long_stream_is_not_cut_off_by_a_short_unary_ttl(hub: RunningHub) -> None:
    assert _screen_slowly(hub, MAX_TOKEN_TTL) == 2


@pytest.mark.e2e
def test_a_stream_token_with_the_unary_ttl_would_be_cut_off(hub: RunningHub) -> None:
    """The control: the same run with the old per-call lifetime ends UNAUTHENTICATED."""
    with pytest.raises(grpc.RpcError) as info:
        _screen_slowly(hub, SHORT_TTL)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "token expired during the stream" in (info.value.details() or "")
