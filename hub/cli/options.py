"""Option spellings shared by the command modules, and the deprecated old ones.

One spelling per meaning across all commands (docs/OPERATIONS.md lists them):
``--config`` for an institution's client configuration JSON (the file
``fraudhub sandbox`` writes as ``clients/<id>.json``; ``serve`` and
``keyholder`` read their TOML settings with it), ``--case-reference``,
``--state-dir`` for a directory of state, ``--data-dir`` for the hub's,
``--format table|json|jsonl|csv``.

:func:`hub.infra.argtypes.deprecated_alias` keeps an old spelling working,
hidden from ``--help``, with a one-line warning on stderr each time it is used.
:func:`add_hub_connection` and :func:`hub_channel` are how the commands that
call the hub as a regulator or an operator (``audit``, ``policy reload``)
find it: ``--config FILE`` or, deprecated, ``--hub/--institution/--key/--ca``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import grpc

from client_sdk.client.config import ClientConfig
from client_sdk.core.errors import ConfigurationError
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, InstitutionKey
from client_sdk.wire.channels import HUB_SERVER_NAME, ChannelSecurity, open_channel
from hub.infra.argtypes import deprecated_alias

__all__ = ["add_hub_connection", "hub_channel"]


def add_hub_connection(parser: argparse.ArgumentParser, who: str) -> None:
    """``--config`` (client configuration JSON of ``who``), ``--insecure``, and the
    deprecated ``--hub/--institution/--key/--ca/--server-name``."""
    env = os.environ.get
    parser.add_argument(
        "--config",
        type=Path,
        default=env("FRAUDHUB_CONFIG"),
        help=f"client configuration JSON of {who} (institution, key, hub, ca), "
        "as `fraudhub sandbox` writes in DIR/clients/<id>.json (or FRAUDHUB_CONFIG)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="plaintext, no TLS (development only)"
    )
    parser.set_defaults(
        hub=env("FRAUDHUB_HUB"),
        institution=env("FRAUDHUB_INSTITUTION"),
        key=env("FRAUDHUB_KEY"),
        ca=None,
        server_name=None,
    )
    for old in ("--hub", "--institution", "--key", "--ca", "--server-name"):
        dest = old[2:].replace("-", "_")
        deprecated_alias(parser, old, f"--config (its `{dest}` field)", dest=dest)


def _from_flags(args: argparse.Namespace) -> tuple[str, str, Path, Path | None, str | None]:
    if not args.hub or not args.institution or not args.key:
        raise ConfigurationError(
            "give --config FILE (a client configuration JSON with hub, institution, key "
            "and ca) or FRAUDHUB_CONFIG"
        )
    return args.hub, args.institution, Path(args.key), args.ca and Path(args.ca), args.server_name


def hub_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to the hub as the institution of ``--config`` (or the old flags).

    Flags given explicitly override the file's fields.  Raises
    ConfigurationError naming the file and field, or the missing option.
    """
    if args.config is not None:
        config = ClientConfig.load(Path(args.config))
        hub = args.hub or config.hub
        institution = args.institution or config.institution
        key = Path(args.key) if args.key else config.key
        if args.ca or args.server_name:
            config = replace(
                config,
                ca=Path(args.ca) if args.ca else config.ca,
                server_name=args.server_name or config.server_name,
            )
        security = ChannelSecurity(insecure=True) if args.insecure else config.hub_security()
    else:
        hub, institution, key, ca, server_name = _from_flags(args)
        if args.insecure:
            security = ChannelSecurity(insecure=True)
        elif ca is not None:
            # A pinned private CA: check the hub's role name (ADR 0012).
            security = ChannelSecurity.from_ca_file(str(ca), server_name or HUB_SERVER_NAME)
        else:
            security = ChannelSecurity(server_name=server_name)
    auth = BearerAuth(InstitutionKey.load(institution, key), HUB_AUDIENCE)
    return open_channel(hub, security, auth)
