"""``fraudhub dispute open|list|resolve``: a data subject's dispute, from an institution.

- ``open --config CLIENT.json --kind K --value V --case-reference R`` (or
  ``--file CSV`` with columns ``kind``, ``value`` and optionally
  ``case_reference``): the value is tokenized on this machine and every
  indicator listing it is suspended until its contributors answer.  Prints the
  dispute id and how many indicators it suspended, never the value; a CSV row
  that fails is listed on stderr by row number (exit 1).
- ``list --config CLIENT.json [--all]``: the disputed indicators this
  institution must answer (``--all``: answered ones too) and the disputes it opened.
- ``resolve --config CLIENT.json --item ID (--uphold --evidence CLASS | --withdraw)``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from client_sdk.client.config import ClientConfig
from client_sdk.client.disputes import REDRESS, DisputeClient, DisputeOpened
from client_sdk.client.hub import HubClient
from client_sdk.core.errors import ConfigurationError, FraudhubError, InvalidRequest
from client_sdk.core.vocabulary import UPHOLD_EVIDENCE

__all__ = ["register"]


def _client(args: argparse.Namespace) -> HubClient:
    return HubClient.from_config(ClientConfig.load(args.config))


def _day(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


def _opened_line(opened: DisputeOpened) -> str:
    if not opened.suspended:
        return f"dispute {opened.dispute_id}: the value is not listed; nothing to suspend"
    return (
        f"dispute {opened.dispute_id}: {opened.suspended} indicator(s) suspended; "
        f"contributors must answer by {_day(opened.due_at)}"
    )


def _open_file(disputes: DisputeClient, args: argparse.Namespace) -> int:
    try:
        handle = args.file.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {args.file}: {exc.strerror}") from None
    failed = 0
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"kind", "value"} <= set(reader.fieldnames):
            raise ConfigurationError(
                f"{args.file}: the header must name the columns kind and value"
            )
        for number, row in enumerate(reader, start=1):
            kind = (row.get("kind") or "").strip()
            reference = (row.get("case_reference") or "").strip() or args.case_reference
            try:
                if not reference:
                    raise InvalidRequest("no case reference (column or --case-reference)")
                opened = disputes.open(
                    kind, row.get("value") or "", case_reference=reference, purpose=args.purpose
                )
            except FraudhubError as exc:
                # The row's error names its kind and reason, never its value.
                failed += 1
                print(f"row {number} ({kind or 'unknown'}): {exc}", file=sys.stderr)
                continue
            print(f"row {number}: {_opened_line(opened)}")
    return 1 if failed else 0


def _cmd_open(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.value is None):
        raise ConfigurationError("give --value (with --kind) or --file")
    with _client(args) as client:
        if args.file is not None:
            return _open_file(client.disputes, args)
        if not args.kind or not args.case_reference:
            raise ConfigurationError("--value needs --kind and --case-reference")
        opened = client.disputes.open(
            args.kind, args.value, case_reference=args.case_reference, purpose=args.purpose
        )
    print(_opened_line(opened))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items, opened = client.disputes.list(include_answered=args.all)
    print(f"{'item':<6} {'dispute':<32} {'kind':<14} {'category':<15} {'observed':<20} "
          f"{'due':<20} state")  # fmt: skip
    for item in items:
        state = f"{item.state} ({item.evidence})" if item.evidence else item.state
        print(
            f"{item.id:<6} {item.dispute_id:<32} {item.kind:<14} {item.category:<15} "
            f"{_day(item.observed_at):<20} {_day(item.due_at):<20} {state}"
        )
    if opened:
        print("\ndisputes opened by this institution:")
        for dispute in opened:
            print(
                f"{dispute.id}  {dispute.kind:<14} opened {_day(dispute.opened_at)}  "
                f"{dispute.suspended} suspended  {dispute.outcome}"
            )
    return 0


def _cmd_resolve(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.withdraw:
            if args.evidence:
                raise ConfigurationError("--evidence goes with --uphold only")
            item = client.disputes.withdraw(args.item)
        else:
            if not args.evidence:
                raise ConfigurationError("--uphold needs --evidence")
            item = client.disputes.uphold(args.item, args.evidence)
    print(f"item {item.id} of dispute {item.dispute_id}: {item.state}")
    return 0


def register(sub: Any) -> None:
    """Add the ``dispute`` group (open, list, resolve)."""
    group = sub.add_parser("dispute", help="a data subject's dispute of a listed value")
    actions = group.add_subparsers(dest="dispute_command", metavar="ACTION", required=True)

    def client_parser(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=text)
        parser.add_argument(
            "--config", type=Path, required=True, help="client JSON (institution, key, hub)"
        )
        return parser

    opening = client_parser("open", "suspend every indicator listing a person's value")
    opening.add_argument("--kind", help="indicator kind of --value")
    opening.add_argument("--value", help="the disputed value (tokenized here, never sent)")
    opening.add_argument("--file", type=Path, help="CSV: kind, value[, case_reference]")
    opening.add_argument("--case-reference", help="the person's request (audited as a digest)")
    opening.add_argument("--purpose", default=REDRESS, help="policy purpose (default redress)")
    opening.set_defaults(func=_cmd_open)

    listing = client_parser("list", "disputed indicators to answer, and disputes opened")
    listing.add_argument("--all", action="store_true", help="include answered items")
    listing.set_defaults(func=_cmd_list)

    resolve = client_parser("resolve", "uphold (with evidence) or withdraw a disputed indicator")
    resolve.add_argument("--item", type=int, required=True, help="item id (dispute list)")
    step = resolve.add_mutually_exclusive_group(required=True)
    step.add_argument("--uphold", action="store_true", help="keep it; name --evidence")
    step.add_argument("--withdraw", action="store_true", help="withdraw it (the hub deletes it)")
    resolve.add_argument("--evidence", choices=UPHOLD_EVIDENCE, help="evidence class to uphold")
    resolve.set_defaults(func=_cmd_resolve)
