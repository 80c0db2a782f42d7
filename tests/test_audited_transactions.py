"""Every service path follows ADR 0007 when the audit log cannot be written.

The audit append is made to fail as a full disk would (a real
``sqlalchemy.exc.OperationalError`` raised where ``auditlog.append`` writes),
on the real hub over TLS, on SQLite and PostgreSQL:

- the effect is rolled back and the caller gets the StorageError (UNAVAILABLE,
  cause named, no values);
- a failure is audited in its own transaction; if that fails too the caller
  still gets its ORIGINAL error and the log names the action, not a value.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from fraudhub.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    exchange_pb2,
    exchange_pb2_grpc,
)
from sqlmodel import Session, func, select

from client_sdk.core.errors import AlreadyExists
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, generate_key, public_key_bytes
from client_sdk.wire.channels import open_channel
from hub.devtools.deployment import LocalDeployment
from hub.services.admin import add_institution_locally
from hub.storage import auditlog, store
from hub.storage.models import Indicator as IndicatorRow
from hub.storage.models import Institution, utcnow

pytestmark = pytest.mark.e2e

REPORT = "fraud_reporting"
TOKEN = bytes(range(32))


class FailingAppends:
    """``auditlog.append`` that fails (disk full, or ``message``) for the next ``count`` calls."""

    def __init__(self, real: Callable[[Session, Any], int]) -> None:
        self.real = real
        self.count = 0
        self.failed = 0
        self.message = "database or disk is full"

    def __call__(self, session: Session, event: Any) -> int:
        if self.count > 0:
            self.count -= 1
            self.failed += 1
            orig = sqlite3.OperationalError(self.message)
            raise sa.exc.OperationalError("INSERT INTO audit_event ...", {}, orig)
        return self.real(session, event)


@pytest.fixture
def world(e2e_world: Any) -> Iterator[LocalDeployment]:
    assert isinstance(e2e_world, LocalDeployment)
    yield e2e_world


@pytest.fixture
def appends(monkeypatch: pytest.MonkeyPatch) -> FailingAppends:
    failing = FailingAppends(auditlog.append)
    monkeypatch.setattr(auditlog, "append", failing)
    return failing


def channel(world: LocalDeployment, institution: str) -> grpc.Channel:
    return open_channel(
        world.hub_address, world.security, BearerAuth(world.keys[institution], HUB_AUDIENCE)
    )


def last_event(world: LocalDeployment) -> dict[str, Any]:
    with world.hub.store.session() as session:
        size = auditlog.tree_size(session)
        [event] = auditlog.list_events(session, size - 1, size)
    decoded: dict[str, Any] = json.loads(event.body)
    return decoded


def audit_size(world: LocalDeployment) -> int:
    with world.hub.store.session() as session:
        return auditlog.tree_size(session)


def indicator_rows(world: LocalDeployment, institution: str) -> int:
    with world.hub.store.session() as session:
        statement = select(func.count()).where(IndicatorRow.contributor == institution)
        return int(session.exec(statement).one())


def contribute_request(token: bytes) -> exchange_pb2.ContributeRequest:
    item = exchange_pb2.Indicator(
        token=token, kind="phone", category=common_pb2.SCAM_PHONE, confidence=50, key_epoch=1
    )
    item.observed_at.GetCurrentTime()
    return exchange_pb2.ContributeRequest(purpose=REPORT, indicators=[item])


def test_exchange_rolls_the_effect_back_when_its_event_cannot_be_written(
    world: LocalDeployment, appends: FailingAppends
) -> None:
    stub = exchange_pb2_grpc.ExchangeStub(channel(world, "bank-c"))
    before = indicator_rows(world, "bank-c")
    appends.count = 1  # the event of the work; the failure event is written
    with pytest.raises(grpc.RpcError) as caught:
        stub.Contribute(contribute_request(TOKEN))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "the hub's database failed (disk full)"
    assert indicator_rows(world, "bank-c") == before
    event = last_event(world)
    assert (event["action"], event["outcome"]) == ("Exchange.Contribute", "error")


def test_exchange_returns_the_original_error_when_no_event_can_be_written(
    world: LocalDeployment, appends: FailingAppends, caplog: pytest.LogCaptureFixture
) -> None:
    stub = exchange_pb2_grpc.ExchangeStub(channel(world, "bank-c"))
    size = audit_size(world)
    appends.count = 2
    request = exchange_pb2.RevokeRequest(
        reason="no-such-reason", items=[exchange_pb2.RevokeItem(kind="phone", token=TOKEN)]
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Revoke(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert appends.failed == 1  # the work failed first: only its failure event was tried
    assert audit_size(world) == size
    assert "could not audit Exchange.Revoke (outcome invalid): StorageError (disk full)" in (
        caplog.text
    )
    assert TOKEN.hex() not in caplog.text


def test_admin_rolls_a_registration_back_when_its_event_cannot_be_written(
    world: LocalDeployment, appends: FailingAppends
) -> None:
    stub = admin_pb2_grpc.AdminStub(channel(world, "operator-o"))
    key = public_key_bytes(generate_key())
    request = admin_pb2.AddInstitutionRequest(
        institution=admin_pb2.Institution(id="bank-rollback", role=common_pb2.BANK, public_key=key)
    )
    appends.count = 1
    with pytest.raises(grpc.RpcError) as caught:
        stub.AddInstitution(request)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "disk full" in (caught.value.details() or "")
    with world.hub.store.session() as session:
        assert session.get(Institution, "bank-rollback") is None
    event = last_event(world)
    assert (event["action"], event["outcome"]) == ("Admin.AddInstitution", "error")
    assert event["reasons"] == ["TARGET:bank-rollback"]


def test_admin_returns_the_original_error_when_no_event_can_be_written(
    world: LocalDeployment, appends: FailingAppends
) -> None:
    # Before ADR 0007 the failure event's database error escaped: INTERNAL.
    stub = admin_pb2_grpc.AdminStub(channel(world, "operator-o"))
    appends.count = 2
    with pytest.raises(grpc.RpcError) as caught:
        stub.DisableInstitution(admin_pb2.DisableInstitutionRequest(id="bank-nobody"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert appends.failed == 1


def test_audit_service_reads_fail_when_their_trace_cannot_be_written(
    world: LocalDeployment, appends: FailingAppends
) -> None:
    stub = audit_pb2_grpc.AuditStub(channel(world, "regulator-r"))
    appends.count = 1
    appends.message = "database is locked"  # passes: the read waits for its trace
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetInclusionProof(audit_pb2.GetInclusionProofRequest(leaf_index=0, tree_size=1))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "the hub's database failed (database locked)"
    event = last_event(world)
    assert (event["action"], event["outcome"], event["role"]) == (
        "Audit.GetInclusionProof",
        "error",
        "regulator",
    )


def test_audit_service_reads_are_answered_on_a_full_disk_and_the_gap_logged(
    world: LocalDeployment, appends: FailingAppends, caplog: pytest.LogCaptureFixture
) -> None:
    stub = audit_pb2_grpc.AuditStub(channel(world, "regulator-r"))
    size = audit_size(world)
    appends.count = 2  # neither the read's event nor its failure event fits
    proof = stub.GetInclusionProof(audit_pb2.GetInclusionProofRequest(leaf_index=0, tree_size=2))
    assert len(proof.hashes) == 1
    assert audit_size(world) == size
    assert "Audit.GetInclusionProof for regulator-r answered without its audit event" in (
        caplog.text
    )


def test_a_refusal_stands_when_it_cannot_be_audited(
    world: LocalDeployment, appends: FailingAppends, caplog: pytest.LogCaptureFixture
) -> None:
    stub = admin_pb2_grpc.AdminStub(channel(world, "bank-c"))  # a bank is not an operator
    size = audit_size(world)
    appends.count = 1
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListInstitutions(admin_pb2.ListInstitutionsRequest())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert audit_size(world) == size
    assert "could not audit Admin.ListInstitutions (outcome denied)" in caplog.text


def test_a_local_registration_is_rolled_back_with_its_event(
    world: LocalDeployment, appends: FailingAppends
) -> None:
    row = Institution(
        id="bank-local",
        role="bank",
        public_key=public_key_bytes(generate_key()),  # bytes(32) is a weak key (ADR 0011)
        display_name="x",
        created_at=utcnow(),
    )
    appends.count = 1
    with pytest.raises(store.StorageError, match="disk full"):
        add_institution_locally(world.hub.store, row, "cli")
    with world.hub.store.session() as session:
        assert session.get(Institution, "bank-local") is None
    event = last_event(world)
    assert (event["institution"], event["action"], event["outcome"]) == (
        "local-operator",
        "Admin.AddInstitution",
        "error",
    )
    # A refused local change is audited as the same refusal over RPC is.
    add_institution_locally(world.hub.store, row, "cli")
    with pytest.raises(AlreadyExists):
        add_institution_locally(world.hub.store, row, "cli")
    assert last_event(world)["outcome"] == "ALREADY_EXISTS"
