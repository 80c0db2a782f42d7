"""Institution credentials: Ed25519 keys and short-lived EdDSA JWTs.

Every call to the hub or a key holder carries ``authorization: Bearer <jwt>``
(DESIGN.md, "Hub and transports").  This module guarantees:

- A key pair is Ed25519; the private key is stored as unencrypted PKCS#8 PEM in
  a file created with mode 0600 (never widened later), the public key as raw
  32 bytes (base64 in the institution registry).
- :func:`mint_jwt` signs with EdDSA only; claims are ``iss`` = ``sub`` = the
  institution id, ``aud`` = the server's audience, ``iat``, ``nbf``, ``exp``
  (at most :data:`MAX_TOKEN_TTL` seconds later) and ``jti``, 128 random bits,
  so every token is single-use at a server that keeps a replay cache.
- :class:`BearerAuth` mints a fresh token for every call, so a retried call
  never reuses a ``jti``; a streaming call's token lives :data:`MAX_TOKEN_TTL`
  seconds (servers end a stream when its token expires).
- :func:`check_public_key` refuses Ed25519 public keys anyone could sign for
  (small-order and non-canonical points); every registry applies it.

Audiences name one server, so a token a key holder saw cannot be replayed at
another server: :data:`HUB_AUDIENCE` for the hub, :func:`keyholder_audience`
for key holder ``i``.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from client_sdk.core.errors import ConfigurationError, InvalidRequest
from client_sdk.core.pinned_keys import check_public_key

__all__ = [
    "HUB_AUDIENCE",
    "JWT_ALGORITHM",
    "MAX_TOKEN_TTL",
    "BearerAuth",
    "InstitutionKey",
    "check_public_key",
    "generate_key",
    "keyholder_audience",
    "load_private_key",
    "mint_jwt",
    "public_key_b64",
    "public_key_bytes",
    "save_private_key",
]

#: The only signature algorithm fraudhub issues or accepts (RFC 8037 Ed25519).
JWT_ALGORITHM = "EdDSA"
#: Longest lifetime of a token, seconds (DESIGN.md: exp <= 5 min).
MAX_TOKEN_TTL = 300
DEFAULT_TOKEN_TTL = 60
HUB_AUDIENCE = "fraudhub:hub"
PRIVATE_KEY_MODE = 0o600


def keyholder_audience(index: int) -> str:
    """The JWT audience of key holder ``index`` (its share index)."""
    return f"fraudhub:keyholder:{index}"


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the OS CSPRNG."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw public key in standard base64, as the institution registry stores it."""
    return base64.b64encode(public_key_bytes(key)).decode("ascii")


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` as PKCS#8 PEM to a NEW file with mode 0600.

    Raises ConfigurationError if ``path`` exists (a key is never overwritten
    by accident).
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        # O_EXCL: refuse to follow or reuse an existing file; the mode is set at
        # creation so the key is never readable by others, even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key PEM; raise ConfigurationError if unusable.

    A key file readable by group or others is refused, like ssh does.
    """
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigurationError(f"key file {path} is accessible by others (mode {mode:o})")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} is not an Ed25519 key")
    return key


def mint_jwt(
    private_key: Ed25519PrivateKey,
    institution_id: str,
    audience: str,
    ttl: int = DEFAULT_TOKEN_TTL,
    *,
    now: float | None = None,
) -> str:
    """A signed EdDSA JWT for one call to the server named by ``audience``.

    Raises InvalidRequest if ``ttl`` is not in 1..MAX_TOKEN_TTL or an id is empty.
    """
    if not 1 <= ttl <= MAX_TOKEN_TTL:
        raise InvalidRequest(f"token lifetime must be 1..{MAX_TOKEN_TTL} seconds")
    if not institution_id or not audience:
        raise InvalidRequest("institution id and audience are required")
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": institution_id,
        "sub": institution_id,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, private_key, algorithm=JWT_ALGORITHM, headers={"typ": "JWT"})


@dataclass(frozen=True)
class InstitutionKey:
    """An institution's identity for signing: its id and Ed25519 private key."""

    institution_id: str
    private_key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def load(cls, institution_id: str, path: Path) -> InstitutionKey:
        """Load the key from ``path``; raises ConfigurationError."""
        return cls(institution_id, load_private_key(path))

    def token(self, audience: str, ttl: int = DEFAULT_TOKEN_TTL) -> str:
        return mint_jwt(self.private_key, self.institution_id, audience, ttl)


@dataclass(frozen=True)
class BearerAuth:
    """Per-call ``authorization`` metadata: a fresh token for every call.

    A unary call's token lives ``ttl`` seconds; a streaming call's lives
    ``stream_ttl`` (default :data:`MAX_TOKEN_TTL`), because servers end a
    stream when its token expires and one bulk window (up to 200,000 items)
    is one stream: it must not be cut off by a token minted for a single call.
    """

    key: InstitutionKey
    audience: str
    ttl: int = DEFAULT_TOKEN_TTL
    clock: Callable[[], float] = field(default=time.time, repr=False)
    stream_ttl: int = MAX_TOKEN_TTL

    def metadata(self, *, streaming: bool = False) -> tuple[tuple[str, str], ...]:
        """The header for one call; ``streaming`` for a call with a request or response stream."""
        token = mint_jwt(
            self.key.private_key,
            self.key.institution_id,
            self.audience,
            self.stream_ttl if streaming else self.ttl,
            now=self.clock(),
        )
        return (("authorization", f"Bearer {token}"),)
