"""The SDK's gRPC edge: channels, per-call credentials, status mapping, retries.

Guarantees:

- :func:`open_channel` uses TLS unless the caller passes ``insecure=True``
  explicitly, which logs a WARNING (development only).
- Every call through a channel opened with ``auth`` carries a freshly minted
  ``authorization: Bearer`` token (``client_sdk.wire.auth.BearerAuth``).
- :func:`errors_from_status` is THE one place a gRPC status becomes a
  :class:`~client_sdk.core.errors.FraudhubError`: it reads the google.rpc.Status
  rich details the hub's interceptor (``hub.wire.status``) writes, rebuilding the
  exact error class (``ErrorInfo.reason``) and per-item errors (``BadRequest``).
- :func:`call_with_retry` retries UNAVAILABLE only, with exponential backoff
  and full jitter, within one overall deadline.

The error wire format is defined here, once, for both sides:
``ErrorInfo(domain="fraudhub", reason=UPPER_SNAKE class name, metadata=...)``
and one ``BadRequest.FieldViolation(field="<field>[<index>]",
description="(<kind>) <reason>")`` per item (at most
:data:`MAX_FIELD_VIOLATIONS`; trailers are small).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from client_sdk.core.errors import (
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
    QuotaExhausted,
    ServerError,
    Unavailable,
)
from client_sdk.wire.auth import BearerAuth

__all__ = [
    "ERROR_DOMAIN",
    "MAX_FIELD_VIOLATIONS",
    "BearerInterceptor",
    "ChannelSecurity",
    "RetryPolicy",
    "call_with_retry",
    "decode_field_violation",
    "encode_field_violation",
    "error_reason",
    "errors_from_status",
    "open_channel",
]

log = logging.getLogger(__name__)

ERROR_DOMAIN = "fraudhub"
#: Most per-item violations sent in one status (gRPC trailers are limited to a few KiB).
MAX_FIELD_VIOLATIONS = 50
# 64 MiB: a 10000-item batch with sealed labels is ~11 MiB; gRPC's default is 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Trailing metadata accepted: an INVALID_ARGUMENT status carries the answer for
# a batch's valid items (the hub attaches at most 1 MiB); gRPC's default is 16 KiB.
MAX_METADATA_BYTES = 2 * 1024 * 1024

_VIOLATION_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\[(\d+)\]$")
_VIOLATION_DESCRIPTION = re.compile(r"^\(([A-Za-z0-9_.:-]*)\) (.*)$", re.DOTALL)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Status codes without a (usable) ErrorInfo: the class by code.
_BY_CODE: dict[grpc.StatusCode, type[FraudhubError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: ConfigurationError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaExhausted,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,
}


def error_reason(cls: type[FraudhubError]) -> str:
    """``ErrorInfo.reason`` of an error class: its name in UPPER_SNAKE case."""
    return _CAMEL_BOUNDARY.sub("_", cls.__name__).upper()


def encode_field_violation(item: ItemError) -> error_details_pb2.BadRequest.FieldViolation:
    """One item error as a BadRequest field violation (never holds a value)."""
    return error_details_pb2.BadRequest.FieldViolation(
        field=f"{item.field}[{item.index}]", description=f"({item.kind}) {item.reason}"
    )


def decode_field_violation(violation: error_details_pb2.BadRequest.FieldViolation) -> ItemError:
    """Inverse of :func:`encode_field_violation`; foreign shapes keep what they have."""
    field_match = _VIOLATION_FIELD.match(violation.field)
    description = _VIOLATION_DESCRIPTION.match(violation.description)
    kind, reason = (
        (description.group(1), description.group(2)) if description else ("", violation.description)
    )
    if field_match is None:
        return ItemError(-1, kind, reason, violation.field)
    return ItemError(int(field_match.group(2)), kind, reason, field_match.group(1))


def _error_classes() -> dict[str, type[FraudhubError]]:
    found: dict[str, type[FraudhubError]] = {}
    pending: list[type[FraudhubError]] = [FraudhubError]
    while pending:
        cls = pending.pop()
        found[error_reason(cls)] = cls
        pending.extend(cls.__subclasses__())
    return found


def _rebuild(
    cls: type[FraudhubError],
    message: str,
    metadata: dict[str, str],
    items: tuple[ItemError, ...],
) -> FraudhubError:
    """An instance of ``cls`` from the wire; raises TypeError for unknown constructors."""
    if issubclass(cls, PolicyDenied):
        reasons = tuple(r for r in metadata.get("reasons", "").split(",") if r)
        return cls(message, reasons)
    if issubclass(cls, HolderError):
        holder = int(metadata.get("holder", "0"))
        prefix = f"key holder {holder}: "
        return cls(holder, message.removeprefix(prefix))
    if issubclass(cls, InvalidIndicator) and len(items) == 1:
        only = items[0]
        return cls(only.kind, only.reason, only.index if only.index >= 0 else None)
    if issubclass(cls, InvalidItems):
        return cls(message, items)
    return cls(message)


def _status_code(error: grpc.RpcError) -> grpc.StatusCode:
    # Errors raised by a channel are also grpc.Call objects; the stubs cannot say so.
    code = getattr(error, "code", None)
    result = code() if callable(code) else None
    return result if isinstance(result, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def errors_from_status(error: grpc.RpcError) -> FraudhubError:
    """The FraudhubError a failed call stands for (never raises).

    The class named by ``ErrorInfo.reason`` is used only if it is a fraudhub
    error whose gRPC status is the one received; otherwise the class follows
    the status code (UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED become
    :class:`Unavailable`; unknown codes :class:`ServerError`).  BadRequest
    violations become ``items`` of :class:`InvalidItems`.
    """
    code = _status_code(error)
    details = getattr(error, "details", None)
    message = (details() if callable(details) else None) or code.name
    status: status_pb2.Status | None = None
    if callable(getattr(error, "trailing_metadata", None)):
        try:
            status = rpc_status.from_call(cast(grpc.Call, error))
        except ValueError:
            # Details that contradict the status line are ignored, not trusted.
            status = None
    info: error_details_pb2.ErrorInfo | None = None
    items: list[ItemError] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            items.extend(decode_field_violation(v) for v in bad.field_violations)
    cls = _BY_CODE.get(code, ServerError)
    if items and code == grpc.StatusCode.INVALID_ARGUMENT:
        cls = InvalidItems
    metadata: dict[str, str] = {}
    if info is not None and info.domain == ERROR_DOMAIN:
        named = _error_classes().get(info.reason)
        if named is not None and named.grpc_status == code.name:
            cls = named
            metadata = dict(info.metadata)
    try:
        return _rebuild(cls, message, metadata, tuple(items))
    except (TypeError, ValueError):
        return _BY_CODE.get(code, ServerError)(message)


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
    """Adds a fresh ``authorization: Bearer <jwt>`` to every outgoing call."""

    def __init__(self, auth: BearerAuth) -> None:
        self._auth = auth

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k.lower() != "authorization"]
        metadata.extend(self._auth.metadata())
        return _CallDetails(
            details.method,
            details.timeout,
            tuple(metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

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


def call_with_retry(
    call: Callable[[float], T],
    policy: RetryPolicy = RetryPolicy(),
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``call(timeout)`` until it succeeds, retrying UNAVAILABLE.

    ``call`` gets the seconds left until the overall deadline and should pass
    them as the gRPC timeout.  Only UNAVAILABLE is retried (the request did not
    reach a servicer, or the server asked to retry); fraudhub's write calls are
    idempotent (duplicates are counted, revocations repeat), so a retry after a
    lost response is safe.  Raises the FraudhubError of the last failure
    (:func:`errors_from_status`); :class:`Unavailable` when the deadline passes.
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
            if _status_code(exc) != grpc.StatusCode.UNAVAILABLE:
                raise error from None
            pause = next(backoffs, None)
            if pause is None or clock() + pause >= end:
                raise error from None
            log.info("attempt %d unavailable; retrying in %.2fs", attempt, pause)
            sleep(pause)
