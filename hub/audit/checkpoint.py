"""Signed checkpoints of the audit log: C2SP tlog-checkpoint in a C2SP signed note.

Formats (https://c2sp.org/tlog-checkpoint, https://c2sp.org/signed-note)::

    <origin>\\n
    <tree size, decimal>\\n
    <root hash, base64 (std, padded)>\\n
    \\n
    — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\\n

The signed message is the note text: every byte up to and including the newline
before the blank line.  The key id of an Ed25519 key is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` and its verifier key string
is ``<name>+<key id, 8 hex>+<base64(0x01 || public key)>`` (the Go
``golang.org/x/mod/sumdb/note`` encoding), which a regulator pins.

Guarantees: :func:`open_checkpoint` returns a checkpoint only if a signature by
the pinned key verifies; otherwise it raises :class:`CheckpointError` saying
whether the note is malformed, signed only by unknown keys, or badly signed.
Signatures from other keys are ignored, as signed-note requires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from client_sdk.core.errors import CheckpointError, ConfigurationError
from client_sdk.core.pinned_keys import check_public_key

__all__ = [
    "Checkpoint",
    "LogSigner",
    "LogVerifier",
    "NoteSignature",
    "check_key_name",
    "check_pinned_key",
    "key_id",
    "open_checkpoint",
    "parse_checkpoint_body",
    "parse_verifier_key",
    "split_note",
    "verifier_key",
]

_ALG_ED25519 = 0x01
_SIG_PREFIX = "\u2014 "  # em dash and space, per signed-note
_NAME = re.compile(r"[^\s+]+")
_HASH_SIZE = 32


def key_id(name: str, public_key: bytes, signature_type: int = _ALG_ED25519) -> bytes:
    """The 4-byte signed-note key id of a key of ``signature_type`` (0x01: Ed25519 note
    signatures; 0x04: Ed25519 cosignatures, C2SP tlog-cosignature)."""
    material = name.encode() + b"\n" + bytes([signature_type]) + public_key
    return hashlib.sha256(material).digest()[:4]


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a signed note: key name, key id and the rest of the blob."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_SIG_PREFIX}{self.name} {blob}\n"


def split_note(note: str) -> tuple[str, list[NoteSignature]]:
    """The text of a signed note (ending in its newline) and its signature lines.

    Raises CheckpointError if the note has no signature block or a signature
    line is malformed (no em dash, not base64, shorter than a key id and one byte).
    """
    text, sep, block = note.rpartition("\n\n")
    if not sep or not block.endswith("\n"):
        raise CheckpointError("signed note has no signature block")
    signatures: list[NoteSignature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError("signed note has a malformed signature line")
        name, _, blob_text = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except binascii.Error as exc:
            raise CheckpointError("signed note has a signature that is not base64") from exc
        if len(blob) < 5:
            raise CheckpointError("signed note has a truncated signature")
        signatures.append(NoteSignature(name, blob[:4], blob[4:]))
    return text + "\n", signatures


def check_key_name(name: str) -> None:
    """Raise ConfigurationError unless ``name`` is a valid signed-note key name."""
    if not _NAME.fullmatch(name):
        raise ConfigurationError("a signed-note key name must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: ``size`` leaves with RFC 9162 root ``root_hash``, named by ``origin``."""

    origin: str
    size: int
    root_hash: bytes

    def body(self) -> str:
        """The checkpoint note text (what is signed)."""
        root = base64.b64encode(self.root_hash).decode()
        return f"{self.origin}\n{self.size}\n{root}\n"


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Parse the note text of a checkpoint; extension lines are allowed and ignored.

    Raises CheckpointError if the origin, size or root hash line is malformed.
    """
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("checkpoint text must have origin, size and root hash lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise CheckpointError("checkpoint origin line is empty")
    if (
        not size_text.isascii()
        or not size_text.isdigit()
        or (len(size_text) > 1 and size_text[0] == "0")
    ):
        raise CheckpointError("checkpoint size line is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise CheckpointError("checkpoint root hash line is not base64") from exc
    if len(root) != _HASH_SIZE:
        raise CheckpointError("checkpoint root hash is not 32 bytes")
    return Checkpoint(origin, int(size_text), root)


def check_pinned_key(name: str, public_key: bytes) -> None:
    """The shared weak-key check (a small-order key "verifies" forged signatures, ADR 0011)."""
    try:
        check_public_key(public_key)
    except ConfigurationError as exc:
        raise ConfigurationError(f"the key of {name}: {exc}") from None


def verifier_key(name: str, public_key: bytes, signature_type: int = _ALG_ED25519) -> str:
    """The signed-note verifier key string ``name+keyid+base64(type || key)``."""
    encoded = base64.b64encode(bytes([signature_type]) + public_key).decode()
    return f"{name}+{key_id(name, public_key, signature_type).hex()}+{encoded}"


def parse_verifier_key(vkey: str, signature_type: int = _ALG_ED25519) -> tuple[str, bytes]:
    """The key name and 32-byte Ed25519 public key of a verifier key of ``signature_type``.

    Raises ConfigurationError if it is malformed, of another type, or its key id
    does not match its name and key.
    """
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise ConfigurationError("a verifier key is name+keyid+base64(key)")
    name, id_hex, key_b64 = parts
    check_key_name(name)
    try:
        raw = base64.b64decode(key_b64, validate=True)
        expected_id = bytes.fromhex(id_hex)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError("a verifier key has a malformed key id or key") from exc
    if len(raw) != 33 or raw[0] != signature_type:
        raise ConfigurationError(
            f"the verifier key is not an Ed25519 key of signature type 0x{signature_type:02x}"
        )
    if not hmac.compare_digest(key_id(name, raw[1:], signature_type), expected_id):
        raise ConfigurationError("the verifier key's key id does not match its key")
    return name, raw[1:]


class LogSigner:
    """Signs checkpoints with the hub's Ed25519 log key under the key name ``name``."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        check_key_name(name)
        self.name = name
        self._private_key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id(name, self.public_key)

    def verifier_key(self) -> str:
        """The verifier key string a regulator pins (``name+keyid+base64key``)."""
        return verifier_key(self.name, self.public_key)

    def sign_note(self, text: str) -> str:
        """The signed note: ``text`` (ending in a newline), a blank line, one signature line."""
        if not text.endswith("\n"):
            raise CheckpointError("a note text must end with a newline")
        signature = self._private_key.sign(text.encode())
        blob = base64.b64encode(self.key_id + signature).decode()
        return f"{text}\n{_SIG_PREFIX}{self.name} {blob}\n"

    def sign_checkpoint(self, checkpoint: Checkpoint) -> str:
        return self.sign_note(checkpoint.body())


class LogVerifier:
    """A pinned log key: verifies signed notes made by that key only."""

    def __init__(self, name: str, public_key: bytes) -> None:
        check_key_name(name)
        check_pinned_key(name, public_key)
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    def verifier_key(self) -> str:
        """This key as a ``name+keyid+base64key`` string."""
        return verifier_key(self.name, self.public_key)

    @classmethod
    def from_verifier_key(cls, vkey: str) -> LogVerifier:
        """Parse ``name+keyid+base64key``; raises ConfigurationError if malformed."""
        name, public_key = parse_verifier_key(vkey, _ALG_ED25519)
        return cls(name, public_key)

    def verify_note(self, note: str) -> str:
        """Return the note text if a signature by this key verifies.

        Raises CheckpointError: malformed note, no signature by this key (unknown
        key), or a signature by this key that does not verify (bad signature).
        """
        text, signatures = split_note(note)
        seen_names: list[str] = []
        for signature in signatures:
            seen_names.append(f"{signature.name} ({signature.key_id.hex()})")
            if signature.name != self.name or not hmac.compare_digest(
                signature.key_id, self.key_id
            ):
                continue
            try:
                self._key.verify(signature.signature, text.encode())
            except InvalidSignature as exc:
                raise CheckpointError(
                    f"bad signature: the checkpoint signature by key {self.name} "
                    f"({self.key_id.hex()}) does not verify"
                ) from exc
            return text
        raise CheckpointError(
            f"unknown key: the checkpoint is signed by {', '.join(seen_names) or 'no key'}, "
            f"not by the pinned log key {self.name} ({self.key_id.hex()})"
        )


def open_checkpoint(note: str, verifier: LogVerifier, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint against the pinned key and parse it.

    Raises CheckpointError (see :meth:`LogVerifier.verify_note`), or if ``origin``
    is given and the checkpoint names another log.
    """
    checkpoint = parse_checkpoint_body(verifier.verify_note(note))
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint is for log {checkpoint.origin!r}, not the expected {origin!r}"
        )
    return checkpoint
