"""Wrap the behaviour of a gRPC method handler, whatever its streaming shape.

Server interceptors (``hub.wire.status``, ``hub.wire.auth``,
``hub.services.server``) need to run code around the servicer method itself,
where the ``ServicerContext`` is available; gRPC exposes four handler shapes
for that.  :func:`around` is the one way they do it: an interceptor names
what runs before the method (:data:`Enter`, which may pick the
``contextvars.Context`` the method runs in) and what runs when it raises
(:data:`OnError`), and gets a handler of the same shape back, for unary and
streamed responses alike.  :func:`wrap_handler` is the shape-preserving
primitive underneath.  :class:`InFlight` counts running behaviours, so a
server's stop knows whether a handler thread was left behind.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc

__all__ = [
    "Behavior",
    "Enter",
    "HandlerWrapper",
    "InFlight",
    "OnError",
    "around",
    "wrap_handler",
]

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


#: Runs before the method; returns the context the method (and each step of a
#: streamed response) runs in, or None to run it in the caller's.  May raise.
Enter = Callable[[grpc.ServicerContext], contextvars.Context | None]
#: Runs when the method raises; may raise another exception, else the
#: original one propagates.
OnError = Callable[[Exception, grpc.ServicerContext], None]


def around(
    handler: grpc.RpcMethodHandler[Any, Any],
    *,
    enter: Enter | None = None,
    on_error: OnError | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with ``enter`` run before its behaviour and ``on_error`` when it raises.

    For a streamed response both apply to the whole stream: ``enter`` runs
    when the stream starts, every step of the servicer's generator runs in
    the context ``enter`` chose (whichever thread resumes it), and
    ``on_error`` sees an exception raised at any step.  Errors raised by
    ``enter`` itself do not reach ``on_error`` (an outer interceptor's does).
    """

    def wrapper(behavior: Behavior, response_streaming: bool) -> Behavior:
        if response_streaming:

            def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                ctx = enter(context) if enter is not None else None
                try:
                    if ctx is None:
                        yield from behavior(request, context)
                        return
                    responses = ctx.run(behavior, request, context)
                    while True:
                        try:
                            response = ctx.run(next, responses)
                        except StopIteration:
                            return
                        yield response
                except Exception as exc:
                    if on_error is not None:
                        on_error(exc, context)
                    raise

            return streaming

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            ctx = enter(context) if enter is not None else None
            try:
                if ctx is None:
                    return behavior(request, context)
                return ctx.run(behavior, request, context)
            except Exception as exc:
                if on_error is not None:
                    on_error(exc, context)
                raise

        return unary

    return wrap_handler(handler, wrapper)


class InFlight(grpc.ServerInterceptor):
    """Counts the servicer behaviours running now, for a bounded shutdown.

    ``grpc.Server.stop(grace)`` cancels calls after the grace period and its
    event fires once the transport is down, but a handler thread blocked
    where a cancellation cannot reach it (a database lock wait) keeps
    running, and the interpreter joins that thread at exit.  Install this
    interceptor FIRST; :meth:`wait_idle` tells whether every behaviour ended.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._running = 0

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def wait_idle(self, timeout: float) -> bool:
        """True once no behaviour runs; False if some still did after ``timeout`` s."""
        with self._lock:
            return self._lock.wait_for(lambda: self._running == 0, timeout)

    def _enter(self) -> None:
        with self._lock:
            self._running += 1

    def _exit(self) -> None:
        with self._lock:
            self._running -= 1
            self._lock.notify_all()

    def intercept_service(
        self, continuation: Any, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = continuation(handler_call_details)
        if handler is None:
            return None

        def wrapper(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    self._enter()
                    try:
                        yield from behavior(request, context)
                    finally:
                        self._exit()

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                self._enter()
                try:
                    return behavior(request, context)
                finally:
                    self._exit()

            return unary

        return wrap_handler(handler, wrapper)
