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
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import pytest
from _e2e import (
    EPOCH,
    PAYMENT,
    REPORT,
    SIM,
    audit_size,
    last_event,
    only,
    phone,
    rows_of,
    stub,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fraudhub.v1 import admin_pb2, admin_pb2_grpc, common_pb2, exchange_pb2, exchange_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlmodel import select

from client_sdk import HubClient, Indicator
from client_sdk.client.results import Contributed, ItemFailure, MatchResult
from client_sdk.client.tokenizer import Tokenizer
from client_sdk.core.errors import (
    InvalidIndicator,
    PermissionDenied,
    PolicyDenied,
    Unavailable,
)
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, mint_jwt, public_key_bytes
from client_sdk.wire.channels import RetryPolicy, open_channel
from client_sdk.wire.status import errors_from_status
from hub.devtools.deployment import LocalDeployment
from hub.storage.models import Indicator as IndicatorRow

pytestmark = pytest.mark.e2e


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
