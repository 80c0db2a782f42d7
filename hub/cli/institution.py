"""``fraudhub institution ...``: the one ``institution`` command group.

There is exactly one ``institution`` parser: :func:`register` creates it
and adds ``keygen``; the hub's registry actions (``add``, ``list``,
``disable``, ``export``, implemented in ``hub.cli.serve``) are added to the
same group by :func:`register`.

``keygen`` makes an institution's Ed25519 key pair: the private key as PEM
(mode 0600, never overwritten) and the public key, raw 32 bytes in base64,
in ``<out>.pub`` and on stdout: that is what the hub operator registers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from client_sdk.wire.auth import generate_key, public_key_b64, save_private_key

__all__ = ["register"]


def _cmd_keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    key = generate_key()
    save_private_key(key, out)
    public = public_key_b64(key)
    pub_path = out.with_name(out.name + ".pub")
    pub_path.write_text(public + "\n")
    print(f"private key: {out} (mode 0600; keep it at the institution)")
    print(f"public key:  {pub_path}")
    print(f"public_key (base64, register it at the hub): {public}")
    return 0


def register(sub: Any) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add the ``institution`` group; returns its sub-parsers for more actions."""
    group = sub.add_parser("institution", help="institution keys and registry")
    actions: argparse._SubParsersAction[argparse.ArgumentParser] = group.add_subparsers(
        dest="institution_command", metavar="ACTION", required=True
    )
    keygen = actions.add_parser("keygen", help="make an institution's Ed25519 signing key")
    keygen.add_argument(
        "--out", type=Path, required=True, help="private key file to create (PEM, mode 0600)"
    )
    keygen.set_defaults(func=_cmd_keygen)
    from hub.cli.serve import register_institution_actions

    register_institution_actions(actions)
    return actions
