"""Protobuf <-> domain conversions shared by the SDK, the hub and the regulator's tools.

The one place where ``google.protobuf.Timestamp`` and the ``fraudhub.v1`` enums
become Python values and back.  Decoding validates: a timestamp outside years
1-9999 or with nanos outside [0, 1e9), an unknown enum number, raise
:class:`~client_sdk.core.errors.InvalidRequest` naming the field, never a bare
``ValueError`` or ``OverflowError`` (which gRPC would turn into INTERNAL).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fraudhub.v1 import common_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from client_sdk.core.errors import InvalidRequest
from client_sdk.core.vocabulary import CATEGORIES, DISCLOSURE_LEVELS, Disclosure

__all__ = [
    "MAX_BIGINT",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "bigint",
    "category_value",
    "category_word",
    "disclosure_word",
    "optional_datetime",
    "timestamp",
    "to_datetime",
]

#: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: what the protobuf Timestamp
#: well-known type allows and what ``datetime`` can hold.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
_NANOS = 1_000_000_000
#: The largest number the hub's SQL BIGINT columns (ids, sequences, leaf indices) hold.
MAX_BIGINT = 2**63 - 1


def timestamp(value: datetime) -> Timestamp:
    """``value`` as a Timestamp; naive datetimes are refused (they have no instant)."""
    if value.tzinfo is None:
        raise InvalidRequest("datetimes must be timezone-aware")
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def to_datetime(stamp: Timestamp, name: str = "timestamp") -> datetime:
    """The UTC datetime of ``stamp``; InvalidRequest naming ``name`` when out of range."""
    if not MIN_SECONDS <= stamp.seconds <= MAX_SECONDS:
        raise InvalidRequest(f"{name}: seconds outside years 1-9999")
    if not 0 <= stamp.nanos < _NANOS:
        raise InvalidRequest(f"{name}: nanos outside [0, 1e9)")
    return stamp.ToDatetime(tzinfo=UTC)


def optional_datetime(message: Message, name: str) -> datetime | None:
    """Field ``name`` of ``message`` as a datetime, or None when it is not set."""
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    return to_datetime(stamp, name)


def category_word(value: int) -> str:
    """The category word of a wire enum number ("" for unspecified or unknown)."""
    if 1 <= value <= len(CATEGORIES):
        return CATEGORIES[value - 1]
    return ""


def category_value(word: str) -> common_pb2.Category.ValueType:
    """The wire enum number of a category word; InvalidRequest for an unknown word."""
    if word not in CATEGORIES:
        raise InvalidRequest(f"unknown category (one of {', '.join(CATEGORIES)})")
    return common_pb2.Category.Value(word.upper())


def disclosure_word(value: int) -> str:
    """The disclosure word of a wire enum number; InvalidRequest for an unknown one."""
    if not 0 <= value < len(DISCLOSURE_LEVELS):
        raise InvalidRequest(f"unknown disclosure level {value}")
    return Disclosure(value).word


def bigint(value: int, name: str, *, low: int = 0) -> int:
    """``value`` (a uint64 field) if it fits a SQL BIGINT and is at least ``low``.

    Raises InvalidRequest naming ``name``: a larger number would reach the
    database driver as an OverflowError (gRPC's INTERNAL).
    """
    if not low <= value <= MAX_BIGINT:
        raise InvalidRequest(f"{name} must be {low}..{MAX_BIGINT}")
    return value
