"""What a storage failure looks like on the wire (ADR 0007, amended by issue 13).

Before: every StorageError left the hub as INTERNAL, which the SDK cannot
retry and our standards call a bug.  Now a lock timeout, a lost connection, a
full disk or another database failure is UNAVAILABLE (the SDK retries it
within the call's deadline; the transaction was rolled back), and corruption
is DATA_LOSS; the message names the cause and nothing of the driver's text.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from client_sdk.core.errors import ServerError, Unavailable
from client_sdk.wire.channels import errors_from_status
from hub.storage.store import StorageCorruption, StorageError, storage_error
from hub.wire.status import DOCUMENTED_CODES, to_rpc_status


def _driver_error(message: str) -> sa.exc.OperationalError:
    orig = sqlite3.OperationalError(message)
    return sa.exc.OperationalError("INSERT INTO seen_token VALUES ('secret-jti')", {}, orig)


class _Failed(grpc.RpcError):
    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> Any:
        return tuple(self._status.trailing_metadata)


@pytest.mark.parametrize(
    ("message", "cause", "code", "sdk_class"),
    [
        ("database is locked", "database locked", grpc.StatusCode.UNAVAILABLE, Unavailable),
        ("database or disk is full", "disk full", grpc.StatusCode.UNAVAILABLE, Unavailable),
        (
            "unable to open database file",
            "connection lost",
            grpc.StatusCode.UNAVAILABLE,
            Unavailable,
        ),
        ("something new", "other", grpc.StatusCode.UNAVAILABLE, Unavailable),
        ("database disk image is malformed", "corruption", grpc.StatusCode.DATA_LOSS, ServerError),
    ],
)
def test_storage_causes_map_to_documented_codes(
    message: str, cause: str, code: grpc.StatusCode, sdk_class: type[Exception]
) -> None:
    from grpc_status import rpc_status

    error = storage_error(_driver_error(message))
    assert isinstance(error, StorageError)
    assert isinstance(error, StorageCorruption) == (cause == "corruption")
    assert error.cause == cause
    status = to_rpc_status(error)
    assert status.code == code.value[0]
    assert code in DOCUMENTED_CODES
    assert status.message == f"the hub's database failed ({cause})"
    assert "secret-jti" not in str(status)
    decoded = errors_from_status(_Failed(rpc_status.to_status(status)))
    # An SDK-only process rebuilds the status family's class; this process
    # also knows the hub's StorageError, which the SDK rebuilds by name.
    assert isinstance(decoded, sdk_class | StorageError)
    assert cause in str(decoded)
