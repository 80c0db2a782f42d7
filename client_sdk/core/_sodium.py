"""The one module that touches libsodium: ristretto255 group and scalar operations.

Everything here is a thin, typed wrapper around libsodium (>= 1.0.18), loaded
through pysodium.  We call the C functions directly on pysodium's handle: the
pysodium wrappers re-check the library version on every call, which costs more
than the hashing around a scalar multiplication.  No field or group arithmetic
is done in Python.

Guarantees:
- every function takes and returns the 32-byte canonical encodings;
- :func:`scalarmult` and :func:`scalarmult_base` raise
  :class:`~client_sdk.core.errors.InvalidElementError` when libsodium refuses
  (invalid encoding, or a result that is the identity);
- :func:`is_valid_element` is stricter than libsodium's
  ``crypto_core_ristretto255_is_valid_point``: it also refuses the identity,
  which libsodium accepts (its encoding is 32 zero bytes), and enforces every
  RFC 9496 section 4.3.1 decoding rule itself (:func:`is_canonical_encoding`);
- every function that takes an element (:func:`scalarmult`,
  :func:`element_add`, :func:`element_sub`) refuses a non-canonical encoding
  with InvalidElementError before libsodium sees it, so no element reaches the
  group arithmetic that RFC 9496 would not decode;
- :func:`is_strong_ed25519_public_key` refuses small-order and non-canonical
  Ed25519 public keys (RFC 8032 section 5.1.3), for the institution registry.
"""

from __future__ import annotations

import ctypes
import hmac
from typing import Any

from client_sdk.core.errors import ConfigurationError, InvalidElementError

__all__ = [
    "ELEMENT_BYTES",
    "GROUP_ORDER",
    "HASH_BYTES",
    "SCALAR_BYTES",
    "element_add",
    "element_from_hash",
    "element_sub",
    "is_canonical_encoding",
    "is_strong_ed25519_public_key",
    "is_valid_element",
    "libsodium_version",
    "scalar_add",
    "scalar_from_int",
    "scalar_invert",
    "scalar_invert_batch",
    "scalar_is_canonical",
    "scalar_mul",
    "scalar_negate",
    "scalar_random",
    "scalar_reduce",
    "scalar_sub",
    "scalarmult",
    "scalarmult_base",
]

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
HASH_BYTES = 64
# The order of the ristretto255 group (RFC 9496 section 4.1).
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
_IDENTITY = bytes(ELEMENT_BYTES)
# The field prime of Curve25519 / ristretto255 (RFC 9496 section 4; RFC 8032 section 5.1).
FIELD_PRIME = 2**255 - 19

_INSTALL_HINT = (
    "libsodium >= 1.0.18 with ristretto255 is required: install the system library "
    "(Debian/Ubuntu: apt-get install libsodium23; macOS: brew install libsodium)"
)


def _load() -> Any:
    try:
        import pysodium
    except (ImportError, OSError, ValueError) as exc:  # pysodium raises ValueError if not found
        raise ConfigurationError(_INSTALL_HINT) from exc
    lib = pysodium.sodium
    needed = ("crypto_core_ristretto255_from_hash", "crypto_core_ed25519_is_valid_point")
    if not all(hasattr(lib, name) for name in needed):
        raise ConfigurationError(_INSTALL_HINT)
    if lib.sodium_init() < 0:
        raise ConfigurationError("libsodium failed to initialise")
    lib.sodium_version_string.restype = ctypes.c_char_p
    return lib


_lib = _load()


def libsodium_version() -> str:
    return str(_lib.sodium_version_string().decode())


def _buf(n: int) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(n)


def _check_len(data: bytes, n: int, what: str) -> None:
    if len(data) != n:
        raise InvalidElementError(f"{what} must be {n} bytes, got {len(data)}")


# --- group elements ----------------------------------------------------------


def is_canonical_encoding(element: bytes) -> bool:
    """True when ``element`` passes the byte-level checks of RFC 9496 section 4.3.1.

    RFC 9496 section 4.3.1 (Decode) first interprets the 32 bytes as a field
    element ``s`` and fails unless the encoding is canonical and ``s`` is
    non-negative.  Spelled out for little-endian bytes, that is three rules:

    - bit 255 (the top bit of the last byte) is clear: libsodium 1.0.18 masks
      it off and so accepts every element under a second encoding;
    - ``s < p = 2^255 - 19`` (a canonical field element);
    - ``s`` is non-negative, i.e. its low bit is clear (section 4.1: a field
      element is negative when its canonical encoding is odd).

    The remaining rules (``x^2`` a square, ``x*y`` non-negative, ``y != 0``) need
    field arithmetic and are left to libsodium's ``is_valid_point``.  The
    inputs are public group elements, so comparing them as integers leaks
    nothing secret.
    """
    if len(element) != ELEMENT_BYTES or element[31] & 0x80 or element[0] & 1:
        return False
    return int.from_bytes(element, "little") < FIELD_PRIME


def is_valid_element(element: bytes) -> bool:
    """True for the canonical encoding of a non-identity ristretto255 element.

    Every RFC 9496 section 4.3.1 decoding rule is applied: the byte-level ones
    by :func:`is_canonical_encoding` (whatever the libsodium version), the
    curve ones by libsodium.
    """
    if not is_canonical_encoding(element) or hmac.compare_digest(element, _IDENTITY):
        return False
    return bool(_lib.crypto_core_ristretto255_is_valid_point(element) == 1)


def _check_element(element: bytes, what: str = "element") -> None:
    # Applied before libsodium runs any arithmetic on an incoming element, so a
    # second encoding of a valid element (top bit set) never gets evaluated.
    _check_len(element, ELEMENT_BYTES, what)
    if not is_canonical_encoding(element):
        raise InvalidElementError(
            f"{what} is not a canonical ristretto255 encoding (RFC 9496 4.3.1)"
        )


# --- Ed25519 public keys ------------------------------------------------------


def is_strong_ed25519_public_key(key: bytes) -> bool:
    """True for a 32-byte Ed25519 public key that cannot be used to forge signatures.

    Refused: the 8 small-order points in all 14 of their encodings (canonical
    and non-canonical), any ``y >= p`` encoding (RFC 8032 section 5.1.3 step 1
    requires ``y < p``; such keys give one key two names), off-curve
    encodings and points with a small-order component.  With a small-order key
    ``A`` the verification equation ``[S]B = R + [k]A`` holds for ``S = 0`` and
    ``R = -[k]A``, which takes a few tries at most, e.g. ``A = R = (0, 1)``
    (``01 00..00``) and ``S = 0`` verifies for every message.

    libsodium's ``crypto_core_ed25519_is_valid_point`` does exactly these
    checks (its ``ge25519_is_canonical``, its blocklist of small-order
    encodings with the sign bit masked, ``ge25519_is_on_curve`` and
    ``ge25519_is_on_main_subgroup``; see libsodium's ed25519_ref10.c and the
    rationale in "Taming the many EdDSAs", Chalkias et al., 2020).  An honest
    key ``A = [a]B`` always passes.
    """
    if len(key) != 32:
        return False
    return bool(_lib.crypto_core_ed25519_is_valid_point(key) == 1)


def element_from_hash(uniform: bytes) -> bytes:
    """Map 64 uniform bytes to an element (RFC 9496 one-way map)."""
    _check_len(uniform, HASH_BYTES, "hash input")
    out = _buf(ELEMENT_BYTES)
    _lib.crypto_core_ristretto255_from_hash(out, uniform)
    return out.raw


def scalarmult(scalar: bytes, element: bytes) -> bytes:
    """``scalar * element``; refuses invalid encodings and an identity result."""
    _check_len(scalar, SCALAR_BYTES, "scalar")
    _check_element(element)
    out = _buf(ELEMENT_BYTES)
    if _lib.crypto_scalarmult_ristretto255(out, scalar, element) != 0:
        raise InvalidElementError("invalid group element or identity result")
    return out.raw


def scalarmult_base(scalar: bytes) -> bytes:
    """``scalar * G``; refuses the zero scalar (identity result)."""
    _check_len(scalar, SCALAR_BYTES, "scalar")
    out = _buf(ELEMENT_BYTES)
    if _lib.crypto_scalarmult_ristretto255_base(out, scalar) != 0:
        raise InvalidElementError("scalar multiplication gave the identity")
    return out.raw


def element_add(p: bytes, q: bytes) -> bytes:
    """``p + q``; refuses non-canonical or invalid encodings (InvalidElementError)."""
    _check_element(p)
    _check_element(q)
    out = _buf(ELEMENT_BYTES)
    if _lib.crypto_core_ristretto255_add(out, p, q) != 0:
        raise InvalidElementError("invalid group element")
    return out.raw


def element_sub(p: bytes, q: bytes) -> bytes:
    """``p - q``; refuses non-canonical or invalid encodings (InvalidElementError)."""
    _check_element(p)
    _check_element(q)
    out = _buf(ELEMENT_BYTES)
    if _lib.crypto_core_ristretto255_sub(out, p, q) != 0:
        raise InvalidElementError("invalid group element")
    return out.raw


# --- scalars -----------------------------------------------------------------


def scalar_is_canonical(scalar: bytes) -> bool:
    """True when ``scalar`` is 32 bytes encoding an integer below the group order."""
    return len(scalar) == SCALAR_BYTES and int.from_bytes(scalar, "little") < GROUP_ORDER


def scalar_from_int(n: int) -> bytes:
    """The scalar ``n mod L`` (small public integers: holder indices, counts)."""
    return (n % GROUP_ORDER).to_bytes(SCALAR_BYTES, "little")


def scalar_reduce(wide: bytes) -> bytes:
    """Reduce 64 little-endian bytes modulo the group order."""
    _check_len(wide, HASH_BYTES, "wide scalar")
    out = _buf(SCALAR_BYTES)
    _lib.crypto_core_ristretto255_scalar_reduce(out, wide)
    return out.raw


def scalar_random() -> bytes:
    """A uniformly random non-zero scalar (libsodium's CSPRNG)."""
    out = _buf(SCALAR_BYTES)
    while True:
        _lib.crypto_core_ristretto255_scalar_random(out)
        if out.raw != bytes(SCALAR_BYTES):
            return out.raw


def scalar_invert(scalar: bytes) -> bytes:
    _check_len(scalar, SCALAR_BYTES, "scalar")
    out = _buf(SCALAR_BYTES)
    if _lib.crypto_core_ristretto255_scalar_invert(out, scalar) != 0:
        raise InvalidElementError("the zero scalar has no inverse")
    return out.raw


def scalar_invert_batch(scalars: list[bytes]) -> list[bytes]:
    """Invert many scalars with one inversion (Montgomery's trick).

    An inversion costs about as much as a scalar multiplication; a batch of
    ``n`` costs one inversion and ``3(n-1)`` scalar products.  Raises
    InvalidElementError if any scalar is zero.
    """
    if not scalars:
        return []
    prefix = [scalars[0]]
    for s in scalars[1:]:
        prefix.append(scalar_mul(prefix[-1], s))
    inv = scalar_invert(prefix[-1])
    out = [b""] * len(scalars)
    for i in range(len(scalars) - 1, 0, -1):
        out[i] = scalar_mul(inv, prefix[i - 1])
        inv = scalar_mul(inv, scalars[i])
    out[0] = inv
    return out


def _binary(fn: Any, a: bytes, b: bytes) -> bytes:
    _check_len(a, SCALAR_BYTES, "scalar")
    _check_len(b, SCALAR_BYTES, "scalar")
    out = _buf(SCALAR_BYTES)
    fn(out, a, b)
    return out.raw


def scalar_mul(a: bytes, b: bytes) -> bytes:
    return _binary(_lib.crypto_core_ristretto255_scalar_mul, a, b)


def scalar_add(a: bytes, b: bytes) -> bytes:
    return _binary(_lib.crypto_core_ristretto255_scalar_add, a, b)


def scalar_sub(a: bytes, b: bytes) -> bytes:
    return _binary(_lib.crypto_core_ristretto255_scalar_sub, a, b)


def scalar_negate(a: bytes) -> bytes:
    _check_len(a, SCALAR_BYTES, "scalar")
    out = _buf(SCALAR_BYTES)
    _lib.crypto_core_ristretto255_scalar_negate(out, a)
    return out.raw
