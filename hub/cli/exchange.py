"""``fraudhub contribute``, ``match`` and ``revoke``: an institution's bulk jobs.

``contribute FILE``, ``match FILE`` and ``revoke FILE`` (``-``: stdin) run
an institution's bulk job with the SDK (``client_sdk.client.bulk``) from a
client JSON file.  Every row ends with a status (contribute: ``stored``,
``refused``, ``error``; match: ``match``, ``no_match``, ``refused``,
``error``; revoke: ``revoked``, ``error``), in the
result CSV (``--out``) and, for each refused or failed row, on stderr by row
number and kind, never by value; the end-of-run summary counts each status.

Exit status (:data:`EXIT_CODES`): 0 every row answered; 3 some rows refused
or failed (the others are written); 2 a usage or configuration error
(nothing sent); 1 the run stopped (Ctrl-C, the hub or key holders
unreachable past the retry deadline...): it prints ``N of M rows done;
rerun with --resume`` and the journal (``<out>.journal``, else
``<FILE>.<command>.journal``, or ``--journal``) lets ``--resume`` continue
without sending a done row again.  The first Ctrl-C stops after the rows in
flight are answered and journaled; a second one stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from client_sdk.client.bulk import ANSWERED, DEFAULT_WINDOW, MAX_WINDOW, JobStopped
from client_sdk.client.config import ClientConfig
from client_sdk.client.hub import HubClient
from client_sdk.client.journal import JOURNAL_SUFFIX
from client_sdk.client.results import BulkSummary
from client_sdk.core.errors import ConfigurationError
from client_sdk.core.vocabulary import REVOKE_REASONS
from hub.infra.argtypes import positive_int

__all__ = ["EXIT_CODES", "register"]

#: The bulk commands' exit statuses.
EXIT_CODES = {"answered": 0, "stopped": 1, "usage": 2, "refused_or_failed": 3}


def _client(args: argparse.Namespace) -> HubClient:
    return HubClient.from_config(ClientConfig.load(args.config))


def _journal_path(args: argparse.Namespace) -> Path | None:
    """``--journal``, else beside the output, else beside the input; None for stdin to stdout."""
    if args.journal is not None:
        return Path(args.journal)
    if args.out is not None:
        return Path(str(args.out) + JOURNAL_SUFFIX)
    if args.file != "-":
        return Path(f"{args.file}.{args.command}{JOURNAL_SUFFIX}")
    return None


@contextlib.contextmanager
def _first_interrupt_stops(stop: threading.Event) -> Iterator[None]:
    """The first SIGINT sets ``stop`` (the job ends after the rows in flight); the
    second raises KeyboardInterrupt as usual.  Only in the main thread (signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the rows in flight (Ctrl-C again to stop at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: Runs one job with the client, the output (None: none) and the job options.
_Job = Callable[[HubClient, IO[str] | None, dict[str, Any]], BulkSummary]


def _run(args: argparse.Namespace, job: _Job) -> int:
    """Open the output, run ``job``, report; JobStopped is exit status 1."""
    stop = threading.Event()
    journal = _journal_path(args)
    options = {
        "encoding": args.encoding,
        "journal": journal,
        "resume": args.resume,
        "stop": stop,
        "window": args.window,
        "progress": not args.no_progress,
    }
    try:
        with _client(args) as client, _first_interrupt_stops(stop):
            if args.out is None:
                summary = job(client, sys.stdout if args.command == "match" else None, options)
            else:
                with _open_out(args.out) as out:
                    summary = job(client, out, options)
    except JobStopped as stopped:
        print(f"fraudhub {args.command}: {stopped}", file=sys.stderr)
        if journal is None:
            print("(no journal for stdin to stdout: pass --journal to resume)", file=sys.stderr)
        return EXIT_CODES["stopped"]
    return _report(args.command, summary)


@contextlib.contextmanager
def _open_out(path: Path) -> Iterator[IO[str]]:
    try:
        handle = path.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from None
    with handle:
        yield handle


def _report(command: str, summary: BulkSummary) -> int:
    for failure in summary.failures:
        reason = failure.reason
        reasons = getattr(failure.error, "reasons", ())
        if reasons:
            reason = "refused (" + ", ".join(reasons) + ")"
        print(f"row {failure.index} ({failure.kind}): {reason}", file=sys.stderr)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    line = f"{summary.rows} rows: {counts or 'none'}"
    if command == "contribute":
        print(f"{summary.stored} of {summary.rows} rows stored, {len(summary.failures)} failed")
    elif command == "revoke":
        print(
            f"{summary.revoked} of {summary.rows} rows revoked, {summary.not_found} not found "
            f"(not contributed by this institution, or withdrawn already), "
            f"{len(summary.failures)} failed"
        )
    print(line, file=sys.stderr)
    everything = all(status in ANSWERED for status in summary.counts)
    return EXIT_CODES["answered"] if everything else EXIT_CODES["refused_or_failed"]


def _cmd_contribute(args: argparse.Namespace) -> int:
    def job(client: HubClient, out: IO[str] | None, options: dict[str, Any]) -> BulkSummary:
        return client.contribute_csv(
            args.file, purpose=args.purpose, case_reference=args.case_reference, out=out, **options
        )

    return _run(args, job)


def _cmd_match(args: argparse.Namespace) -> int:
    def job(client: HubClient, out: IO[str] | None, options: dict[str, Any]) -> BulkSummary:
        return client.match_csv(
            args.file, out, purpose=args.purpose, case_reference=args.case_reference, **options
        )

    return _run(args, job)


def _cmd_revoke(args: argparse.Namespace) -> int:
    def job(client: HubClient, out: IO[str] | None, options: dict[str, Any]) -> BulkSummary:
        return client.revoke_csv(args.file, reason=args.reason, out=out, **options)

    return _run(args, job)


def _add_client_arguments(parser: argparse.ArgumentParser, purpose_help: str | None) -> None:
    parser.add_argument("file", help="CSV file with a header (kind, value, ...); - for stdin")
    parser.add_argument(
        "--config", type=Path, required=True, help="client JSON (institution, key, hub, holders)"
    )
    if purpose_help is not None:  # revocation has a reason, not a purpose
        parser.add_argument("--purpose", required=True, help=purpose_help)
        parser.add_argument(
            "--case-reference", help="case or ticket reference (audited as a digest)"
        )
    parser.add_argument(
        "--encoding", default="utf-8", help="of the CSV (default utf-8, BOM or not; e.g. gb18030)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue a stopped job from its journal"
    )
    parser.add_argument(
        "--journal", help=f"journal file (default OUT{JOURNAL_SUFFIX}, else FILE.COMMAND.journal)"
    )
    parser.add_argument(
        "--window",
        type=positive_int(MAX_WINDOW),
        default=DEFAULT_WINDOW,
        help=f"rows tokenized and sent together (default {DEFAULT_WINDOW})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: Any) -> None:
    """Add ``contribute``, ``match`` and ``revoke``."""
    contribute = sub.add_parser("contribute", help="contribute the indicators of a CSV file")
    _add_client_arguments(contribute, "a contribution purpose of the policy (fraud_reporting)")
    contribute.add_argument(
        "--out", type=Path, help="result CSV: row, kind, status, reasons (no values)"
    )
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
    revoke.add_argument(
        "--out", type=Path, help="result CSV: row, kind, status, reasons (no values)"
    )
    revoke.set_defaults(func=_cmd_revoke)
