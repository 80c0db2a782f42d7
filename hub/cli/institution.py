"""``fraudhub institution ...``: the one ``institution`` command group.

There is exactly one ``institution`` parser: :func:`register` creates it
with ``keygen`` and the hub's registry actions ``add``, ``list``,
``disable``, ``enable``, ``rotate-key`` and ``export``.

``keygen`` makes an institution's Ed25519 key pair: the private key as PEM
(mode 0600, never overwritten) and the public key, raw 32 bytes in base64,
in ``<out>.pub`` and on stdout: that is what the hub operator registers.

``add|list|disable|enable|rotate-key|export`` work on the hub's database directly (the
operator's bootstrap path: the first operator institution cannot be
registered over an authenticated RPC).  Each change is appended to the audit
log as done by the local operator (``local-operator``), in the same
transaction as the change.  ``export`` writes the JSON registry that key
holders read (``hub.wire.auth.JsonFileRegistry``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from client_sdk.wire.auth import generate_key, public_key_b64, public_key_bytes, save_private_key
from hub.cli.database import add_database_arguments, open_store
from hub.infra.argtypes import public_key_option
from hub.infra.privatefiles import write_private_atomically
from hub.keyholder.admission import fingerprint
from hub.services.admin import (
    add_institution_locally,
    disable_institution_locally,
    enable_institution_locally,
    rotate_institution_key_locally,
)
from hub.storage.models import Institution, utcnow
from hub.storage.registry import to_registered
from hub.storage.store import list_institutions
from hub.wire.auth import ROLES, dump_registry

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
    print(f"public_key (base64, register it at the hub and each key holder): {public}")
    # Operators read this to the institution over another channel before admitting it.
    print(f"key fingerprint: {fingerprint(public_key_bytes(key))}")
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
    _register_registry_actions(actions)
    return actions


# --- institution add | list | disable | enable | rotate-key | export --------------------------


def _public_key(args: argparse.Namespace) -> bytes:
    return public_key_option(args.public_key, args.public_key_file)


def _cmd_add(args: argparse.Namespace) -> int:
    row = Institution(
        id=args.id,
        role=args.role,
        public_key=_public_key(args),
        display_name=args.name or args.id,
        created_at=utcnow(),
    )
    to_registered(row)  # validates id, role and key length (ConfigurationError)
    store = open_store(args, create=True)
    try:
        add_institution_locally(store, row, "cli")
    finally:
        store.dispose()
    print(f"registered {row.id} ({row.role})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args)
    with store.session() as session:
        rows = list_institutions(session, include_disabled=args.all)
    store.dispose()
    print(f"{'id':<24} {'role':<10} {'status':<9} name")
    for row in rows:
        status = "enabled" if row.enabled else "disabled"
        print(f"{row.id:<24} {row.role:<10} {status:<9} {row.display_name}")
    return 0


def _cmd_disable(args: argparse.Namespace) -> int:
    store = open_store(args)
    try:
        disable_institution_locally(store, args.id, "cli")
    finally:
        store.dispose()
    print(f"disabled {args.id}")
    return 0


def _cmd_enable(args: argparse.Namespace) -> int:
    store = open_store(args)
    try:
        enable_institution_locally(store, args.id, "cli")
    finally:
        store.dispose()
    print(f"enabled {args.id}")
    return 0


def _cmd_rotate_key(args: argparse.Namespace) -> int:
    key = _public_key(args)
    store = open_store(args)
    try:
        rotate_institution_key_locally(store, args.id, key, "cli")
    finally:
        store.dispose()
    print(f"rotated the signing key of {args.id}; its old key is refused from now on")
    print("re-export the registry to the key holders: fraudhub institution export")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args)
    with store.session() as session:
        rows = list_institutions(session, include_disabled=True)
    store.dispose()
    text = dump_registry([to_registered(r) for r in rows]) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        # The registry says who may call the key holders: private like their state.
        write_private_atomically(args.out, text)
        print(f"wrote {len(rows)} institution(s) to {args.out}")
    return 0


def _register_registry_actions(actions: Any) -> None:
    """Add the registry actions (add, list, disable, enable, rotate-key, export)."""
    add = actions.add_parser("add", help="register an institution at the hub")
    add_database_arguments(add)
    add.add_argument("--id", required=True, help="1..64 characters of [a-z0-9._-]")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", help="display name")
    add.add_argument("--public-key", default="", help="base64 Ed25519 public key (keygen)")
    add.add_argument("--public-key-file", type=Path, help="the <key>.pub file of keygen")
    add.set_defaults(func=_cmd_add)

    listing = actions.add_parser("list", help="list registered institutions")
    add_database_arguments(listing)
    listing.add_argument("--all", action="store_true", help="include disabled institutions")
    listing.set_defaults(func=_cmd_list)

    disable = actions.add_parser("disable", help="refuse every later call of an institution")
    add_database_arguments(disable)
    disable.add_argument("--id", required=True)
    disable.set_defaults(func=_cmd_disable)

    enable = actions.add_parser(
        "enable", help="accept a disabled institution's calls again (same id, key and history)"
    )
    add_database_arguments(enable)
    enable.add_argument("--id", required=True)
    enable.set_defaults(func=_cmd_enable)

    rotate = actions.add_parser(
        "rotate-key", help="replace an institution's signing key (same id and history)"
    )
    add_database_arguments(rotate)
    rotate.add_argument("--id", required=True)
    rotate.add_argument("--public-key", default="", help="new base64 Ed25519 public key")
    rotate.add_argument("--public-key-file", type=Path, help="the <key>.pub file of keygen")
    rotate.set_defaults(func=_cmd_rotate_key)

    export = actions.add_parser("export", help="write the registry JSON for key holders")
    add_database_arguments(export)
    export.add_argument("--out", type=Path, help="file to write (default: stdout)")
    export.set_defaults(func=_cmd_export)
