"""C2SP signed-note / tlog-checkpoint signing and verification (hub.audit.checkpoint)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.core.errors import CheckpointError, ConfigurationError
from hub.audit.checkpoint import (
    Checkpoint,
    LogSigner,
    LogVerifier,
    key_id,
    open_checkpoint,
    parse_checkpoint_body,
)
from hub.infra.privatefiles import load_or_create_log_key

ORIGIN = "fraudhub.test/audit"
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture
def signer() -> LogSigner:
    return LogSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def test_note_layout_is_c2sp(signer: LogSigner) -> None:
    note = signer.sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT))
    body, signatures = note.split("\n\n")
    assert body == f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}"
    assert signatures.startswith(f"\u2014 {ORIGIN} ")
    assert signatures.endswith("\n") and signatures.count("\n") == 1
    blob = base64.b64decode(signatures.split(" ")[2])
    assert len(blob) == 4 + 64
    # signed-note key id: SHA-256(name || 0x0A || 0x01 || public key)[:4]
    assert blob[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + signer.public_key).digest()[:4]


def test_roundtrip_through_pinned_verifier_key(signer: LogSigner) -> None:
    note = signer.sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT))
    verifier = LogVerifier.from_verifier_key(signer.verifier_key())
    assert open_checkpoint(note, verifier, origin=ORIGIN) == Checkpoint(ORIGIN, 7, ROOT)


def test_go_note_verifier_key_format(signer: LogSigner) -> None:
    name, hex_id, key = signer.verifier_key().split("+", 2)
    assert name == ORIGIN
    assert bytes.fromhex(hex_id) == key_id(ORIGIN, signer.public_key)
    assert base64.b64decode(key) == b"\x01" + signer.public_key


def test_bad_signature_is_named(signer: LogSigner) -> None:
    note = signer.sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT))
    tampered = note.replace("\n7\n", "\n8\n")
    with pytest.raises(CheckpointError, match="bad signature"):
        open_checkpoint(tampered, LogVerifier.from_verifier_key(signer.verifier_key()))


def test_unknown_key_is_named(signer: LogSigner) -> None:
    other = LogSigner(ORIGIN, Ed25519PrivateKey.generate())
    note = other.sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT))
    with pytest.raises(CheckpointError, match="unknown key"):
        open_checkpoint(note, LogVerifier.from_verifier_key(signer.verifier_key()))


def test_foreign_signatures_are_ignored(signer: LogSigner) -> None:
    witness = LogSigner("witness.example", Ed25519PrivateKey.generate())
    note = signer.sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT))
    cosigned = note + witness.sign_note(Checkpoint(ORIGIN, 7, ROOT).body()).split("\n\n")[1]
    verifier = LogVerifier.from_verifier_key(signer.verifier_key())
    assert open_checkpoint(cosigned, verifier).size == 7


def test_wrong_origin(signer: LogSigner) -> None:
    note = signer.sign_checkpoint(Checkpoint("other.log", 7, ROOT))
    verifier = LogVerifier.from_verifier_key(signer.verifier_key())
    with pytest.raises(CheckpointError, match="not the expected"):
        open_checkpoint(note, verifier, origin=ORIGIN)


def test_same_key_under_another_name_is_unknown(signer: LogSigner) -> None:
    renamed = LogSigner("other.log", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    note = renamed.sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT))
    with pytest.raises(CheckpointError, match="unknown key"):
        open_checkpoint(note, LogVerifier(ORIGIN, signer.public_key))


@pytest.mark.parametrize(
    "text",
    [
        "origin\n7\n",
        "\n7\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n07\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n-1\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n7\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
        "origin\n7\nnot base64!\n",
    ],
)
def test_malformed_bodies(text: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint_body(text)


def test_extension_lines_are_allowed() -> None:
    text = "origin\n7\n" + base64.b64encode(ROOT).decode() + "\nextension line\n"
    assert parse_checkpoint_body(text).size == 7


@pytest.mark.parametrize("vkey", ["a+b", "name+zz+AQ==", "name+00000000+AQ==", ""])
def test_malformed_verifier_keys(vkey: str) -> None:
    with pytest.raises(ConfigurationError):
        LogVerifier.from_verifier_key(vkey)


def test_verifier_key_with_wrong_id(signer: LogSigner) -> None:
    name, _, key = signer.verifier_key().split("+", 2)
    with pytest.raises(ConfigurationError, match="key id"):
        LogVerifier.from_verifier_key(f"{name}+00000000+{key}")


def test_load_or_create_log_key(tmp_path: Path) -> None:
    path = tmp_path / "data" / "log-key.pem"
    first = load_or_create_log_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_or_create_log_key(path)
    assert LogSigner("n", first).public_key == LogSigner("n", again).public_key
    path.write_text("not a key")
    with pytest.raises(ConfigurationError):
        load_or_create_log_key(path)
