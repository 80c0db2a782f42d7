"""Encrypting a short message to one party's ristretto255 key (sans-IO).

Used by the distributed key generation (``client_sdk.core.dkg`` and its file
transport) to send each holder its secret shares through a shared directory
that everybody can read.  This is a sibling of ``client_sdk.core.tokens``: the
group operations go through ``_sodium``; HKDF and the AEAD are
``cryptography``'s.

Construction (an ECIES/HPKE-base-mode shape): the recipient's key pair is
``(e, E = e*G)``; the sender picks a fresh scalar ``r`` and sends
``R = r*G || ChaCha20-Poly1305(key, nonce=0, plaintext, aad)`` where
``key = HKDF-SHA256(ikm = r*E, salt = R || E, info = ENVELOPE_INFO)``.  Every
message has a fresh key, so the fixed nonce is used once per key.

Guarantees: only the holder of ``e`` can open a message; any change to the
ciphertext, the associated data or the recipient key raises one opaque
:class:`EnvelopeError`.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client_sdk.core import _sodium as sodium
from client_sdk.core.errors import EnvelopeError, InvalidElementError

__all__ = [
    "ENVELOPE_INFO",
    "EnvelopeError",  # defined in client_sdk.core.errors (the wire registry)
    "open_envelope",
    "seal_envelope",
]

ENVELOPE_INFO = b"fraudhub/v1/envelope"
_NONCE = bytes(12)
_OVERHEAD = sodium.ELEMENT_BYTES + 16


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    hkdf = HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=ENVELOPE_INFO)
    return hkdf.derive(shared)


def seal_envelope(recipient_public: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` to ``recipient_public``; raise InvalidElementError for a bad key."""
    if not sodium.is_valid_element(recipient_public):
        raise InvalidElementError("recipient key is not a valid ristretto255 element")
    r = sodium.scalar_random()
    ephemeral = sodium.scalarmult_base(r)
    key = _key(sodium.scalarmult(r, recipient_public), ephemeral, recipient_public)
    return ephemeral + ChaCha20Poly1305(key).encrypt(_NONCE, plaintext, aad)


def open_envelope(secret: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt an envelope sealed to ``secret * G``; raise EnvelopeError on any mismatch."""
    if len(sealed) < _OVERHEAD:
        raise EnvelopeError("envelope cannot be opened")
    ephemeral = sealed[: sodium.ELEMENT_BYTES]
    try:
        shared = sodium.scalarmult(secret, ephemeral)
        key = _key(shared, ephemeral, sodium.scalarmult_base(secret))
        return ChaCha20Poly1305(key).decrypt(_NONCE, sealed[sodium.ELEMENT_BYTES :], aad)
    except (InvalidTag, InvalidElementError):
        raise EnvelopeError("envelope cannot be opened") from None
