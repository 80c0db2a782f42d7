"""What a storage failure looks like on the wire (ADR 0007, amended by issue 13).

Before: every StorageError left the hub as INTERNAL, which the SDK cannot
retry and our standards call a bug.  Now a lock timeout, a lost connection, a
full disk or another database failure is UNAVAILABLE (the SDK retries it
within the call's deadline; the transaction was rolled back), and corruption
is DATA_LOSS; the message names the cause and nothing of the driver's text.
"""

from __future__ import annotations

import sqlite3

import grpc
import pytest
import sqlalchemy as sa

from client_sdk.core.errors import StorageCorruption, StorageError
from client_sdk.wire.status import decode_status
from hub.storage.store import storage_error
from hub.wire.status import DOCUMENTED_CODES, to_rpc_status


def _driver_error(message: str) -> sa.exc.OperationalError:
    orig = sqlite3.OperationalError(message)
    return sa.exc.OperationalError("INSERT INTO seen_token VALUES ('secret-jti')", {}, orig)


@pytest.mark.parametrize(
    ("message", "cause", "code", "cls"),
    [
        ("database is locked", "database locked", grpc.StatusCode.UNAVAILABLE, StorageError),
        ("database or disk is full", "disk full", grpc.StatusCode.UNAVAILABLE, StorageError),
        (
            "unable to open database file",
            "connection lost",
            grpc.StatusCode.UNAVAILABLE,
            StorageError,
        ),
        ("something new", "other", grpc.StatusCode.UNAVAILABLE, StorageError),
        (
            "database disk image is malformed",
            "corruption",
            grpc.StatusCode.DATA_LOSS,
            StorageCorruption,
        ),
    ],
)
def test_storage_causes_map_to_documented_codes(
    message: str, cause: str, code: grpc.StatusCode, cls: type[StorageError]
) -> None:
    error = storage_error(_driver_error(message))
    assert isinstance(error, StorageError)
    assert isinstance(error, StorageCorruption) == (cause == "corruption")
    assert error.cause == cause
    status = to_rpc_status(error)
    assert status.code == code.value[0]
    assert code in DOCUMENTED_CODES
    assert status.message == f"the hub's database failed ({cause})"
    assert "secret-jti" not in str(status)
    # The SDK rebuilds the same class with its cause (client_sdk.wire.status),
    # and retries UNAVAILABLE within the call's deadline.
    decoded = decode_status(status)
    assert type(decoded) is cls
    assert isinstance(decoded, StorageError) and decoded.cause == cause
