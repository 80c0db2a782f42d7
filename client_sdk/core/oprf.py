"""RFC 9497 OPRF and VOPRF, suite ristretto255-SHA512 (sans-IO).

Functions are named after the RFC (``DeriveKeyPair`` -> :func:`derive_key_pair`,
``BlindEvaluate`` -> :func:`blind_evaluate`, ...) and take and return the RFC's
byte encodings: 32-byte scalars and elements, 64-byte outputs, 64-byte proofs
(``c || s``).  Group arithmetic is libsodium's (``client_sdk.core._sodium``).

Input validation follows RFC 9497 section 2.1 and 3.3: element encodings that
are non-canonical or the identity raise
:class:`~client_sdk.core.errors.InvalidElementError`; inputs longer than 2^16-1
bytes raise :class:`~client_sdk.core.errors.InvalidRequest`; an input that hashes to
the identity raises ``InvalidElementError`` (RFC ``InvalidInputError``); a
proof that does not verify raises :class:`~client_sdk.core.errors.ProofError`
(RFC ``VerifyError``).  Verification never returns a bool.

POPRF mode is not implemented: fraudhub has no public input (the kind is part
of the private input, see ``client_sdk.core.tokens``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from enum import IntEnum

from client_sdk.core import _sodium as sodium
from client_sdk.core.errors import InvalidElementError, InvalidRequest, ProofError

__all__ = [
    "GENERATOR",
    "SUITE",
    "Mode",
    "blind",
    "blind_evaluate",
    "blind_evaluate_batch",
    "context_string",
    "derive_key_pair",
    "deserialize_element",
    "deserialize_scalar",
    "evaluate",
    "expand_message_xmd",
    "finalize",
    "finalize_batch",
    "finalize_unblinded",
    "generate_proof",
    "hash_to_group",
    "hash_to_scalar",
    "verify_proof",
]

SUITE = "ristretto255-SHA512"
MAX_INPUT_BYTES = 2**16 - 1
PROOF_BYTES = 2 * sodium.SCALAR_BYTES
GENERATOR = sodium.scalarmult_base((1).to_bytes(32, "little"))


class Mode(IntEnum):
    OPRF = 0
    VOPRF = 1


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def _lp(data: bytes) -> bytes:
    """Two-byte length prefix, as every RFC 9497 transcript uses."""
    return _i2osp(len(data), 2) + data


_CONTEXTS = {m: b"OPRFV1-" + _i2osp(m, 1) + b"-" + SUITE.encode() for m in Mode}


def context_string(mode: Mode) -> bytes:
    """RFC 9497 section 3.1 ``contextString``."""
    return _CONTEXTS[Mode(mode)]


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 section 5.3.1 with SHA-512 (b_in_bytes 64, s_in_bytes 128)."""
    if len(dst) > 255:
        raise InvalidRequest("DST longer than 255 bytes")
    ell = -(-len_in_bytes // 64)
    if ell > 255 or len_in_bytes > 65535:
        raise InvalidRequest("requested expansion too long")
    dst_prime = dst + _i2osp(len(dst), 1)
    b0 = hashlib.sha512(bytes(128) + msg + _i2osp(len_in_bytes, 2) + b"\x00" + dst_prime).digest()
    b = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
    out = [b]
    for i in range(2, ell + 1):
        b = hashlib.sha512(
            bytes(x ^ y for x, y in zip(b0, b, strict=True)) + _i2osp(i, 1) + dst_prime
        ).digest()
        out.append(b)
    return b"".join(out)[:len_in_bytes]


def hash_to_group(msg: bytes, mode: Mode) -> bytes:
    """RFC 9497 ``HashToGroup``: hash_to_ristretto255 with DST ``HashToGroup-`` || context."""
    dst = b"HashToGroup-" + context_string(mode)
    return sodium.element_from_hash(expand_message_xmd(msg, dst, 64))


def hash_to_scalar(msg: bytes, mode: Mode, dst: bytes | None = None) -> bytes:
    """RFC 9497 ``HashToScalar``: 64 uniform bytes reduced modulo the group order."""
    if dst is None:
        dst = b"HashToScalar-" + context_string(mode)
    return sodium.scalar_reduce(expand_message_xmd(msg, dst, 64))


def deserialize_element(data: bytes) -> bytes:
    """Check an element encoding (RFC 9497 ``DeserializeElement``); return it unchanged."""
    if not sodium.is_valid_element(data):
        raise InvalidElementError("not a canonical, non-identity ristretto255 element")
    return data


def deserialize_scalar(data: bytes) -> bytes:
    """Check a scalar encoding (``DeserializeScalar``): 32 bytes, below the group order."""
    if not sodium.scalar_is_canonical(data):
        raise InvalidElementError("not a canonical ristretto255 scalar")
    return data


def _check_input(data: bytes) -> None:
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidRequest(f"OPRF input longer than {MAX_INPUT_BYTES} bytes")


def _secret_scalar(sk: bytes) -> bytes:
    deserialize_scalar(sk)
    if hmac.compare_digest(sk, bytes(32)):
        raise InvalidElementError("the zero scalar is not a valid key")
    return sk


def derive_key_pair(seed: bytes, info: bytes, mode: Mode) -> tuple[bytes, bytes]:
    """RFC 9497 section 3.2.1 ``DeriveKeyPair``: deterministic ``(skS, pkS)``."""
    if len(seed) != 32:
        raise InvalidRequest("seed must be 32 bytes")
    if len(info) > MAX_INPUT_BYTES:
        raise InvalidRequest("info too long")
    derive_input = seed + _lp(info)
    dst = b"DeriveKeyPair" + context_string(mode)
    for counter in range(256):
        sk = hash_to_scalar(derive_input + _i2osp(counter, 1), mode, dst)
        if sk != bytes(32):
            return sk, sodium.scalarmult_base(sk)
    raise InvalidRequest("DeriveKeyPairError")  # pragma: no cover - probability 2^-2000


def blind(input: bytes, mode: Mode, *, blind: bytes | None = None) -> tuple[bytes, bytes]:
    """RFC 9497 ``Blind``: return ``(blind, blindedElement)``.

    ``blind`` may be given (test vectors); otherwise it is random.
    """
    _check_input(input)
    r = sodium.scalar_random() if blind is None else _secret_scalar(blind)
    try:  # libsodium refuses an identity input element (RFC InvalidInputError)
        return r, sodium.scalarmult(r, hash_to_group(input, mode))
    except InvalidElementError:
        raise InvalidElementError("input hashes to the identity (InvalidInputError)") from None


def blind_evaluate(sk: bytes, blinded_element: bytes) -> bytes:
    """RFC 9497 ``BlindEvaluate`` (OPRF mode): ``skS * blindedElement``."""
    return sodium.scalarmult(_secret_scalar(sk), deserialize_element(blinded_element))


def finalize_unblinded(input: bytes, unblinded_element: bytes) -> bytes:
    """The hash step of ``Finalize`` for an element that is already unblinded.

    The threshold combination (``client_sdk.core.threshold``) folds the unblinding
    into its Lagrange coefficients and ends here.
    """
    return hashlib.sha512(_lp(input) + _lp(unblinded_element) + b"Finalize").digest()


def finalize(input: bytes, blind: bytes, evaluated_element: bytes) -> bytes:
    """RFC 9497 ``Finalize`` (the proof, in VOPRF mode, is checked by :func:`finalize_batch`)."""
    _check_input(input)
    unblinded = sodium.scalarmult(
        sodium.scalar_invert(_secret_scalar(blind)), deserialize_element(evaluated_element)
    )
    return finalize_unblinded(input, unblinded)


def evaluate(sk: bytes, input: bytes, mode: Mode) -> bytes:
    """RFC 9497 ``Evaluate``: the PRF output computed with the key, no blinding."""
    _check_input(input)
    element = hash_to_group(input, mode)
    if not sodium.is_valid_element(element):
        raise InvalidElementError("input hashes to the identity (InvalidInputError)")
    return finalize_unblinded(input, sodium.scalarmult(_secret_scalar(sk), element))


# --- DLEQ proofs (RFC 9497 section 2.2) ---------------------------------------


def _composite_scalars(
    pk: bytes, c: Sequence[bytes], d: Sequence[bytes], mode: Mode
) -> list[bytes]:
    """The ``d_i`` of ``ComputeComposites``: one hash-to-scalar per pair."""
    seed_dst = b"Seed-" + context_string(mode)
    seed = hashlib.sha512(_lp(pk) + _lp(seed_dst)).digest()
    prefix = _lp(seed)
    return [
        hash_to_scalar(prefix + _i2osp(i, 2) + _lp(ci) + _lp(di) + b"Composite", mode)
        for i, (ci, di) in enumerate(zip(c, d, strict=True))
    ]


def _weighted_sum(scalars: Sequence[bytes], elements: Sequence[bytes]) -> bytes:
    total = sodium.scalarmult(scalars[0], elements[0])
    for s, e in zip(scalars[1:], elements[1:], strict=True):
        total = sodium.element_add(total, sodium.scalarmult(s, e))
    return total


def _challenge(pk: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes, mode: Mode) -> bytes:
    transcript = _lp(pk) + _lp(m) + _lp(z) + _lp(t2) + _lp(t3) + b"Challenge"
    return hash_to_scalar(transcript, mode)


def _check_batch(c: Sequence[bytes], d: Sequence[bytes]) -> None:
    if not c or len(c) != len(d):
        raise InvalidRequest("a proof covers a non-empty batch of matching length")
    if len(c) > 0xFFFF:
        raise InvalidRequest("a proof covers at most 65535 elements")


def generate_proof(
    sk: bytes,
    pk: bytes,
    blinded_elements: Sequence[bytes],
    evaluated_elements: Sequence[bytes],
    mode: Mode,
    *,
    r: bytes | None = None,
) -> bytes:
    """RFC 9497 ``GenerateProof(k, G, pkS, C, D)``: a batched DLEQ proof ``c || s``.

    Uses ``ComputeCompositesFast`` (the prover knows ``k``): ``Z = k * M``.
    """
    _check_batch(blinded_elements, evaluated_elements)
    k = _secret_scalar(sk)
    d_i = _composite_scalars(pk, blinded_elements, evaluated_elements, mode)
    m = _weighted_sum(d_i, blinded_elements)
    z = sodium.scalarmult(k, m)
    r = sodium.scalar_random() if r is None else _secret_scalar(r)
    t2 = sodium.scalarmult_base(r)
    t3 = sodium.scalarmult(r, m)
    c = _challenge(pk, m, z, t2, t3, mode)
    s = sodium.scalar_sub(r, sodium.scalar_mul(c, k))
    return c + s


def verify_proof(
    pk: bytes,
    blinded_elements: Sequence[bytes],
    evaluated_elements: Sequence[bytes],
    proof: bytes,
    mode: Mode,
) -> None:
    """RFC 9497 ``VerifyProof(G, pkS, C, D, proof)``; raise ProofError if it fails."""
    _check_batch(blinded_elements, evaluated_elements)
    if len(proof) != PROOF_BYTES:
        raise ProofError("proof must be 64 bytes")
    # Every element goes through a libsodium scalar multiplication below, which
    # refuses non-canonical encodings and the identity: no separate decoding pass.
    c, s = deserialize_scalar(proof[:32]), deserialize_scalar(proof[32:])
    d_i = _composite_scalars(pk, blinded_elements, evaluated_elements, mode)
    m = _weighted_sum(d_i, blinded_elements)
    z = _weighted_sum(d_i, evaluated_elements)
    try:
        t2 = sodium.element_add(sodium.scalarmult_base(s), sodium.scalarmult(c, pk))
        t3 = sodium.element_add(sodium.scalarmult(s, m), sodium.scalarmult(c, z))
    except InvalidElementError:
        # A zero c or s (identity terms) never comes from an honest prover.
        raise ProofError("proof does not verify") from None
    expected = _challenge(pk, m, z, t2, t3, mode)
    if not hmac.compare_digest(expected, c):
        raise ProofError("proof does not verify")


# --- batch conveniences (VOPRF) ----------------------------------------------


def blind_evaluate_batch(
    sk: bytes, pk: bytes, blinded_elements: Sequence[bytes], *, r: bytes | None = None
) -> tuple[list[bytes], bytes]:
    """VOPRF ``BlindEvaluate`` for a batch: evaluated elements and one proof.

    Raises InvalidElementError whose message names the first bad position.
    """
    k = _secret_scalar(sk)
    evaluated = []
    for i, b in enumerate(blinded_elements):
        try:  # libsodium refuses non-canonical encodings and the identity
            evaluated.append(sodium.scalarmult(k, b))
        except InvalidElementError:
            raise InvalidElementError(f"blinded element {i} is not a valid element") from None
    return evaluated, generate_proof(k, pk, blinded_elements, evaluated, Mode.VOPRF, r=r)


def finalize_batch(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    blinded_elements: Sequence[bytes],
    evaluated_elements: Sequence[bytes],
    proof: bytes,
    pk: bytes,
) -> list[bytes]:
    """VOPRF ``Finalize`` for a batch: verify the proof, then unblind every element."""
    if not len(inputs) == len(blinds) == len(blinded_elements) == len(evaluated_elements):
        raise InvalidRequest("batch lists differ in length")
    verify_proof(pk, blinded_elements, evaluated_elements, proof, Mode.VOPRF)
    for x in inputs:
        _check_input(x)
    for r in blinds:
        _secret_scalar(r)
    inverses = sodium.scalar_invert_batch(list(blinds))
    return [
        finalize_unblinded(x, sodium.scalarmult(r_inv, e))
        for x, r_inv, e in zip(inputs, inverses, evaluated_elements, strict=True)
    ]
