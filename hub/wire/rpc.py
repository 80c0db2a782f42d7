"""Wrap the behaviour of a gRPC method handler, whatever its streaming shape.

Server interceptors (``hub.wire.status``, ``hub.wire.auth``) need to run code around
the servicer method itself, where the ``ServicerContext`` is available; gRPC
exposes four handler shapes for that.  :func:`wrap_handler` rebuilds a handler
of the same shape with a wrapped behaviour, so each interceptor writes its
logic once for unary responses and once for streamed responses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import grpc

__all__ = ["Behavior", "HandlerWrapper", "wrap_handler"]

#: A servicer method: ``(request or request iterator, context) -> response or response iterator``.
Behavior = Callable[[Any, grpc.ServicerContext], Any]


class HandlerWrapper(Protocol):
    """Returns a behaviour wrapping ``behavior``.

    When ``response_streaming`` is true, ``behavior`` returns an iterator and
    the wrapper must return one too (a generator function).
    """

    def __call__(self, behavior: Behavior, response_streaming: bool) -> Behavior: ...


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], wrapper: HandlerWrapper
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler (shape, (de)serializers) with its behaviour wrapped."""
    kwargs: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrapper(handler.unary_unary, False), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrapper(handler.unary_stream, True), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrapper(handler.stream_unary, False), **kwargs)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(wrapper(handler.stream_stream, True), **kwargs)
    raise TypeError("method handler has no behaviour")
