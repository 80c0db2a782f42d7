"""EdDSA bearer tokens: minting (client_sdk.wire.auth) and verification (hub.wire.auth)."""

from __future__ import annotations

import base64
import json
import stat
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.core.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequest,
    PermissionDenied,
    Unavailable,
)
from client_sdk.core.vocabulary import Principal
from client_sdk.wire.auth import (
    MAX_TOKEN_TTL,
    BearerAuth,
    InstitutionKey,
    generate_key,
    load_private_key,
    mint_jwt,
    public_key_b64,
    public_key_bytes,
    save_private_key,
)
from client_sdk.wire.channels import ChannelSecurity, open_channel
from client_sdk.wire.status import errors_from_status
from hub.wire.auth import (
    AuthInterceptor,
    Institution,
    JsonFileRegistry,
    ReplayCache,
    TokenVerifier,
    current_principal,
    dump_registry,
    parse_registry,
)
from hub.wire.status import ErrorInterceptor
from hub.wire.tls import bind

AUD = "fraudhub:hub"
BANK_KEY = generate_key()
CARRIER_KEY = generate_key()


class DictRegistry:
    def __init__(self, *institutions: Institution) -> None:
        self._by_id = {i.id: i for i in institutions}

    def lookup(self, institution_id: str) -> Institution | None:
        return self._by_id.get(institution_id)


REGISTRY = DictRegistry(
    Institution("bank-a", "Bank A", "bank", public_key_bytes(BANK_KEY)),
    Institution("carrier-b", "Carrier B", "carrier", public_key_bytes(CARRIER_KEY)),
    Institution("bank-off", "Off", "bank", public_key_bytes(BANK_KEY), disabled=True),
)


def _verifier() -> TokenVerifier:
    return TokenVerifier(REGISTRY, AUD)


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "bank-a",
        "sub": "bank-a",
        "aud": AUD,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "0123456789abcdef0123",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_fresh_token_verifies_to_the_principal() -> None:
    token = mint_jwt(BANK_KEY, "bank-a", AUD)
    assert _verifier().verify(token) == Principal("bank-a", "bank")


def test_minted_claims() -> None:
    token = mint_jwt(BANK_KEY, "bank-a", AUD, ttl=120, now=1_700_000_000)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == "bank-a"
    assert claims["aud"] == AUD
    assert claims["iat"] == claims["nbf"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_120
    assert len(base64.urlsafe_b64decode(claims["jti"] + "==")) == 16
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    other = mint_jwt(BANK_KEY, "bank-a", AUD, ttl=120, now=1_700_000_000)
    assert jwt.decode(other, options={"verify_signature": False})["jti"] != claims["jti"]


@pytest.mark.parametrize("ttl", [0, MAX_TOKEN_TTL + 1])
def test_mint_refuses_bad_lifetimes(ttl: int) -> None:
    with pytest.raises(InvalidRequest):
        mint_jwt(BANK_KEY, "bank-a", AUD, ttl=ttl)


def test_expired_token() -> None:
    token = mint_jwt(BANK_KEY, "bank-a", AUD, ttl=60, now=time.time() - 600)
    with pytest.raises(AuthenticationError, match="expired"):
        _verifier().verify(token)


def test_forged_signature() -> None:
    token = mint_jwt(CARRIER_KEY, "bank-a", AUD)  # carrier's key claiming to be bank-a
    with pytest.raises(AuthenticationError, match="signature"):
        _verifier().verify(token)
    header, payload, signature = mint_jwt(BANK_KEY, "bank-a", AUD).split(".")
    flipped = _b64(bytes([base64.urlsafe_b64decode(signature + "==")[0] ^ 1])) + signature[2:]
    with pytest.raises(AuthenticationError):
        _verifier().verify(f"{header}.{payload}.{flipped}")


def test_alg_none_is_refused() -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    with pytest.raises(AuthenticationError, match="algorithm"):
        _verifier().verify(f"{header}.{payload}.")


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    # The classic algorithm-confusion attack: HMAC with the (public) verification key.
    token = jwt.encode(_claims(), public_key_bytes(BANK_KEY), algorithm="HS256")
    with pytest.raises(AuthenticationError, match="algorithm"):
        _verifier().verify(token)
    pem_key = base64.b64encode(public_key_bytes(BANK_KEY))
    with pytest.raises(AuthenticationError):
        _verifier().verify(jwt.encode(_claims(), pem_key, algorithm="HS256"))


def test_rs256_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthenticationError, match="algorithm"):
        _verifier().verify(jwt.encode(_claims(), rsa_key, algorithm="RS256"))


def test_replayed_jti() -> None:
    verifier = _verifier()
    token = mint_jwt(BANK_KEY, "bank-a", AUD)
    verifier.verify(token)
    with pytest.raises(AuthenticationError, match="replay"):
        verifier.verify(token)


def test_same_jti_from_two_issuers_is_not_a_replay() -> None:
    verifier = _verifier()
    verifier.verify(jwt.encode(_claims(), BANK_KEY, algorithm="EdDSA"))
    carrier = _claims(iss="carrier-b", sub="carrier-b")
    verifier.verify(jwt.encode(carrier, CARRIER_KEY, algorithm="EdDSA"))


def test_wrong_audience() -> None:
    token = mint_jwt(BANK_KEY, "bank-a", "fraudhub:keyholder:1")
    with pytest.raises(AuthenticationError, match="aud"):
        _verifier().verify(token)


def test_disabled_institution() -> None:
    token = mint_jwt(BANK_KEY, "bank-off", AUD)
    with pytest.raises(PermissionDenied, match="disabled"):
        _verifier().verify(token)


def test_unknown_institution() -> None:
    with pytest.raises(AuthenticationError, match="unknown"):
        _verifier().verify(mint_jwt(BANK_KEY, "bank-zz", AUD))


def test_too_long_lifetime() -> None:
    now = int(time.time())
    token = jwt.encode(_claims(exp=now + 3600), BANK_KEY, algorithm="EdDSA")
    with pytest.raises(AuthenticationError, match="lifetime"):
        _verifier().verify(token)


@pytest.mark.parametrize("missing", ["exp", "iat", "nbf", "jti", "aud", "sub"])
def test_required_claims(missing: str) -> None:
    token = jwt.encode(_claims(**{missing: None}), BANK_KEY, algorithm="EdDSA")
    with pytest.raises(AuthenticationError):
        _verifier().verify(token)


def test_not_yet_valid_and_future_iat() -> None:
    later = int(time.time()) + 120
    for claims in (_claims(nbf=later), _claims(iat=later, nbf=later - 120, exp=later + 60)):
        with pytest.raises(AuthenticationError):
            _verifier().verify(jwt.encode(claims, BANK_KEY, algorithm="EdDSA"))


def test_subject_must_be_the_issuer() -> None:
    token = jwt.encode(_claims(sub="carrier-b"), BANK_KEY, algorithm="EdDSA")
    with pytest.raises(AuthenticationError, match="subject"):
        _verifier().verify(token)


@pytest.mark.parametrize("token", ["", "a.b", "not a token", "x" * 5000])
def test_garbage_is_unauthenticated(token: str) -> None:
    with pytest.raises(AuthenticationError):
        _verifier().verify(token)


# --- roles and the interceptor's authorization ---------------------------------------

ROLE_TABLE = {"/fraudhub.v1.KeyHolder/BlindEvaluate": {"bank", "carrier"}}


def _bearer(key: Ed25519PrivateKey, institution: str) -> list[tuple[str, str | bytes]]:
    return [("authorization", f"Bearer {mint_jwt(key, institution, AUD)}")]


def test_allowed_role_passes() -> None:
    interceptor = AuthInterceptor(_verifier(), ROLE_TABLE)
    principal = interceptor.authorize(
        "/fraudhub.v1.KeyHolder/BlindEvaluate", _bearer(CARRIER_KEY, "carrier-b")
    )
    assert principal == Principal("carrier-b", "carrier")


def test_wrong_role_is_permission_denied() -> None:
    regulator_key = generate_key()
    registry = DictRegistry(
        Institution("regulator-c", "Reg", "regulator", public_key_bytes(regulator_key))
    )
    interceptor = AuthInterceptor(TokenVerifier(registry, AUD), ROLE_TABLE)
    with pytest.raises(PermissionDenied, match="regulator"):
        interceptor.authorize(
            "/fraudhub.v1.KeyHolder/BlindEvaluate", _bearer(regulator_key, "regulator-c")
        )


def test_methods_missing_from_the_table_are_denied() -> None:
    interceptor = AuthInterceptor(_verifier(), ROLE_TABLE)
    with pytest.raises(PermissionDenied):
        interceptor.authorize("/fraudhub.v1.Admin/AddInstitution", _bearer(BANK_KEY, "bank-a"))


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "Basic Zm9vOmJhcg==")],
        [("authorization", "Bearer ")],
        [("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ],
)
def test_missing_or_malformed_authorization(metadata: list[tuple[str, str | bytes]]) -> None:
    interceptor = AuthInterceptor(_verifier(), ROLE_TABLE)
    with pytest.raises(AuthenticationError):
        interceptor.authorize("/fraudhub.v1.KeyHolder/BlindEvaluate", metadata)


def test_unknown_roles_in_the_table_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        AuthInterceptor(_verifier(), {"/x.Y/Z": {"admin"}})


def test_no_principal_outside_a_call() -> None:
    with pytest.raises(AuthenticationError):
        current_principal()


def test_bearer_auth_mints_a_fresh_token_per_call() -> None:
    auth = BearerAuth(InstitutionKey("bank-a", BANK_KEY), AUD)
    first, second = auth.metadata(), auth.metadata()
    assert first != second
    verifier = _verifier()
    for metadata in (first, second):
        ((name, value),) = metadata
        assert name == "authorization"
        verifier.verify(value.removeprefix("Bearer "))


# --- replay cache ----------------------------------------------------------------------


def test_replay_cache_forgets_expired_tokens_and_is_bounded() -> None:
    now = [1000.0]
    cache = ReplayCache(max_entries=2, clock=lambda: now[0])
    cache.check_and_store("bank-a", "j1", expires_at=1060)
    cache.check_and_store("bank-a", "j2", expires_at=1200)
    with pytest.raises(Unavailable):
        cache.check_and_store("bank-a", "j3", expires_at=1200)
    now[0] = 1100.0  # j1 expired (plus leeway): forgotten, room again
    cache.check_and_store("bank-a", "j3", expires_at=1200)
    assert len(cache) == 2
    with pytest.raises(AuthenticationError):
        cache.check_and_store("bank-a", "j2", expires_at=1200)


# --- keys and the registry file -------------------------------------------------------


def test_private_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "bank-a.pem"
    save_private_key(BANK_KEY, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(BANK_KEY)
    with pytest.raises(ConfigurationError, match="exists"):
        save_private_key(BANK_KEY, path)
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="others"):
        load_private_key(path)


def test_registry_file_round_trip_and_reload(tmp_path: Path) -> None:
    bank = Institution("bank-a", "Bank A", "bank", public_key_bytes(BANK_KEY))
    path = tmp_path / "institutions.json"
    path.write_text(dump_registry([bank]))
    assert json.loads(path.read_text())["institutions"][0]["public_key"] == public_key_b64(BANK_KEY)
    registry = JsonFileRegistry(path)
    assert registry.lookup("bank-a") == bank
    disabled = Institution("bank-a", "Bank A", "bank", public_key_bytes(BANK_KEY), True)
    path.write_text(dump_registry([disabled]) + "\n")  # size changes: reloaded
    assert registry.lookup("bank-a") == disabled
    path.write_text("{broken")
    assert registry.lookup("bank-a") == disabled  # keeps the last good registry


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "institutions"),
        ('{"institutions": [{"id": "a"}]}', "missing field"),
        ('{"institutions": [{"id": "a", "role": "bank", "public_key": "!!"}]}', "base64"),
        ('{"institutions": [{"id": "a", "role": "king", "public_key": "%s"}]}', "role"),
        ('{"institutions": [{"id": "A B", "role": "bank", "public_key": "%s"}]}', "id"),
    ],
)
def test_registry_errors_name_the_entry(text: str, message: str) -> None:
    text = text.replace("%s", public_key_b64(BANK_KEY))
    with pytest.raises(ConfigurationError, match=message):
        parse_registry(text)


# --- the interceptor on a real server: every handler shape sees the principal ----------


@pytest.mark.e2e
def test_interceptor_passes_the_principal_to_every_handler_shape() -> None:
    def who(request: Any, context: grpc.ServicerContext) -> bytes:
        return current_principal().institution.encode()

    def who_stream(request: Any, context: grpc.ServicerContext) -> Any:
        for _ in range(2):
            yield current_principal().institution.encode()

    def who_after_stream(requests: Any, context: grpc.ServicerContext) -> bytes:
        return b"%d:" % sum(1 for _ in requests) + current_principal().role.encode()

    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Unary": grpc.unary_unary_rpc_method_handler(who),
        "Server": grpc.unary_stream_rpc_method_handler(who_stream),
        "Client": grpc.stream_unary_rpc_method_handler(who_after_stream),
        "Both": grpc.stream_stream_rpc_method_handler(who_stream),
    }
    table = {f"/t.T/{name}": {"bank"} for name in methods}
    interceptor = AuthInterceptor(_verifier(), table)
    server = grpc.server(
        futures.ThreadPoolExecutor(2), interceptors=[ErrorInterceptor(), interceptor]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", methods),))
    port = bind(server, "127.0.0.1:0", None, insecure=True)
    server.start()
    security = ChannelSecurity(insecure=True)
    auth = BearerAuth(InstitutionKey("bank-a", BANK_KEY), AUD)
    try:
        channel = open_channel(f"127.0.0.1:{port}", security, auth)
        unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.T/Unary")
        server_stream: grpc.UnaryStreamMultiCallable[bytes, bytes]
        server_stream = channel.unary_stream("/t.T/Server")
        client_stream: grpc.StreamUnaryMultiCallable[bytes, bytes]
        client_stream = channel.stream_unary("/t.T/Client")
        both: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream("/t.T/Both")
        assert unary(b"", timeout=10) == b"bank-a"
        assert list(server_stream(b"", timeout=10)) == [b"bank-a"] * 2
        assert client_stream(iter([b"", b""]), timeout=10) == b"2:bank"
        assert list(both(iter([b""]), timeout=10)) == [b"bank-a"] * 2
        carrier = BearerAuth(InstitutionKey("carrier-b", CARRIER_KEY), AUD)
        denied = open_channel(f"127.0.0.1:{port}", security, carrier)
        with pytest.raises(grpc.RpcError) as info:
            refused: grpc.UnaryUnaryMultiCallable[bytes, bytes] = denied.unary_unary("/t.T/Unary")
            refused(b"", timeout=10)
        assert isinstance(errors_from_status(info.value), PermissionDenied)
    finally:
        server.stop(None)
