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
- :func:`call_with_retry` is the SDK's one retry loop: exponential backoff
  with full jitter within one overall deadline, for UNAVAILABLE statuses and
  for the errors its caller names retryable (the key holders' Unavailable).
  A failed call raises the FraudhubError of its status
  (``client_sdk.wire.status.errors_from_status``).
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
]

log = logging.getLogger(__name__)

# 64 MiB: a 10000-item batch with sealed labels is ~11 MiB; gRPC's default is 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Trailing metadata accepted: an INVALID_ARGUMENT status carries the answer for
# a batch's valid items (the hub attaches at most 1 MiB); gRPC's default is 16 KiB.
MAX_METADATA_BYTES = 2 * 1024 * 1024
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


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for UNAVAILABLE, within ``deadline`` seconds."""

    deadline: float = 30.0
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    max_attempts: int = 8

    def backoffs(self, rng: random.Random) -> Iterator[float]:
        """Sleep before attempt 2, 3, ...: uniform in [0, min(max, initial * mult^n)]."""
        ceiling = self.initial_backoff
        for _ in range(self.max_attempts - 1):
            yield rng.uniform(0.0, min(self.max_backoff, ceiling))
            ceiling *= self.multiplier


def _never(error: FraudhubError) -> bool:
    return False


def call_with_retry(
    call: Callable[[float], T],
    policy: RetryPolicy = RetryPolicy(),
    *,
    retry_if: Callable[[FraudhubError], bool] = _never,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``call(timeout)`` until it succeeds, retrying UNAVAILABLE.

    ``call`` gets the seconds left until the overall deadline and should pass
    them as the gRPC timeout.  A ``grpc.RpcError`` is retried only when its
    status is UNAVAILABLE (the request did not reach a servicer, or the server
    asked to retry); a FraudhubError ``call`` raises itself is retried when
    ``retry_if`` says so (default: never).  fraudhub's write calls are
    idempotent (duplicates are counted, revocations repeat), so a retry after
    a lost response is safe.  Raises the FraudhubError of the last failure
    (``errors_from_status`` for statuses); :class:`Unavailable` when the
    deadline passes before an attempt.
    """
    rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
    end = clock() + policy.deadline
    backoffs = policy.backoffs(rng)
    attempt = 0
    while True:
        attempt += 1
        remaining = end - clock()
        if remaining <= 0:
            raise Unavailable(
                f"deadline of {policy.deadline:g}s passed after {attempt - 1} attempt(s)"
            )
        try:
            return call(remaining)
        except grpc.RpcError as exc:
            error = errors_from_status(exc)
            retryable = status_code(exc) == grpc.StatusCode.UNAVAILABLE
        except FraudhubError as exc:
            if not retry_if(exc):
                raise
            error, retryable = exc, True
        pause = next(backoffs, None) if retryable else None
        if pause is None or clock() + pause >= end:
            raise error from None
        log.info("attempt %d: %s; retrying in %.2fs", attempt, type(error).__name__, pause)
        sleep(pause)
