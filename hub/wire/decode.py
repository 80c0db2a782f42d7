"""Request decoding after authentication, with a size limit per method.

gRPC decodes a request with the handler's deserializer before any
interceptor's code runs around the servicer: an undecodable message then
ends as INTERNAL "Exception deserializing request!" (with a traceback
logged), and an unauthenticated caller makes the server buffer and parse
the whole message.  :class:`DecodeInterceptor`, installed LAST (innermost,
after ``hub.wire.auth.AuthInterceptor``), changes that for every method of
its table.  Guarantees:

- The handler gRPC runs reads the request stream itself, with no
  deserializer: a request message is read only when the servicer asks for
  it, which is after the outer interceptors (authentication, roles) passed.
  A refused caller's body is never read by the application, and gRPC
  reads at most a flow-control window of it.
- Each message is checked against the method's limit (:data:`DEFAULT_LIMIT`
  unless the table says otherwise), then parsed; a message over the limit or
  one that does not parse raises :class:`~client_sdk.core.errors.InvalidRequest`
  (INVALID_ARGUMENT through ``hub.wire.status``), naming the method's
  request type and never the bytes.
- A unary-request method whose stream carries no message gets
  INVALID_ARGUMENT too.  The shape the servicer sees does not change.

:func:`receive_limit` is the server-wide ``grpc.max_receive_message_length``
for a table: the largest per-method limit (gRPC enforces that one itself,
with RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from client_sdk.core.errors import InvalidRequest

__all__ = ["DEFAULT_LIMIT", "DecodeInterceptor", "message_limits", "receive_limit"]

#: Bytes a request message of a method without its own limit may hold.
DEFAULT_LIMIT = 64 * 1024

_Decoder = Callable[[bytes], Any]


def message_limits(
    methods: Mapping[str, object] | frozenset[str] | set[str],
    overrides: Mapping[str, int],
    default: int = DEFAULT_LIMIT,
) -> dict[str, int]:
    """A limit for every method: its override, else ``default``.

    Raises ValueError for an override naming a method not in ``methods``
    (a typo would silently leave the default).
    """
    stray = set(overrides) - set(methods)
    if stray:
        raise ValueError(f"message limits for unknown methods: {sorted(stray)}")
    return {m: overrides.get(m, default) for m in methods}


def receive_limit(limits: Mapping[str, int]) -> int:
    """The server-wide receive limit for a table of per-method limits."""
    return max(limits.values(), default=DEFAULT_LIMIT)


def _decoder(method: str, parse: _Decoder | None, limit: int) -> _Decoder:
    name = method.rpartition("/")[2]

    def decode(raw: bytes) -> Any:
        if len(raw) > limit:
            raise InvalidRequest(
                f"{name}: a request message holds at most {limit} bytes, got {len(raw)}"
            )
        if parse is None:
            return raw
        try:
            return parse(raw)
        except (DecodeError, ValueError, RecursionError):
            # protobuf raises DecodeError; the bytes are never echoed.
            raise InvalidRequest(f"{name}: the request message does not decode") from None

    return decode


def _first(requests: Iterator[bytes], decode: _Decoder) -> Any:
    raw = next(requests, None)
    if raw is None:
        raise InvalidRequest("the call carried no request message")
    return decode(raw)


def decode_after_auth(
    method: str, handler: grpc.RpcMethodHandler[Any, Any], limit: int
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` as a request-streaming handler that decodes lazily (module docstring)."""
    decode = _decoder(method, handler.request_deserializer, limit)
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        def unary_unary_raw(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            return unary_unary(_first(requests, decode), context)

        return grpc.stream_unary_rpc_method_handler(unary_unary_raw, response_serializer=serializer)
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        def unary_stream_raw(
            requests: Iterator[bytes], context: grpc.ServicerContext
        ) -> Iterator[Any]:
            yield from unary_stream(_first(requests, decode), context)

        return grpc.stream_stream_rpc_method_handler(
            unary_stream_raw, response_serializer=serializer
        )
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        def stream_unary_raw(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            return stream_unary((decode(r) for r in requests), context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary_raw, response_serializer=serializer
        )
    if handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        def stream_stream_raw(
            requests: Iterator[bytes], context: grpc.ServicerContext
        ) -> Iterator[Any]:
            yield from stream_stream((decode(r) for r in requests), context)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream_raw, response_serializer=serializer
        )
    raise TypeError("method handler has no behaviour")


class DecodeInterceptor(grpc.ServerInterceptor):
    """Decodes the requests of the methods in ``limits`` after the outer interceptors.

    Install it LAST in ``grpc.server(interceptors=[...])``.  Methods not in
    ``limits`` (health checking, reflection) keep gRPC's own decoding.
    """

    def __init__(self, limits: Mapping[str, int]) -> None:
        self._limits = dict(limits)

    def intercept_service(
        self, continuation: Any, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = continuation(handler_call_details)
        method: str = handler_call_details.method
        limit = self._limits.get(method)
        if handler is None or limit is None:
            return handler
        return decode_after_auth(method, handler, limit)
