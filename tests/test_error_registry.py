"""The error wire registry (ADR 0008): every class round-trips, in an SDK-only process too.

The old decoder found the class of a status by walking
``FraudhubError.__subclasses__()``, so a status decoded differently depending
on which hub modules the process had imported.  These tests pack in this
process (with the hub loaded) and decode in a child that imports only the SDK.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from client_sdk.core.errors import (
    WIRE_REASONS,
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
    ServerError,
    StorageError,
    WitnessConflict,
    wire_reason,
)
from client_sdk.wire.status import ERROR_DOMAIN, decode_status, pack_status
from hub.wire.status import to_rpc_status

ROOT = Path(__file__).resolve().parent.parent


def _project_modules() -> list[str]:
    """Every module of client_sdk and hub (not migrations or ``__main__``: those run on import)."""
    names = []
    for package in ("client_sdk", "hub"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if ".migrations" not in info.name and not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def _examples(cls: type[FraudhubError]) -> list[FraudhubError]:
    """Instances of ``cls`` with every field the wire must carry set."""
    if issubclass(cls, PolicyDenied):
        return [cls("denied by policy", ("SENSITIVE_KIND", "NO_CASE_REFERENCE")), cls("no")]
    if issubclass(cls, HolderError):
        return [cls(3, "evaluation rejected")]
    if issubclass(cls, InvalidIndicator):
        return [cls("phone", "not a valid number", 4), cls("email", "no @")]
    if issubclass(cls, DkgError):
        return [cls("round 2 cannot finish", {2: "bad share", 4: "no answer"}), cls("no quorum")]
    if issubclass(cls, StorageError):
        return [cls("the hub's database failed (disk full)", "disk full"), cls()]
    if issubclass(cls, WitnessConflict):
        return [cls.at("fraudhub/audit-log", 8, 5)]
    if issubclass(cls, InvalidItems):
        items = (ItemError(0, "phone", "too short", "queries"), ItemError(7, "", "token: 31 bytes"))
        return [cls("2 invalid items", items)]
    return [cls(f"{cls.__name__} happened")]


def _fields(error: FraudhubError) -> dict[str, str]:
    return {
        "class": f"{type(error).__module__}.{type(error).__qualname__}",
        "str": str(error),
        "vars": repr(sorted(vars(error).items())),
    }


_DECODE_IN_SDK_ONLY_PROCESS = """
import json, sys
from google.rpc import status_pb2
from client_sdk.wire.status import decode_status

out = []
for blob in json.load(sys.stdin):
    status = status_pb2.Status.FromString(bytes.fromhex(blob))
    error = decode_status(status)
    out.append({
        "class": f"{type(error).__module__}.{type(error).__qualname__}",
        "str": str(error),
        "vars": repr(sorted(vars(error).items())),
    })
loaded = sorted(m for m in sys.modules if m == "hub" or m.startswith("hub."))
assert not loaded, loaded
json.dump(out, sys.stdout)
"""


@pytest.mark.e2e
def test_every_registered_class_round_trips_in_an_sdk_only_process() -> None:
    errors = [e for cls in WIRE_REASONS.values() for e in _examples(cls)]
    blobs = [to_rpc_status(e).SerializeToString().hex() for e in errors]
    child = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_SDK_ONLY_PROCESS],
        input=json.dumps(blobs),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    decoded = json.loads(child.stdout)
    assert decoded == [_fields(e) for e in errors]


@pytest.mark.parametrize("cls", list(WIRE_REASONS.values()), ids=lambda c: c.__name__)
def test_every_registered_class_round_trips_here(cls: type[FraudhubError]) -> None:
    for error in _examples(cls):
        assert _fields(decode_status(pack_status(error))) == _fields(error)


def test_every_error_class_of_the_project_is_registered() -> None:
    for name in _project_modules():
        importlib.import_module(name)
    found: list[type[FraudhubError]] = []
    pending: list[type[FraudhubError]] = [FraudhubError]
    while pending:
        cls = pending.pop()
        if cls.__module__.split(".")[0] in {"client_sdk", "hub"}:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    missing = sorted(c.__name__ for c in found if c not in WIRE_REASONS.values())
    assert missing == []


def test_registry_is_one_to_one_and_codes_are_upper_snake() -> None:
    assert len(set(WIRE_REASONS.values())) == len(WIRE_REASONS)
    for reason, cls in WIRE_REASONS.items():
        assert reason.isupper() and reason.replace("_", "").isalpha()
        assert wire_reason(cls) == reason
        assert cls.grpc_status in grpc.StatusCode.__members__


def test_hub_errors_decode_to_their_class_not_server_error() -> None:
    back = decode_status(to_rpc_status(StorageError("the hub's database failed")))
    assert type(back) is StorageError


def test_an_unregistered_subclass_travels_as_its_nearest_registered_ancestor() -> None:
    class Vanished(NotFound):
        pass

    assert wire_reason(Vanished) == "NOT_FOUND"
    back = decode_status(pack_status(Vanished("no such case")))
    assert type(back) is NotFound and str(back) == "no such case"


def _status(code: grpc.StatusCode, reason: str, domain: str = ERROR_DOMAIN) -> status_pb2.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))
    return status_pb2.Status(code=code.value[0], message="m", details=[info])


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (_status(grpc.StatusCode.PERMISSION_DENIED, "NO_SUCH_REASON"), PermissionDenied),
        (_status(grpc.StatusCode.INVALID_ARGUMENT, "STORAGE_ERROR"), InvalidRequest),
        (_status(grpc.StatusCode.INTERNAL, "STORAGE_ERROR", "elsewhere"), ServerError),
        (_status(grpc.StatusCode.UNAVAILABLE, "STORAGE_ERROR"), StorageError),
        (_status(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INDICATOR"), InvalidRequest),
        (_status(grpc.StatusCode.UNAVAILABLE, "HOLDER_ERROR"), HolderError),
        (status_pb2.Status(code=999, message="m"), ServerError),
    ],
    ids=["unknown-reason", "code-disagrees", "foreign-domain", "hub-class", "no-fields", "h", "c"],
)
def test_statuses_without_a_usable_class_decode_to_their_family(
    status: status_pb2.Status, cls: type[FraudhubError]
) -> None:
    assert type(decode_status(status)) is cls
