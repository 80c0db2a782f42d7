"""Match tokens, label keys and sealed labels (client_sdk.core.tokens)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core import oprf, tokens
from client_sdk.core.errors import CryptoError, InvalidRequest

# HKDF-SHA256(ikm = bytes 0..63, no salt, info = the module's two labels), computed
# with cryptography's HKDF when the format was fixed.
MATCH_TOKEN_KAT = "db60467fbde0c27c4b0cee52613ad91d1285d3bc78949c6d491910590a8e77df"
LABEL_KEY_KAT = "0f82a48af914c5c87df8d6d8657aa575657684991b44dd6d5980f7b95c632478"

SK = oprf.derive_key_pair(bytes(32), b"tokens test", oprf.Mode.VOPRF)[0]


def keys_for(kind: str, value: str) -> tokens.TokenKeys:
    return tokens.derive_token_keys(
        oprf.evaluate(SK, tokens.oprf_input(kind, value), oprf.Mode.VOPRF)
    )


def test_oprf_input_encoding() -> None:
    assert tokens.oprf_input("phone", "+8613800138000") == b"fraudhub/v1\x00phone\x00+8613800138000"
    assert tokens.oprf_input("bank_card", "6222") != tokens.oprf_input("bank_account", "6222")
    with pytest.raises(InvalidRequest):
        tokens.oprf_input("bad\x00kind", "x")
    with pytest.raises(InvalidRequest):
        tokens.oprf_input("url", "x" * 70000)


def test_token_and_label_key_are_independent_and_deterministic() -> None:
    a, b = keys_for("phone", "+8613800138000"), keys_for("phone", "+8613800138000")
    assert a == b
    assert len(a.match_token) == len(a.label_key) == 32
    assert a.match_token != a.label_key
    assert keys_for("phone", "+8613800138001").match_token != a.match_token
    assert a.label_key.hex() not in repr(a)
    assert a.match_token.hex()[:8] not in repr(a)
    with pytest.raises(CryptoError):
        tokens.derive_token_keys(b"short")


def _reference_hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=64, max_size=64))
def test_token_keys_are_hkdf_sha256_without_salt(output: bytes) -> None:
    """The hand-split HKDF equals the library's HKDF-SHA256 (salt absent, L = 32)."""
    keys = tokens.derive_token_keys(output)
    assert keys.match_token == _reference_hkdf(output, tokens.MATCH_TOKEN_INFO)
    assert keys.label_key == _reference_hkdf(output, tokens.LABEL_KEY_INFO)


def test_token_keys_known_answer() -> None:
    """Pins the token format: a change here orphans every stored token."""
    keys = tokens.derive_token_keys(bytes(range(64)))
    assert keys.match_token.hex() == MATCH_TOKEN_KAT
    assert keys.label_key.hex() == LABEL_KEY_KAT


CONTEXT = ("phone", "bank-a")


@settings(max_examples=30, deadline=None)
@given(label=st.binary(max_size=tokens.MAX_LABEL_BYTES))
def test_seal_open_round_trip(label: bytes) -> None:
    k = keys_for("phone", "+8613800138000")
    sealed = tokens.seal_label(k.label_key, k.match_token, *CONTEXT, label)
    assert tokens.open_label(k.label_key, k.match_token, *CONTEXT, sealed) == label


def _sealed() -> tuple[tokens.TokenKeys, bytes]:
    k = keys_for("phone", "+8613800138000")
    return k, tokens.seal_label(k.label_key, k.match_token, *CONTEXT, b"case 2026-0417: mule")


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_flipped_ciphertext_byte_fails(data: st.DataObject) -> None:
    k, sealed = _sealed()
    i = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    forged = bytearray(sealed)
    forged[i] ^= 1 << bit
    with pytest.raises(tokens.LabelError):
        tokens.open_label(k.label_key, k.match_token, *CONTEXT, bytes(forged))


@settings(max_examples=20, deadline=None)
@given(i=st.integers(0, 31), bit=st.integers(0, 7))
def test_any_flipped_token_byte_fails(i: int, bit: int) -> None:
    k, sealed = _sealed()
    token = bytearray(k.match_token)
    token[i] ^= 1 << bit
    with pytest.raises(tokens.LabelError):
        tokens.open_label(k.label_key, bytes(token), *CONTEXT, sealed)


@pytest.mark.parametrize(
    ("kind", "contributor"),
    [
        ("email", "bank-a"),
        ("phonf", "bank-a"),
        ("phone", "bank-b"),
        ("phone", "bank-a\x00"),
        ("phone\x00bank", "-a"),
    ],
)
def test_other_kind_or_contributor_fails(kind: str, contributor: str) -> None:
    k, sealed = _sealed()
    with pytest.raises(tokens.LabelError):
        tokens.open_label(k.label_key, k.match_token, kind, contributor, sealed)


def test_wrong_key_and_truncation_fail_with_one_opaque_error() -> None:
    k, sealed = _sealed()
    messages = set()
    for key, blob in [(os.urandom(32), sealed), (k.label_key, sealed[:20]), (b"short", sealed)]:
        with pytest.raises(tokens.LabelError) as info:
            tokens.open_label(key, k.match_token, *CONTEXT, blob)
        messages.add(str(info.value))
    assert messages == {"sealed label cannot be opened"}


def test_label_size_bound() -> None:
    k = keys_for("url", "https://example.test/")
    with pytest.raises(InvalidRequest):
        tokens.seal_label(
            k.label_key, k.match_token, "url", "x", b"x" * (tokens.MAX_LABEL_BYTES + 1)
        )
