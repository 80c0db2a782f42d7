"""``fraudhub watch add|remove|list`` and ``fraudhub alerts follow``: watchlists.

``watch add FILE`` watches every row of a CSV (columns ``kind``, ``value``,
any others; a ``ref`` column is the institution's own row reference, written
only to the local reference map, never sent).  Failures are listed on stderr
by row number, never by value; the exit status is 1 if any row failed.
Re-running a file is safe: watches are idempotent.

``alerts follow`` prints alerts as they arrive (a table, or one JSON object a
line) and acknowledges each one after printing it, so ``--since-ack`` after a
restart resumes where the last run stopped (at-least-once: an alert printed
just before a crash may print again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from client_sdk.client.alerts import Alert, RefMap
from client_sdk.client.config import ClientConfig
from client_sdk.client.hub import HubClient
from hub.infra.argtypes import positive_float, positive_int

__all__ = ["register"]

_TABLE = "{:>6}  {:<9}  {:<16}  {:<13}  {:<10}  {:>5}  {:<28}  {}"


def _default_refs(config: Path, institution: str) -> Path:
    return config.resolve().parent / f"{institution}.watch-refs.sqlite3"


def _open(args: argparse.Namespace) -> tuple[HubClient, RefMap]:
    config = ClientConfig.load(args.config)
    refs = RefMap(args.refs or _default_refs(args.config, config.institution))
    return HubClient.from_config(config), refs


def _cmd_watch_file(args: argparse.Namespace, *, remove: bool) -> int:
    client, refs = _open(args)
    with client:
        try:
            summary, result = client.alerts.watch_csv(
                args.file,
                purpose=getattr(args, "purpose", ""),
                ref_map=refs,
                remove=remove,
                initial=getattr(args, "initial", False),
                progress=not args.no_progress,
            )
        finally:
            refs.close()
    for failure in summary.failures:
        print(f"row {failure.index} ({failure.kind}): {failure.reason}", file=sys.stderr)
    if remove:
        print(f"{result.removed} of {summary.rows} rows unwatched")
        return 0
    expires = f", expiring {result.expires_at:%Y-%m-%d}" if result.expires_at else ""
    print(
        f"{result.added} watches added, {result.refreshed} refreshed, "
        f"{len(summary.failures)} failed of {summary.rows} rows{expires}; "
        f"{result.alerts} alert(s) raised"
    )
    return 1 if summary.failures else 0


def _cmd_watch_list(args: argparse.Namespace) -> int:
    with HubClient.from_config(ClientConfig.load(args.config)) as client:
        counts = client.alerts.counts()
    for count in counts:
        print(f"{count.kind:<16} {count.purpose:<24} {count.count}")
    print(f"{sum(c.count for c in counts)} watches")
    return 0


def _line(alert: Alert, fmt: str) -> str:
    if fmt == "jsonl":
        return json.dumps(alert.to_json(), sort_keys=True)
    # A disputed alert shows its response deadline where the others show last_seen.
    when = alert.respond_by or alert.last_seen
    return _TABLE.format(
        alert.sequence,
        alert.event,
        alert.ref or (f"dispute:{alert.dispute}" if alert.dispute else "-"),
        alert.kind,
        alert.disclosure,
        alert.contributors if alert.disclosure in ("count", "summary") else "",
        ",".join(alert.categories) or "-",
        when.isoformat(timespec="seconds") if when else "",
    )


def _cmd_follow(args: argparse.Namespace) -> int:
    client, refs = _open(args)
    printed = 0
    with client:
        try:
            if args.format == "table":
                print(
                    _TABLE.format(
                        "seq",
                        "event",
                        "ref",
                        "kind",
                        "disclose",
                        "count",
                        "categories",
                        "last_seen",
                    )
                )
            for alert in client.alerts.follow(
                start="ack" if args.since_ack else "now", timeout=args.timeout, ref_map=refs
            ):
                print(_line(alert, args.format), flush=True)
                # Acknowledged only once printed: a crash in between prints it again.
                client.alerts.ack(alert.sequence)
                printed += 1
                if args.max is not None and printed >= args.max:
                    break
        finally:
            refs.close()
    print(f"{printed} alert(s)", file=sys.stderr)
    return 0


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, required=True, help="client JSON (institution, key, hub, holders)"
    )
    parser.add_argument(
        "--refs",
        type=Path,
        help="local reference map (default: INSTITUTION.watch-refs.sqlite3 next to --config)",
    )


def register(sub: Any) -> None:
    """Add ``watch`` (add, remove, list) and ``alerts`` (follow)."""
    watch = sub.add_parser("watch", help="watchlists: alerts when a value you hold is reported")
    actions = watch.add_subparsers(dest="watch_command", metavar="ACTION", required=True)
    for name, helptext in (("add", "watch the rows of a CSV"), ("remove", "stop watching them")):
        parser = actions.add_parser(name, help=helptext)
        parser.add_argument("file", type=Path, help="CSV with columns kind, value (and ref)")
        _add_config(parser)
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "add":
            parser.add_argument(
                "--purpose",
                required=True,
                help="a watch purpose of the policy (customer_monitoring)",
            )
            parser.add_argument(
                "--initial",
                action="store_true",
                help="also raise alerts for indicators already reported",
            )
            parser.set_defaults(func=lambda args: _cmd_watch_file(args, remove=False))
        else:
            parser.set_defaults(func=lambda args: _cmd_watch_file(args, remove=True))
    listing = actions.add_parser("list", help="count your active watches by kind")
    _add_config(listing)
    listing.set_defaults(func=_cmd_watch_list)

    alerts = sub.add_parser("alerts", help="receive the alerts your watches raise")
    alert_actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    follow = alert_actions.add_parser("follow", help="print alerts as they arrive, acking them")
    _add_config(follow)
    follow.add_argument("--format", choices=("table", "jsonl"), default="table")
    follow.add_argument(
        "--since-ack",
        action="store_true",
        help="start after the last acknowledged alert (resume); default: only new alerts",
    )
    follow.add_argument("--max", type=positive_int(), help="stop after N alerts")
    follow.add_argument("--timeout", type=positive_float, help="stop after SECONDS")
    follow.set_defaults(func=_cmd_follow)
