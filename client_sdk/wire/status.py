"""The error wire format, both ways: FraudhubError <-> google.rpc.Status.

Defined here, once, for the hub (which packs, ``hub.wire.status``) and the SDK
(which unpacks).  A status carries:

- the class's gRPC code (``grpc_status``) and its message;
- ``ErrorInfo(domain="fraudhub", reason=<wire reason code>, metadata=...)``,
  the reason code taken from the explicit registry
  :data:`~client_sdk.core.errors.WIRE_REASONS`; metadata holds the fields a
  class needs to be rebuilt (``reasons`` of PolicyDenied, ``holder`` of
  HolderError, ``cause`` of StorageError, ``disqualified`` of DkgError,
  ``kind``/``reason``/``index`` of InvalidIndicator) and ``invalid_items``
  (how many items were wrong);
- for item errors, one ``BadRequest.FieldViolation(field="<field>[<index>]",
  description="(<kind>) <reason>")`` per item, at most
  :data:`MAX_FIELD_VIOLATIONS` (trailers are small).

Guarantees of :func:`decode_status` (and :func:`errors_from_status`, which
reads the status of a failed call): it never raises, and a status decodes to
the same class whatever else the process imported.  The registered class of
``ErrorInfo.reason`` is used when its gRPC code is the one received; an unknown
reason, a foreign domain, a reason whose code disagrees or fields that do not
rebuild give the class of the status family (:data:`STATUS_FAMILIES`:
INVALID_ARGUMENT -> InvalidRequest, or InvalidItems when BadRequest items came;
UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED -> Unavailable; codes not listed ->
ServerError).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from client_sdk.core.errors import (
    WIRE_REASONS,
    AuthenticationError,
    ConfigurationError,
    DkgError,
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
    StorageError,
    Unavailable,
    WitnessConflict,
    wire_reason,
)

__all__ = [
    "ERROR_DOMAIN",
    "MAX_FIELD_VIOLATIONS",
    "STATUS_FAMILIES",
    "decode_field_violation",
    "decode_status",
    "encode_field_violation",
    "errors_from_status",
    "item_errors",
    "pack_status",
    "status_code",
]

ERROR_DOMAIN = "fraudhub"
#: Most per-item violations sent in one status (gRPC trailers are limited to a few KiB).
MAX_FIELD_VIOLATIONS = 50

#: The class a status decodes to when its ErrorInfo names no usable class;
#: codes not listed decode to ServerError.
STATUS_FAMILIES: Final[Mapping[grpc.StatusCode, type[FraudhubError]]] = MappingProxyType(
    {
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
)
_CODES: Final[Mapping[int, grpc.StatusCode]] = MappingProxyType(
    {code.value[0]: code for code in grpc.StatusCode}
)

_VIOLATION_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\[(\d+)\]$")
_VIOLATION_DESCRIPTION = re.compile(r"^\(([A-Za-z0-9_.:-]*)\) (.*)$", re.DOTALL)


# --- items -------------------------------------------------------------------------


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


def item_errors(exc: FraudhubError) -> tuple[ItemError, ...]:
    """The per-item errors an exception carries (none for whole-request errors)."""
    if isinstance(exc, InvalidItems):
        return exc.items
    if isinstance(exc, InvalidIndicator) and exc.index is not None:
        return (exc.item(),)
    return ()


# --- packing (the hub's side) ------------------------------------------------------------


def _metadata(exc: FraudhubError, items: tuple[ItemError, ...]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if isinstance(exc, PolicyDenied) and exc.reasons:
        metadata["reasons"] = ",".join(exc.reasons)
    if isinstance(exc, HolderError):
        metadata["holder"] = str(exc.holder)
    if isinstance(exc, StorageError):
        metadata["cause"] = exc.cause
    if isinstance(exc, WitnessConflict):
        metadata["size"] = str(exc.size)
    if isinstance(exc, DkgError) and exc.disqualified:
        metadata["disqualified"] = json.dumps({str(i): why for i, why in exc.disqualified.items()})
    if isinstance(exc, InvalidIndicator):
        # The kind and the reason, never the value (the class never holds it).
        metadata["kind"] = exc.kind
        metadata["reason"] = exc.reason
        if exc.index is not None:
            metadata["index"] = str(exc.index)
    if items:
        metadata["invalid_items"] = str(len(items))
    return metadata


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def pack_status(exc: FraudhubError) -> status_pb2.Status:
    """The google.rpc.Status of ``exc`` (see the module docstring); never raises."""
    code = grpc.StatusCode[exc.grpc_status]
    items = item_errors(exc)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=wire_reason(type(exc)),
                domain=ERROR_DOMAIN,
                metadata=_metadata(exc, items),
            )
        )
    ]
    if items:
        violations = [encode_field_violation(i) for i in items[:MAX_FIELD_VIOLATIONS]]
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    return status_pb2.Status(code=code.value[0], message=str(exc) or code.name, details=details)


# --- unpacking (the SDK's side) ------------------------------------------------------------


def _rebuild(  # noqa: PLR0911 - one return per class with fields of its own
    cls: type[FraudhubError],
    message: str,
    metadata: dict[str, str],
    items: tuple[ItemError, ...],
) -> FraudhubError:
    """An instance of ``cls`` from the wire; raises TypeError or ValueError when it cannot."""
    if issubclass(cls, PolicyDenied):
        reasons = tuple(r for r in metadata.get("reasons", "").split(",") if r)
        return cls(message, reasons)
    if issubclass(cls, HolderError):
        holder = int(metadata.get("holder", "0"))
        return cls(holder, message.removeprefix(f"key holder {holder}: "))
    if issubclass(cls, InvalidIndicator):
        if "kind" in metadata:
            index = metadata.get("index")
            return cls(metadata["kind"], metadata["reason"], int(index) if index else None)
        if len(items) == 1:  # hubs from before the metadata: the one BadRequest item
            only = items[0]
            return cls(only.kind, only.reason, only.index if only.index >= 0 else None)
        raise TypeError("InvalidIndicator needs its kind and reason")
    if issubclass(cls, InvalidItems):
        return cls(message, items)
    if issubclass(cls, StorageError):
        return cls(message, metadata.get("cause", "other"))
    if issubclass(cls, WitnessConflict):
        return cls(message, int(metadata["size"]))
    if issubclass(cls, DkgError):
        named = json.loads(metadata.get("disqualified", "{}"))
        disqualified = {int(i): str(why) for i, why in named.items()}
        # The message carries the named participants; the constructor adds them again.
        suffix = "; ".join(f"participant {i}: {why}" for i, why in sorted(disqualified.items()))
        return cls(message.removesuffix(f" ({suffix})") if suffix else message, disqualified)
    return cls(message)


def decode_status(status: status_pb2.Status) -> FraudhubError:
    """The FraudhubError ``status`` stands for (never raises; see the module docstring)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    message = status.message or code.name
    info: error_details_pb2.ErrorInfo | None = None
    items: list[ItemError] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            items.extend(decode_field_violation(v) for v in bad.field_violations)
    family = STATUS_FAMILIES.get(code, ServerError)
    cls = InvalidItems if items and code == grpc.StatusCode.INVALID_ARGUMENT else family
    metadata: dict[str, str] = {}
    if info is not None and info.domain == ERROR_DOMAIN:
        named = WIRE_REASONS.get(info.reason)
        if named is not None and named.grpc_status == code.name:
            cls = named
            metadata = dict(info.metadata)
    try:
        return _rebuild(cls, message, metadata, tuple(items))
    except (TypeError, ValueError, KeyError, AttributeError):
        return family(message)


def status_code(error: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call (UNKNOWN when the error has none)."""
    # Errors raised by a channel are also grpc.Call objects; the stubs cannot say so.
    code = getattr(error, "code", None)
    result = code() if callable(code) else None
    return result if isinstance(result, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def errors_from_status(error: grpc.RpcError) -> FraudhubError:
    """The FraudhubError a failed call stands for (never raises).

    Reads the google.rpc.Status in the call's trailers (:func:`decode_status`);
    a call without one decodes from its code and details alone.
    """
    code = status_code(error)
    details = getattr(error, "details", None)
    message = (details() if callable(details) else None) or code.name
    status: status_pb2.Status | None = None
    if callable(getattr(error, "trailing_metadata", None)):
        try:
            status = rpc_status.from_call(cast(grpc.Call, error))
        except ValueError:
            # Details that contradict the status line are ignored, not trusted.
            status = None
    if status is None:
        status = status_pb2.Status(code=code.value[0], message=message)
    return decode_status(status)
