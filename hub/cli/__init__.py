"""The ``fraudhub`` command line.

Each command group lives in its own module exposing
``register(subparsers: argparse._SubParsersAction) -> None``; the module adds
its sub-parser(s) and sets ``func`` (``(args) -> int``, the exit status) on
them.  This module only assembles them, maps fraudhub errors to a one-line
message and exit status 2 (for an unreachable or refusing peer, followed by
which endpoint of the ``--config`` file failed and which field to fix), and
never prints a traceback for a caller error.  When the reader of stdout goes
away (``fraudhub match ... | head``) it stops quietly with status 141
(128 + SIGPIPE, as a shell pipeline expects).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from client_sdk.core.errors import AuthenticationError, FraudhubError, PeerError
from hub.infra.logs import LOG_FORMATS, configure_logging

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "hub.keyholder.ceremony",
    "hub.cli.policy",
    "hub.keyholder.cli",
    "hub.cli.institution",
    "hub.cli.audit",
    "hub.cli.exchange",
    "hub.cli.dispute",
    "hub.cli.sighting",
    "hub.cli.warninglist",
    "hub.cli.alerts",
    "hub.cli.serve",
    "hub.cli.database",
    "hub.cli.backup",
    "hub.devtools.demo",
    "hub.devtools.sandbox",
)
# Commands that serve RPCs: they log one line per call (hub.wire.metrics).
SERVER_COMMANDS = frozenset({"serve", "keyholder"})


def version() -> str:
    """The installed fraudhub version (the package metadata's)."""
    try:
        return metadata.version("fraudhub")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudhub",
        description="Privacy-preserving fraud-indicator hub.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (repeatable)"
    )
    parser.add_argument("--version", action="version", version=f"fraudhub {version()}")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines as plain text (default) or one JSON object per line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _diagnosis(args: argparse.Namespace, exc: FraudhubError) -> list[str]:
    """For a peer failure of a command run with a client configuration: which
    endpoint failed and which field to fix (``hub.cli.diagnose``)."""
    config = getattr(args, "config", None)
    if not isinstance(exc, PeerError | AuthenticationError) or args.command in SERVER_COMMANDS:
        return []
    if config is None or Path(config).suffix != ".json":
        return []
    from hub.cli.diagnose import diagnose

    try:
        return diagnose(Path(config), insecure=bool(getattr(args, "insecure", False)))
    except FraudhubError:
        return []


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except FraudhubError as exc:  # e.g. libsodium missing: one actionable line
        print(f"fraudhub: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.log_format, server=args.command in SERVER_COMMANDS)
    try:
        status: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        _discard_stdout()
        return 141
    except FraudhubError as exc:
        print(f"fraudhub {args.command}: error: {exc}", file=sys.stderr)
        for line in _diagnosis(args, exc):
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def _discard_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's last flush must not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
