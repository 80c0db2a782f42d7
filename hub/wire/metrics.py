"""Per-RPC metrics and the one log line per RPC, for the hub and the key holders.

:class:`ServerMetrics` is one server's Prometheus registry (its own
``CollectorRegistry``: a test process may run a hub and three holders side by
side) and, optionally, the HTTP endpoint that exposes it
(:meth:`ServerMetrics.serve`, loopback by default).  :class:`RpcInterceptor`,
installed FIRST in a server's interceptor list, times every call, counts it by
method and final status code, and logs one line per call on the
``hub.requests`` logger: method, institution, code, items, duration.

Guarantees:

- Labels are bounded and public: the short method name (``Exchange/Match``,
  only methods the server registered), the gRPC code name, the holder index.
  Never an institution, a value, a token or a request field.
- The log line carries the institution id (public, in the registry) and
  counts; never a value, a token or a status message.
- A call is counted and logged once it has terminated on the server, with
  its final status code (a callback of the call): possibly a moment after
  its caller got the answer.  Its log line is written before it is counted.
- What the servicers learn (the caller, item and match counts) reaches the
  interceptor through :func:`note_call`, called where the call is audited
  (``hub.services.audited``) or charged (the key holder's quota); a call that
  never got that far logs ``institution="-"``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from client_sdk.core.errors import ConfigurationError
from hub.wire.rpc import around

__all__ = [
    "DEFAULT_METRICS_HOST",
    "RPC_LOGGER",
    "RpcInterceptor",
    "ServerMetrics",
    "note_call",
    "short_method",
]

#: Logger of the one-line-per-RPC records (``hub.infra.logs`` formats them).
RPC_LOGGER = "hub.requests"
DEFAULT_METRICS_HOST = "127.0.0.1"
# Latency buckets (seconds): a batch of 1,000 items takes tens of milliseconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

rpc_log = logging.getLogger(RPC_LOGGER)


def short_method(full: str) -> str:
    """``/fraudhub.v1.Exchange/Match`` -> ``Exchange/Match``."""
    service, _, name = full.lstrip("/").partition("/")
    return f"{service.rpartition('.')[2]}/{name}"


@dataclass
class _Call:
    """What one RPC learned about itself; filled in by :func:`note_call`."""

    method: str
    metrics: ServerMetrics
    started: float
    institution: str = "-"
    items: int = 0
    matches: int = 0
    quota: int = 0


_CURRENT: contextvars.ContextVar[_Call] = contextvars.ContextVar("fraudhub_rpc_call")


def note_call(institution: str, *, items: int = 0, matches: int = 0, quota: int = 0) -> None:
    """Tell the running RPC's record who called, how many items it handled, how
    many matched and how many quota units it charged; a no-op outside an RPC
    served with :class:`RpcInterceptor`."""
    try:
        call = _CURRENT.get()
    except LookupError:
        return
    call.institution = institution
    call.items += items
    call.matches += matches
    call.quota += quota


class ServerMetrics:
    """The Prometheus metrics of one server (``role`` is ``hub`` or ``keyholder``)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpcs = Counter(
            "fraudhub_rpcs",
            "RPCs served, by method and final status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fraudhub_rpc_duration_seconds",
            "RPC latency by method",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.items = Counter(
            "fraudhub_items", "Items handled, by method", ["method"], registry=self.registry
        )
        self.matches = Counter(
            "fraudhub_matches", "Match items that matched", registry=self.registry
        )
        self.quota_used = Counter(
            "fraudhub_quota_used_elements",
            "Elements charged against the institutions' daily quotas",
            registry=self.registry,
        )
        self.holder_errors = Counter(
            "fraudhub_holder_errors",
            "Failed calls to key holders (witnesses), by holder",
            ["holder"],
            registry=self.registry,
        )
        self.info = Gauge(
            "fraudhub_server_info",
            "Constant 1, labelled with the server role",
            ["role"],
            registry=self.registry,
        )
        self.info.labels(role=role).set(1)
        self._http: Any = None
        self._thread: threading.Thread | None = None

    def add_gauges(self, read: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        """Gauges computed at scrape time: ``read`` yields ``(name, help, value)``."""
        self.registry.register(_ScrapeTimeGauges(read))

    def observe(self, call: _Call, code: str, seconds: float) -> None:
        self.rpcs.labels(method=call.method, code=code).inc()
        self.latency.labels(method=call.method).observe(seconds)
        if call.items:
            self.items.labels(method=call.method).inc(call.items)
        if call.matches:
            self.matches.inc(call.matches)
        if call.quota:
            self.quota_used.inc(call.quota)

    def serve(self, port: int, host: str = DEFAULT_METRICS_HOST) -> int:
        """Expose the metrics over HTTP on ``host:port`` (0: any free port); return the port.

        Raises ConfigurationError if the address cannot be bound.
        """
        try:
            self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}): check --metrics-port"
            ) from None
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _ScrapeTimeGauges(Collector):
    def __init__(self, read: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, text, value in self._read():
            yield GaugeMetricFamily(name, text, value=value)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class RpcInterceptor(grpc.ServerInterceptor):
    """Counts, times and logs every RPC; install it first (outermost)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self, continuation: Any, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: no label for it
        method = short_method(handler_call_details.method)
        metrics = self._metrics

        def enter(context: grpc.ServicerContext) -> contextvars.Context:
            call = _Call(method, metrics, time.monotonic())
            ctx = contextvars.copy_context()
            ctx.run(_CURRENT.set, call)
            # Runs once the call has ended, whatever way: the code is final then.
            context.add_callback(lambda: _finish(call, context))
            return ctx

        return around(handler, enter=enter)


def _finish(call: _Call, context: grpc.ServicerContext) -> None:
    seconds = time.monotonic() - call.started
    # ServicerContext.code() exists since grpcio 1.38; types-grpcio lacks it.
    status = context.code()  # type: ignore[attr-defined]
    code = "OK" if status is None else status.name
    # The log line first: a scrape that counts the call finds its line written.
    rpc_log.info(
        "rpc %s institution=%s code=%s items=%d duration_ms=%.1f",
        call.method,
        call.institution,
        code,
        call.items,
        seconds * 1000,
        extra={
            "rpc": {
                "method": call.method,
                "institution": call.institution,
                "code": code,
                "items": call.items,
                "duration_ms": round(seconds * 1000, 3),
            }
        },
    )
    call.metrics.observe(call, code, seconds)
