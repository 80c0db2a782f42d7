"""The one exception hierarchy of fraudhub.

Every error raised by fraudhub code derives from :class:`FraudhubError` and is
split by who is at fault, as in python-api-core:

- :class:`CallerError`: the caller sent something wrong (bad value, bad
  request, missing permission).  Retrying the same call cannot succeed.
- :class:`PeerError`: a remote party misbehaved or is unreachable (a key holder
  returned a bad proof, a hub is down).
- :class:`ServerError`: our own side failed.

Each class names its gRPC status code as a *string* (the name of a
``grpc.StatusCode`` member) so that this module, and the protocol core that
raises these errors, never import grpc.

:data:`WIRE_REASONS` is the explicit registry of every class a status can
carry, keyed by its wire reason code (``google.rpc.ErrorInfo.reason``).  The
hub packs errors and the SDK unpacks them with ``client_sdk.wire.status``, so
a status decodes to the same class whatever else the process imported
(ADR 0008).  The classes the hub raises (:class:`StorageError`,
:class:`AuditLogCorrupt`) live here for that reason.

Messages never contain raw indicator values, tokens or secrets: an error about
an item names its kind, its position and the reason, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final

__all__ = [
    "WIRE_REASONS",
    "AlreadyExists",
    "AuditLogCorrupt",
    "AuditLogError",
    "AuthenticationError",
    "CallerError",
    "CheckpointError",
    "CheckpointRefused",
    "ConfigurationError",
    "ConsistencyProofError",
    "CryptoError",
    "DisputeStateError",
    "DkgError",
    "EnvelopeError",
    "FraudhubError",
    "HolderError",
    "InclusionProofError",
    "InconsistentCheckpoint",
    "InvalidElementError",
    "InvalidIndicator",
    "InvalidItems",
    "InvalidRequest",
    "ItemError",
    "LabelError",
    "NotFound",
    "PeerError",
    "PermissionDenied",
    "PolicyDenied",
    "PolicyError",
    "ProofError",
    "QuotaExhausted",
    "ServerError",
    "StorageCorruption",
    "StorageError",
    "Unavailable",
    "UnknownLog",
    "WitnessConflict",
    "wire_reason",
]


class FraudhubError(Exception):
    """Root of every fraudhub error."""

    grpc_status: ClassVar[str] = "INTERNAL"


class CallerError(FraudhubError):
    """The caller is at fault; the same call will fail again."""

    grpc_status: ClassVar[str] = "INVALID_ARGUMENT"


class PeerError(FraudhubError):
    """A remote party (key holder, hub) misbehaved or could not be reached."""

    grpc_status: ClassVar[str] = "UNAVAILABLE"


class ServerError(FraudhubError):
    """Our own side failed (storage, configuration at run time)."""

    grpc_status: ClassVar[str] = "INTERNAL"


# --- caller errors -----------------------------------------------------------


class InvalidRequest(CallerError):
    """A request (or a protocol input) is malformed as a whole."""


class CryptoError(CallerError):
    """A cryptographic input is malformed (wrong length, non-canonical, ...)."""


class InvalidElementError(CryptoError):
    """A group element or scalar encoding is invalid, non-canonical or the identity."""


class LabelError(CryptoError):
    """A sealed label could not be opened (wrong key, context or tampered)."""


class EnvelopeError(CryptoError):
    """An envelope could not be opened (wrong key, associated data, or tampered)."""


class ConfigurationError(CallerError):
    """A configuration, key file or policy file is unusable."""

    grpc_status: ClassVar[str] = "FAILED_PRECONDITION"


class PolicyError(ConfigurationError):
    """A policy file does not validate (file, line and field are named)."""


class AuthenticationError(CallerError):
    """The caller's credentials are missing, expired, forged or replayed."""

    grpc_status: ClassVar[str] = "UNAUTHENTICATED"


class PermissionDenied(CallerError):
    """The caller is authenticated but its role may not do this."""

    grpc_status: ClassVar[str] = "PERMISSION_DENIED"


class PolicyDenied(PermissionDenied):
    """The privacy policy refused the request; ``reasons`` are readable codes."""

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class QuotaExhausted(CallerError):
    """A daily quota is spent."""

    grpc_status: ClassVar[str] = "RESOURCE_EXHAUSTED"


class NotFound(CallerError):
    grpc_status: ClassVar[str] = "NOT_FOUND"


class AlreadyExists(CallerError):
    """The thing to create exists already (e.g. an institution id)."""

    grpc_status: ClassVar[str] = "ALREADY_EXISTS"


@dataclass(frozen=True)
class ItemError:
    """What is wrong with one item of a batch: its position, kind and reason.

    ``field`` names the request field (for google.rpc.BadRequest).  Never holds
    the value itself.
    """

    index: int
    kind: str
    reason: str
    field: str = "value"

    def __str__(self) -> str:
        return f"item {self.index} ({self.kind}): {self.reason}"


class InvalidIndicator(CallerError):
    """One indicator value is invalid for its kind.

    The message names the kind, the item's position and the reason, and never
    echoes the value.
    """

    def __init__(self, kind: str, reason: str, index: int | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.index = index
        where = f"item {index} " if index is not None else ""
        super().__init__(f"{where}({kind}): {reason}")

    def at(self, index: int) -> InvalidIndicator:
        """The same error, located at position ``index`` of a batch."""
        return InvalidIndicator(self.kind, self.reason, index)

    def item(self) -> ItemError:
        return ItemError(self.index if self.index is not None else -1, self.kind, self.reason)


class InvalidItems(InvalidRequest):
    """Some items of a batch are invalid; ``items`` says which and why.

    The hub sends each item as a google.rpc.BadRequest field violation and the
    SDK rebuilds this error from them (``client_sdk.wire.status``).
    """

    def __init__(self, message: str, items: tuple[ItemError, ...]) -> None:
        super().__init__(message)
        self.items = items


# --- peer errors -------------------------------------------------------------


class Unavailable(PeerError):
    """Not enough reachable peers (key holders, hub) to complete the call."""


class HolderError(PeerError):
    """A key holder answered, but wrongly; ``holder`` is its share index."""

    def __init__(self, holder: int, message: str) -> None:
        super().__init__(f"key holder {holder}: {message}")
        self.holder = holder


class DkgError(PeerError):
    """A distributed key generation cannot finish; ``disqualified`` names who cheated.

    Maps participant (dealer) index to the reason, which never holds a share.
    """

    def __init__(self, message: str, disqualified: dict[int, str] | None = None) -> None:
        reasons = sorted((disqualified or {}).items())
        named = "; ".join(f"participant {i}: {why}" for i, why in reasons)
        super().__init__(f"{message} ({named})" if named else message)
        self.disqualified = dict(disqualified or {})


class AuditLogError(PeerError):
    """The hub's audit log does not verify (a proof, a checkpoint or an event is wrong).

    The message names what is wrong; it never holds event contents.
    """


class InclusionProofError(AuditLogError):
    """An RFC 9162 inclusion proof did not verify."""


class ConsistencyProofError(AuditLogError):
    """An RFC 9162 consistency proof did not verify (rewrite, truncation or fork)."""


class CheckpointError(AuditLogError):
    """A signed checkpoint is malformed, unsigned by a known key, or badly signed."""


class ProofError(PeerError):
    """A DLEQ proof did not verify: the evaluation cannot be trusted.

    RFC 9497's ``VerifyError``.  The threshold client re-raises it as a
    :class:`HolderError` naming the holder.
    """


# --- server errors -------------------------------------------------------------


class StorageError(ServerError):
    """The database failed (not the caller's fault).

    ``cause`` is one of ``hub.storage.store.STORAGE_CAUSES`` ("disk full",
    "database locked", ...); the message names it and nothing else of the
    driver's error.  UNAVAILABLE on the wire (ADR 0007, amended): a lock
    timeout or a lost connection passes, a full disk passes once space is
    freed, the transaction was rolled back, and the SDK retries UNAVAILABLE
    within the call's deadline.  Corruption is :class:`StorageCorruption`.
    """

    grpc_status: ClassVar[str] = "UNAVAILABLE"

    def __init__(self, message: str = "the hub's database failed", cause: str = "other") -> None:
        super().__init__(message)
        self.cause = cause


class StorageCorruption(StorageError):
    """The database reports corruption: DATA_LOSS, retrying cannot help."""

    grpc_status: ClassVar[str] = "DATA_LOSS"


class AuditLogCorrupt(ServerError):
    """The stored log no longer matches itself or its signed checkpoints."""


# --- the wire registry ---------------------------------------------------------------


class UnknownLog(NotFound):
    """A witness was asked to cosign a log origin it does not witness."""


class CheckpointRefused(InvalidRequest):
    """A witness refused a checkpoint: malformed, or not signed by the log's key."""


class InconsistentCheckpoint(InvalidRequest):
    """A checkpoint smaller than, or not an extension of, the one a witness last cosigned."""


class WitnessConflict(CallerError):
    """The caller's old size is not the witness's: retry from ``size`` (C2SP tlog-witness 409)."""

    grpc_status: ClassVar[str] = "FAILED_PRECONDITION"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size

    @classmethod
    def at(cls, origin: str, size: int, asked: int) -> WitnessConflict:
        """The conflict of a witness at ``size`` asked to prove from ``asked``."""
        return cls(
            f"witness is at size {size} for log {origin!r}, not at the old size {asked} "
            "the request proves from",
            size,
        )


class DisputeStateError(CallerError):
    """A dispute step that its state does not allow (e.g. resolving an item twice)."""

    grpc_status: ClassVar[str] = "FAILED_PRECONDITION"


#: Wire reason code -> class, for every class a status can carry.  The codes
#: are a wire format: never change or reuse one (a class may be renamed, its
#: code stays).  A new FraudhubError subclass gets its line here; a class
#: missing from this table travels as its nearest registered ancestor
#: (:func:`wire_reason`), and tests/test_error_registry.py fails until it is added.
WIRE_REASONS: Final[Mapping[str, type[FraudhubError]]] = MappingProxyType(
    {
        "FRAUDHUB_ERROR": FraudhubError,
        "CALLER_ERROR": CallerError,
        "PEER_ERROR": PeerError,
        "SERVER_ERROR": ServerError,
        "INVALID_REQUEST": InvalidRequest,
        "CRYPTO_ERROR": CryptoError,
        "INVALID_ELEMENT_ERROR": InvalidElementError,
        "LABEL_ERROR": LabelError,
        "ENVELOPE_ERROR": EnvelopeError,
        "CONFIGURATION_ERROR": ConfigurationError,
        "POLICY_ERROR": PolicyError,
        "AUTHENTICATION_ERROR": AuthenticationError,
        "PERMISSION_DENIED": PermissionDenied,
        "POLICY_DENIED": PolicyDenied,
        "QUOTA_EXHAUSTED": QuotaExhausted,
        "NOT_FOUND": NotFound,
        "ALREADY_EXISTS": AlreadyExists,
        "INVALID_INDICATOR": InvalidIndicator,
        "INVALID_ITEMS": InvalidItems,
        "UNAVAILABLE": Unavailable,
        "HOLDER_ERROR": HolderError,
        "AUDIT_LOG_ERROR": AuditLogError,
        "INCLUSION_PROOF_ERROR": InclusionProofError,
        "CONSISTENCY_PROOF_ERROR": ConsistencyProofError,
        "CHECKPOINT_ERROR": CheckpointError,
        "PROOF_ERROR": ProofError,
        "DKG_ERROR": DkgError,
        "STORAGE_ERROR": StorageError,
        "STORAGE_CORRUPTION": StorageCorruption,
        "AUDIT_LOG_CORRUPT": AuditLogCorrupt,
        "UNKNOWN_LOG": UnknownLog,
        "CHECKPOINT_REFUSED": CheckpointRefused,
        "INCONSISTENT_CHECKPOINT": InconsistentCheckpoint,
        "WITNESS_CONFLICT": WitnessConflict,
        "DISPUTE_STATE_ERROR": DisputeStateError,
    }
)
_REASON_OF: Final[Mapping[type[FraudhubError], str]] = MappingProxyType(
    {cls: reason for reason, cls in WIRE_REASONS.items()}
)


def wire_reason(cls: type[FraudhubError]) -> str:
    """The wire reason code of ``cls``: its own, else its nearest registered ancestor's.

    Never raises: every class derives from :class:`FraudhubError`, which is registered.
    """
    for ancestor in cls.__mro__:
        reason = _REASON_OF.get(ancestor)
        if reason is not None:
            return reason
    return _REASON_OF[FraudhubError]
