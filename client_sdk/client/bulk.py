"""The bulk CSV path: contribute or screen a file of any size, a window at a time.

:meth:`HubClient.contribute_csv <client_sdk.client.hub.HubClient.contribute_csv>`
and :meth:`~client_sdk.client.hub.HubClient.match_csv` delegate here.  Guarantees:

- The CSV is read in windows of ``window`` rows (at most :data:`MAX_WINDOW`,
  one hub stream each), so memory stays flat whatever the file size.
- While one window travels to the hub, the next is tokenized (:class:`_Pipeline`);
  outcomes are handled in input order on the caller's thread.
- A row that cannot be parsed is a failure of that row, numbered from 1
  (header excluded); the other rows still go.  The result CSV of
  :func:`match_csv` leaves the value column out, so it does not copy raw values.
- A tqdm progress bar counts rows (``progress=False`` turns it off).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Generic, TypeVar

from client_sdk.client.results import (
    DEFAULT_CONFIDENCE,
    BulkSummary,
    Contributed,
    Indicator,
    ItemFailure,
    MatchResult,
    RevokeResult,
)
from client_sdk.core.errors import ConfigurationError, InvalidRequest
from client_sdk.core.vocabulary import DISCLOSURE_LEVELS

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "Contribution",
    "Screening",
    "contribute_csv",
    "match_csv",
    "revoke_csv",
]

#: CSV rows tokenized and sent together.
DEFAULT_WINDOW = 16384
# One window is one stream; the hub takes at most 200,000 items per stream.
MAX_WINDOW = 200_000

_T = TypeVar("_T")

#: Tokenizes and seals one window now; returns the call that sends it to the hub.
Contribution = Callable[[Sequence[Indicator]], Callable[[], list[Contributed | ItemFailure]]]
#: Withdraws one window of ``(kind, value)`` (this institution's own contributions).
Revocation = Callable[[Sequence[tuple[str, str]]], RevokeResult]
#: Tokenizes one window of ``(kind, value)`` now; returns the call that asks the hub.
Screening = Callable[[Sequence[tuple[str, str]]], Callable[[], list[MatchResult | ItemFailure]]]


def contribute_csv(
    path: Path, contribution: Contribution, *, window: int = DEFAULT_WINDOW, progress: bool = True
) -> BulkSummary:
    """Contribute every row of a CSV, a window at a time, through ``contribution``.

    Columns ``kind``, ``value``, ``category`` and optional ``confidence``,
    ``observed_at``, ``expires_at`` (ISO 8601 with a zone), ``label``, ``evidence``
    (an evidence class; empty: the hub's default).  Raises
    ConfigurationError for an unreadable file, a header without ``kind`` and
    ``value`` or a bad ``window``; whole-call errors of the hub as they come.
    """
    summary = BulkSummary()

    def tally(
        parsed: list[tuple[int, Indicator]],
        offset: int,
        outcomes: list[Contributed | ItemFailure],
    ) -> None:
        for (position, _), outcome in zip(parsed, outcomes, strict=True):
            if isinstance(outcome, ItemFailure):
                summary.failures.append(
                    ItemFailure(offset + position + 1, outcome.kind, outcome.error)
                )
            else:
                summary.stored += 1

    with _Pipeline[list[Contributed | ItemFailure]]() as pipeline:
        for rows, offset in _windows(path, window, progress, "contribute"):
            parsed: list[tuple[int, Indicator]] = []
            for position, row in enumerate(rows):
                try:
                    parsed.append((position, _indicator_from_row(row)))
                except InvalidRequest as exc:
                    kind = (row.get("kind") or "").strip()
                    summary.failures.append(ItemFailure(offset + position + 1, kind, exc))
            summary.rows += len(rows)
            pipeline.check()
            send = contribution([item for _, item in parsed])
            pipeline.push(send, partial(tally, parsed, offset))
    summary.failures.sort(key=lambda f: f.index)
    return summary


def match_csv(
    path: Path,
    out: IO[str],
    screening: Screening,
    *,
    window: int = DEFAULT_WINDOW,
    progress: bool = True,
) -> BulkSummary:
    """Screen every row of a CSV with columns ``kind`` and ``value`` through ``screening``.

    Writes one CSV row per input row to ``out``: the input's other columns
    (the value column is left out, so the result file does not copy raw
    values), then the result.  Raises as :func:`contribute_csv`.
    """
    summary = BulkSummary()
    writer: csv.DictWriter[str] | None = None

    def write(
        rows: list[dict[str, str]], offset: int, outcomes: list[MatchResult | ItemFailure]
    ) -> None:
        nonlocal writer
        for position, (row, outcome) in enumerate(zip(rows, outcomes, strict=True)):
            summary.rows += 1
            record = {k: v for k, v in row.items() if k != "value"}
            if "kind" in record:  # the kind cell may hold a value put in the wrong column
                record["kind"] = outcome.kind
            record.update(_result_columns(outcome))
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(record))
                writer.writeheader()
            writer.writerow(record)
            if isinstance(outcome, ItemFailure):
                summary.failures.append(
                    ItemFailure(offset + position + 1, outcome.kind, outcome.error)
                )
            elif outcome.matched:
                summary.matched += 1

    with _Pipeline[list[MatchResult | ItemFailure]]() as pipeline:
        for rows, offset in _windows(path, window, progress, "match"):
            pairs = [((row.get("kind") or "").strip(), row.get("value") or "") for row in rows]
            pipeline.check()
            send = screening(pairs)
            pipeline.push(send, partial(write, rows, offset))
    return summary


def revoke_csv(
    path: Path, revocation: Revocation, *, window: int = DEFAULT_WINDOW, progress: bool = True
) -> BulkSummary:
    """Withdraw the contributions named by the rows (``kind``, ``value``) of a CSV.

    Each window goes through ``revocation``; a row whose value is invalid is a
    failure of that row (numbered from 1, header excluded, never quoted); the
    others are counted as revoked or not found (never contributed by this
    institution, or already withdrawn).  Raises as :func:`contribute_csv`.
    """
    summary = BulkSummary()
    for rows, offset in _windows(path, window, progress, "revoke"):
        pairs = [((row.get("kind") or "").strip(), row.get("value") or "") for row in rows]
        result = revocation(pairs)
        summary.rows += len(rows)
        summary.revoked += result.revoked
        summary.not_found += result.not_found
        summary.failures.extend(
            ItemFailure(offset + failure.index + 1, failure.kind, failure.error)
            for failure in result.failures
        )
    return summary


class _Pipeline(Generic[_T]):
    """Runs each window's hub call in the background while the next window is tokenized.

    One call in flight at a time, so at most two windows are in memory and results
    are handled in input order, on the caller's thread.  :meth:`check` raises a
    failed call's error before the next window is tokenized (no key-holder work
    for nothing).  On leaving the block the call in flight is finished and its
    result handled, also when the block raised an error (match_csv still writes
    the rows the hub answered); on an interrupt the block is left at once (the
    interpreter still joins the call, bounded by its deadline, at exit).
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


# --- CSV helpers --------------------------------------------------------------------------


def _windows(
    path: Path, window: int, progress: bool, what: str
) -> Iterator[tuple[list[dict[str, str]], int]]:
    """Rows of ``path`` in lists of at most ``window``, with the offset of each list."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    if not 1 <= window <= MAX_WINDOW:
        raise ConfigurationError(f"window must be 1..{MAX_WINDOW} rows (one stream each)")

    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    offset = 0
    rows: list[dict[str, str]] = []
    with handle, tqdm(desc=what, unit="row", disable=not progress) as bar:
        try:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"kind", "value"} <= set(reader.fieldnames):
                raise ConfigurationError(f"{path}: the header must name the columns kind and value")
            for row in reader:
                rows.append(row)
                if len(rows) == window:
                    yield rows, offset
                    bar.update(len(rows))
                    offset += len(rows)
                    rows = []
        except (UnicodeDecodeError, csv.Error) as exc:
            # The rows before it were sent; the file cannot be read on (no value quoted).
            where = f"row {offset + len(rows) + 1}"
            what_failed = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not CSV"
            raise ConfigurationError(f"{path}: {where}: {what_failed}") from None
        if rows:
            yield rows, offset
            bar.update(len(rows))


def _parse_time(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone (e.g. Z)")
    return value


def _indicator_from_row(row: dict[str, str]) -> Indicator:
    """An :class:`Indicator` from a CSV row; raises InvalidRequest for a bad field."""
    confidence_text = (row.get("confidence") or "").strip()
    try:
        confidence = int(confidence_text) if confidence_text else DEFAULT_CONFIDENCE
    except ValueError:
        raise InvalidRequest("confidence is not an integer") from None
    return Indicator(
        kind=(row.get("kind") or "").strip(),
        value=row.get("value") or "",
        category=(row.get("category") or "").strip(),
        confidence=confidence,
        observed_at=_parse_time(row.get("observed_at"), "observed_at"),
        expires_at=_parse_time(row.get("expires_at"), "expires_at"),
        label=row.get("label") or None,
        evidence=(row.get("evidence") or "").strip() or None,
    )


def _at_least(result: MatchResult, level: str) -> bool:
    """Whether ``result`` matched at ``level`` or above (so the field is meaningful)."""
    return result.matched and DISCLOSURE_LEVELS.index(result.disclosure) >= DISCLOSURE_LEVELS.index(
        level
    )


def _result_columns(outcome: MatchResult | ItemFailure) -> dict[str, str]:
    if isinstance(outcome, ItemFailure):
        return {
            "matched": "",
            "disclosure": "",
            "contributors": "",
            "categories": "",
            "first_seen": "",
            "last_seen": "",
            "max_confidence": "",
            "evidence": "",
            "score": "",
            "labels": "",
            "error": outcome.reason,
        }
    return {
        "matched": "yes" if outcome.matched else "no",
        "disclosure": outcome.disclosure,
        "contributors": str(outcome.contributors) if _at_least(outcome, "count") else "",
        "categories": " ".join(outcome.categories),
        "first_seen": outcome.first_seen.isoformat() if outcome.first_seen else "",
        "last_seen": outcome.last_seen.isoformat() if outcome.last_seen else "",
        "max_confidence": str(outcome.max_confidence) if _at_least(outcome, "summary") else "",
        "evidence": " ".join(outcome.evidence),
        "score": str(outcome.score) if _at_least(outcome, "summary") else "",
        "labels": " | ".join(f"{lb.contributor}: {lb.text}" for lb in outcome.labels),
        "error": "",
    }
