"""Bulk jobs: contribute or screen a CSV of any size, every row accounted for, resumable.

:meth:`HubClient.contribute_csv <client_sdk.client.hub.HubClient.contribute_csv>`
and :meth:`~client_sdk.client.hub.HubClient.match_csv` delegate here; the
machinery (:func:`run_job` with a :class:`JobSpec`) is generic, so every bulk
command (revocation too) runs the same way.  Guarantees:

- The CSV (``client_sdk.client.csvrows``) is read in windows of ``window``
  rows (at most :data:`MAX_WINDOW`, one hub stream each), so memory stays flat
  whatever the file size.  While one window travels to the hub, the next is
  tokenized (:class:`_Pipeline`); outcomes are handled in input order.
- Every data row ends as exactly one :class:`RowOutcome` with a status:
  answered (:data:`ANSWERED`: ``match``, ``no_match``, ``stored``...),
  ``refused`` (with the policy's reason codes) or ``error`` (with the
  problem, never the value): a row the CSV reader could not use (encoding,
  length, columns) is an error of that row, and every other row still goes.
- With a journal (``client_sdk.client.journal``) each window's outcomes are on
  disk before they are written or counted.  A stop (the ``stop`` event, e.g.
  the CLI's first SIGINT, after the window in flight is answered; a
  KeyboardInterrupt at once; a whole-call error such as Unavailable after the
  retry deadline; a crash such as a killed worker process) raises
  :class:`JobStopped` saying how many rows are done.
  Run again with ``resume=True``: done rows are not sent again (no quota
  spent twice) and the output is written again whole, from the input and
  the journal, so it has exactly one row per input row.
- The output CSV never holds a raw value: a screening copies the input's
  columns except ``value``; a contribution writes only row, kind, status and
  reasons.
- A rich progress bar on stderr counts answered rows, with the total (the
  rows are counted first when the input is a file), rate and ETA.
"""

from __future__ import annotations

import contextlib
import csv
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Generic, TypeVar

from client_sdk.client.csvrows import CsvRow, CsvSource, count_rows, read_rows
from client_sdk.client.journal import JobHeader, Journal
from client_sdk.client.progress import RowProgress
from client_sdk.client.results import (
    DEFAULT_CONFIDENCE,
    BulkSummary,
    Contributed,
    Indicator,
    ItemFailure,
    MatchResult,
    RevokeResult,
    RowOutcome,
)
from client_sdk.core import indicators
from client_sdk.core.errors import ConfigurationError, FraudhubError, InvalidRequest, PolicyDenied
from client_sdk.core.vocabulary import DISCLOSURE_LEVELS

__all__ = [
    "ANSWERED",
    "DEFAULT_WINDOW",
    "MATCH_COLUMNS",
    "MAX_WINDOW",
    "Contribution",
    "JobSpec",
    "JobStopped",
    "Revocation",
    "Screening",
    "WindowSender",
    "contribution_job",
    "failure_outcome",
    "revocation_job",
    "run_job",
    "screening_job",
]

#: CSV rows tokenized and sent together.
DEFAULT_WINDOW = 16384
# One window is one stream; the hub takes at most 200,000 items per stream.
MAX_WINDOW = 200_000
#: Statuses of a row the hub answered (anything else is ``refused`` or ``error``).
ANSWERED = frozenset({"match", "no_match", "stored", "revoked", "not_found"})

_T = TypeVar("_T")

#: Tokenizes one window of usable rows now; returns the call that sends it to the
#: hub and gives one outcome per row, in order.
WindowSender = Callable[[Sequence[CsvRow]], Callable[[], list[RowOutcome]]]


@dataclass(frozen=True)
class JobSpec:
    """One kind of bulk job: its name and purpose (the journal's identity), how a window
    is sent, and the output: the input's columns (less ``value``) when ``copy_input``,
    else ``row`` and ``kind``; then ``status``, ``reasons`` and ``result_columns``."""

    name: str
    purpose: str
    send: WindowSender
    result_columns: tuple[str, ...] = ()
    copy_input: bool = False


class JobStopped(Exception):
    """A bulk job stopped before its last row: ``done`` of ``total`` rows (None: stdin).

    ``cause`` is the whole-call error that stopped it, None for an interrupt.
    Rerun with ``resume=True`` (``--resume``) to continue.
    """

    def __init__(self, done: int, total: int | None, cause: BaseException | None) -> None:
        of = f" of {total}" if total is not None else ""
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else " (interrupted)"
        super().__init__(f"{done}{of} rows done{why}; rerun with --resume")
        self.done = done
        self.total = total
        self.cause = cause


def failure_outcome(row: int, failure: ItemFailure) -> RowOutcome:
    """A refused or failed item as a row outcome (the policy's codes, or the problem)."""
    if isinstance(failure.error, PolicyDenied):
        return RowOutcome(row, failure.kind, "refused", failure.error.reasons)
    return RowOutcome(row, failure.kind, "error", (failure.reason,))


def _kind(row: CsvRow) -> str:
    kind = row.get("kind").strip()
    return kind if kind in indicators.ALL_KINDS else indicators.UNKNOWN_KIND


def run_job(
    source: CsvSource,
    spec: JobSpec,
    *,
    out: IO[str] | None = None,
    journal: Path | None = None,
    resume: bool = False,
    window: int = DEFAULT_WINDOW,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> BulkSummary:
    """Run ``spec`` over every row of ``source``; write the result CSV to ``out``.

    Raises ConfigurationError (bad window, source, header or journal; nothing
    was sent), JobStopped (see the module docstring; any other error stops
    the job too, chained as its cause).  The journal is deleted
    when every row is done.
    """
    if not 1 <= window <= MAX_WINDOW:
        raise ConfigurationError(f"window must be 1..{MAX_WINDOW} rows (one stream each)")
    header, rows = read_rows(source)
    book = (
        Journal.open(journal, JobHeader(spec.name, spec.purpose, header), resume=resume)
        if journal is not None
        else None
    )
    done: dict[int, RowOutcome] = book.done if book is not None else {}
    summary = BulkSummary(total=count_rows(source))
    output = _Output(out, header, spec)
    try:
        with (
            contextlib.closing(rows),
            RowProgress(spec.name, summary.total, enabled=progress) as bar,
        ):
            _run_windows(rows, spec, window, done, book, output, summary, bar, stop)
    except (Exception, KeyboardInterrupt) as exc:
        if book is not None:
            book.close()
        if isinstance(exc, ConfigurationError):
            raise
        if isinstance(exc, KeyboardInterrupt | _Stop):
            raise JobStopped(summary.rows, summary.total, None) from None
        # A hub outage past the retry deadline, a refusal of the whole call, or a
        # crash (a worker process killed...): what is journaled stays done.
        stopped = JobStopped(summary.rows, summary.total, exc)
        if isinstance(exc, FraudhubError):
            raise stopped from None
        raise stopped from exc
    if book is not None:
        book.finish()
    return summary


class _Stop(Exception):
    pass


def _run_windows(
    rows: Iterator[CsvRow],
    spec: JobSpec,
    window: int,
    done: dict[int, RowOutcome],
    book: Journal | None,
    output: _Output,
    summary: BulkSummary,
    bar: RowProgress,
    stop: threading.Event | None,
) -> None:
    def finish(
        batch: list[CsvRow], known: dict[int, RowOutcome], outcomes: list[RowOutcome]
    ) -> None:
        # Journal first, then output and counts: what is written or counted is on disk.
        fresh = [o for o in known.values() if o.row not in done] + outcomes
        if book is not None:
            book.record(fresh)
        by_row = {**known, **{o.row: o for o in outcomes}}
        for row in batch:
            outcome = by_row[row.row]
            output.write(row, outcome)
            summary.add(outcome)
        output.flush()
        bar.advance(len(batch))

    with _Pipeline[list[RowOutcome]]() as pipeline:
        for batch in _batched(rows, window):
            if stop is not None and stop.is_set():
                raise _Stop
            known = {r.row: done[r.row] for r in batch if r.row in done}
            for row in batch:
                if row.problem is not None and row.row not in known:
                    known[row.row] = RowOutcome(row.row, _kind(row), "error", (row.problem,))
            to_send = [r for r in batch if r.row not in known]
            pipeline.check()
            send = spec.send(to_send) if to_send else _nothing
            pipeline.push(send, partial(finish, batch, known))


def _nothing() -> list[RowOutcome]:
    return []


def _batched(rows: Iterator[CsvRow], size: int) -> Iterator[list[CsvRow]]:
    batch: list[CsvRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Output:
    """The result CSV: one row per input row, in input order, never a raw value."""

    def __init__(self, out: IO[str] | None, header: tuple[str, ...], spec: JobSpec) -> None:
        self._copy = spec.copy_input
        first = [c for c in header if c != "value"] if self._copy else ["row", "kind"]
        columns = [*first, "status", "reasons", *spec.result_columns]
        self._writer = (
            # A revocation's window counts are the journal's, not the output's.
            csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
            if out is not None
            else None
        )
        self._out = out
        self._input = first
        if self._writer is not None:
            self._writer.writeheader()

    def write(self, row: CsvRow, outcome: RowOutcome) -> None:
        if self._writer is None or self._out is None:
            return
        if self._copy:
            # A row with a problem has no trustworthy fields: none is copied.
            record = {c: row.fields.get(c, "") for c in self._input}
            if "kind" in record:  # the kind cell may hold a value put in the wrong column
                record["kind"] = outcome.kind
        else:
            record = {"row": str(row.row), "kind": outcome.kind}
        record.update(outcome.result)
        record["status"] = outcome.status
        record["reasons"] = ";".join(outcome.reasons)
        self._writer.writerow(record)

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()


# --- the institution's jobs -----------------------------------------------------------------

#: Tokenizes and seals one window now; returns the call that sends it to the hub.
Contribution = Callable[[Sequence[Indicator]], Callable[[], list[Contributed | ItemFailure]]]
#: Returns the call that withdraws one window of ``(kind, value)`` (this
#: institution's own contributions).
Revocation = Callable[[Sequence[tuple[str, str]]], Callable[[], RevokeResult]]
#: Where a revocation row keeps its window's hub counts (journaled, never written).
_WINDOW_COUNTS = ("window_revoked", "window_not_found")
#: Tokenizes one window of ``(kind, value)`` now; returns the call that asks the hub.
Screening = Callable[[Sequence[tuple[str, str]]], Callable[[], list[MatchResult | ItemFailure]]]

#: The result columns of a screening, after ``status`` and ``reasons``.
MATCH_COLUMNS = (
    "matched",
    "disclosure",
    "contributors",
    "categories",
    "first_seen",
    "last_seen",
    "max_confidence",
    "evidence",
    "score",
    "labels",
)


def contribution_job(purpose: str, contribution: Contribution) -> JobSpec:
    """Contribute rows with columns ``kind``, ``value``, ``category`` and optional
    ``confidence``, ``observed_at``, ``expires_at`` (ISO 8601 with a zone), ``label``,
    ``evidence`` (an evidence class; empty: the hub's default); statuses ``stored``,
    ``refused``, ``error``."""

    def send(rows: Sequence[CsvRow]) -> Callable[[], list[RowOutcome]]:
        parsed: list[tuple[CsvRow, Indicator]] = []
        outcomes: dict[int, RowOutcome] = {}
        for row in rows:
            try:
                parsed.append((row, _indicator_from_row(row)))
            except InvalidRequest as exc:
                outcomes[row.row] = RowOutcome(row.row, _kind(row), "error", (str(exc),))
        call = contribution([item for _, item in parsed])

        def answer() -> list[RowOutcome]:
            for (row, _), result in zip(parsed, call(), strict=True):
                if isinstance(result, ItemFailure):
                    outcomes[row.row] = failure_outcome(row.row, result)
                else:
                    outcomes[row.row] = RowOutcome(row.row, result.kind, "stored")
            return [outcomes[row.row] for row in rows]

        return answer

    return JobSpec("contribute", purpose, send)


def screening_job(purpose: str, screening: Screening) -> JobSpec:
    """Screen rows with columns ``kind`` and ``value``; statuses ``match``,
    ``no_match``, ``refused``, ``error``, and the :data:`MATCH_COLUMNS`."""

    def send(rows: Sequence[CsvRow]) -> Callable[[], list[RowOutcome]]:
        call = screening([(row.get("kind").strip(), row.get("value")) for row in rows])

        def answer() -> list[RowOutcome]:
            outcomes = []
            for row, result in zip(rows, call(), strict=True):
                if isinstance(result, ItemFailure):
                    outcomes.append(failure_outcome(row.row, result))
                else:
                    status = "match" if result.matched else "no_match"
                    outcomes.append(
                        RowOutcome(row.row, result.kind, status, (), _result_columns(result))
                    )
            return outcomes

        return answer

    return JobSpec("match", purpose, send, MATCH_COLUMNS, copy_input=True)


def revocation_job(reason: str, revocation: Revocation) -> JobSpec:
    """Withdraw the contributions named by rows with columns ``kind`` and ``value``.

    Statuses ``revoked`` (no contribution of the value by this institution
    remains), ``error`` (an invalid value).  The hub counts per request how many
    it found and how many it did not (never contributed, or withdrawn already),
    not per item: each window's counts ride on its last revoked row, so a
    resumed job still adds them up (BulkSummary ``revoked``, ``not_found``).
    """

    def send(rows: Sequence[CsvRow]) -> Callable[[], list[RowOutcome]]:
        call = revocation([(row.get("kind").strip(), row.get("value")) for row in rows])

        def answer() -> list[RowOutcome]:
            result = call()
            failed = {f.index: f for f in result.failures}
            outcomes = [
                failure_outcome(row.row, failed[i])
                if i in failed
                else RowOutcome(row.row, _kind(row), "revoked")
                for i, row in enumerate(rows)
            ]
            done = [i for i in range(len(rows)) if i not in failed]
            if done:
                revoked, not_found = _WINDOW_COUNTS
                counts = {revoked: str(result.revoked), not_found: str(result.not_found)}
                outcomes[done[-1]] = replace(outcomes[done[-1]], result=counts)
            return outcomes

        return answer

    return JobSpec("revoke", reason, send)


def _parse_time(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone (e.g. Z)")
    return value


def _indicator_from_row(row: CsvRow) -> Indicator:
    """An :class:`Indicator` from a CSV row; raises InvalidRequest for a bad field."""
    confidence_text = row.get("confidence").strip()
    try:
        confidence = int(confidence_text) if confidence_text else DEFAULT_CONFIDENCE
    except ValueError:
        raise InvalidRequest("confidence is not an integer") from None
    return Indicator(
        kind=row.get("kind").strip(),
        value=row.get("value"),
        category=row.get("category").strip(),
        confidence=confidence,
        observed_at=_parse_time(row.get("observed_at"), "observed_at"),
        expires_at=_parse_time(row.get("expires_at"), "expires_at"),
        label=row.get("label") or None,
        evidence=row.get("evidence").strip() or None,
    )


def _at_least(result: MatchResult, level: str) -> bool:
    """Whether ``result`` matched at ``level`` or above (so the field is meaningful)."""
    return result.matched and DISCLOSURE_LEVELS.index(result.disclosure) >= DISCLOSURE_LEVELS.index(
        level
    )


def _result_columns(result: MatchResult) -> dict[str, str]:
    return {
        "matched": "yes" if result.matched else "no",
        "disclosure": result.disclosure,
        "contributors": str(result.contributors) if _at_least(result, "count") else "",
        "categories": " ".join(result.categories),
        "first_seen": result.first_seen.isoformat() if result.first_seen else "",
        "last_seen": result.last_seen.isoformat() if result.last_seen else "",
        "max_confidence": str(result.max_confidence) if _at_least(result, "summary") else "",
        "evidence": " ".join(result.evidence),
        "score": str(result.score) if _at_least(result, "summary") else "",
        "labels": " | ".join(f"{lb.contributor}: {lb.text}" for lb in result.labels),
    }


class _Pipeline(Generic[_T]):
    """Runs each window's hub call in the background while the next window is tokenized.

    One call in flight at a time, so at most two windows are in memory and results
    are handled in input order, on the caller's thread.  :meth:`check` raises a
    failed call's error before the next window is tokenized (no key-holder work
    for nothing).  On leaving the block the call in flight is finished and its
    result handled, also when the block raised an error or was stopped (its
    answer is journaled, so a resumed job does not ask again); on a
    KeyboardInterrupt the block is left at once (the interpreter still joins
    the call, bounded by its deadline, at exit).
    """

    def __init__(self) -> None:
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-send")
        self._pending: tuple[Future[_T], Callable[[_T], None]] | None = None

    def check(self) -> None:
        """Raise now if the call in flight already failed."""
        if self._pending is not None and self._pending[0].done():
            self._finish()

    def push(self, send: Callable[[], _T], handle: Callable[[_T], None]) -> None:
        self._finish()
        self._pending = (self._sender.submit(send), handle)

    def _finish(self) -> None:
        if self._pending is not None:
            future, handle = self._pending
            self._pending = None
            handle(future.result())

    def __enter__(self) -> _Pipeline[_T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        try:
            if exc_type is None:
                self._finish()
            elif not interrupted:
                # The block's own error is the one raised; the window in flight
                # still gets its outcomes recorded if it succeeded.
                with contextlib.suppress(Exception):
                    self._finish()
        finally:
            self._sender.shutdown(wait=not interrupted, cancel_futures=True)
