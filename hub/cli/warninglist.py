"""``fraudhub warninglist add|remove|list``: the operator's lists of known-good values.

``add`` and ``remove`` read a CSV with the columns ``kind`` and ``value``
(``examples/warninglist.csv``: the 96110 anti-fraud line, banks' customer
service numbers, government domains), tokenize each value through the key
holders with a member institution's client (``--tokenize-with MEMBER.json``:
holders never evaluate for the operator role, whose hub holds the tokens) and,
as the operator (``--config``, purpose ``warninglist``, audited), add them to,
or remove them from, the list ``--list`` (default ``known-good``).  ``list``
prints the entries per list and kind (never values or tokens).  Exits 1 if
any row failed (printed by row number, never with its value).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from client_sdk.client import feedback
from client_sdk.client.config import ClientConfig
from client_sdk.client.hub import HubClient
from hub.cli.sighting import read_rows, report_failures

__all__ = ["DEFAULT_LIST", "register"]

DEFAULT_LIST = "known-good"


def _client(args: argparse.Namespace) -> HubClient:
    return HubClient.from_config(ClientConfig.load(args.config))


def _cmd_change(args: argparse.Namespace) -> int:
    rows = read_rows(args.file, ("kind", "value"))
    pairs = [((row.get("kind") or "").strip(), row.get("value") or "") for row in rows]
    with (
        _client(args) as client,
        HubClient.from_config(ClientConfig.load(args.tokenize_with)) as member,
    ):
        change = feedback.warninglist_change(
            client, pairs, list_name=args.list, add=args.add, tokenizer=member
        )
    verb = "added" if args.add else "removed"
    print(
        f"{change.changed} of {len(pairs)} values {verb} ({args.list}), "
        f"{change.unchanged} unchanged, {len(change.failures)} failed"
    )
    return report_failures(change.failures)


def _cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        counts = feedback.warninglist_counts(client)
    for name, kind, entries in counts:
        print(f"{name}\t{kind}\t{entries}")
    return 0


def register(sub: Any) -> None:
    """Add ``warninglist add|remove|list``."""
    group = sub.add_parser("warninglist", help="the operator's lists of known-good values")
    actions = group.add_subparsers(dest="warninglist_command", required=True)
    for name, add in (("add", True), ("remove", False)):
        parser = actions.add_parser(name, help=f"{name} the values of a CSV (kind,value)")
        parser.add_argument("file", type=Path, help="CSV with the columns kind, value")
        parser.add_argument("--config", type=Path, required=True, help="the operator's client JSON")
        parser.add_argument("--list", default=DEFAULT_LIST, help="list name (a code)")
        parser.add_argument(
            "--tokenize-with",
            type=Path,
            required=True,
            help="a member institution's client JSON whose key holders tokenize the values",
        )
        parser.set_defaults(func=_cmd_change, add=add)
    listing = actions.add_parser("list", help="entries per list and kind")
    listing.add_argument("--config", type=Path, required=True, help="the operator's client JSON")
    listing.set_defaults(func=_cmd_list)
