"""Watchlists and alerts, the institution's side (the hub's Alerts service).

An institution watches values it holds: their tokens (made through the same
threshold OPRF path as match) go to the hub; its own row references stay
here, in a :class:`RefMap` (a local SQLite file keyed by token), so that each
:class:`Alert` can be mapped back to the institution's row.  The hub never
receives a reference.

Guarantees:

- :meth:`AlertsClient.follow` yields alerts in sequence order; after a lost
  connection it resumes after the last alert it yielded (no gaps, no
  repeats within one follow); across restarts the hub's durable cursor
  (acknowledged with :meth:`AlertsClient.ack`) is the resume point.  Delivery
  is at-least-once: an alert yielded but not acknowledged comes again.
- The map's memory use does not grow with its size (rows live on disk).
- Errors are :class:`~client_sdk.core.errors.FraudhubError` subclasses.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from fraudhub.v1 import alerts_pb2, alerts_pb2_grpc
from google.protobuf.message import Message

from client_sdk.client.bulk import DEFAULT_WINDOW, MAX_WINDOW
from client_sdk.client.csvrows import CsvRow, CsvSource, count_rows, read_rows
from client_sdk.client.progress import RowProgress
from client_sdk.client.results import BulkSummary, ItemFailure
from client_sdk.core.errors import (
    ConfigurationError,
    InvalidItems,
    InvalidRequest,
    PolicyDenied,
    Unavailable,
)
from client_sdk.core.tokens import TokenKeys
from client_sdk.wire.channels import RetryPolicy, call_with_retry
from client_sdk.wire.codecs import category_word, disclosure_word, timestamp, to_datetime
from client_sdk.wire.status import errors_from_status

__all__ = ["Alert", "AlertPage", "AlertsClient", "RefMap", "WatchCount", "WatchResult"]

#: Alert events as the SDK and the CLI spell them.
EVENTS = {
    alerts_pb2.NEW: "new",
    alerts_pb2.CHANGED: "changed",
    alerts_pb2.WITHDRAWN: "withdrawn",
    alerts_pb2.DISPUTED: "disputed",
}
_R = TypeVar("_R")
_STARTS = {"ack": alerts_pb2.START_AFTER_ACK, "now": alerts_pb2.START_NOW}


@dataclass(frozen=True)
class Alert:
    """One alert, decoded; ``ref`` is the watcher's own reference (None if unmapped)."""

    sequence: int
    event: str
    kind: str
    ref: str | None
    token: bytes
    purpose: str
    disclosure: str
    contributors: int
    categories: tuple[str, ...]
    first_seen: datetime | None
    last_seen: datetime | None
    max_confidence: int
    raised_at: datetime
    policy_version: str
    #: SUMMARY and above: the highest current score (0..100) when it was raised.
    score: int = 0
    #: ``disputed`` only: a dispute suspended this institution's OWN contribution
    #: (``ref`` is its reference if the ref map has the token); answer it with
    #: ``fraudhub dispute resolve`` by ``respond_by``.
    dispute: str | None = None
    respond_by: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``fraudhub alerts follow --format jsonl`` (no token)."""
        return {
            "sequence": self.sequence,
            "event": self.event,
            "ref": self.ref,
            "kind": self.kind,
            "purpose": self.purpose,
            "disclosure": self.disclosure,
            "categories": list(self.categories),
            "contributors": self.contributors,
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "max_confidence": self.max_confidence,
            "score": self.score,
            "raised_at": self.raised_at.isoformat(),
            "dispute": self.dispute,
            "respond_by": self.respond_by.isoformat() if self.respond_by else None,
        }


@dataclass(frozen=True)
class AlertPage:
    alerts: list[Alert]
    acked: int
    latest: int


@dataclass(frozen=True)
class WatchCount:
    kind: str
    purpose: str
    count: int


@dataclass
class WatchResult:
    """What a watch run did: counts, and the failures by input index."""

    added: int = 0
    refreshed: int = 0
    alerts: int = 0
    removed: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
    expires_at: datetime | None = None


class RefMap:
    """The institution's local map token -> its own row reference (a SQLite file).

    Never sent anywhere.  Keyed by ``(kind, token)``; a later reference for
    the same token replaces the earlier one.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS ref (kind TEXT NOT NULL, token BLOB NOT NULL, "
                "ref TEXT NOT NULL, PRIMARY KEY (kind, token))"
            )
            self._db.commit()
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open the reference map {path}: {exc}") from None
        self.path = path

    def put(self, entries: Iterable[tuple[str, bytes, str]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO ref VALUES (?, ?, ?)", entries)
        self._db.commit()

    def remove(self, keys: Iterable[tuple[str, bytes]]) -> None:
        self._db.executemany("DELETE FROM ref WHERE kind = ? AND token = ?", keys)
        self._db.commit()

    def ref(self, kind: str, token: bytes) -> str | None:
        row = self._db.execute(
            "SELECT ref FROM ref WHERE kind = ? AND token = ?", (kind, token)
        ).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        self._db.close()


#: ``tokenize(values)`` -> (token keys by input index, failures), as HubClient does it.
Tokenize = Callable[
    [Sequence[tuple[str, str]]], tuple[dict[int, tuple[str, TokenKeys]], list[ItemFailure]]
]


class AlertsClient:
    """Calls of the Alerts service over an open channel (HubClient holds one)."""

    def __init__(
        self,
        channel: grpc.Channel,
        key_epoch: int,
        retry: RetryPolicy,
        tokenize: Tokenize,
        batch_size: int,
    ) -> None:
        self._stub = alerts_pb2_grpc.AlertsStub(channel)
        self._epoch = key_epoch
        self._retry = retry
        self._tokenize = tokenize
        self._failure = ItemFailure
        self._batch = batch_size

    def _call(self, method: Callable[..., _R], request: Message) -> _R:
        def call(timeout: float) -> _R:
            return method(request, timeout=timeout)

        return call_with_retry(call, self._retry)

    def _items(
        self, entries: Sequence[tuple[int, tuple[str, TokenKeys]]]
    ) -> list[alerts_pb2.WatchItem]:
        return [
            alerts_pb2.WatchItem(token=keys.match_token, kind=kind, key_epoch=self._epoch)
            for _, (kind, keys) in entries
        ]

    def watch(
        self,
        values: Sequence[tuple[str, str]],
        *,
        purpose: str,
        reference: Sequence[str | None] | None = None,
        ref_map: RefMap | None = None,
        initial: bool = False,
        expires_at: datetime | None = None,
    ) -> WatchResult:
        """Watch ``(kind, value)`` pairs under ``purpose``.

        ``reference[i]`` (the institution's own reference of ``values[i]``) is
        written to ``ref_map`` before the hub is asked, never sent.  A pair the
        policy refuses is a failure holding a :class:`PolicyDenied`; a batch the
        policy refuses whole fails item by item.  Idempotent: watching again
        refreshes the expiry.
        """
        if reference is not None and (ref_map is None or len(reference) != len(values)):
            raise ConfigurationError("references need a reference map and one per value")
        tokens, failures = self._tokenize(values)
        result = WatchResult(failures=list(failures))
        entries = sorted(tokens.items())
        if reference is not None and ref_map is not None:
            ref_map.put(
                (kind, keys.match_token, ref)
                for index, (kind, keys) in entries
                if (ref := reference[index]) is not None
            )
        for start in range(0, len(entries), self._batch):
            batch = entries[start : start + self._batch]
            request = alerts_pb2.WatchRequest(
                purpose=purpose, items=self._items(batch), initial=initial
            )
            if expires_at is not None:
                request.expires_at.CopyFrom(timestamp(expires_at))
            try:
                response = self._call(self._stub.Watch, request)
            except PolicyDenied as refused:
                result.failures.extend(self._failure(i, kind, refused) for i, (kind, _) in batch)
                continue
            except InvalidItems as bad:
                # The valid items were stored; the status names the others.
                for item in bad.items:
                    index, (kind, _) = batch[item.index]
                    result.failures.append(self._failure(index, kind, InvalidRequest(item.reason)))
                continue
            result.added += response.added
            result.refreshed += response.refreshed
            result.alerts += response.alerts
            for rejected in response.rejected_items:
                index, (kind, _) = batch[rejected.index]
                codes = tuple(rejected.reason.split(","))
                error = PolicyDenied(
                    f"the policy refuses watching {kind} for {purpose} ({', '.join(codes)}; "
                    "`fraudhub policy explain` says why)",
                    codes,
                )
                result.failures.append(self._failure(index, kind, error))
            if response.HasField("expires_at"):
                when = to_datetime(response.expires_at, "expires_at")
                result.expires_at = min(result.expires_at or when, when)
        result.failures.sort(key=lambda f: f.index)
        return result

    def unwatch(self, values: Sequence[tuple[str, str]], *, ref_map: RefMap | None = None) -> int:
        """Stop watching ``(kind, value)`` pairs; returns how many watches were removed."""
        tokens, _failures = self._tokenize(values)
        entries = sorted(tokens.items())
        removed = 0
        for start in range(0, len(entries), self._batch):
            batch = entries[start : start + self._batch]
            request = alerts_pb2.UnwatchRequest(items=self._items(batch))
            response = self._call(self._stub.Unwatch, request)
            removed += response.removed
            if ref_map is not None:
                ref_map.remove((kind, keys.match_token) for _, (kind, keys) in batch)
        return removed

    def watch_csv(
        self,
        path: Path | str,
        *,
        purpose: str,
        ref_map: RefMap,
        remove: bool = False,
        initial: bool = False,
        window: int = DEFAULT_WINDOW,
        progress: bool = True,
        encoding: str = "utf-8",
    ) -> tuple[BulkSummary, WatchResult]:
        """Watch (with ``remove``: unwatch) every row of a CSV (``-``: stdin), a window at a time.

        Columns ``kind``, ``value`` and optional ``ref`` (the institution's own
        row reference, kept in ``ref_map`` only); other columns are ignored.
        The file is read as the bulk jobs read it (``client_sdk.client.csvrows``):
        a row that cannot be read is a failure naming its number (from 1,
        header excluded) and the problem, and every other row is still sent.
        Re-running a file is safe (idempotent).  Raises ConfigurationError for
        an unreadable file or a header without ``kind`` and ``value``.
        """
        if not 1 <= window <= MAX_WINDOW:
            raise ConfigurationError(f"window must be 1..{MAX_WINDOW} rows (one stream each)")
        source = CsvSource.of(path, encoding)
        _, rows = read_rows(source)
        summary = BulkSummary()
        total = WatchResult()
        batch: list[CsvRow] = []
        what = "unwatch" if remove else "watch"
        with (
            contextlib.closing(rows),
            RowProgress(what, count_rows(source), enabled=progress) as bar,
        ):
            for row in rows:
                summary.rows += 1
                if row.problem is not None:
                    summary.failures.append(
                        ItemFailure(row.row, "unknown", InvalidRequest(row.problem))
                    )
                    bar.advance(1)
                    continue
                batch.append(row)
                if len(batch) == window:
                    self._watch_window(batch, purpose, ref_map, remove, initial, summary, total)
                    bar.advance(len(batch))
                    batch = []
            if batch:
                self._watch_window(batch, purpose, ref_map, remove, initial, summary, total)
                bar.advance(len(batch))
        summary.stored = total.added + total.refreshed
        return summary, total

    def _watch_window(
        self,
        rows: list[CsvRow],
        purpose: str,
        ref_map: RefMap,
        remove: bool,
        initial: bool,
        summary: BulkSummary,
        total: WatchResult,
    ) -> None:
        pairs = [(row.get("kind").strip(), row.get("value")) for row in rows]
        if remove:
            total.removed += self.unwatch(pairs, ref_map=ref_map)
            return
        refs = [row.get("ref").strip() or None for row in rows]
        result = self.watch(
            pairs, purpose=purpose, reference=refs, ref_map=ref_map, initial=initial
        )
        total.added += result.added
        total.refreshed += result.refreshed
        total.alerts += result.alerts
        if result.expires_at is not None:
            total.expires_at = min(total.expires_at or result.expires_at, result.expires_at)
        summary.failures.extend(
            ItemFailure(rows[f.index].row, f.kind, f.error) for f in result.failures
        )

    def counts(self) -> list[WatchCount]:
        """The caller's active watches counted by kind and purpose."""
        response = call_with_retry(
            lambda timeout: self._stub.ListWatches(
                alerts_pb2.ListWatchesRequest(), timeout=timeout
            ),
            self._retry,
        )
        return [WatchCount(c.kind, c.purpose, c.count) for c in response.counts]

    def list(
        self, *, after: int | None = None, limit: int = 100, ref_map: RefMap | None = None
    ) -> AlertPage:
        """One page of alerts after ``after`` (default: after the durable cursor)."""
        request = alerts_pb2.ListAlertsRequest(limit=limit)
        if after is not None:
            request.start = alerts_pb2.START_AFTER
            request.after = after
        response = call_with_retry(
            lambda timeout: self._stub.List(request, timeout=timeout), self._retry
        )
        return AlertPage(
            [decode_alert(a, ref_map) for a in response.alerts], response.acked, response.latest
        )

    def ack(self, cursor: int) -> int:
        """Acknowledge every alert up to ``cursor`` (durable on the hub); returns the cursor."""
        response = call_with_retry(
            lambda timeout: self._stub.Ack(alerts_pb2.AckRequest(cursor=cursor), timeout=timeout),
            self._retry,
        )
        return response.acked

    def follow(
        self,
        *,
        start: str | int = "ack",
        timeout: float | None = None,
        ref_map: RefMap | None = None,
    ) -> Generator[Alert, None, None]:
        """Yield alerts as they arrive: after the durable cursor (``"ack"``), only new
        ones (``"now"``), or after a sequence number; until ``timeout`` seconds pass
        (forever if None).  Reconnects after a lost connection within the retry
        policy, resuming after the last alert yielded."""
        if isinstance(start, int):
            request = alerts_pb2.SubscribeRequest(start=alerts_pb2.START_AFTER, after=start)
        elif start in _STARTS:
            request = alerts_pb2.SubscribeRequest(start=_STARTS[start])
        else:
            raise ConfigurationError("start must be 'ack', 'now' or a sequence number")
        end = None if timeout is None else time.monotonic() + timeout
        backoffs = self._retry.backoffs(random.Random())  # noqa: S311 - jitter only
        while True:
            left = None if end is None else max(end - time.monotonic(), 0.0)
            if left == 0.0:
                return
            stream = self._stub.Subscribe(request, timeout=left)
            try:
                for message in stream:
                    alert = decode_alert(message, ref_map)
                    request = alerts_pb2.SubscribeRequest(
                        start=alerts_pb2.START_AFTER, after=alert.sequence
                    )
                    backoffs = self._retry.backoffs(random.Random())  # noqa: S311
                    yield alert
                return
            except grpc.RpcError as exc:
                if end is not None and time.monotonic() >= end:
                    return  # our own deadline ended the stream
                error = errors_from_status(exc)
                pause = next(backoffs, None)
                if not isinstance(error, Unavailable) or pause is None:
                    raise error from None
                time.sleep(pause)
            finally:
                stream.cancel()


def decode_alert(message: alerts_pb2.Alert, ref_map: RefMap | None) -> Alert:
    """A typed :class:`Alert`, its token mapped to the watcher's reference."""
    return Alert(
        sequence=message.sequence,
        event=EVENTS.get(message.event, "unknown"),
        kind=message.kind,
        ref=ref_map.ref(message.kind, message.token) if ref_map is not None else None,
        token=message.token,
        purpose=message.purpose,
        disclosure=disclosure_word(message.disclosure),
        contributors=message.contributors,
        categories=tuple(category_word(c) for c in message.categories),
        first_seen=(
            to_datetime(message.first_seen, "first_seen")
            if message.HasField("first_seen")
            else None
        ),
        last_seen=(
            to_datetime(message.last_seen, "last_seen") if message.HasField("last_seen") else None
        ),
        max_confidence=message.max_confidence,
        score=message.score,
        raised_at=to_datetime(message.raised_at, "raised_at"),
        dispute=message.dispute_id or None,
        respond_by=(
            to_datetime(message.respond_by, "respond_by")
            if message.HasField("respond_by")
            else None
        ),
        policy_version=message.policy_version,
    )
