"""Auth hardening (issue 10, finding 5): weak Ed25519 keys, ``aud`` arrays, long streams.

- A small-order institution key (``01 00..00``) lets anyone sign as that
  institution: the signature ``01 00..00 || 00..00`` verifies on every
  message.  Such keys (all 14 small-order encodings, ``y >= p`` encodings,
  points with a small-order component) are refused by AddInstitution, by
  ``fraudhub institution add``, by every registry parser (hub database rows,
  the JSON file the key holders load), and a forged token never verifies.
- ``aud`` must be one string: an array is refused even if it holds only the
  server's audience.
- A stream re-checks its caller for every message: it ends UNAUTHENTICATED
  once the token has expired, PERMISSION_DENIED once the institution is
  disabled (over real gRPC + TLS).
"""

from __future__ import annotations

import base64
import ctypes
import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from _keyholders import make_world, start_holder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fraudhub.v1 import admin_pb2, admin_pb2_grpc, common_pb2, exchange_pb2, exchange_pb2_grpc

from client_sdk.core import _sodium as sodium
from client_sdk.core.errors import AuthenticationError, ConfigurationError, PermissionDenied
from client_sdk.core.vocabulary import Principal
from client_sdk.wire.auth import (
    HUB_AUDIENCE,
    BearerAuth,
    check_public_key,
    generate_key,
    mint_jwt,
    public_key_bytes,
)
from client_sdk.wire.channels import open_channel
from hub.audit.checkpoint import LogVerifier
from hub.cli import main
from hub.devtools.deployment import LocalDeployment
from hub.keyholder.admission import REGISTRY_FILENAME
from hub.keyholder.dkg_files import Identity
from hub.storage import models
from hub.storage.registry import DatabaseRegistry
from hub.storage.store import Store, add_institution, sqlite_url
from hub.wire.auth import (
    LEEWAY,
    Institution,
    JsonFileRegistry,
    TokenVerifier,
    VerifiedToken,
    dump_registry,
    parse_registry,
)

DATA = json.loads(
    (Path(__file__).parent / "data" / "ed25519_small_order_encodings.json").read_text()
)
SMALL_ORDER = [bytes.fromhex(h) for h in (*DATA["canonical"], *DATA["non_canonical"])]
IDENTITY_KEY = bytes.fromhex("01" + "00" * 31)
P = 2**255 - 19
PAYMENT = "payment_screening"
REPORT = "fraud_reporting"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged_token(institution: str, audience: str = HUB_AUDIENCE) -> str:
    """A token "signed" for the identity key: R = the key's encoding, S = 0."""
    now = int(time.time())
    header = _b64url(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    claims = {
        "iss": institution,
        "sub": institution,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": _b64url(now.to_bytes(8, "big") + bytes(range(10))) + _b64url(institution.encode()),
    }
    body = _b64url(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64url(IDENTITY_KEY + bytes(32))}"


def _registry_text(entries: list[tuple[str, bytes]]) -> str:
    return json.dumps(
        {
            "institutions": [
                {"id": i, "name": i, "role": "bank", "public_key": base64.b64encode(k).decode()}
                for i, k in entries
            ]
        }
    )


def _mixed_order_key() -> bytes:
    """An honest key plus a point of order 8: on the curve, not in the prime-order subgroup."""
    out = ctypes.create_string_buffer(32)
    honest = public_key_bytes(generate_key())
    assert sodium._lib.crypto_core_ed25519_add(out, honest, SMALL_ORDER[4]) == 0
    return out.raw


# --- weak keys ----------------------------------------------------------------------


def test_the_forged_signature_verifies_for_the_identity_key() -> None:
    """Why the keys must be refused: any message 'verifies' under 01 00..00."""
    Ed25519PublicKey.from_public_bytes(IDENTITY_KEY).verify(
        IDENTITY_KEY + bytes(32), b"any message at all"
    )
    token = _forged_token("shadow-bank")
    header, body, _ = token.split(".")
    signature = base64.urlsafe_b64decode(token.split(".")[2] + "==")
    Ed25519PublicKey.from_public_bytes(IDENTITY_KEY).verify(signature, f"{header}.{body}".encode())


def test_the_vector_file_lists_fourteen_small_order_encodings() -> None:
    assert len(SMALL_ORDER) == len(set(SMALL_ORDER)) == 14
    assert "libsodium" in DATA["source"]


@pytest.mark.parametrize("key", SMALL_ORDER, ids=bytes.hex)
def test_small_order_keys_are_refused(key: bytes) -> None:
    assert not sodium.is_strong_ed25519_public_key(key)
    with pytest.raises(ConfigurationError, match="shadow-bank: public key is a weak Ed25519 key"):
        Institution("shadow-bank", "Shadow", "bank", key)


@pytest.mark.parametrize("k", range(19))
@pytest.mark.parametrize("sign", [0, 1])
def test_non_canonical_y_at_or_above_p_is_refused(k: int, sign: int) -> None:
    key = (P + k + (sign << 255)).to_bytes(32, "little")
    with pytest.raises(ConfigurationError, match="weak Ed25519 key"):
        check_public_key(key)


def test_a_key_with_a_small_order_component_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="weak Ed25519 key"):
        check_public_key(_mixed_order_key())


def test_honest_keys_are_accepted() -> None:
    for _ in range(50):
        check_public_key(public_key_bytes(generate_key()))


def test_registry_file_with_a_weak_key_is_refused_naming_the_institution() -> None:
    good = public_key_bytes(generate_key())
    text = _registry_text([("bank-a", good), ("shadow-bank", IDENTITY_KEY)])
    with pytest.raises(ConfigurationError) as info:
        parse_registry(text, "registry.json")
    message = str(info.value)
    assert message.startswith("registry.json: institutions[1]: institution shadow-bank:")
    assert "weak Ed25519 key" in message


def test_json_registry_refuses_a_weak_key_at_load_and_at_reload(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(_registry_text([("shadow-bank", IDENTITY_KEY)]))
    with pytest.raises(ConfigurationError, match="shadow-bank"):
        JsonFileRegistry(path)
    key = generate_key()
    path.write_text(dump_registry([Institution("bank-a", "A", "bank", public_key_bytes(key))]))
    registry = JsonFileRegistry(path)
    verifier = TokenVerifier(registry, HUB_AUDIENCE)
    # The operator swaps in a file with the weak key: the last good registry stays.
    path.write_text(
        _registry_text([("bank-a", public_key_bytes(key)), ("shadow-bank", IDENTITY_KEY)])
    )
    assert registry.lookup("shadow-bank") is None
    with pytest.raises(AuthenticationError):
        verifier.verify(_forged_token("shadow-bank"))
    assert verifier.verify(mint_jwt(key, "bank-a", HUB_AUDIENCE)) == Principal("bank-a", "bank")


def test_key_holder_refuses_a_registry_with_a_weak_key(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    registry_path = world.holder_dirs[1] / REGISTRY_FILENAME  # the holder's own registry
    entries = json.loads(registry_path.read_text())
    entries["institutions"].append(
        {"id": "shadow-bank", "name": "", "role": "bank", "public_key": "AQ" + "A" * 41 + "=",
         "daily_quota": 1}
    )  # fmt: skip
    registry_path.write_text(json.dumps(entries))
    with pytest.raises(ConfigurationError, match="institution shadow-bank: public key is a weak"):
        start_holder(world, world.shares[0], tmp_path)


def test_a_weak_key_already_in_the_hub_database_authenticates_nobody(tmp_path: Path) -> None:
    """A row written before keys were checked: the forged token is UNAUTHENTICATED."""
    store = Store(sqlite_url(tmp_path))
    store.migrate()
    with store.session() as session:
        add_institution(
            session,
            models.Institution(
                id="shadow-bank", role="bank", public_key=IDENTITY_KEY, display_name="Shadow"
            ),
        )
        session.commit()
    verifier = TokenVerifier(DatabaseRegistry(store), HUB_AUDIENCE)
    with pytest.raises(AuthenticationError, match="registered key is refused"):
        verifier.verify(_forged_token("shadow-bank"))
    store.dispose()


def test_institution_add_command_refuses_a_weak_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = base64.b64encode(IDENTITY_KEY).decode()
    args = ["--data-dir", str(tmp_path), "--id", "shadow-bank", "--role", "bank"]
    assert main(["institution", "add", *args, "--public-key", weak]) == 2
    err = capsys.readouterr().err
    assert "shadow-bank" in err and "weak Ed25519 key" in err


def test_a_pinned_log_or_witness_key_must_not_be_weak() -> None:
    """A small-order log key would make any forged checkpoint signature verify."""
    for key in SMALL_ORDER:
        with pytest.raises(ConfigurationError, match="weak Ed25519 key"):
            LogVerifier("fraudhub.example/log", key)
    LogVerifier("fraudhub.example/log", public_key_bytes(generate_key()))


def test_a_dkg_identity_with_a_weak_signing_key_is_refused() -> None:
    envelope = sodium.scalarmult_base(sodium.scalar_random())

    def identity(signing: bytes) -> dict[str, Any]:
        return {
            "name": "holder-1",
            "dealer": 1,
            "recipient": 1,
            "signing_key": signing.hex(),
            "envelope_key": envelope.hex(),
        }

    with pytest.raises(ConfigurationError, match="identity keys are malformed or weak"):
        Identity.from_dict(identity(IDENTITY_KEY), "identity.json")
    honest = public_key_bytes(generate_key())
    assert Identity.from_dict(identity(honest), "identity.json").signing_key == honest


# --- aud ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "audience", [[HUB_AUDIENCE], [HUB_AUDIENCE, "fraudhub:keyholder:1"], ["other", HUB_AUDIENCE]]
)
def test_an_audience_array_is_refused(audience: list[str]) -> None:
    key = generate_key()
    registry = _DictRegistry(Institution("bank-a", "A", "bank", public_key_bytes(key)))
    now = int(time.time())
    claims = {
        "iss": "bank-a",
        "sub": "bank-a",
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "abcdefghijklmnopqrstuv",
    }
    token = jwt.encode(claims, key, algorithm="EdDSA")
    with pytest.raises(AuthenticationError, match="must be one string"):
        TokenVerifier(registry, HUB_AUDIENCE).verify(token)


class _DictRegistry:
    def __init__(self, *institutions: Institution) -> None:
        self.by_id = {i.id: i for i in institutions}

    def lookup(self, institution_id: str) -> Institution | None:
        return self.by_id.get(institution_id)


# --- the stream re-check, unit --------------------------------------------------------


def test_recheck_refuses_an_expired_token_and_a_disabled_institution() -> None:
    key = generate_key()
    institution = Institution("bank-a", "A", "bank", public_key_bytes(key))
    registry = _DictRegistry(institution)
    verifier = TokenVerifier(registry, HUB_AUDIENCE)
    verified = verifier.authenticate(mint_jwt(key, "bank-a", HUB_AUDIENCE, ttl=60))
    verifier.recheck(verified)
    expired = VerifiedToken(verified.principal, time.time() - LEEWAY - 1)
    with pytest.raises(AuthenticationError, match="expired during the stream"):
        verifier.recheck(expired)
    registry.by_id["bank-a"] = Institution("bank-a", "A", "bank", institution.public_key, True)
    with pytest.raises(PermissionDenied, match="disabled"):
        verifier.recheck(verified)
    del registry.by_id["bank-a"]
    with pytest.raises(AuthenticationError, match="no longer registered"):
        verifier.recheck(verified)


# --- over real gRPC -------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    root = tmp_path_factory.mktemp("auth-hardening")
    with LocalDeployment(root / "data", root / "clients", log_to_file=False, grace=0.2) as world:
        world.start()
        world.register("operator-o", "operator")
        yield world


def _admin(world: LocalDeployment) -> Any:
    auth = BearerAuth(world.keys["operator-o"], HUB_AUDIENCE)
    return admin_pb2_grpc.AdminStub(open_channel(world.hub_address, world.security, auth))


def _exchange(world: LocalDeployment, auth: BearerAuth | None = None) -> Any:
    return exchange_pb2_grpc.ExchangeStub(open_channel(world.hub_address, world.security, auth))


def _match_request(n: int = 1) -> exchange_pb2.MatchRequest:
    query = exchange_pb2.MatchQuery(token=bytes([n]) * 32, kind="url", key_epoch=1)
    return exchange_pb2.MatchRequest(purpose=PAYMENT, queries=[query])


def _contribute_request(n: int) -> exchange_pb2.ContributeRequest:
    item = exchange_pb2.Indicator(
        token=bytes([n]) * 32,
        kind="url",
        category=common_pb2.PHISHING,
        confidence=50,
        key_epoch=1,
    )
    item.observed_at.GetCurrentTime()
    return exchange_pb2.ContributeRequest(purpose=REPORT, indicators=[item])


@pytest.mark.e2e
def test_add_institution_refuses_weak_keys_and_the_forged_token_fails(
    world: LocalDeployment,
) -> None:
    admin = _admin(world)
    for key in (IDENTITY_KEY, SMALL_ORDER[5], (P + 3).to_bytes(32, "little"), _mixed_order_key()):
        given = admin_pb2.Institution(id="shadow-bank", role=common_pb2.BANK, public_key=key)
        with pytest.raises(grpc.RpcError) as refused:
            admin.AddInstitution(admin_pb2.AddInstitutionRequest(institution=given))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "weak Ed25519 key" in str(refused.value.details())
    metadata = [("authorization", f"Bearer {_forged_token('shadow-bank')}")]
    with pytest.raises(grpc.RpcError) as forged:
        _exchange(world).Match(_match_request(), metadata=metadata)
    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.e2e
def test_an_audience_array_is_unauthenticated_at_the_hub(world: LocalDeployment) -> None:
    key = world.register("bank-aud", "bank").private_key
    now = int(time.time())
    claims = {
        "iss": "bank-aud",
        "sub": "bank-aud",
        "aud": [HUB_AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "aud-array-test-0001",
    }
    token = jwt.encode(claims, key, algorithm="EdDSA")
    with pytest.raises(grpc.RpcError) as refused:
        _exchange(world).Match(_match_request(), metadata=[("authorization", f"Bearer {token}")])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "aud" in str(refused.value.details())


def _short_lived(world: LocalDeployment, institution: str, seconds_left: float) -> BearerAuth:
    """Auth whose tokens, stream tokens included, expire (leeway included) ``seconds_left``
    after now."""
    ttl = 5
    shift = LEEWAY + ttl - seconds_left
    return BearerAuth(
        world.keys[institution],
        HUB_AUDIENCE,
        ttl,
        clock=lambda: time.time() - shift,
        stream_ttl=ttl,
    )


class _Feed:
    """A request iterator the test feeds one message at a time."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def send(self, message: Any) -> None:
        self._queue.put(message)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[Any]:
        while (message := self._queue.get(timeout=30)) is not None:
            yield message


@pytest.mark.e2e
def test_match_stream_ends_when_its_token_expires(world: LocalDeployment) -> None:
    world.register("bank-exp", "bank")
    feed = _Feed()
    responses = _exchange(world, _short_lived(world, "bank-exp", 2.0)).MatchStream(
        iter(feed), timeout=30
    )
    feed.send(_match_request(1))
    assert len(next(responses).results) == 1
    time.sleep(2.5)
    feed.send(_match_request(2))
    with pytest.raises(grpc.RpcError) as ended:
        next(responses)
    feed.close()
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired during the stream" in str(ended.value.details())


@pytest.mark.e2e
def test_contribute_stream_ends_when_its_token_expires(world: LocalDeployment) -> None:
    world.register("bank-exp2", "bank")
    feed = _Feed()
    future = _exchange(world, _short_lived(world, "bank-exp2", 2.0)).ContributeStream.future(
        iter(feed), timeout=30
    )
    feed.send(_contribute_request(1))
    time.sleep(2.5)
    feed.send(_contribute_request(2))
    feed.close()
    with pytest.raises(grpc.RpcError) as ended:
        future.result()
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired during the stream" in str(ended.value.details())


@pytest.mark.e2e
def test_match_stream_ends_when_the_institution_is_disabled(world: LocalDeployment) -> None:
    world.register("bank-off", "bank")
    feed = _Feed()
    auth = BearerAuth(world.keys["bank-off"], HUB_AUDIENCE)
    responses = _exchange(world, auth).MatchStream(iter(feed), timeout=30)
    feed.send(_match_request(1))
    assert len(next(responses).results) == 1
    _admin(world).DisableInstitution(
        admin_pb2.DisableInstitutionRequest(id="bank-off", reason="offboarded")
    )
    feed.send(_match_request(2))
    with pytest.raises(grpc.RpcError) as ended:
        next(responses)
    feed.close()
    assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "disabled during the stream" in str(ended.value.details())


@pytest.mark.e2e
def test_contribute_stream_ends_when_the_institution_is_disabled(world: LocalDeployment) -> None:
    world.register("bank-off2", "bank")
    feed = _Feed()
    auth = BearerAuth(world.keys["bank-off2"], HUB_AUDIENCE)
    future = _exchange(world, auth).ContributeStream.future(iter(feed), timeout=30)
    feed.send(_contribute_request(3))
    # The hub's registry cache lives 2 s; a disable made elsewhere (the CLI) is
    # seen within that, one made over Admin at once.
    _admin(world).DisableInstitution(
        admin_pb2.DisableInstitutionRequest(id="bank-off2", reason="offboarded")
    )
    time.sleep(0.3)
    feed.send(_contribute_request(4))
    feed.close()
    with pytest.raises(grpc.RpcError) as ended:
        future.result()
    assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
