"""Key ceremony (v1, trusted dealer): ``fraudhub keys deal`` and ``fraudhub keys check``.

(The dealerless ceremony, ``keys dkg`` and ``keys refresh``, is
``hub.keyholder.dkg_cli``; it writes the same files.)

``deal`` makes a fresh OPRF key, splits it t-of-n (``client_sdk.core.threshold``),
writes one share file per holder (mode 0600, created exclusively so an existing
share is never overwritten) and ``public.json`` (the group key and every
public share, which clients pin to verify the holders' proofs).  The key
itself is never written.  ``check`` confirms that a share file belongs to a
public key file (its public share matches and the public shares are
consistent with the group key).

Rotation: run ``deal`` again with ``--epoch`` one higher into a new directory;
tokens carry their key epoch, so old and new tokens are told apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError
from client_sdk.core.threshold import MAX_HOLDERS, check_params, deal
from hub.infra.argtypes import positive_int
from hub.infra.privatefiles import private_directory
from hub.keyholder.keyfiles import (
    PUBLIC_NAME,
    SHARE_NAME,
    check_share,
    load_public,
    load_share,
    write_private,
)

__all__ = ["deal_to_directory", "register"]


def deal_to_directory(
    threshold: int, holders: int, out: Path, *, epoch: int = 1
) -> tuple[list[Path], Path]:
    """Run the ceremony; return the share file paths and the public file path.

    All or nothing: the files are written in a staging directory inside ``out``
    and linked into place (never over an existing file), ``public.json`` last;
    if anything fails, none of them is left in ``out``.
    """
    private_directory(out)
    public_path = out / PUBLIC_NAME
    if public_path.exists():
        raise ConfigurationError(f"{public_path} already exists; deal into an empty directory")
    shares, public = deal(threshold, holders, epoch=epoch)
    staging = Path(tempfile.mkdtemp(prefix=".deal-", dir=out))
    placed: list[Path] = []
    try:
        names = [SHARE_NAME.format(index=share.index) for share in shares]
        for name, share in zip(names, shares, strict=True):
            write_private(staging / name, share.to_json())
        (staging / PUBLIC_NAME).write_text(public.to_json() + "\n")
        for name in [*names, PUBLIC_NAME]:
            _place(staging / name, out / name)
            placed.append(out / name)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return placed[:-1], public_path


def _place(staged: Path, target: Path) -> None:
    """Put ``staged`` at ``target``, never over an existing file."""
    try:
        os.link(staged, target)
        return
    except FileExistsError:
        raise ConfigurationError(f"{target} already exists; deal into an empty directory") from None
    except OSError:
        pass  # no hard links here (vfat, exFAT, some network mounts): copy instead
    mode = staged.stat().st_mode & 0o777
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigurationError(f"{target} already exists; deal into an empty directory") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(staged.read_bytes())


# --- CLI -------------------------------------------------------------------------

_holders = positive_int(MAX_HOLDERS)


def _cmd_deal(args: argparse.Namespace) -> int:
    if args.threshold > args.holders:
        raise ConfigurationError("--threshold cannot exceed --holders")
    check_params(args.threshold, args.holders)  # refuses 1-of-n, n > 1, before any file
    paths, public = deal_to_directory(args.threshold, args.holders, args.out, epoch=args.epoch)
    print(f"dealt a {args.threshold}-of-{args.holders} key (epoch {args.epoch}):")
    for p in paths:
        print(f"  share  {p}  (give to exactly one key holder; mode 0600)")
    print(f"  public {public}  (give to every client and holder)")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    share = load_share(args.share_file)
    public = load_public(args.public_file)
    check_share(share, public)
    print(
        f"ok: share {share.index} of a {public.threshold}-of-{public.holders} key, "
        f"epoch {public.epoch}"
    )
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="OPRF key ceremony (deal and check key shares)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("deal", help="make a new OPRF key and split it t-of-n")
    p.add_argument("--threshold", "-t", type=_holders, required=True)
    p.add_argument("--holders", "-n", type=_holders, required=True)
    p.add_argument("--epoch", type=positive_int(), default=1, help="key epoch (rotation counter)")
    p.add_argument("--out", type=Path, required=True, help="directory for the files")
    p.set_defaults(func=_cmd_deal)
    c = ksub.add_parser("check", help="check that a share file belongs to a public key file")
    c.add_argument("share_file", type=Path)
    c.add_argument("public_file", type=Path)
    c.set_defaults(func=_cmd_check)
    # Imported here: dkg_cli builds on this module's file helpers.
    from hub.keyholder import dkg_cli

    dkg_cli.register(ksub)
