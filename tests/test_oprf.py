"""RFC 9497 conformance (Appendix A.1, ristretto255-SHA512) and input validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core import _sodium as sodium
from client_sdk.core import oprf
from client_sdk.core.errors import InvalidElementError, InvalidRequest, ProofError

VECTORS = json.loads(
    (Path(__file__).parent / "data" / "rfc9497_ristretto255_sha512.json").read_text()
)
h = bytes.fromhex


def _cases() -> list[Any]:
    return [
        pytest.param(mode, vec, id=f"{mode['mode']}-{vec['name']}")
        for mode in VECTORS["modes"]
        for vec in mode["vectors"]
    ]


def test_fixture_names_its_source() -> None:
    assert "RFC 9497" in VECTORS["source"]
    assert VECTORS["suite"] == oprf.SUITE
    assert {m["mode"] for m in VECTORS["modes"]} == {"OPRF", "VOPRF"}


@pytest.mark.parametrize("mode_data", VECTORS["modes"], ids=lambda m: m["mode"])
def test_derive_key_pair(mode_data: dict[str, Any]) -> None:
    mode = oprf.Mode[mode_data["mode"]]
    sk, pk = oprf.derive_key_pair(h(mode_data["Seed"]), h(mode_data["KeyInfo"]), mode)
    assert sk.hex() == mode_data["skSm"]
    if "pkSm" in mode_data:
        assert pk.hex() == mode_data["pkSm"]


@pytest.mark.parametrize(("mode_data", "vec"), _cases())
def test_vector(mode_data: dict[str, Any], vec: dict[str, Any]) -> None:
    mode = oprf.Mode[mode_data["mode"]]
    sk = h(mode_data["skSm"])
    inputs = [h(x) for x in vec["Input"]]
    blinds = [h(x) for x in vec["Blind"]]
    blinded = []
    for x, r, expected in zip(inputs, blinds, vec["BlindedElement"], strict=True):
        r_out, b = oprf.blind(x, mode, blind=r)
        assert r_out == r
        assert b.hex() == expected
        blinded.append(b)
    evaluated = [oprf.blind_evaluate(sk, b) for b in blinded]
    assert [e.hex() for e in evaluated] == vec["EvaluationElement"]
    outputs = [oprf.finalize(x, r, e) for x, r, e in zip(inputs, blinds, evaluated, strict=True)]
    assert [o.hex() for o in outputs] == vec["Output"]
    assert [oprf.evaluate(sk, x, mode).hex() for x in inputs] == vec["Output"]
    if mode is oprf.Mode.VOPRF:
        pk = h(mode_data["pkSm"])
        proof = oprf.generate_proof(sk, pk, blinded, evaluated, mode, r=h(vec["ProofRandomScalar"]))
        assert proof.hex() == vec["Proof"]
        oprf.verify_proof(pk, blinded, evaluated, proof, mode)
        batch_eval, batch_proof = oprf.blind_evaluate_batch(
            sk, pk, blinded, r=h(vec["ProofRandomScalar"])
        )
        assert batch_eval == evaluated and batch_proof == proof
        finals = oprf.finalize_batch(inputs, blinds, blinded, evaluated, proof, pk)
        assert [o.hex() for o in finals] == vec["Output"]


# --- validation ----------------------------------------------------------------

VOPRF = VECTORS["modes"][1]
SK, PK = h(VOPRF["skSm"]), h(VOPRF["pkSm"])
L = sodium.GROUP_ORDER


def _non_canonical_element() -> bytes:
    # A field element >= p = 2^255 - 19 is never a canonical encoding.
    return ((2**255 - 19) + 2).to_bytes(32, "little")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(bytes(32), id="identity"),
        pytest.param(_non_canonical_element(), id="non-canonical"),
        pytest.param(b"\x01" + bytes(31), id="negative-field-element"),  # odd => negative, refused
        pytest.param(bytes(31), id="short"),
        pytest.param(b"\xff" * 32, id="all-ones"),
    ],
)
def test_blind_evaluate_refuses_bad_elements(bad: bytes) -> None:
    with pytest.raises(InvalidElementError):
        oprf.blind_evaluate(SK, bad)
    with pytest.raises(InvalidElementError):
        oprf.deserialize_element(bad)


def test_identity_is_refused_although_libsodium_accepts_it() -> None:
    assert sodium._lib.crypto_core_ristretto255_is_valid_point(bytes(32)) == 1
    assert not sodium.is_valid_element(bytes(32))


@pytest.mark.parametrize(
    "bad_scalar",
    [bytes(32), L.to_bytes(32, "little"), (L + 1).to_bytes(32, "little"), b"\x01" * 31],
    ids=["zero", "order", "order+1", "short"],
)
def test_bad_keys_and_blinds_are_refused(bad_scalar: bytes) -> None:
    _, b = oprf.blind(b"x", oprf.Mode.OPRF)
    with pytest.raises(InvalidElementError):
        oprf.blind_evaluate(bad_scalar, b)
    with pytest.raises(InvalidElementError):
        oprf.blind(b"x", oprf.Mode.OPRF, blind=bad_scalar)


def test_input_length_bound() -> None:
    oprf.blind(b"a" * oprf.MAX_INPUT_BYTES, oprf.Mode.OPRF)
    with pytest.raises(InvalidRequest):
        oprf.blind(b"a" * (oprf.MAX_INPUT_BYTES + 1), oprf.Mode.OPRF)
    with pytest.raises(InvalidRequest):
        oprf.evaluate(SK, b"a" * (oprf.MAX_INPUT_BYTES + 1), oprf.Mode.OPRF)


@pytest.mark.parametrize(
    ("msg", "length", "expected"),
    [
        (b"", 0x20, "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"),
        (b"abc", 0x20, "0da749f12fbe5483eb066a5f595055679b976e93abe9be6f0f6318bce7aca8dc"),
        (
            b"",
            0x80,
            "41b037d1734a5f8df225dd8c7de38f851efdb45c372887be655212d07251b921"
            "b052b62eaed99b46f72f2ef4cc96bfaf254ebbbec091e1a3b9e4fb5e5b619d2e"
            "0c5414800a1d882b62bb5cd1778f098b8eb6cb399d5d9d18f5d5842cf5d13d7e"
            "b00a7cff859b605da678b318bd0e65ebff70bec88c753b159a805d2c89c55961",
        ),
    ],
)
def test_expand_message_xmd_rfc9380_k3(msg: bytes, length: int, expected: str) -> None:
    """RFC 9380 Appendix K.3, expand_message_xmd with SHA-512."""
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    assert oprf.expand_message_xmd(msg, dst, length).hex() == expected


# --- proofs ----------------------------------------------------------------------


def _batch(n: int) -> tuple[list[bytes], list[bytes], bytes]:
    blinded = [oprf.blind(bytes([i]), oprf.Mode.VOPRF)[1] for i in range(n)]
    evaluated, proof = oprf.blind_evaluate_batch(SK, PK, blinded)
    return blinded, evaluated, proof


def test_proof_rejects_wrong_key_element_and_bytes() -> None:
    blinded, evaluated, proof = _batch(3)
    oprf.verify_proof(PK, blinded, evaluated, proof, oprf.Mode.VOPRF)
    other_pk = oprf.derive_key_pair(bytes(32), b"other", oprf.Mode.VOPRF)[1]
    with pytest.raises(ProofError):
        oprf.verify_proof(other_pk, blinded, evaluated, proof, oprf.Mode.VOPRF)
    swapped = [evaluated[1], evaluated[0], evaluated[2]]
    with pytest.raises(ProofError):
        oprf.verify_proof(PK, blinded, swapped, proof, oprf.Mode.VOPRF)
    with pytest.raises(ProofError):
        oprf.verify_proof(PK, blinded, evaluated, proof[:-1], oprf.Mode.VOPRF)
    with pytest.raises(ProofError):
        oprf.verify_proof(PK, blinded, evaluated, proof, oprf.Mode.OPRF)  # other context


@settings(max_examples=25, deadline=None)
@given(position=st.integers(0, 63), bit=st.integers(0, 7))
def test_any_flipped_proof_bit_is_rejected(position: int, bit: int) -> None:
    blinded, evaluated, proof = _batch(2)
    forged = bytearray(proof)
    forged[position] ^= 1 << bit
    with pytest.raises((ProofError, InvalidElementError)):
        oprf.verify_proof(PK, blinded, evaluated, bytes(forged), oprf.Mode.VOPRF)


@settings(max_examples=20, deadline=None)
@given(data=st.binary(max_size=64))
def test_blind_then_finalize_equals_evaluate(data: bytes) -> None:
    for mode in oprf.Mode:
        r, b = oprf.blind(data, mode)
        assert oprf.finalize(data, r, oprf.blind_evaluate(SK, b)) == oprf.evaluate(SK, data, mode)
