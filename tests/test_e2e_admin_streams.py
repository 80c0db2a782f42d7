"""End to end over real gRPC, continued: administration, commands, quotas, streams, disclosure."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import grpc
import pytest
from _e2e import (
    PAYMENT,
    REPORT,
    SIM,
    last_event,
    only,
    phone,
    stub,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fraudhub.v1 import admin_pb2, admin_pb2_grpc, common_pb2, exchange_pb2, exchange_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlmodel import select

from client_sdk import Indicator
from client_sdk.client.results import Contributed, ItemFailure
from client_sdk.core.errors import (
    PolicyDenied,
    QuotaExhausted,
)
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, public_key_bytes
from client_sdk.wire.channels import open_channel
from hub.devtools.deployment import LocalDeployment

pytestmark = pytest.mark.e2e


def test_admin_registry_and_disable(world: LocalDeployment) -> None:
    admin = admin_pb2_grpc.AdminStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["operator-o"], HUB_AUDIENCE)
        )
    )
    listed = admin.ListInstitutions(admin_pb2.ListInstitutionsRequest())
    assert {i.id for i in listed.institutions} >= {"bank-a", "carrier-x"}
    new_key = Ed25519PrivateKey.generate()
    added = admin.AddInstitution(
        admin_pb2.AddInstitutionRequest(
            institution=admin_pb2.Institution(
                id="bank-z",
                name="Bank Z",
                role=common_pb2.BANK,
                public_key=public_key_bytes(new_key),
            )
        )
    )
    assert added.id == "bank-z" and not added.disabled
    with pytest.raises(grpc.RpcError) as duplicate:
        admin.AddInstitution(admin_pb2.AddInstitutionRequest(institution=added))
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    from client_sdk.wire.auth import InstitutionKey

    bank_z = exchange_pb2_grpc.ExchangeStub(
        open_channel(
            world.hub_address,
            world.security,
            BearerAuth(InstitutionKey("bank-z", new_key), HUB_AUDIENCE),
        )
    )
    query = exchange_pb2.MatchRequest(
        purpose=PAYMENT, queries=[exchange_pb2.MatchQuery(token=bytes(32), kind="url", key_epoch=1)]
    )
    assert len(bank_z.Match(query).results) == 1
    admin.DisableInstitution(admin_pb2.DisableInstitutionRequest(id="bank-z", reason="offboarded"))
    with pytest.raises(grpc.RpcError) as refused:
        bank_z.Match(query)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_policy_reload_refuses_a_broken_file(world: LocalDeployment) -> None:
    admin = admin_pb2_grpc.AdminStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["operator-o"], HUB_AUDIENCE)
        )
    )
    path = world.policy_path  # type: ignore[attr-defined]
    original = path.read_text()
    version = world.hub.policy.current.version
    try:
        path.write_text(original.replace("roles: [bank, carrier, regulator, operator]", "roles: 7"))
        with pytest.raises(grpc.RpcError) as error:
            admin.ReloadPolicy(admin_pb2.ReloadPolicyRequest())
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert world.hub.policy.current.version == version
    finally:
        path.write_text(original)
    reply = admin.ReloadPolicy(admin_pb2.ReloadPolicyRequest())
    assert reply.policy_version == reply.previous_version == version


def test_contribute_and_match_commands(
    world: LocalDeployment, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    source = tmp_path / "reports.csv"
    source.write_text(
        "kind,value,category,confidence\n"
        f"phone,{phone(4001)},scam_phone,80\n"
        "phone,not-a-phone,scam_phone,80\n"
        "13987654325,phone,scam_phone,80\n"  # value and kind swapped
    )
    config = world.client_config("bank-a")
    args = ["--config", str(config), "--no-progress"]
    assert main(["contribute", str(source), *args, "--purpose", REPORT]) == 3  # some failed
    captured = capsys.readouterr()
    assert "1 of 3 rows stored" in captured.out
    assert "3 rows: 2 error, 1 stored" in captured.err
    assert "row 2 (phone): " in captured.err and "row 3 (unknown): unknown kind" in captured.err
    assert "not-a-phone" not in captured.err and "13987654325" not in captured.err
    assert "item " not in captured.err  # one position per line, the row's
    queries = tmp_path / "queries.csv"
    queries.write_text(
        f"ref,kind,value\nq1,phone,{phone(4001)}\nq2,phone,{phone(4002)}\nq3,13987654325,phone\n"
    )
    out = tmp_path / "out.csv"
    carrier = world.client_config("carrier-x")
    assert main(["match", str(queries), "--config", str(carrier), "--no-progress",
                 "--purpose", SIM, "--out", str(out)]) == 3  # fmt: skip
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("ref,kind,status,reasons,matched,disclosure")
    assert lines[1].startswith("q1,phone,match,,yes,summary")
    assert lines[2].startswith("q2,phone,no_match,,no")
    assert lines[3].startswith('q3,unknown,error,"unknown kind') and "13987654325" not in text
    assert not (tmp_path / "out.csv.journal").exists()  # done: the journal is deleted


def test_quota_is_counted_with_the_work_and_refusal_writes_nothing(
    world: LocalDeployment,
) -> None:
    from conftest import E2E_EMPTY_OVERRIDE

    from hub.storage.models import QuotaUsage

    bucket = "match/sim_activation_screening/context_dependent"

    def used() -> int:
        with world.hub.store.session() as session:
            rows = session.exec(
                select(QuotaUsage).where(
                    QuotaUsage.institution == "carrier-x", QuotaUsage.bucket == bucket
                )
            ).all()
        return sum(r.used for r in rows)

    carrier = world.client("carrier-x")
    carrier.match([("phone", phone(5001))], purpose=SIM)
    start = used()
    assert start >= 1
    world.override_path.write_text(  # type: ignore[attr-defined]
        "format: fraudhub-policy/1\nname: e2e-override\nrules:\n"
        "  - id: e2e-tight-carrier-phone\n    action: match\n    roles: [carrier]\n"
        "    purposes: [sim_activation_screening]\n    kinds: [phone]\n"
        f"    disclosure: summary\n    daily_quota: {start + 2}\n    legal_basis: test quota\n"
    )
    admin = admin_pb2_grpc.AdminStub(
        open_channel(
            world.hub_address,
            world.security,
            BearerAuth(world.keys["operator-o"], HUB_AUDIENCE),
        )
    )
    try:
        admin.ReloadPolicy(admin_pb2.ReloadPolicyRequest())
        carrier.match([("phone", phone(5002)), ("phone", phone(5003))], purpose=SIM)
        assert used() == start + 2
        with pytest.raises(QuotaExhausted):
            carrier.match([("phone", phone(5004))], purpose=SIM)
        # The refused call used nothing and left only its audit event.
        assert used() == start + 2
        event = last_event(world)
        assert (event["outcome"], event["institution"]) == ("RESOURCE_EXHAUSTED", "carrier-x")
        assert "LIMIT_RULE:e2e-tight-carrier-phone" in event["reasons"]
    finally:
        world.override_path.write_text(E2E_EMPTY_OVERRIDE)  # type: ignore[attr-defined]
        admin.ReloadPolicy(admin_pb2.ReloadPolicyRequest())


def test_policy_reload_command(world: LocalDeployment, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli import main

    base = ["policy", "reload"]
    assert main([*base, "--config", str(world.client_config("operator-o"))]) == 0
    assert f"policy {world.hub.policy.current.version} (unchanged" in capsys.readouterr().out
    # A bank may not reload the policy.
    assert main([*base, "--config", str(world.client_config("bank-a"))]) == 2
    assert "may not call" in capsys.readouterr().err


def _details(error: grpc.RpcError, response: Any) -> list[str]:
    """Field names of the BadRequest in ``error``; unpacks the partial answer into ``response``."""
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
        elif detail.Is(response.DESCRIPTOR):
            detail.Unpack(response)
    return fields


def test_streams_name_malformed_items_across_the_stream(world: LocalDeployment) -> None:
    tokens = [hashlib.sha256(f"e2e-stream-{i}".encode()).digest() for i in range(4)]

    def indicator(token: bytes) -> exchange_pb2.Indicator:
        item = exchange_pb2.Indicator(
            token=token, kind="domain", category=common_pb2.PHISHING, confidence=60, key_epoch=1
        )
        item.observed_at.GetCurrentTime()
        return item

    messages = [
        exchange_pb2.ContributeRequest(purpose=REPORT, indicators=[indicator(tokens[0])]),
        exchange_pb2.ContributeRequest(
            purpose=REPORT, indicators=[indicator(tokens[1]), indicator(b"bad")]
        ),
    ]
    with pytest.raises(grpc.RpcError) as error:
        stub(world, "bank-a").ContributeStream(iter(messages))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    summary = exchange_pb2.ContributeResponse()
    assert _details(error.value, summary) == ["indicators[2]"]
    assert summary.accepted == 2

    def query(token: bytes, kind: str = "domain") -> exchange_pb2.MatchQuery:
        return exchange_pb2.MatchQuery(token=token, kind=kind, key_epoch=1)

    stale = exchange_pb2.MatchQuery(token=tokens[0], kind="domain", key_epoch=7)
    with pytest.raises(grpc.RpcError) as old_epoch:
        stub(world, "bank-b").Match(exchange_pb2.MatchRequest(purpose=PAYMENT, queries=[stale]))
    assert _details(old_epoch.value, exchange_pb2.MatchResponse()) == ["queries[0]"]
    requests = [
        exchange_pb2.MatchRequest(purpose=PAYMENT, queries=[query(tokens[0]), query(tokens[3])]),
        exchange_pb2.MatchRequest(purpose=PAYMENT, queries=[query(tokens[1], "no_such_kind")]),
        exchange_pb2.MatchRequest(purpose=PAYMENT, queries=[query(tokens[1])]),
    ]
    received: list[exchange_pb2.MatchResponse] = []
    with pytest.raises(grpc.RpcError) as failed:
        for reply in stub(world, "bank-b").MatchStream(iter(requests)):
            received.append(reply)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(failed.value, exchange_pb2.MatchResponse()) == ["queries[2]"]
    # Every message was answered before the status; result indices are per message.
    assert [[r.matched for r in reply.results] for reply in received] == [[True, False], [], [True]]
    assert [r.index for r in received[0].results] == [0, 1]
    # ... and so are its malformed queries, in the response itself.
    assert [[m.index for m in reply.malformed] for reply in received] == [[], [0], []]
    assert received[1].malformed[0].reason == "unknown kind"
    assert [(m.index, m.field) for m in summary.malformed] == [(2, "indicators")]


def test_large_batches_with_malformed_items_keep_their_answers(world: LocalDeployment) -> None:
    """The answer for the valid items rides in the INVALID_ARGUMENT status, far over
    gRPC's default 16 KiB of trailing metadata; more than 50 malformed items are all
    named in the response, though the status's BadRequest stops at 50."""
    good = [hashlib.sha256(f"e2e-large-{i}".encode()).digest() for i in range(3000)]
    queries = [exchange_pb2.MatchQuery(token=t, kind="url", key_epoch=1) for t in good]
    queries += [exchange_pb2.MatchQuery(token=b"x", kind="url", key_epoch=1)] * 60
    with pytest.raises(grpc.RpcError) as error:
        stub(world, "carrier-x").Match(exchange_pb2.MatchRequest(purpose=SIM, queries=queries))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    partial = exchange_pb2.MatchResponse()
    assert len(_details(error.value, partial)) == 50
    assert len(partial.results) == 3000 and partial.ByteSize() > 16 * 1024
    assert [m.index for m in partial.malformed] == list(range(3000, 3060))


def test_admin_refuses_malformed_institutions(world: LocalDeployment) -> None:
    admin = admin_pb2_grpc.AdminStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["operator-o"], HUB_AUDIENCE)
        )
    )
    key = public_key_bytes(Ed25519PrivateKey.generate())
    bad = {
        "role": admin_pb2.Institution(
            id="bank-y", role=common_pb2.ROLE_UNSPECIFIED, public_key=key
        ),
        "key": admin_pb2.Institution(id="bank-y", role=common_pb2.BANK, public_key=key[:31]),
        "id": admin_pb2.Institution(id="Bank Y!", role=common_pb2.BANK, public_key=key),
    }
    for what, institution in bad.items():
        with pytest.raises(grpc.RpcError) as error:
            admin.AddInstitution(admin_pb2.AddInstitutionRequest(institution=institution))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        event = last_event(world)
        assert (event["action"], event["outcome"]) == ("Admin.AddInstitution", "invalid")
    with pytest.raises(grpc.RpcError) as missing:
        admin.DisableInstitution(admin_pb2.DisableInstitutionRequest(id="nobody"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_case_reference_travels_and_only_its_digest_is_audited(world: LocalDeployment) -> None:
    carrier = world.client("carrier-x")
    query = [("national_id", "110101198503121239")]
    [refused] = carrier.match(query, purpose="fraud_investigation")
    assert isinstance(refused, ItemFailure) and isinstance(refused.error, PolicyDenied)
    assert "DENY_CASE_REFERENCE_REQUIRED" in refused.error.reasons
    case = "POLICE-2026-4471"
    result = only(carrier.match(query, purpose="fraud_investigation", case_reference=case))
    assert result.disclosure == "count"
    event = last_event(world)
    assert event["purpose"] == "fraud_investigation"
    assert event["case_ref_digest"] == hashlib.sha256(case.encode()).hexdigest()
    assert case not in json.dumps(event)


def test_free_text_never_reaches_the_audit_log(world: LocalDeployment) -> None:
    """Purpose and revocation reason are the caller's text: a number put there
    must not be written to the permanent log."""
    number, national_id = "13912349876", "110101199003074477"
    query = exchange_pb2.MatchQuery(token=bytes(32), kind="url", key_epoch=1)
    with pytest.raises(grpc.RpcError) as undeclared:
        stub(world, "bank-a").Match(exchange_pb2.MatchRequest(purpose=number, queries=[query]))
    assert undeclared.value.code() == grpc.StatusCode.PERMISSION_DENIED
    event = last_event(world)
    assert (event["action"], event["purpose"]) == ("Exchange.Match", "undeclared")
    assert number not in json.dumps(event)
    revoke = exchange_pb2.RevokeRequest(
        reason=national_id,
        items=[exchange_pb2.RevokeItem(token=bytes(32), kind="url", key_epoch=1)],
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub(world, "bank-a").Revoke(revoke)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "false_positive" in (refused.value.details() or "")
    event = last_event(world)
    assert event["action"] == "Exchange.Revoke" and national_id not in json.dumps(event)


def test_health_and_reflection_need_no_token(world: LocalDeployment) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = open_channel(world.hub_address, world.security)  # no bearer token
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    assert {"fraudhub.v1.Exchange", "fraudhub.v1.Admin", "fraudhub.v1.Audit"} <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    channel.close()


def test_a_stream_is_bounded(world: LocalDeployment, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.services.exchange

    monkeypatch.setattr(hub.services.exchange, "MAX_STREAM_ITEMS", 3)
    query = exchange_pb2.MatchQuery(token=bytes(32), kind="url", key_epoch=1)
    requests = [exchange_pb2.MatchRequest(purpose=PAYMENT, queries=[query, query])] * 2
    received: list[exchange_pb2.MatchResponse] = []
    with pytest.raises(grpc.RpcError) as error:
        for reply in stub(world, "bank-b").MatchStream(iter(requests)):
            received.append(reply)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 3 items" in (error.value.details() or "")
    assert len(received) == 1 and len(received[0].results) == 2  # the first message was answered
    event = last_event(world)
    assert (event["action"], event["outcome"], event["item_count"], event["purpose"]) == (
        "Exchange.MatchStream",
        "invalid",
        2,
        PAYMENT,
    )

    def indicator(n: int) -> exchange_pb2.Indicator:
        item = exchange_pb2.Indicator(
            token=hashlib.sha256(f"e2e-bounded-{n}".encode()).digest(),
            kind="url",
            category=common_pb2.PHISHING,
            confidence=50,
            key_epoch=1,
        )
        item.observed_at.GetCurrentTime()
        return item

    messages = [
        exchange_pb2.ContributeRequest(
            purpose=REPORT, indicators=[indicator(2 * m), indicator(2 * m + 1)]
        )
        for m in range(2)
    ]
    with pytest.raises(grpc.RpcError) as stopped:
        stub(world, "bank-b").ContributeStream(iter(messages))
    assert stopped.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    so_far = exchange_pb2.ContributeResponse()
    _details(stopped.value, so_far)
    assert so_far.accepted == 2  # the first message's items, stored and reported
    import io
    from pathlib import Path

    from client_sdk.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="window must be"):
        world.client("bank-b").match_csv(Path(__file__), io.StringIO(), purpose=PAYMENT, window=0)


def test_one_indicator_disclosed_by_role_and_purpose(world: LocalDeployment) -> None:
    """Two banks report one ID number.  The carrier screening a SIM activation
    learns only that it matches; a third bank opening an account learns how many
    institutions reported it; a bank screening a payment gets nothing (no rule)."""
    national_id = "440305198808081250"
    for bank in ("bank-a", "bank-b"):
        [stored] = world.client(bank).contribute(
            [Indicator("national_id", national_id, "money_mule", 90)], purpose=REPORT
        )
        assert isinstance(stored, Contributed)
    query = [("national_id", national_id)]
    carrier = only(world.client("carrier-x").match(query, purpose=SIM))
    assert (carrier.matched, carrier.disclosure, carrier.contributors) == (True, "match", 0)
    assert carrier.categories == () and carrier.first_seen is None
    opening = only(world.client("bank-c").match(query, purpose="account_opening_screening"))
    assert (opening.matched, opening.disclosure, opening.contributors) == (True, "count", 2)
    assert opening.categories == ()
    [payment] = world.client("bank-c").match(query, purpose=PAYMENT)
    assert isinstance(payment, ItemFailure) and isinstance(payment.error, PolicyDenied)
    assert "DENY_NO_RULE" in payment.error.reasons
