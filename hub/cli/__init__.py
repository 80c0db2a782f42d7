"""The ``fraudhub`` command line.

Each command group lives in its own module exposing
``register(subparsers: argparse._SubParsersAction) -> None``; the module adds
its sub-parser(s) and sets ``func`` (``(args) -> int``, the exit status) on
them.  This module only assembles them, maps fraudhub errors to a one-line
message and exit status 2, and never prints a traceback for a caller error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from client_sdk.core.errors import FraudhubError

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "hub.keyholder.ceremony",
    "hub.cli.policy",
    "hub.keyholder.cli",
    "hub.cli.institution",
    "hub.cli.audit",
    "hub.cli.exchange",
    "hub.cli.dispute",
    "hub.cli.alerts",
    "hub.cli.serve",
    "hub.devtools.demo",
    "hub.devtools.sandbox",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudhub",
        description="Privacy-preserving fraud-indicator hub.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (repeatable)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except FraudhubError as exc:  # e.g. libsodium missing: one actionable line
        print(f"fraudhub: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        status: int = args.func(args)
    except FraudhubError as exc:
        print(f"fraudhub {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status
