"""``fraudhub contribute``, ``match`` and ``revoke``: an institution's bulk jobs.

``contribute FILE``, ``match FILE`` and ``revoke FILE`` run an institution's bulk job with the
SDK (``client_sdk.HubClient``) from a client JSON file; they exit 1 if any row
failed (each failure is listed on stderr by row number, never by value).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from client_sdk.client.config import ClientConfig
from client_sdk.client.hub import HubClient
from client_sdk.client.results import BulkSummary
from client_sdk.core.vocabulary import REVOKE_REASONS

__all__ = ["register"]


def _client(args: argparse.Namespace) -> HubClient:
    return HubClient.from_config(ClientConfig.load(args.config))


def _report(summary: BulkSummary) -> int:
    for failure in summary.failures:
        print(f"row {failure.index} ({failure.kind}): {failure.reason}", file=sys.stderr)
    return 1 if summary.failures else 0


def _cmd_contribute(args: argparse.Namespace) -> int:
    with _client(args) as client:
        summary = client.contribute_csv(
            args.file,
            purpose=args.purpose,
            case_reference=args.case_reference,
            progress=not args.no_progress,
        )
    print(f"{summary.stored} of {summary.rows} rows stored, {len(summary.failures)} failed")
    return _report(summary)


def _cmd_match(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.out is None:
            summary = client.match_csv(
                args.file,
                sys.stdout,
                purpose=args.purpose,
                case_reference=args.case_reference,
                progress=not args.no_progress,
            )
        else:
            with args.out.open("w", newline="", encoding="utf-8") as out:
                summary = client.match_csv(
                    args.file,
                    out,
                    purpose=args.purpose,
                    case_reference=args.case_reference,
                    progress=not args.no_progress,
                )
    print(
        f"{summary.rows} rows screened, {summary.matched} matched, {len(summary.failures)} failed",
        file=sys.stderr,
    )
    return _report(summary)


def _cmd_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        summary = client.revoke_csv(args.file, reason=args.reason, progress=not args.no_progress)
    print(
        f"{summary.revoked} of {summary.rows} rows revoked, {summary.not_found} not found "
        f"(not contributed by this institution, or withdrawn already), "
        f"{len(summary.failures)} failed"
    )
    return _report(summary)


def _add_client_arguments(parser: argparse.ArgumentParser, purpose_help: str | None) -> None:
    parser.add_argument("file", type=Path, help="CSV file with a header (kind, value, ...)")
    parser.add_argument(
        "--config", type=Path, required=True, help="client JSON (institution, key, hub, holders)"
    )
    if purpose_help is None:  # revocation has a reason, not a purpose
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        return
    parser.add_argument("--purpose", required=True, help=purpose_help)
    parser.add_argument("--case-reference", help="case or ticket reference (audited as a digest)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: Any) -> None:
    """Add ``contribute``, ``match`` and ``revoke``."""
    contribute = sub.add_parser("contribute", help="contribute the indicators of a CSV file")
    _add_client_arguments(contribute, "a contribution purpose of the policy (fraud_reporting)")
    contribute.set_defaults(func=_cmd_contribute)

    match = sub.add_parser("match", help="screen the values of a CSV file")
    _add_client_arguments(match, "a screening purpose of the policy (payment_screening...)")
    match.add_argument("--out", type=Path, help="result CSV (default stdout; no raw values)")
    match.set_defaults(func=_cmd_match)

    revoke = sub.add_parser(
        "revoke", help="withdraw this institution's contributions of a CSV's values"
    )
    _add_client_arguments(revoke, None)
    revoke.add_argument("--reason", required=True, choices=REVOKE_REASONS, help="audited code")
    revoke.set_defaults(func=_cmd_revoke)
