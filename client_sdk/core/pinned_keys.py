"""The one weak-key check every Ed25519 public key passes before it is trusted.

Institution keys (registration, every registry), the hub's log key, witness
cosignature keys and DKG participants' signing keys all go through
:func:`check_public_key`; ``client_sdk.wire.auth`` re-exports it for callers
at the transport edge.  Pure: no I/O.
"""

from __future__ import annotations

from client_sdk.core import _sodium as sodium
from client_sdk.core.errors import ConfigurationError

__all__ = ["check_public_key"]


def check_public_key(raw: bytes) -> None:
    """Refuse a raw Ed25519 public key that would let anyone sign as its owner.

    A key must be 32 bytes encoding a point of the prime-order subgroup, in
    its canonical encoding (RFC 8032 section 5.1.3: ``y < p``).  A small-order
    key such as ``01 00..00`` (the identity) verifies the signature
    ``01 00..00 || 00..00`` on every message with RFC 8032's cofactorless
    check, which OpenSSL and so ``cryptography`` implement; the check itself is
    libsodium's (``client_sdk.core._sodium.is_strong_ed25519_public_key``).
    The key is public, so the message may name the problem but the caller
    names the owner.  Raises ConfigurationError.
    """
    if len(raw) != 32:
        raise ConfigurationError("public key must be 32 bytes")
    if not sodium.is_strong_ed25519_public_key(raw):
        raise ConfigurationError(
            "public key is a weak Ed25519 key (small-order, non-canonical or off the "
            "prime-order subgroup); generate one with 'fraudhub institution keygen'"
        )
