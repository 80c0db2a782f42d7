"""Private files the hub and the regulator keep on disk: the hub's Ed25519 log
key and the regulator's verified-checkpoint state; and the one way every
state file (databases, key holder state, registries) is created private.

The pure audit package (:mod:`hub.audit`) formats and checks what these files
hold; this module is the only place that touches the file system for them.

Guarantees: files are created mode 0600, the directories made for them 0700
(:func:`private_directory`, :func:`create_private_file`); a key is never silently replaced
(O_EXCL, so two hubs starting at once agree on one key); a state file is
replaced atomically (temporary file and rename), so a crash leaves the old
state or the new one, never half of either.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.core.errors import ConfigurationError

__all__ = [
    "LOG_KEY_FILENAME",
    "create_private_file",
    "load_or_create_log_key",
    "private_directory",
    "write_private_atomically",
]

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_directory(path: Path) -> Path:
    """Make ``path`` and any missing parents, each new one mode 0700; return ``path``.

    A directory that already exists keeps its mode: it is the operator's.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    return path


def create_private_file(path: Path) -> None:
    """Create ``path`` empty, mode 0600, in a private directory, unless it exists.

    SQLite gives a database's -wal and -shm files the database file's mode, so
    creating the file first keeps all three private.
    """
    private_directory(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))


#: The hub's audit log signing key in its data directory.
LOG_KEY_FILENAME = "log-key.pem"


def load_or_create_log_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the hub's Ed25519 log key (PKCS#8 PEM), creating it (mode 0600) if missing.

    Raises ConfigurationError if the file exists but is not an Ed25519 private key.
    """
    key_path = Path(path)
    if not key_path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        private_directory(key_path.parent)
        # O_EXCL: two processes starting at once must not both write a key.
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            return load_or_create_log_key(key_path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return key
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"log key {key_path} is not an unencrypted PEM key") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigurationError(f"log key {key_path} is not an Ed25519 key")
    return loaded


def write_private_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temporary file and rename), mode 0600."""
    private_directory(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
