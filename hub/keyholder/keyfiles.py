"""Key files of the threshold OPRF key: one share file per holder and ``public.json``.

Shared by the dealer ceremony (``hub.keyholder.ceremony``), the dealerless one
(``hub.keyholder.dkg_files``), the key holder server and the hub, which reads
only ``public.json``.  Share files are written 0600 and never over an existing file.
"""

from __future__ import annotations

import os
from pathlib import Path

from client_sdk.core.errors import ConfigurationError
from client_sdk.core.threshold import KeyShare, PublicKeyInfo

__all__ = [
    "PUBLIC_NAME",
    "SHARE_NAME",
    "check_share",
    "load_public",
    "load_share",
    "write_private",
]

SHARE_NAME = "share-{index}.json"
PUBLIC_NAME = "public.json"


def write_private(path: Path, text: str) -> None:
    # O_EXCL: a ceremony never silently replaces a holder's existing share.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} already exists; deal into an empty directory") from None
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} file {path}: {exc.strerror}") from None


def load_share(path: Path) -> KeyShare:
    """Load a share file; refuse one readable by group or others."""
    if os.name == "posix" and path.exists() and path.stat().st_mode & 0o077:
        raise ConfigurationError(f"share file {path} must not be readable by others (chmod 600)")
    try:
        return KeyShare.from_json(_read(path, "share"))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def load_public(path: Path) -> PublicKeyInfo:
    """Load and check a public key file."""
    try:
        public = PublicKeyInfo.from_json(_read(path, "public key"))
        public.check_consistent()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    return public


def check_share(share: KeyShare, public: PublicKeyInfo) -> None:
    """Raise ConfigurationError unless ``share`` belongs to ``public``."""
    if (share.epoch, share.threshold, share.holders) != (
        public.epoch,
        public.threshold,
        public.holders,
    ):
        raise ConfigurationError("share and public key are from different ceremonies")
    if share.public_share != public.public_shares.get(share.index):
        raise ConfigurationError(f"share {share.index} does not match its public share")
