"""End to end over real sockets: hub + 3 key holders (2-of-3) on loopback with TLS.

Every test runs on SQLite and on PostgreSQL (the ``e2e_world`` fixture of
conftest.py).  Tests share one deployment per backend, so each uses its own
values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fraudhub.v1 import admin_pb2, admin_pb2_grpc, common_pb2, exchange_pb2, exchange_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlmodel import func, select

from client_sdk import HubClient, Indicator
from client_sdk.client.results import Contributed, ItemFailure, MatchResult
from client_sdk.client.tokenizer import Tokenizer
from client_sdk.core.errors import (
    InvalidIndicator,
    PermissionDenied,
    PolicyDenied,
    QuotaExhausted,
    Unavailable,
)
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, mint_jwt, public_key_bytes
from client_sdk.wire.channels import RetryPolicy, open_channel
from client_sdk.wire.status import errors_from_status
from hub.devtools.deployment import LocalDeployment
from hub.storage import auditlog
from hub.storage.models import Indicator as IndicatorRow

pytestmark = pytest.mark.e2e

REPORT = "fraud_reporting"
SIM = "sim_activation_screening"
PAYMENT = "payment_screening"
EPOCH = 1


@pytest.fixture
def world(e2e_world: Any) -> Iterator[LocalDeployment]:
    assert isinstance(e2e_world, LocalDeployment)
    yield e2e_world
    # Leave the shared deployment as the next test expects it.
    e2e_world.liar.lying = False  # type: ignore[attr-defined]
    for index in e2e_world.shares:
        if index not in e2e_world.holders:
            e2e_world.start_holder(index)


def phone(n: int) -> str:
    return f"+86 139 {n // 10000:04d} {n % 10000:04d}"


def stub(world: LocalDeployment, institution: str) -> exchange_pb2_grpc.ExchangeStub:
    channel = open_channel(
        world.hub_address, world.security, BearerAuth(world.keys[institution], HUB_AUDIENCE)
    )
    return exchange_pb2_grpc.ExchangeStub(channel)


def rows_of(world: LocalDeployment, institution: str) -> int:
    with world.hub.store.session() as session:
        statement = select(func.count()).where(IndicatorRow.contributor == institution)
        return int(session.exec(statement).one())


def audit_size(world: LocalDeployment) -> int:
    with world.hub.store.session() as session:
        return auditlog.tree_size(session)


def last_event(world: LocalDeployment) -> dict[str, Any]:
    with world.hub.store.session() as session:
        size = auditlog.tree_size(session)
        [event] = auditlog.list_events(session, size - 1, size)
    decoded: dict[str, Any] = json.loads(event.body)
    return decoded


def only(results: list[MatchResult | ItemFailure]) -> MatchResult:
    [result] = results
    assert isinstance(result, MatchResult), result
    return result


# --- matching ---------------------------------------------------------------------


def test_cross_institution_match(world: LocalDeployment) -> None:
    value = phone(1001)
    bank_a, bank_b, carrier = (world.client(i) for i in ("bank-a", "bank-b", "carrier-x"))
    # Recent: phone numbers decay fast (the policy's MISP vishing model, issue 12).
    observed = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    assert bank_a.contribute(
        [Indicator("phone", value, "scam_phone", 80, observed, label="case A-1")], purpose=REPORT
    ) == [Contributed(0, "phone")]
    later = observed + timedelta(hours=12)
    bank_b.contribute(
        [Indicator("phone", "13900001001", "money_mule", 95, later, label="case B-7")],
        purpose=REPORT,
    )
    seen = only(carrier.match([("phone", "139-0000-1001")], purpose=SIM))
    assert seen.matched and seen.disclosure == "summary"
    assert seen.contributors == 2
    assert seen.categories == ("money_mule", "scam_phone")
    assert (seen.first_seen, seen.last_seen, seen.max_confidence) == (observed, later, 95)
    assert seen.labels == ()  # summary: no labels
    # bank-b screening a payee: its own contribution does not count, and the
    # policy grants labels without attribution, which the hub caps at summary.
    as_payee = only(bank_b.match([("phone", value)], purpose=PAYMENT))
    assert as_payee.matched and as_payee.contributors == 1 and as_payee.disclosure == "summary"
    assert "CAP_NO_ATTRIBUTION" in as_payee.reasons and as_payee.labels == ()
    assert last_event(world)["action"] == "Exchange.Match"


def test_sealed_labels_open_for_holders_of_the_value(world: LocalDeployment) -> None:
    url = "https://pay-verify.example-e2e.cn/login"
    world.client("bank-a").contribute(
        [Indicator("url", url, "phishing", 90, label="case A-9 landing page")], purpose=REPORT
    )
    result = only(
        world.client("bank-b").match(
            [("url", "HTTPS://Pay-Verify.Example-E2E.cn:443/login#top")], purpose=PAYMENT
        )
    )
    assert result.disclosure == "labels"
    assert [(lb.contributor, lb.text) for lb in result.labels] == [
        ("bank-a", "case A-9 landing page")
    ]
    # The hub stored only the sealed label: its bytes do not contain the text.
    with world.hub.store.session() as session:
        labels = session.exec(select(IndicatorRow.sealed_label)).all()
    assert labels and all(b"landing page" not in (label or b"") for label in labels)


def test_non_match(world: LocalDeployment) -> None:
    world.client("bank-a").contribute(
        [Indicator("phone", phone(1101), "scam_phone")], purpose=REPORT
    )
    result = only(world.client("carrier-x").match([("phone", phone(1102))], purpose=SIM))
    assert not result.matched and result.contributors == 0 and result.categories == ()
    # The same digits as another kind are another token.
    card = only(
        world.client("bank-b").match([("bank_account", "CMB:13900011101")], purpose=PAYMENT)
    )
    assert not card.matched


def test_own_contribution_alone_is_no_match(world: LocalDeployment) -> None:
    bank_a = world.client("bank-a")
    bank_a.contribute([Indicator("phone", phone(1151), "scam_phone")], purpose=REPORT)
    assert not only(bank_a.match([("phone", phone(1151))], purpose=PAYMENT)).matched


def test_idempotent_retry(world: LocalDeployment) -> None:
    bank_a = world.client("bank-a")
    batch = [Indicator("phone", phone(1200 + i), "scam_phone") for i in range(5)]
    before = rows_of(world, "bank-a")
    assert all(isinstance(r, Contributed) for r in bank_a.contribute(batch, purpose=REPORT))
    assert all(isinstance(r, Contributed) for r in bank_a.contribute(batch, purpose=REPORT))
    assert rows_of(world, "bank-a") == before + 5
    # At the wire level the retry reports duplicates, not new rows.
    tokens = world.client("bank-a")._tokenize([("phone", "+8613900001200")])[0]
    item = exchange_pb2.Indicator(
        token=tokens[0][1].match_token,
        kind="phone",
        category=common_pb2.SCAM_PHONE,
        confidence=50,
        key_epoch=EPOCH,
    )
    item.observed_at.GetCurrentTime()
    reply = stub(world, "bank-a").Contribute(
        exchange_pb2.ContributeRequest(purpose=REPORT, indicators=[item])
    )
    assert (reply.accepted, reply.duplicates) == (0, 1)


def test_revocation(world: LocalDeployment) -> None:
    value = phone(1301)
    world.client("bank-a").contribute([Indicator("phone", value, "scam_phone")], purpose=REPORT)
    carrier = world.client("carrier-x")
    assert only(carrier.match([("phone", value)], purpose=SIM)).matched
    # Only the contributor can revoke.
    assert world.client("bank-b").revoke([("phone", value)], reason="false_positive").revoked == 0
    assert only(carrier.match([("phone", value)], purpose=SIM)).matched
    result = world.client("bank-a").revoke([("phone", value)], reason="false_positive")
    assert (result.revoked, result.not_found) == (1, 0)
    assert not only(carrier.match([("phone", value)], purpose=SIM)).matched
    assert last_event(world)["action"] == "Exchange.Match"


def test_expiry(world: LocalDeployment) -> None:
    value = phone(1401)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    world.client("bank-a").contribute(
        [Indicator("phone", value, "scam_phone", expires_at=soon)], purpose=REPORT
    )
    carrier = world.client("carrier-x")
    assert only(carrier.match([("phone", value)], purpose=SIM)).matched
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    assert not only(carrier.match([("phone", value)], purpose=SIM)).matched
    # The sweep deletes expired rows for good and audits how many.
    assert world.hub.sweep_expired() >= 1
    event = last_event(world)
    assert (event["action"], event["institution"]) == ("Hub.ExpirySweep", "hub")
    assert world.hub.sweep_expired() == 0


# --- key holders ------------------------------------------------------------------


def test_one_holder_down_still_works(world: LocalDeployment) -> None:
    world.stop_holder(2)
    bank_a = world.client("bank-a")
    assert bank_a.contribute([Indicator("phone", phone(1501), "scam_phone")], purpose=REPORT) == [
        Contributed(0, "phone")
    ]
    assert only(world.client("carrier-x").match([("phone", phone(1501))], purpose=SIM)).matched


def test_two_holders_down_fail_unavailable_and_write_nothing(world: LocalDeployment) -> None:
    world.stop_holder(2)
    world.stop_holder(3)
    rows, events = rows_of(world, "bank-a"), audit_size(world)
    client = world.client("bank-a", retry=RetryPolicy(deadline=0.6, initial_backoff=0.1))
    start = time.monotonic()
    with pytest.raises(Unavailable):
        client.contribute([Indicator("phone", phone(1601), "scam_phone")], purpose=REPORT)
    # Retried with backoff within its deadline, then gave up.
    assert time.monotonic() - start < 5
    assert (rows_of(world, "bank-a"), audit_size(world)) == (rows, events)


def test_lying_holder_is_detected_and_skipped(world: LocalDeployment) -> None:
    world.liar.lying = True  # type: ignore[attr-defined]
    tokenizer = Tokenizer(world.holder_endpoints(), world.public, world.keys["bank-a"])
    client = HubClient(
        world.hub_address, world.keys["bank-a"], tokenizer, world.security, key_epoch=EPOCH
    )
    try:
        result = client.contribute([Indicator("phone", phone(1701), "scam_phone")], purpose=REPORT)
        assert result == [Contributed(0, "phone")]
        assert tokenizer.excluded_holders == {1}
    finally:
        client.close()
    world.liar.lying = False  # type: ignore[attr-defined]
    # The token made without the liar is the right one: an honest client matches it.
    assert only(world.client("carrier-x").match([("phone", phone(1701))], purpose=SIM)).matched


# --- authentication and roles -----------------------------------------------------------


def test_wrong_role_is_permission_denied_and_audited(world: LocalDeployment) -> None:
    request = exchange_pb2.MatchRequest(
        purpose=SIM, queries=[exchange_pb2.MatchQuery(token=bytes(32), kind="phone", key_epoch=1)]
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub(world, "regulator-r").Match(request)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not isinstance(errors_from_status(refused.value), PolicyDenied)
    # Key holders refuse the regulator too: the SDK cannot even make tokens, and
    # says so at once (a refusal is not an outage to retry until the deadline).
    regulator = world.client("regulator-r", retry=RetryPolicy(deadline=30))
    started = time.monotonic()
    with pytest.raises(PermissionDenied):
        regulator.match([("phone", phone(1801))], purpose=SIM)
    assert time.monotonic() - started < 10
    event = last_event(world)
    assert (event["institution"], event["role"], event["outcome"], event["action"]) == (
        "regulator-r",
        "regulator",
        "denied",
        "Exchange.Match",
    )
    admin = admin_pb2_grpc.AdminStub(
        open_channel(
            world.hub_address, world.security, BearerAuth(world.keys["carrier-x"], HUB_AUDIENCE)
        )
    )
    with pytest.raises(grpc.RpcError) as error:
        admin.ListInstitutions(admin_pb2.ListInstitutionsRequest())
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(institution: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": institution,
        "sub": institution,
        "aud": HUB_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": _b64(hashlib.sha256(str(time.time_ns()).encode()).digest()[:18]),
    }
    claims.update(changes)
    return claims


def _bad_tokens(world: LocalDeployment) -> dict[str, str]:
    key = world.keys["carrier-x"].private_key
    now = int(time.time())
    public = public_key_bytes(key)
    header_none = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    header_hs = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims("carrier-x")).encode())
    mac = hmac.new(public, f"{header_hs}.{body}".encode(), hashlib.sha256).digest()
    return {
        "expired": jwt.encode(
            _claims("carrier-x", iat=now - 600, nbf=now - 600, exp=now - 300), key, "EdDSA"
        ),
        "forged": jwt.encode(_claims("carrier-x"), Ed25519PrivateKey.generate(), "EdDSA"),
        "alg-none": f"{header_none}.{body}.",
        "hs256-with-public-key": f"{header_hs}.{body}.{_b64(mac)}",
    }


@pytest.mark.parametrize("kind", ["expired", "forged", "alg-none", "hs256-with-public-key"])
def test_bad_jwt_is_unauthenticated_and_audited(world: LocalDeployment, kind: str) -> None:
    token = _bad_tokens(world)[kind]
    channel = open_channel(world.hub_address, world.security)
    exchange = exchange_pb2_grpc.ExchangeStub(channel)
    request = exchange_pb2.MatchRequest(
        purpose=SIM, queries=[exchange_pb2.MatchQuery(token=bytes(32), kind="phone", key_epoch=1)]
    )
    with pytest.raises(grpc.RpcError) as error:
        exchange.Match(request, metadata=(("authorization", f"Bearer {token}"),))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Refusals before authentication are counted per peer and window, one
    # event each (hub.services.refusals); end the window now (one peer: one event).
    assert world.hub.refusals.tally.flush() == 1
    event = last_event(world)
    assert (event["institution"], event["outcome"]) == ("unauthenticated", "UNAUTHENTICATED")
    assert event["action"] == "Hub.AuthenticationFailures"
    assert event["item_count"] >= 1  # earlier refusals from this peer share the window
    assert "METHOD:Exchange.Match" in event["reasons"]
    channel.close()


def test_replayed_jwt_is_unauthenticated(world: LocalDeployment) -> None:
    token = mint_jwt(world.keys["carrier-x"].private_key, "carrier-x", HUB_AUDIENCE)
    exchange = exchange_pb2_grpc.ExchangeStub(open_channel(world.hub_address, world.security))
    request = exchange_pb2.MatchRequest(
        purpose=SIM, queries=[exchange_pb2.MatchQuery(token=bytes(32), kind="phone", key_epoch=1)]
    )
    metadata = (("authorization", f"Bearer {token}"),)
    assert len(exchange.Match(request, metadata=metadata).results) == 1
    with pytest.raises(grpc.RpcError) as error:
        exchange.Match(request, metadata=metadata)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- malformed items and policy ----------------------------------------------------------


def test_malformed_items_are_named_and_valid_items_still_stored(world: LocalDeployment) -> None:
    good = hashlib.sha256(b"e2e-malformed-good").digest()

    def indicator(token: bytes, confidence: int = 50) -> exchange_pb2.Indicator:
        item = exchange_pb2.Indicator(
            token=token,
            kind="url",
            category=common_pb2.PHISHING,
            confidence=confidence,
            key_epoch=1,
        )
        item.observed_at.GetCurrentTime()
        return item

    request = exchange_pb2.ContributeRequest(
        purpose=REPORT,
        indicators=[indicator(good), indicator(b"short"), indicator(good[::-1], confidence=101)],
    )
    with pytest.raises(grpc.RpcError) as error:
        stub(world, "bank-a").Contribute(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error.value)
    assert status is not None
    violations: list[str] = []
    partial = exchange_pb2.ContributeResponse()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [v.field for v in bad.field_violations]
        elif detail.Is(exchange_pb2.ContributeResponse.DESCRIPTOR):
            detail.Unpack(partial)
    assert violations == ["indicators[1]", "indicators[2]"]
    assert partial.accepted == 1
    # The valid item is stored: another institution matches it.
    reply = stub(world, "bank-b").Match(
        exchange_pb2.MatchRequest(
            purpose=PAYMENT, queries=[exchange_pb2.MatchQuery(token=good, kind="url", key_epoch=1)]
        )
    )
    assert reply.results[0].matched
    event = last_event(world)
    assert event["action"] == "Exchange.Match"


def test_sdk_reports_invalid_values_per_item(world: LocalDeployment) -> None:
    results = world.client("bank-a").contribute(
        [
            Indicator("phone", "not a phone", "scam_phone"),
            Indicator("phone", phone(1901), "scam_phone"),
            Indicator("bank_card", "6222029015443426", "money_mule"),  # Luhn fails
        ],
        purpose=REPORT,
    )
    assert isinstance(results[0], ItemFailure) and isinstance(results[0].error, InvalidIndicator)
    assert results[1] == Contributed(1, "phone")
    assert isinstance(results[2], ItemFailure) and results[2].index == 2


def test_prohibited_kind_refused(world: LocalDeployment) -> None:
    item = exchange_pb2.Indicator(
        token=bytes(32), kind="health", category=common_pb2.OTHER, confidence=10, key_epoch=1
    )
    item.observed_at.GetCurrentTime()
    with pytest.raises(grpc.RpcError) as error:
        stub(world, "bank-a").Contribute(
            exchange_pb2.ContributeRequest(purpose=REPORT, indicators=[item])
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    event = last_event(world)
    assert event["outcome"] == "denied" and "DENY_PROHIBITED_KIND" in event["reasons"]


def test_retention_is_clipped_and_k_threshold_applies(world: LocalDeployment) -> None:
    national_id = "320102198808080883"
    far = datetime.now(UTC) + timedelta(days=1000)
    [stored] = world.client("bank-a").contribute(
        [Indicator("national_id", national_id, "card_seller", expires_at=far)], purpose=REPORT
    )
    assert isinstance(stored, Contributed) and stored.expires_at is not None
    assert stored.expires_at < datetime.now(UTC) + timedelta(days=181)
    carrier = world.client("carrier-x")
    # One reporting bank is below the policy's k = 2 for national_id: no match.
    assert not only(carrier.match([("national_id", national_id)], purpose=SIM)).matched
    world.client("bank-b").contribute(
        [Indicator("national_id", national_id, "identity_theft")], purpose=REPORT
    )
    result = only(carrier.match([("national_id", national_id)], purpose=SIM))
    # Two banks: a match, trimmed to yes/no for a carrier.
    assert result.matched and result.disclosure == "match" and result.contributors == 0


def test_purpose_not_allowed_is_refused(world: LocalDeployment) -> None:
    results = world.client("carrier-x").match(
        [("bank_card", "6222029015443425"), ("phone", phone(1951))], purpose=PAYMENT
    )
    assert [type(r) for r in results] == [ItemFailure, ItemFailure]
    for failure in results:
        assert isinstance(failure, ItemFailure) and isinstance(failure.error, PolicyDenied)
        assert "DENY_NO_RULE" in failure.error.reasons
    # A mixed batch: the allowed kind is answered, the refused one says why.
    mixed = world.client("carrier-x").match(
        [("bank_card", "6222029015443425"), ("phone", phone(1951))], purpose=SIM
    )
    assert isinstance(mixed[1], MatchResult)
    # The same typed outcome as a batch of one (issue 13): never a clean "no match".
    assert isinstance(mixed[0], ItemFailure) and isinstance(mixed[0].error, PolicyDenied)
    assert "DENY_NO_RULE" in mixed[0].error.reasons
    [alone] = world.client("carrier-x").match([("bank_card", "6222029015443425")], purpose=SIM)
    assert isinstance(alone, ItemFailure) and isinstance(alone.error, PolicyDenied)
    assert alone.error.reasons == mixed[0].error.reasons


# --- bulk, admin, policy reload ------------------------------------------------------------


def test_bulk_csv_over_streams(world: LocalDeployment, tmp_path: Any) -> None:
    source = tmp_path / "bulk.csv"
    lines = ["kind,value,category,confidence,label"]
    lines += [f"phone,{phone(3000 + i)},scam_phone,70,bulk-{i}" for i in range(30)]
    lines.append("phone,12,scam_phone,70,")  # invalid phone
    source.write_text("\n".join(lines) + "\n")
    summary = world.client("bank-a", batch_size=7).contribute_csv(
        source, purpose=REPORT, window=16, progress=False
    )
    assert (summary.rows, summary.stored) == (31, 30)
    assert [f.index for f in summary.failures] == [31]
    queries = tmp_path / "queries.csv"
    queries.write_text(
        "ref,kind,value\n" + "".join(f"r{i},phone,{phone(3000 + i * 5)}\n" for i in range(8))
    )
    import io

    out = io.StringIO()
    result = world.client("bank-b", batch_size=3).match_csv(
        queries, out, purpose=PAYMENT, window=5, progress=False
    )
    assert (result.rows, result.matched) == (8, 6)
    text = out.getvalue()
    # Two windows in flight at once still come out in input order.
    assert [line.split(",")[0] for line in text.splitlines()[1:]] == [f"r{i}" for i in range(8)]
    assert "value" not in text.splitlines()[0].split(",")
    assert phone(3000) not in text and "13900003000" not in text


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
