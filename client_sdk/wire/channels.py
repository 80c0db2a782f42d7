"""The SDK's gRPC edge: channels, per-call credentials and retries.

Guarantees:

- :func:`open_channel` uses TLS unless the caller passes ``insecure=True``
  explicitly, which logs a WARNING (development only).
- Every call through a channel opened with ``auth`` carries a freshly minted
  ``authorization: Bearer`` token (``client_sdk.wire.auth.BearerAuth``).
- Each server role has its own expected TLS name (:data:`HUB_SERVER_NAME`,
  :func:`holder_server_name`); a client pins every endpoint with its own CA
  and that name (``ChannelSecurity.server_name``), so the TLS handshake, which
  completes before any call metadata is sent, fails against a server of
  another role (ADR 0012).
- :func:`call_with_retry` is the SDK's one retry loop: capped exponential
  backoff with jitter until one overall deadline (not an attempt count), for
  UNAVAILABLE statuses and for the errors its caller names retryable (the key
  holders' Unavailable).  A failed call raises the FraudhubError of its status
  (``client_sdk.wire.status.errors_from_status``); running out of time raises
  Unavailable naming the attempts, the seconds spent and the last failure.
- Channels redial a lost server within about a second (gRPC's own reconnect
  backoff would otherwise grow past the retry deadline).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from client_sdk.core.errors import ConfigurationError, FraudhubError, Unavailable
from client_sdk.wire.auth import BearerAuth
from client_sdk.wire.status import errors_from_status, status_code

__all__ = [
    "HUB_SERVER_NAME",
    "MAX_MESSAGE_BYTES",
    "BearerInterceptor",
    "ChannelSecurity",
    "RetryPolicy",
    "call_with_retry",
    "holder_server_name",
    "open_channel",
    "with_timeout",
]

log = logging.getLogger(__name__)

# 64 MiB: a 10000-item batch with sealed labels is ~11 MiB; gRPC's default is 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Trailing metadata accepted: an INVALID_ARGUMENT status carries the answer for
# a batch's valid items (the hub attaches at most 1 MiB); gRPC's default is 16 KiB.
MAX_METADATA_BYTES = 2 * 1024 * 1024
# A dropped connection is redialled after 0.2 s, then at most every second.
RECONNECT_BACKOFF_MS = (200, 1000)
#: The TLS server name of the hub; key holder ``i`` is :func:`holder_server_name`.
HUB_SERVER_NAME = "hub.fraudhub.internal"


def holder_server_name(index: int) -> str:
    """The TLS server name key holder ``index`` presents (``holder-<i>.fraudhub.internal``)."""
    return f"holder-{index}.fraudhub.internal"


# --- channels ----------------------------------------------------------------


@dataclass(frozen=True)
class ChannelSecurity:
    """How to reach a server: TLS with these roots, or explicitly insecure.

    ``root_certificates`` None with TLS means the system trust store.
    ``server_name`` overrides the TLS host name checked (tests, IP addresses).
    """

    root_certificates: bytes | None = field(default=None, repr=False)
    insecure: bool = False
    server_name: str | None = None

    @classmethod
    def from_ca_file(cls, path: str, server_name: str | None = None) -> ChannelSecurity:
        """TLS trusting the CA certificate in ``path``; raises ConfigurationError."""
        try:
            with open(path, "rb") as handle:
                return cls(handle.read(), server_name=server_name)
        except OSError as exc:
            raise ConfigurationError(f"cannot read CA file {path}: {exc.strerror}") from None


class BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds a fresh ``authorization: Bearer <jwt>`` to every outgoing call.

    Streaming calls get a stream token (``BearerAuth.stream_ttl``), unary calls a short one.
    """

    def __init__(self, auth: BearerAuth) -> None:
        self._auth = auth

    def _details(
        self, details: grpc.ClientCallDetails, *, streaming: bool = True
    ) -> grpc.ClientCallDetails:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k.lower() != "authorization"]
        metadata.extend(self._auth.metadata(streaming=streaming))
        return _CallDetails(
            details.method,
            details.timeout,
            tuple(metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, streaming=False), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: tuple[tuple[str, str | bytes], ...]
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


def open_channel(
    address: str,
    security: ChannelSecurity,
    auth: BearerAuth | None = None,
    *,
    options: tuple[tuple[str, Any], ...] = (),
) -> grpc.Channel:
    """A channel to ``address`` (``host:port``), TLS unless explicitly insecure."""
    channel_options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        # gRPC's reconnect backoff grows to 120 s by default: a server back after
        # a restart would stay unreachable long after call_with_retry's deadline.
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
        *options,
    ]
    if security.insecure:
        log.warning(
            "connecting to %s WITHOUT TLS (explicit insecure mode; development only)", address
        )
        channel = grpc.insecure_channel(address, options=channel_options)
    else:
        if security.server_name:
            channel_options.append(("grpc.ssl_target_name_override", security.server_name))
        credentials = grpc.ssl_channel_credentials(root_certificates=security.root_certificates)
        channel = grpc.secure_channel(address, credentials, options=channel_options)
    if auth is not None:
        channel = grpc.intercept_channel(channel, BearerInterceptor(auth))
    return channel


# --- retries -------------------------------------------------------------------

T = TypeVar("T")
_W = TypeVar("_W")


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, until ``deadline`` seconds have passed.

    The deadline bounds a call, not an attempt count: a server restart that
    finishes within it is invisible to the caller (issue 13).  ``max_attempts``
    None (the default) means "as many as fit"; a number caps them as well.
    """

    deadline: float = 30.0
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    max_attempts: int | None = None

    def backoffs(self, rng: random.Random) -> Iterator[float]:
        """Sleep before attempt 2, 3, ...: uniform in [cap/2, cap], cap = min(max, initial*mult^n).

        Half the cap at least, so a long outage is polled every ``max_backoff``
        seconds or so rather than in bursts; the jitter spreads many clients.
        """
        ceiling = self.initial_backoff
        attempts = 1
        while self.max_attempts is None or attempts < self.max_attempts:
            cap = min(self.max_backoff, ceiling)
            yield rng.uniform(cap / 2, cap)
            ceiling *= self.multiplier
            attempts += 1


def _never(error: FraudhubError) -> bool:
    return False


def with_timeout(method: Callable[..., _W], request: object) -> Callable[[float], _W]:
    """``method(request, timeout=...)`` as a function of the timeout: what :func:`call_with_retry`
    calls once per attempt with the time left."""
    return lambda timeout: method(request, timeout=timeout)


def call_with_retry(
    call: Callable[[float], T],
    policy: RetryPolicy = RetryPolicy(),
    *,
    retry_if: Callable[[FraudhubError], bool] = _never,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``call(timeout)`` until it succeeds or the policy's deadline passes.

    ``call`` gets the seconds left until the overall deadline and should pass
    them as the gRPC timeout.  A ``grpc.RpcError`` is retried only when its
    status is UNAVAILABLE (the request did not reach a servicer, or the server
    asked to retry); a FraudhubError ``call`` raises itself is retried when
    ``retry_if`` says so (default: never).  fraudhub's write calls are
    idempotent (duplicates are counted, revocations repeat), so a retry after
    a lost response is safe.  Raises a non-retryable failure's FraudhubError
    at once (``errors_from_status`` for statuses); when retrying runs out of
    time, :class:`Unavailable` saying how many attempts over how many seconds
    and the last failure (or that failure's own class, e.g. StorageError,
    with the same account added to its message).
    """
    rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
    start = clock()
    end = start + policy.deadline
    backoffs = policy.backoffs(rng)
    attempt = 0
    last: FraudhubError | None = None
    while True:
        remaining = end - clock()
        if remaining <= 0:
            raise _gave_up(policy, attempt, clock() - start, last)
        attempt += 1
        try:
            return call(remaining)
        except grpc.RpcError as exc:
            error = errors_from_status(exc)
            retryable = status_code(exc) == grpc.StatusCode.UNAVAILABLE
        except FraudhubError as exc:
            if not retry_if(exc):
                raise
            error, retryable = exc, True
        if not retryable:
            raise error from None
        last = error
        pause = next(backoffs, None)
        if pause is None or clock() + pause >= end:
            raise _gave_up(policy, attempt, clock() - start, last) from None
        log.info("attempt %d: %s; retrying in %.2fs", attempt, type(error).__name__, pause)
        sleep(pause)


def _gave_up(
    policy: RetryPolicy, attempts: int, elapsed: float, last: FraudhubError | None
) -> FraudhubError:
    """What the caller finally gets: what was tried, for how long, and the last failure.

    A failure more specific than Unavailable (a StorageError naming its cause)
    keeps its class and fields; its message gains the same account.
    """
    tried = (
        f"gave up after {attempts} attempt(s) over {elapsed:.1f}s "
        f"(retry deadline {policy.deadline:g}s)"
    )
    if last is None or type(last) is Unavailable:
        return Unavailable(f"{tried}; last: {last}" if last is not None else tried)
    last.args = (f"{last}; {tried}",)
    return last
