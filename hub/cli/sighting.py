"""``fraudhub sighting add``: file sightings from a CSV (issue 12).

``sighting add --config CLIENT.json --purpose PURPOSE FILE.csv`` reads the
columns ``kind``, ``value``, ``type`` (confirmed, false_positive, expired) and
an optional ``seen_at`` (ISO 8601 with a zone), tokenizes each value through
the key holders and files the sightings (``HubClient.file_sightings``).  Exits
1 if any row failed; each failure is printed by row number (1-based data row),
never with its value.  A file the CSV reader cannot read exits 2 with a
ConfigurationError naming the file.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from client_sdk.client.config import ClientConfig
from client_sdk.client.feedback import Sighting
from client_sdk.client.hub import HubClient
from client_sdk.client.results import ItemFailure
from client_sdk.core.errors import ConfigurationError, InvalidRequest
from client_sdk.core.vocabulary import SIGHTING_TYPES

__all__ = ["read_rows", "register"]


def read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV whose header names ``required``; raises ConfigurationError."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not set(required) <= set(reader.fieldnames):
                raise ConfigurationError(
                    f"{path}: the header must name the columns {', '.join(required)}"
                )
            return list(reader)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error):
        raise ConfigurationError(f"{path}: not a UTF-8 CSV file") from None


def _sighting(row: dict[str, str]) -> Sighting:
    """The sighting of one row; raises InvalidRequest (never quoting the value)."""
    kind_of_sighting = (row.get("type") or "").strip()
    if kind_of_sighting not in SIGHTING_TYPES:
        raise InvalidRequest("type must be one of " + ", ".join(SIGHTING_TYPES))
    seen_at = None
    text = (row.get("seen_at") or "").strip()
    if text:
        try:
            seen_at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest("seen_at is not an ISO 8601 time") from None
        if seen_at.tzinfo is None:
            raise InvalidRequest("seen_at needs a time zone (e.g. Z)")
    return Sighting(
        (row.get("kind") or "").strip(), row.get("value") or "", kind_of_sighting, seen_at
    )


def report_failures(failures: Sequence[ItemFailure]) -> int:
    """Print each failure by 1-based data row (``index`` is 0-based); 1 if there was any."""
    for failure in sorted(failures, key=lambda f: f.index):
        print(f"row {failure.index + 1} ({failure.kind}): {failure.reason}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_add(args: argparse.Namespace) -> int:
    rows = read_rows(args.file, ("kind", "value", "type"))
    failures: list[ItemFailure] = []
    items: list[Sighting] = []
    rows_of_items: list[int] = []
    for index, row in enumerate(rows):
        try:
            items.append(_sighting(row))
            rows_of_items.append(index)
        except InvalidRequest as exc:
            failures.append(ItemFailure(index, (row.get("kind") or "").strip(), exc))
    with HubClient.from_config(ClientConfig.load(args.config)) as client:
        filed = client.file_sightings(
            items, purpose=args.purpose, case_reference=args.case_reference
        )
    failures.extend(ItemFailure(rows_of_items[f.index], f.kind, f.error) for f in filed.failures)
    print(f"{filed.recorded} of {len(rows)} sightings recorded, {len(failures)} failed")
    return report_failures(failures)


def register(sub: Any) -> None:
    """Add ``sighting add``."""
    sighting = sub.add_parser("sighting", help="file feedback on values you matched")
    actions = sighting.add_subparsers(dest="sighting_command", required=True)
    add = actions.add_parser("add", help="file the sightings of a CSV (kind,value,type[,seen_at])")
    add.add_argument("file", type=Path, help="CSV with the columns kind, value, type[, seen_at]")
    add.add_argument("--config", type=Path, required=True, help="client JSON")
    add.add_argument("--purpose", required=True, help="a purpose of the policy")
    add.add_argument("--case-reference", help="case or ticket reference (audited as a digest)")
    add.set_defaults(func=_cmd_add)
