"""Lifecycle commands end to end (issue 12, item 6): ``fraudhub revoke FILE``,
enabling a disabled institution, over real gRPC on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fraudhub.v1 import admin_pb2, admin_pb2_grpc, exchange_pb2

from client_sdk import Indicator
from client_sdk.client.results import MatchResult
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth
from client_sdk.wire.channels import open_channel
from hub.cli import main
from hub.devtools.deployment import LocalDeployment
from hub.storage import auditlog

pytestmark = pytest.mark.e2e

REPORT = "fraud_reporting"
PAYMENT = "payment_screening"


@pytest.fixture
def world(e2e_world: Any) -> Iterator[LocalDeployment]:
    assert isinstance(e2e_world, LocalDeployment)
    yield e2e_world


def phone(n: int) -> str:
    return f"+86 138 {n // 10000:04d} {n % 10000:04d}"


def admin(world: LocalDeployment) -> admin_pb2_grpc.AdminStub:
    channel = open_channel(
        world.hub_address, world.security, BearerAuth(world.keys["operator-o"], HUB_AUDIENCE)
    )
    return admin_pb2_grpc.AdminStub(channel)


def events(world: LocalDeployment, since: int) -> list[dict[str, Any]]:
    with world.hub.store.session() as session:
        return [json.loads(e.body) for e in auditlog.list_events(session, since, None)]


def audit_size(world: LocalDeployment) -> int:
    with world.hub.store.session() as session:
        return auditlog.tree_size(session)


def matched(world: LocalDeployment, institution: str, value: str) -> bool:
    [result] = world.client(institution).match([("phone", value)], purpose=PAYMENT)
    assert isinstance(result, MatchResult), result
    return result.matched


def test_revoke_command_withdraws_the_rows_of_a_file(
    world: LocalDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = [phone(100 + i) for i in range(3)]
    for contributor in ("bank-a", "bank-c"):
        world.client(contributor).contribute(
            [Indicator("phone", v, "scam_phone") for v in values], purpose=REPORT
        )
    assert all(matched(world, "bank-b", v) for v in values)
    source = tmp_path / "withdraw.csv"
    source.write_text(
        "kind,value\n"
        f"phone,{values[0]}\n"
        "phone,not-a-phone\n"
        f"phone,{values[1]}\n"
        f"phone,{phone(199)}\n"  # never contributed
    )
    config = str(world.client_config("bank-a"))
    before = audit_size(world)
    args = ["revoke", str(source), "--config", config, "--reason", "false_positive"]
    assert main([*args, "--no-progress"]) == 3  # a row failed (issue 13 exit codes)
    captured = capsys.readouterr()
    assert "2 of 4 rows revoked, 1 not found" in captured.out and "1 failed" in captured.out
    assert "row 2 (phone): " in captured.err and "not-a-phone" not in captured.err
    for value in values:
        assert value not in captured.out + captured.err
    # bank-c's contributions of the same values stay: only bank-a's rows were withdrawn.
    [revocation] = [e for e in events(world, before) if e["action"] == "Exchange.Revoke"]
    assert revocation["outcome"] == "ok" and "REVOKE_REASON:false_positive" in revocation["reasons"]
    assert matched(world, "bank-b", values[0]) and matched(world, "bank-b", values[2])
    with world.hub.store.session() as session:
        from sqlmodel import select

        from hub.storage.models import Indicator as Row

        revoked = session.exec(
            select(Row).where(Row.contributor == "bank-a", Row.revoked_at != None)  # noqa: E711
        ).all()
    assert {r.revoke_reason for r in revoked} == {"false_positive"} and len(revoked) == 2
    # A reason outside the audited list is refused before anything is read.
    with pytest.raises(SystemExit) as refused:
        main(["revoke", str(source), "--config", config, "--reason", "because"])
    assert refused.value.code == 2


def test_enable_gives_back_the_same_institution(world: LocalDeployment) -> None:
    stub = admin(world)
    value = phone(300)
    world.client("bank-c").contribute([Indicator("phone", value, "scam_phone")], purpose=REPORT)
    before = audit_size(world)
    disabled = stub.DisableInstitution(admin_pb2.DisableInstitutionRequest(id="bank-c"))
    assert disabled.disabled
    query = exchange_pb2.MatchRequest(
        purpose=PAYMENT,
        queries=[exchange_pb2.MatchQuery(token=bytes(32), kind="phone", key_epoch=1)],
    )
    from fraudhub.v1 import exchange_pb2_grpc

    bank_c = exchange_pb2_grpc.ExchangeStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["bank-c"], HUB_AUDIENCE)
        )
    )
    with pytest.raises(grpc.RpcError) as refused:
        bank_c.Match(query)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    enabled = stub.EnableInstitution(admin_pb2.EnableInstitutionRequest(id="bank-c", reason="back"))
    assert not enabled.disabled and enabled.public_key == disabled.public_key
    # Same key, same contributions: its indicator still matches for others.
    assert len(bank_c.Match(query).results) == 1
    assert matched(world, "bank-b", value)
    with pytest.raises(grpc.RpcError) as unknown:
        stub.EnableInstitution(admin_pb2.EnableInstitutionRequest(id="bank-nobody"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    admin_events = [
        (e["action"], e["outcome"], e["reasons"])
        for e in events(world, before)
        if e["action"].startswith("Admin.")
    ]
    assert admin_events == [
        ("Admin.DisableInstitution", "ok", ["TARGET:bank-c"]),
        ("Admin.EnableInstitution", "ok", ["TARGET:bank-c"]),
        ("Admin.EnableInstitution", "NOT_FOUND", ["TARGET:bank-nobody"]),
    ]


def test_rotating_a_signing_key_keeps_the_institution(world: LocalDeployment) -> None:
    from client_sdk.wire.auth import InstitutionKey, generate_key, public_key_bytes

    stub = admin(world)
    world.register("bank-rot", "bank")
    value = phone(400)
    world.client("bank-rot").contribute([Indicator("phone", value, "scam_phone")], purpose=REPORT)
    old_key = world.keys["bank-rot"]
    new_private = generate_key()
    before = audit_size(world)
    # A weak key (the identity point) is refused; the institution keeps its key.
    with pytest.raises(grpc.RpcError) as weak:
        stub.RotateInstitutionKey(
            admin_pb2.RotateInstitutionKeyRequest(id="bank-rot", public_key=b"\x01" + bytes(31))
        )
    assert weak.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "weak" in (weak.value.details() or "")
    rotated = stub.RotateInstitutionKey(
        admin_pb2.RotateInstitutionKeyRequest(
            id="bank-rot", public_key=public_key_bytes(new_private)
        )
    )
    assert rotated.id == "bank-rot" and rotated.public_key == public_key_bytes(new_private)
    with pytest.raises(grpc.RpcError) as same:
        stub.RotateInstitutionKey(
            admin_pb2.RotateInstitutionKeyRequest(
                id="bank-rot", public_key=public_key_bytes(new_private)
            )
        )
    assert same.value.code() == grpc.StatusCode.ALREADY_EXISTS

    def match_with(key: InstitutionKey) -> grpc.StatusCode:
        from fraudhub.v1 import exchange_pb2_grpc

        channel = open_channel(world.hub_address, world.security, BearerAuth(key, HUB_AUDIENCE))
        request = exchange_pb2.MatchRequest(
            purpose=PAYMENT,
            queries=[exchange_pb2.MatchQuery(token=bytes(32), kind="phone", key_epoch=1)],
        )
        try:
            exchange_pb2_grpc.ExchangeStub(channel).Match(request)
        except grpc.RpcError as exc:
            return exc.code()
        finally:
            channel.close()
        return grpc.StatusCode.OK

    # The old key is refused at once; the new one works, with the same history.
    assert match_with(old_key) == grpc.StatusCode.UNAUTHENTICATED
    assert match_with(InstitutionKey("bank-rot", new_private)) == grpc.StatusCode.OK
    assert matched(world, "bank-b", value)
    rows = [
        (e["action"], e["outcome"], e["reasons"])
        for e in events(world, before)
        if e["action"] == "Admin.RotateInstitutionKey"
    ]
    assert rows == [
        ("Admin.RotateInstitutionKey", "invalid", ["TARGET:bank-rot"]),
        ("Admin.RotateInstitutionKey", "ok", ["TARGET:bank-rot"]),
        ("Admin.RotateInstitutionKey", "ALREADY_EXISTS", ["TARGET:bank-rot"]),
    ]
    raw = public_key_bytes(new_private).hex()
    assert all(raw not in json.dumps(e) for e in events(world, before))
