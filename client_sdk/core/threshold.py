"""Threshold VOPRF: the OPRF key Shamir-shared t-of-n among key holders (sans-IO).

The key ``k`` is shared with a random polynomial ``f`` of degree ``t-1`` over
the ristretto255 scalar field, ``f(0) = k``; holder ``i`` (1-based) keeps
``k_i = f(i)`` and publishes ``K_i = k_i * G``.

For a batch the client blinds every input (``B_j = r_j * H(x_j)``), sends the
blinded elements to any ``t`` holders, and each returns ``E_ij = k_i * B_j``
with one batched RFC 9497 DLEQ proof against ``K_i``.  The client verifies
every proof, then computes ``k * H(x_j) = sum_i (lambda_i * r_j^-1) * E_ij``
(Lagrange coefficients at 0 folded into the unblinding scalar: ``t`` scalar
multiplications per item, no separate unblinding) and applies RFC 9497
``Finalize``.  The result equals ``oprf.evaluate(k, x, Mode.VOPRF)``; with
``t = n = 1`` (``lambda_1 = 1``) the protocol is RFC 9497 VOPRF itself.

Guarantees: a response that does not verify raises
:class:`~client_sdk.core.errors.HolderError` naming the holder; fewer than ``t``
verified responses raise :class:`~client_sdk.core.errors.Unavailable`; secrets are
never shown by ``repr``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from client_sdk.core import _sodium as sodium
from client_sdk.core import oprf
from client_sdk.core.errors import (
    ConfigurationError,
    FraudhubError,
    HolderError,
    InvalidElementError,
    InvalidRequest,
    Unavailable,
)

__all__ = [
    "MAX_HOLDERS",
    "BlindedBatch",
    "HolderResponse",
    "KeyShare",
    "PublicKeyInfo",
    "VerifiedResponse",
    "blind_batch",
    "check_params",
    "combine",
    "deal",
    "evaluate_polynomial",
    "holder_evaluate",
    "lagrange_at",
    "lagrange_at_zero",
    "verify_response",
]

MAX_HOLDERS = 255
KEY_FORMAT = "fraudhub-oprf-key-v1"


def _scalar(n: int) -> bytes:
    return sodium.scalar_from_int(n)


def check_params(threshold: int, holders: int) -> None:
    """Refuse a ``threshold``-of-``holders`` sharing that is malformed or gives k away.

    Threshold 1 with more than one holder hands every holder the whole key
    (a degree-0 polynomial: each share IS ``k``), so any one holder alone could
    evaluate the OPRF; it is refused unless there is a single holder.
    Raises ConfigurationError.
    """
    if not 1 <= threshold <= holders <= MAX_HOLDERS:
        raise ConfigurationError(
            f"need 1 <= threshold <= holders <= {MAX_HOLDERS}, got {threshold}-of-{holders}"
        )
    if threshold == 1 and holders > 1:
        raise ConfigurationError(
            f"threshold 1 of {holders} holders gives every holder the whole key k "
            "(each share equals k): use a threshold of at least 2, or a single holder"
        )


@dataclass(frozen=True)
class KeyShare:
    """One holder's secret share ``k_i`` of the OPRF key, for one key epoch."""

    index: int
    secret: bytes = field(repr=False)
    epoch: int
    threshold: int
    holders: int

    def __post_init__(self) -> None:
        check_params(self.threshold, self.holders)
        if not 1 <= self.index <= self.holders:
            raise ConfigurationError(f"share index {self.index} outside 1..{self.holders}")
        if not sodium.scalar_is_canonical(self.secret) or self.secret == bytes(32):
            raise ConfigurationError("share secret is not a canonical non-zero scalar")
        if self.epoch < 1:
            raise ConfigurationError("key epoch must be >= 1")

    @property
    def public_share(self) -> bytes:
        """``K_i = k_i * G``."""
        return sodium.scalarmult_base(self.secret)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": KEY_FORMAT,
                "type": "share",
                "suite": oprf.SUITE,
                "index": self.index,
                "epoch": self.epoch,
                "threshold": self.threshold,
                "holders": self.holders,
                "secret_share": self.secret.hex(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> KeyShare:
        """Parse a share file; raise ConfigurationError naming what is wrong."""
        data = _parse(text, "share")
        return cls(
            index=_integer(data, "index", "share"),
            secret=_hex(data, "secret_share", "share"),
            epoch=_integer(data, "epoch", "share"),
            threshold=_integer(data, "threshold", "share"),
            holders=_integer(data, "holders", "share"),
        )


# "1", not "01" or "١": one spelling per holder, so no entry can shadow another.
_HOLDER_NUMBER = re.compile(r"[1-9][0-9]{0,2}", re.ASCII)


def _integer(data: dict[str, Any], name: str, kind: str) -> int:
    """A JSON integer field (not a string, a float or a boolean)."""
    value = data.get(name)
    if type(value) is not int:
        raise ConfigurationError(f"{kind} file: {name} must be a whole number")
    return value


def _hex(data: dict[str, Any], name: str, kind: str) -> bytes:
    value = data.get(name)
    try:
        if not isinstance(value, str):
            raise TypeError
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{kind} file: {name} must be a hex string") from None


def _parse(text: str, kind: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{kind} file is not JSON (line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != KEY_FORMAT or data.get("type") != kind:
        raise ConfigurationError(f"not a fraudhub {kind} file (format {KEY_FORMAT!r})")
    if data.get("suite") != oprf.SUITE:
        raise ConfigurationError(f"{kind} file suite is not {oprf.SUITE}")
    return data


@dataclass(frozen=True)
class PublicKeyInfo:
    """The public side of a key epoch: group key ``K = k*G`` and every ``K_i``."""

    epoch: int
    threshold: int
    holders: int
    group_public_key: bytes
    public_shares: dict[int, bytes]

    def __post_init__(self) -> None:
        check_params(self.threshold, self.holders)
        if sorted(self.public_shares) != list(range(1, self.holders + 1)):
            raise ConfigurationError(f"public shares must be given for holders 1..{self.holders}")
        for element in (self.group_public_key, *self.public_shares.values()):
            if not sodium.is_valid_element(element):
                raise ConfigurationError("public key file holds an invalid group element")

    def check_consistent(self) -> None:
        """Check that every ``t`` public shares interpolate to the group key.

        Interpolating the first ``t`` shares must give ``K``, and every other
        share must lie on the same polynomial.  Raise ConfigurationError.
        """
        base = list(range(1, self.threshold + 1))
        if _interpolate(self.public_shares, base, 0) != self.group_public_key:
            raise ConfigurationError("public shares do not match the group public key")
        for j in range(self.threshold + 1, self.holders + 1):
            if _interpolate(self.public_shares, base, j) != self.public_shares[j]:
                raise ConfigurationError(f"public share {j} is not on the key polynomial")

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": KEY_FORMAT,
                "type": "public",
                "suite": oprf.SUITE,
                "epoch": self.epoch,
                "threshold": self.threshold,
                "holders": self.holders,
                "group_public_key": self.group_public_key.hex(),
                "public_shares": {str(i): k.hex() for i, k in sorted(self.public_shares.items())},
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> PublicKeyInfo:
        """Parse a public key file; raise ConfigurationError naming what is wrong."""
        data = _parse(text, "public")
        shares = data.get("public_shares")
        if not isinstance(shares, dict) or not all(
            isinstance(i, str) and _HOLDER_NUMBER.fullmatch(i) for i in shares
        ):
            raise ConfigurationError(
                "public key file: public_shares must map holder numbers to hex strings"
            )
        return cls(
            epoch=_integer(data, "epoch", "public key"),
            threshold=_integer(data, "threshold", "public key"),
            holders=_integer(data, "holders", "public key"),
            group_public_key=_hex(data, "group_public_key", "public key"),
            public_shares={int(i): _hex(shares, i, "public key") for i in shares},
        )


def lagrange_at_zero(indices: Sequence[int], i: int) -> bytes:
    """Lagrange coefficient ``lambda_i = prod_{j != i} j / (j - i)`` at 0, as a scalar."""
    return _lagrange(indices, i, 0)


def lagrange_at(indices: Sequence[int], i: int, x: int) -> bytes:
    """Lagrange basis polynomial ``l_i`` of ``indices`` evaluated at ``x``, as a scalar."""
    return _lagrange(indices, i, x)


def evaluate_polynomial(coefficients: Sequence[bytes], x: int) -> bytes:
    """``f(x)`` for ``f = coefficients[0] + coefficients[1] X + ...`` (scalars, Horner)."""
    acc = _scalar(0)
    for coeff in reversed(coefficients):  # f(x) = (...(a_{t-1} x + a_{t-2}) x ...) + a_0
        acc = sodium.scalar_add(sodium.scalar_mul(acc, _scalar(x)), coeff)
    return acc


def _lagrange(indices: Sequence[int], i: int, x: int) -> bytes:
    if len(set(indices)) != len(indices) or i not in indices:
        raise InvalidRequest("Lagrange basis needs distinct indices containing i")
    num, den = _scalar(1), _scalar(1)
    for j in indices:
        if j != i:
            num = sodium.scalar_mul(num, _scalar(x - j))
            den = sodium.scalar_mul(den, _scalar(i - j))
    return sodium.scalar_mul(num, sodium.scalar_invert(den))


def _interpolate(points: dict[int, bytes], indices: Sequence[int], x: int) -> bytes:
    """Evaluate the polynomial through ``points[indices]`` at ``x``, in the exponent."""
    total: bytes | None = None
    for i in indices:
        coeff = _lagrange(indices, i, x)
        if coeff == bytes(32):
            continue
        term = sodium.scalarmult(coeff, points[i])
        total = term if total is None else sodium.element_add(total, term)
    if total is None:
        raise ConfigurationError("interpolation gave the identity")
    return total


def deal(
    threshold: int, holders: int, *, epoch: int = 1, seed: bytes | None = None
) -> tuple[list[KeyShare], PublicKeyInfo]:
    """Key ceremony (v1, trusted dealer): make ``k``, share it ``t``-of-``n``.

    With ``seed`` (32 bytes) the key is RFC 9497 ``DeriveKeyPair(seed,
    "fraudhub/v1 key epoch <epoch>")`` and the polynomial coefficients are
    derived from it too, so a ceremony can be reproduced in tests; without it
    everything is random.  ``k`` itself is not returned: the caller gets the
    shares and the public key only.  (Python cannot guarantee erasure of the
    dealer's memory; the dealer process should exit after the ceremony.)
    """
    check_params(threshold, holders)
    info = f"fraudhub/v1 key epoch {epoch}".encode()
    if seed is None:
        k = sodium.scalar_random()
        coefficients = [sodium.scalar_random() for _ in range(threshold - 1)]
    else:
        k, _ = oprf.derive_key_pair(seed, info, oprf.Mode.VOPRF)
        coefficients = [
            oprf.hash_to_scalar(seed + info + b"/coefficient" + bytes([c]), oprf.Mode.VOPRF)
            for c in range(1, threshold)
        ]
    poly = [k, *coefficients]
    shares = [
        KeyShare(i, evaluate_polynomial(poly, i), epoch, threshold, holders)
        for i in range(1, holders + 1)
    ]
    public = PublicKeyInfo(
        epoch=epoch,
        threshold=threshold,
        holders=holders,
        group_public_key=sodium.scalarmult_base(k),
        public_shares={s.index: s.public_share for s in shares},
    )
    return shares, public


# --- holder side ---------------------------------------------------------------


@dataclass(frozen=True)
class HolderResponse:
    """What one holder returns for a batch: ``E_ij`` and one DLEQ proof against ``K_i``."""

    index: int
    epoch: int
    evaluated_elements: list[bytes]
    proof: bytes


def holder_evaluate(share: KeyShare, blinded_elements: Sequence[bytes]) -> HolderResponse:
    """Evaluate a batch with this holder's share and prove it (VOPRF BlindEvaluate).

    Raises InvalidElementError naming the position of a bad blinded element.
    """
    if not blinded_elements:
        raise InvalidRequest("empty batch")
    evaluated, proof = oprf.blind_evaluate_batch(share.secret, share.public_share, blinded_elements)
    return HolderResponse(share.index, share.epoch, evaluated, proof)


# --- client side ---------------------------------------------------------------


@dataclass(frozen=True)
class BlindedBatch:
    """A batch of blinded inputs; ``blinds`` and ``inputs`` stay with the client."""

    inputs: tuple[bytes, ...] = field(repr=False)
    blinds: tuple[bytes, ...] = field(repr=False)
    blinded_elements: tuple[bytes, ...]


def blind_batch(inputs: Sequence[bytes]) -> BlindedBatch:
    """RFC 9497 ``Blind`` for every input (VOPRF mode), fresh random blinds."""
    if not inputs:
        raise InvalidRequest("empty batch")
    blinds, blinded = [], []
    for x in inputs:
        r, b = oprf.blind(x, oprf.Mode.VOPRF)
        blinds.append(r)
        blinded.append(b)
    return BlindedBatch(tuple(inputs), tuple(blinds), tuple(blinded))


@dataclass(frozen=True)
class VerifiedResponse:
    """A :class:`HolderResponse` whose proof :func:`verify_response` checked."""

    response: HolderResponse


def verify_response(
    public: PublicKeyInfo, batch: BlindedBatch, response: HolderResponse
) -> VerifiedResponse:
    """Check a holder's response; raise HolderError naming the holder if it is wrong."""
    index = response.index
    if index not in public.public_shares:
        raise HolderError(index, "unknown holder index")
    if response.epoch != public.epoch:
        raise HolderError(index, f"answered for key epoch {response.epoch}, not {public.epoch}")
    if len(response.evaluated_elements) != len(batch.blinded_elements):
        raise HolderError(index, "returned a different number of elements")
    try:
        oprf.verify_proof(
            public.public_shares[index],
            batch.blinded_elements,
            response.evaluated_elements,
            response.proof,
            oprf.Mode.VOPRF,
        )
    except (InvalidElementError, FraudhubError) as exc:
        raise HolderError(index, f"evaluation rejected: {exc}") from None
    return VerifiedResponse(response)


def combine(
    public: PublicKeyInfo,
    batch: BlindedBatch,
    responses: Sequence[HolderResponse | VerifiedResponse],
) -> list[bytes]:
    """Verify (where not done yet) and combine ``t`` holders' answers into OPRF outputs.

    Returns one 64-byte output per input, equal to ``oprf.evaluate(k, x, VOPRF)``.
    Raises HolderError for the first response that does not verify, and
    Unavailable when fewer than ``t`` distinct holders answered.
    """
    verified: dict[int, HolderResponse] = {}
    for response in responses:
        checked = (
            response
            if isinstance(response, VerifiedResponse)
            else verify_response(public, batch, response)
        )
        verified.setdefault(checked.response.index, checked.response)
    if len(verified) < public.threshold:
        raise Unavailable(f"{len(verified)} key holder(s) answered, {public.threshold} needed")
    chosen = sorted(verified)[: public.threshold]
    lambdas = [lagrange_at_zero(chosen, i) for i in chosen]
    outputs = []
    inverses = sodium.scalar_invert_batch(list(batch.blinds))
    for j, (x, r_inv) in enumerate(zip(batch.inputs, inverses, strict=True)):
        acc: bytes | None = None
        for lam, i in zip(lambdas, chosen, strict=True):
            term = sodium.scalarmult(
                sodium.scalar_mul(lam, r_inv), verified[i].evaluated_elements[j]
            )
            acc = term if acc is None else sodium.element_add(acc, term)
        assert acc is not None  # threshold >= 1
        outputs.append(oprf.finalize_unblinded(x, acc))
    return outputs
