"""Witness cosignatures of audit checkpoints: C2SP tlog-cosignature, Ed25519 type.

Format (https://c2sp.org/tlog-cosignature, a https://c2sp.org/signed-note
signature line appended to the checkpoint note)::

    — <witness name> base64(key id (4 bytes) || timestamp (u64 big-endian) || Ed25519 sig (64))

The signed message is ``"cosignature/v1\\n" + "time <timestamp>\\n" +`` the
checkpoint body (every line up to and including the newline before the blank
line).  The key id is ``SHA-256(name || 0x0A || 0x04 || public key)[:4]`` and a
witness's verifier key string is ``<name>+<key id>+base64(0x04 || public key)``:
the signature type byte 0x04 keeps a cosignature key apart from a log key (0x01),
so a log signature can never pass as a cosignature or the other way round.

Guarantees: :func:`check_quorum` counts a witness only if a cosignature line
with its name and key id verifies over the checkpoint body; every missing or
bad cosignature is named (witness, key id, why), and a checkpoint with fewer
than ``quorum`` valid ones raises :class:`~client_sdk.core.errors.CheckpointError`.
A witness key pinned twice (even under two names) is a ConfigurationError, so
one witness never counts twice; a weak (small-order or non-canonical) witness
key is refused when it is pinned, since anyone could forge its cosignatures.

Freshness (review-2, S1): a checkpoint stays validly cosigned forever, so a hub
could keep serving one regulator an old cosigned checkpoint and hide every
later event from it.  With ``max_age``, :func:`check_quorum` counts a
witness only if its newest valid cosignature's timestamp is at most
``max_age`` seconds before ``now``; a stale one is named with its age.  The
hub re-asks witnesses for the same head well before that
(``hub.services.witnesses``), and witnesses re-cosign an unchanged head with a
new timestamp, so an honest hub always has fresh cosignatures.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from client_sdk.core.errors import CheckpointError, ConfigurationError
from hub.audit.checkpoint import (
    NoteSignature,
    check_key_name,
    check_pinned_key,
    key_id,
    parse_verifier_key,
    split_note,
    verifier_key,
)

__all__ = [
    "COSIGNATURE_TYPE",
    "DEFAULT_MAX_AGE",
    "MAX_TIMESTAMP",
    "CosignatureVerifier",
    "Cosigner",
    "QuorumResult",
    "check_quorum",
    "cosigned_message",
    "with_cosignatures",
]

#: The signed-note signature type of an Ed25519 cosignature/v1.
COSIGNATURE_TYPE = 0x04
#: tlog-cosignature: the timestamp MUST NOT exceed 2^63 - 1.
MAX_TIMESTAMP = 2**63 - 1
#: How old (seconds) the cosignatures a regulator counts may be, by default:
#: one day (``fraudhub audit verify --max-age``).
DEFAULT_MAX_AGE = 86_400
_TIMESTAMP_BYTES = 8
_SIGNATURE_BYTES = 64


def _when(timestamp: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"time {timestamp}"


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What an Ed25519 cosignature/v1 signs: header line, time line, checkpoint body.

    Raises CheckpointError if the body does not end in a newline or the
    timestamp is out of range.
    """
    if not body.endswith("\n"):
        raise CheckpointError("a checkpoint body must end with a newline")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CheckpointError(f"a cosignature timestamp must be in [0, 2^63-1], got {timestamp}")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


class Cosigner:
    """A witness's Ed25519 cosigning key under the key name ``name``."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        check_key_name(name)
        self.name = name
        self._private_key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id(name, self.public_key, COSIGNATURE_TYPE)

    def verifier_key(self) -> str:
        """The verifier key string regulators pin (``--witness``)."""
        return verifier_key(self.name, self.public_key, COSIGNATURE_TYPE)

    def cosign(self, body: str, timestamp: int) -> NoteSignature:
        """The cosignature of checkpoint ``body`` at POSIX time ``timestamp``."""
        signature = self._private_key.sign(cosigned_message(body, timestamp))
        return NoteSignature(
            self.name, self.key_id, timestamp.to_bytes(_TIMESTAMP_BYTES, "big") + signature
        )


class CosignatureVerifier:
    """A pinned witness key: checks cosignatures by that witness only."""

    def __init__(self, name: str, public_key: bytes) -> None:
        check_key_name(name)
        # A small-order key "verifies" a cosignature anyone can forge, so a
        # regulator pinning one would count the hub's own forgeries (ADR 0011).
        check_pinned_key(name, public_key)
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, public_key, COSIGNATURE_TYPE)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def from_verifier_key(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``name+keyid+base64(0x04 || key)``; raises ConfigurationError."""
        name, public_key = parse_verifier_key(vkey, COSIGNATURE_TYPE)
        return cls(name, public_key)

    def verifier_key(self) -> str:
        return verifier_key(self.name, self.public_key, COSIGNATURE_TYPE)

    def label(self) -> str:
        """How messages name this witness: ``name (keyid)``."""
        return f"{self.name} ({self.key_id.hex()})"

    def matches(self, signature: NoteSignature) -> bool:
        return signature.name == self.name and hmac.compare_digest(signature.key_id, self.key_id)

    def verify(self, body: str, signature: NoteSignature) -> int:
        """The timestamp of a valid cosignature of ``body``.

        Raises CheckpointError if the line is not this witness's, has the wrong
        length, or its signature does not verify.
        """
        if not self.matches(signature):
            raise CheckpointError(f"the line is not a cosignature by witness {self.label()}")
        if len(signature.signature) != _TIMESTAMP_BYTES + _SIGNATURE_BYTES:
            raise CheckpointError(
                f"the cosignature by witness {self.label()} is "
                f"{len(signature.signature)} bytes, not a timestamp and an Ed25519 signature"
            )
        timestamp = int.from_bytes(signature.signature[:_TIMESTAMP_BYTES], "big")
        try:
            self._key.verify(
                signature.signature[_TIMESTAMP_BYTES:], cosigned_message(body, timestamp)
            )
        except InvalidSignature as exc:
            raise CheckpointError(
                f"the cosignature by witness {self.label()} does not verify over this checkpoint"
            ) from exc
        return timestamp


@dataclass(frozen=True)
class QuorumResult:
    """Which pinned witnesses cosigned a checkpoint, and why the others did not count."""

    cosigned: tuple[str, ...]
    problems: tuple[str, ...]

    def describe(self) -> str:
        return "; ".join(self.problems) if self.problems else "all witnesses cosigned"


def check_quorum(
    note: str,
    witnesses: Sequence[CosignatureVerifier],
    quorum: int,
    *,
    now: int | None = None,
    max_age: int | None = None,
) -> QuorumResult:
    """Count the valid cosignatures of ``note`` by the pinned ``witnesses``.

    Lines by other keys are ignored (signed-note).  With ``max_age`` (seconds;
    ``now`` is POSIX time, required then) a witness counts only if its newest
    valid cosignature is at most that old.  Raises CheckpointError if fewer
    than ``quorum`` witnesses count; the message names every witness that is
    missing, whose cosignature is bad, or whose newest one is stale, and why.
    """
    if max_age is not None and (now is None or max_age < 1):
        raise ConfigurationError("a cosignature max age needs the current time and >= 1 second")
    if not 0 <= quorum <= len(witnesses):
        raise ConfigurationError(
            f"a witness quorum of {quorum} cannot be met by {len(witnesses)} pinned witness(es)"
        )
    seen: dict[bytes, str] = {}
    for witness in witnesses:
        # One witness counts once, whatever names its key is pinned under.
        if witness.public_key in seen:
            raise ConfigurationError(
                f"witness key of {witness.label()} is pinned more than once "
                f"(also as {seen[witness.public_key]}); each witness counts once "
                "toward the quorum"
            )
        seen[witness.public_key] = witness.label()
    body, signatures = split_note(note)
    cosigned: list[str] = []
    problems: list[str] = []
    for witness in witnesses:
        lines = [s for s in signatures if witness.matches(s)]
        if not lines:
            problems.append(f"witness {witness.label()}: no cosignature")
            continue
        errors: list[str] = []
        newest: int | None = None
        for line in lines:
            try:
                timestamp = witness.verify(body, line)
            except CheckpointError as exc:
                errors.append(str(exc))
                continue
            newest = timestamp if newest is None else max(newest, timestamp)
        if newest is None:
            problems.append(f"witness {witness.label()}: bad cosignature ({errors[0]})")
        elif max_age is not None and now is not None and now - newest > max_age:
            problems.append(
                f"witness {witness.label()}: stale cosignature (its newest is from "
                f"{_when(newest)}, {now - newest} s old; max age {max_age} s)"
            )
        else:
            cosigned.append(witness.label())
    result = QuorumResult(tuple(cosigned), tuple(problems))
    if len(cosigned) < quorum:
        fresh = f" at most {max_age} s old" if max_age is not None else ""
        raise CheckpointError(
            f"missing witness quorum: {len(cosigned)} of the required {quorum} witness "
            f"cosignature(s) verify{fresh and ' and are' + fresh} ({result.describe()})"
        )
    return result


def with_cosignatures(note: str, cosignatures: Sequence[NoteSignature]) -> str:
    """``note`` with the cosignature lines appended (duplicates of its own lines dropped)."""
    _, existing = split_note(note)
    extra = "".join(c.line() for c in cosignatures if c not in existing)
    return note + extra
