"""The INVALID_ARGUMENT status of a batch with malformed items (exchange_codecs.abort_partial)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from fraudhub.v1 import exchange_pb2
from google.rpc import status_pb2

from client_sdk.core.errors import ItemError
from hub.services import exchange_codecs


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.status: Any = None

    def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise _Aborted


def _abort(partial: exchange_pb2.MatchResponse) -> tuple[str, list[str]]:
    context = _Context()
    invalid = [ItemError(0, "url", "token must be 32 bytes", "queries")]
    with pytest.raises(_Aborted):
        exchange_codecs.abort_partial(context, "1 item(s) are malformed", invalid, partial)  # type: ignore[arg-type]
    assert context.status.code == grpc.StatusCode.INVALID_ARGUMENT
    details = next(v for k, v in context.status.trailing_metadata if k == "grpc-status-details-bin")
    status = status_pb2.Status.FromString(details)
    return status.message, [d.type_url.rsplit("/", 1)[1] for d in status.details]


def test_a_partial_answer_within_the_bound_is_attached() -> None:
    small = exchange_pb2.MatchResponse(results=[exchange_pb2.MatchResult(index=1)])
    message, kinds = _abort(small)
    assert "fraudhub.v1.MatchResponse" in kinds and "too large" not in message


def test_a_larger_partial_answer_is_left_out_and_the_message_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exchange_codecs, "MAX_PARTIAL_BYTES", 100)
    big = exchange_pb2.MatchResponse(
        results=[exchange_pb2.MatchResult(index=i, reasons=["x" * 20]) for i in range(10)]
    )
    message, kinds = _abort(big)
    assert "fraudhub.v1.MatchResponse" not in kinds
    assert "google.rpc.BadRequest" in kinds
    assert "too large to attach" in message and "send smaller requests" in message
