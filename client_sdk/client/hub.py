"""``HubClient``: contribute, revoke and match Python values against a fraudhub hub.

What an institution calls.  For every input value the client canonicalizes it
(``client_sdk.core.indicators``), turns it into a match token with the threshold
OPRF over the key holders (``client_sdk.client.tokenizer``), and sends only the token
and non-personal metadata to the hub.  Guarantees:

- Each input gets exactly one typed result or one :class:`ItemFailure` (an
  invalid value, a policy refusal, an item the hub found malformed), in input
  order; a failing item never hides the results of the others.
- Raw values and label texts never leave the process in clear: labels are
  sealed under the label key (``client_sdk.core.tokens.seal_label``) and opened
  again only by a client that holds the same raw value.
- Every request carries the caller's purpose and optional case reference
  (the policy decides on them; the audit log keeps the purpose and only a
  digest of the case reference).
- UNAVAILABLE from the hub, and too few key holders answering, are retried
  with exponential backoff within the :class:`~client_sdk.wire.channels.RetryPolicy`
  deadline.  Retrying is safe:
  contributions are idempotent per (institution, kind, token, epoch) and
  matches do not change stored data.
- The bulk variants (:meth:`HubClient.contribute_csv`,
  :meth:`HubClient.match_csv`) read the CSV in windows of ``window`` rows, so
  memory stays flat whatever the file size; the tokenizer spreads the crypto
  of large windows over all cores; each window travels as one client stream
  (ContributeStream) or bidirectional stream (MatchStream) of batches and is
  retried as a whole; a tqdm progress bar counts rows.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Generic, TypeVar

import grpc
from fraudhub.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc
from google.protobuf.message import Message
from grpc_status import rpc_status

from client_sdk.client.tokenizer import HolderEndpoint, Tokenizer
from client_sdk.core import indicators
from client_sdk.core.errors import (
    ConfigurationError,
    FraudhubError,
    InvalidIndicator,
    InvalidItems,
    InvalidRequest,
    PolicyDenied,
    Unavailable,
)
from client_sdk.core.threshold import PublicKeyInfo
from client_sdk.core.tokens import LabelError, TokenKeys, open_label, seal_label
from client_sdk.core.vocabulary import DISCLOSURE_LEVELS, REVOKE_REASONS
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, InstitutionKey
from client_sdk.wire.channels import ChannelSecurity, RetryPolicy, call_with_retry, open_channel
from client_sdk.wire.codecs import category_value, disclosure_word, timestamp

__all__ = [
    "BulkSummary",
    "ClientConfig",
    "Contributed",
    "HubClient",
    "Indicator",
    "ItemFailure",
    "Label",
    "MatchResult",
    "RevokeResult",
]

log = logging.getLogger(__name__)

#: Items per request message (exchange.proto allows up to 10000).
DEFAULT_BATCH = 2000
#: CSV rows tokenized and sent together by the bulk variants.
DEFAULT_WINDOW = 16384
# One window is one stream; the hub takes at most 200,000 items per stream.
MAX_WINDOW = 200_000
DEFAULT_CONFIDENCE = 50

_R = TypeVar("_R", bound=Message)
_T = TypeVar("_T")
_B = TypeVar("_B")
_O = TypeVar("_O")


@dataclass(frozen=True)
class Indicator:
    """One indicator to contribute: a raw value of ``kind`` and its metadata.

    ``label`` is free text (a case reference, a note) sealed before it leaves
    the process.  ``observed_at`` defaults to now; ``expires_at`` to as long as
    the hub's policy allows.
    """

    kind: str
    value: str = field(repr=False)
    category: str
    confidence: int = DEFAULT_CONFIDENCE
    observed_at: datetime | None = None
    expires_at: datetime | None = None
    label: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ItemFailure:
    """Why input ``index`` got no result; ``error`` never holds the value.

    ``kind`` is ``"unknown"`` when the caller's kind is not one fraudhub
    knows: a misplaced column can put a value there, and failures get printed.
    """

    index: int
    kind: str
    error: FraudhubError

    def __post_init__(self) -> None:
        if self.kind not in indicators.ALL_KINDS:
            object.__setattr__(self, "kind", indicators.UNKNOWN_KIND)

    @property
    def reason(self) -> str:
        """The error without its own position prefix (``index`` and ``kind`` say where)."""
        if isinstance(self.error, InvalidIndicator):
            return self.error.reason
        return str(self.error)


@dataclass(frozen=True)
class Contributed:
    """Input ``index`` is stored; ``expires_at`` is set when the hub clipped it."""

    index: int
    kind: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Label:
    """A contributor's label; ``text`` is None if it does not open (tampered)."""

    contributor: str
    text: str | None


@dataclass(frozen=True)
class MatchResult:
    """What the hub disclosed about input ``index`` (fields above ``disclosure`` stay empty)."""

    index: int
    kind: str
    matched: bool
    disclosure: str
    contributors: int = 0
    categories: tuple[str, ...] = ()
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    max_confidence: int = 0
    labels: tuple[Label, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class RevokeResult:
    """How many of the valid inputs were revoked; ``failures`` are the invalid ones."""

    revoked: int
    not_found: int
    failures: tuple[ItemFailure, ...] = ()


@dataclass
class BulkSummary:
    """Counts of a bulk run; ``failures`` lists each failed row (1-based data row)."""

    rows: int = 0
    stored: int = 0
    matched: int = 0
    failures: list[ItemFailure] = field(default_factory=list)


@dataclass(frozen=True)
class ClientConfig:
    """Where an institution's client finds the hub, the key holders and its key.

    Read from a JSON file (:meth:`load`): ``institution``, ``key`` (PEM
    private key file), ``hub`` (host:port), ``holders`` (list of ``{"index",
    "address"}``), ``public`` (public.json of the OPRF key), ``ca`` (CA file;
    omitted means the system roots) and optional ``server_name``.  Relative
    paths are relative to the file.
    """

    institution: str
    key: Path
    hub: str
    holders: tuple[HolderEndpoint, ...]
    public: Path
    ca: Path | None = None
    server_name: str | None = None

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        """Parse ``path``; raises ConfigurationError naming the missing or bad field."""
        try:
            data = json.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path}: not JSON (line {exc.lineno})") from None
        base = path.parent
        try:
            return cls(
                institution=str(data["institution"]),
                key=base / str(data["key"]),
                hub=str(data["hub"]),
                holders=tuple(
                    HolderEndpoint(int(h["index"]), str(h["address"])) for h in data["holders"]
                ),
                public=base / str(data["public"]),
                ca=base / str(data["ca"]) if data.get("ca") else None,
                server_name=data.get("server_name"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{path}: missing or invalid field {exc}") from None

    def dump(self) -> str:
        """The JSON text :meth:`load` reads (paths as given)."""
        return json.dumps(
            {
                "institution": self.institution,
                "key": str(self.key),
                "hub": self.hub,
                "holders": [{"index": h.index, "address": h.address} for h in self.holders],
                "public": str(self.public),
                "ca": str(self.ca) if self.ca else None,
                "server_name": self.server_name,
            },
            indent=2,
        )


_Q = TypeVar("_Q", bound=Message)


def _with_timeout(method: Callable[..., _R], request: _Q) -> Callable[[float], _R]:
    """``method(request, timeout=...)`` as a function of the timeout (for retries)."""

    def call(timeout: float) -> _R:
        return method(request, timeout=timeout)

    return call


def _partial(error: grpc.RpcError, response_type: type[_R]) -> _R | None:
    """The response for the valid items packed in an INVALID_ARGUMENT status, if any."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(response_type.DESCRIPTOR):
            message = response_type()
            detail.Unpack(message)
            return message
    return None


class HubClient:
    """One institution's connection to a hub and its key holders.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        hub: str,
        key: InstitutionKey,
        tokenizer: Tokenizer,
        security: ChannelSecurity,
        *,
        key_epoch: int,
        retry: RetryPolicy | None = None,
        batch_size: int = DEFAULT_BATCH,
        default_region: str = "CN",
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ConfigurationError("batch_size must be 1..10000")
        self.institution = key.institution_id
        self._tokenizer = tokenizer
        self._channel = open_channel(hub, security, BearerAuth(key, HUB_AUDIENCE))
        self._stub = exchange_pb2_grpc.ExchangeStub(self._channel)
        self._epoch = key_epoch
        self._retry = retry or RetryPolicy()
        self._batch = batch_size
        self._region = default_region

    @classmethod
    def connect(
        cls,
        hub: str,
        holders: Sequence[HolderEndpoint],
        public: PublicKeyInfo,
        key: InstitutionKey,
        security: ChannelSecurity,
        **options: Any,
    ) -> HubClient:
        """A client whose tokenizer uses ``holders`` (any ``t`` of them suffice)."""
        tokenizer = Tokenizer(holders, public, key, security)
        return cls(hub, key, tokenizer, security, key_epoch=public.epoch, **options)

    @classmethod
    def from_config(cls, config: ClientConfig, **options: Any) -> HubClient:
        """A client from a :class:`ClientConfig`; raises ConfigurationError."""
        try:
            public = PublicKeyInfo.from_json(config.public.read_text("utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {config.public}: {exc.strerror}") from None
        key = InstitutionKey.load(config.institution, config.key)
        if config.ca is not None:
            security = ChannelSecurity.from_ca_file(str(config.ca), config.server_name)
        else:
            security = ChannelSecurity(server_name=config.server_name)
        return cls.connect(config.hub, config.holders, public, key, security, **options)

    def close(self) -> None:
        self._tokenizer.close()
        self._channel.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- shared steps ---------------------------------------------------------------

    def _tokenize(
        self, kinds_values: Sequence[tuple[str, str]], offset: int = 0
    ) -> tuple[dict[int, tuple[str, TokenKeys]], list[ItemFailure]]:
        """Token keys by input index for the valid values; failures for the others."""
        failures: list[ItemFailure] = []
        valid: list[tuple[int, str, str]] = []
        for position, (kind, value) in enumerate(kinds_values):
            index = offset + position
            try:
                valid.append(
                    (index, kind, indicators.canonicalize(kind, value, default_region=self._region))
                )
            except InvalidIndicator as exc:
                failures.append(ItemFailure(index, kind, exc.at(index)))
        keys = self._tokenize_retrying([(kind, canonical) for _, kind, canonical in valid])
        return {index: (kind, k) for (index, kind, _), k in zip(valid, keys, strict=True)}, failures

    def _tokenize_retrying(self, pairs: Sequence[tuple[str, str]]) -> list[TokenKeys]:
        """Tokenize, retrying Unavailable (too few holders up) within the retry deadline.

        A holder that answered wrongly is excluded by the tokenizer, not retried.
        """
        end = time.monotonic() + self._retry.deadline
        backoffs = self._retry.backoffs(random.Random())  # noqa: S311 - jitter only
        while True:
            try:
                return self._tokenizer.tokenize(pairs)
            except Unavailable:
                pause = next(backoffs, None)
                if pause is None or time.monotonic() + pause >= end:
                    raise
                log.info("too few key holders answered; retrying in %.2fs", pause)
                time.sleep(pause)

    def _unary(
        self,
        method: Callable[[float], _R],
        response_type: type[_R],
    ) -> tuple[_R, InvalidItems | None]:
        """Call with retries; an InvalidItems status still yields its partial response.

        ``method(timeout)`` makes the call with that gRPC timeout.
        """
        partial: list[_R] = []

        def call(timeout: float) -> _R:
            try:
                return method(timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    found = _partial(exc, response_type)
                    if found is not None:
                        partial.append(found)
                raise

        try:
            return call_with_retry(call, self._retry), None
        except InvalidItems as exc:
            if partial:
                return partial[-1], exc
            raise

    @staticmethod
    def _batch_by_batch(
        batches: Sequence[Sequence[tuple[int, _B]]],
        call: Callable[[Sequence[tuple[int, _B]]], tuple[_R, InvalidItems | None]],
        outcomes: Callable[[Sequence[tuple[int, _B]], _R, InvalidItems | None], dict[int, _O]],
        kind_of: Callable[[_B], str],
    ) -> dict[int, _O | ItemFailure]:
        """One unary call per batch; a batch the policy refuses whole fails item by item."""
        out: dict[int, _O | ItemFailure] = {}
        for batch in batches:
            try:
                response, invalid = call(batch)
            except PolicyDenied as refused:
                out.update({i: ItemFailure(i, kind_of(item), refused) for i, item in batch})
                continue
            out.update(outcomes(batch, response, invalid))
        return out

    # --- contribute -------------------------------------------------------------------

    def contribute(
        self,
        items: Sequence[Indicator],
        *,
        purpose: str,
        case_reference: str | None = None,
    ) -> list[Contributed | ItemFailure]:
        """Contribute ``items``; one result per item, in order.

        An item the policy refuses is an :class:`ItemFailure` holding a
        :class:`PolicyDenied` with the reason codes.  Raises only for failures
        of the whole call (Unavailable, AuthenticationError, a role refusal...).
        """
        return self._contribution(items, purpose, case_reference, streaming=False)()

    def _contribution(
        self,
        items: Sequence[Indicator],
        purpose: str,
        case_reference: str | None,
        *,
        streaming: bool,
    ) -> Callable[[], list[Contributed | ItemFailure]]:
        """Tokenize and seal ``items`` now; return the call that sends them to the hub.

        The split lets the bulk path send one window while it tokenizes the next.
        """
        tokens, failures = self._tokenize([(i.kind, i.value) for i in items])
        results: dict[int, Contributed | ItemFailure] = {f.index: f for f in failures}
        now = datetime.now(UTC)
        messages: list[tuple[int, exchange_pb2.Indicator]] = []
        for index, (kind, keys) in tokens.items():
            try:
                messages.append((index, self._indicator_message(items[index], kind, keys, now)))
            except InvalidRequest as exc:
                results[index] = ItemFailure(index, kind, exc)
        batches = [messages[i : i + self._batch] for i in range(0, len(messages), self._batch)]

        def request(
            batch: Sequence[tuple[int, exchange_pb2.Indicator]],
        ) -> exchange_pb2.ContributeRequest:
            return exchange_pb2.ContributeRequest(
                purpose=purpose,
                case_reference=case_reference or "",
                indicators=[m for _, m in batch],
            )

        def send() -> list[Contributed | ItemFailure]:
            if streaming and batches:
                # One stream per call: response indices count across the stream.
                response, invalid = self._unary(
                    lambda timeout: self._stub.ContributeStream(
                        iter([request(b) for b in batches]), timeout=timeout
                    ),
                    exchange_pb2.ContributeResponse,
                )
                results.update(_contribute_results(messages, response, invalid))
            else:
                results.update(
                    self._batch_by_batch(
                        batches,
                        lambda batch: self._unary(
                            _with_timeout(self._stub.Contribute, request(batch)),
                            exchange_pb2.ContributeResponse,
                        ),
                        _contribute_results,
                        lambda message: message.kind,
                    )
                )
            return [results[i] for i in range(len(items))]

        return send

    def _indicator_message(
        self, item: Indicator, kind: str, keys: TokenKeys, now: datetime
    ) -> exchange_pb2.Indicator:
        """The wire form of one item; raises InvalidRequest for bad metadata."""
        if not 0 <= item.confidence <= 100:
            raise InvalidRequest("confidence must be between 0 and 100")
        message = exchange_pb2.Indicator(
            token=keys.match_token,
            kind=kind,
            category=category_value(item.category),
            confidence=item.confidence,
            key_epoch=self._epoch,
            observed_at=timestamp(item.observed_at or now),
        )
        if item.expires_at is not None:
            message.expires_at.CopyFrom(timestamp(item.expires_at))
        if item.label:
            message.sealed_label = seal_label(
                keys.label_key, keys.match_token, kind, self.institution, item.label.encode()
            )
        return message

    # --- revoke ----------------------------------------------------------------------------

    def revoke(self, items: Sequence[tuple[str, str]], *, reason: str) -> RevokeResult:
        """Withdraw this institution's contributions of ``(kind, value)`` pairs.

        ``reason`` is one of :data:`REVOKE_REASONS` (InvalidRequest otherwise).
        """
        if reason not in REVOKE_REASONS:  # checked before any key holder is asked
            raise InvalidRequest("reason must be one of " + ", ".join(REVOKE_REASONS))
        tokens, failures = self._tokenize(items)
        revoked = not_found = 0
        entries = sorted(tokens.items())
        for start in range(0, len(entries), self._batch):
            batch = entries[start : start + self._batch]
            request = exchange_pb2.RevokeRequest(
                reason=reason,
                items=[
                    exchange_pb2.RevokeItem(token=k.match_token, kind=kind, key_epoch=self._epoch)
                    for _, (kind, k) in batch
                ],
            )
            response, _ = self._unary(
                _with_timeout(self._stub.Revoke, request),
                exchange_pb2.RevokeResponse,
            )
            revoked += response.revoked
            not_found += response.not_found
        return RevokeResult(revoked, not_found, tuple(failures))

    # --- match --------------------------------------------------------------------------------

    def match(
        self,
        values: Sequence[tuple[str, str]],
        *,
        purpose: str,
        case_reference: str | None = None,
    ) -> list[MatchResult | ItemFailure]:
        """Screen ``(kind, value)`` pairs; one result per pair, in order.

        A pair the policy refuses is an :class:`ItemFailure` holding a
        :class:`PolicyDenied`; raises only for failures of the whole call.
        """
        return self._screening(values, purpose, case_reference, streaming=False)()

    def _screening(
        self,
        values: Sequence[tuple[str, str]],
        purpose: str,
        case_reference: str | None,
        *,
        streaming: bool,
    ) -> Callable[[], list[MatchResult | ItemFailure]]:
        """Tokenize ``values`` now; return the call that asks the hub (see _contribution)."""
        tokens, failures = self._tokenize(values)
        results: dict[int, MatchResult | ItemFailure] = {f.index: f for f in failures}
        entries = sorted(tokens.items())
        batches = [entries[i : i + self._batch] for i in range(0, len(entries), self._batch)]

        def request(
            batch: Sequence[tuple[int, tuple[str, TokenKeys]]],
        ) -> exchange_pb2.MatchRequest:
            return exchange_pb2.MatchRequest(
                purpose=purpose,
                case_reference=case_reference or "",
                queries=[
                    exchange_pb2.MatchQuery(token=k.match_token, kind=kind, key_epoch=self._epoch)
                    for _, (kind, k) in batch
                ],
            )

        def send() -> list[MatchResult | ItemFailure]:
            if streaming and batches:
                responses, invalid = self._match_stream([request(b) for b in batches])
                for batch, response in zip(batches, responses, strict=True):
                    results.update(self._match_results(batch, response, None))
                # Item errors of a stream count across the whole stream.
                results.update(self._match_results(entries, exchange_pb2.MatchResponse(), invalid))
            else:
                results.update(
                    self._batch_by_batch(
                        batches,
                        lambda batch: self._unary(
                            _with_timeout(self._stub.Match, request(batch)),
                            exchange_pb2.MatchResponse,
                        ),
                        self._match_results,
                        lambda entry: entry[0],
                    )
                )
            return [results[i] for i in range(len(values))]

        return send

    def _match_stream(
        self, requests: list[exchange_pb2.MatchRequest]
    ) -> tuple[list[exchange_pb2.MatchResponse], InvalidItems | None]:
        """All responses of one MatchStream (retried as a whole on UNAVAILABLE)."""
        received: list[exchange_pb2.MatchResponse] = []

        def call(timeout: float) -> list[exchange_pb2.MatchResponse]:
            received.clear()
            for response in self._stub.MatchStream(iter(requests), timeout=timeout):
                received.append(response)
            return list(received)

        try:
            return call_with_retry(call, self._retry), None
        except InvalidItems as exc:
            # The status came after every response: the valid items are answered.
            if len(received) == len(requests):
                return list(received), exc
            raise

    def _match_results(
        self,
        batch: Sequence[tuple[int, tuple[str, TokenKeys]]],
        response: exchange_pb2.MatchResponse,
        invalid: InvalidItems | None,
    ) -> dict[int, MatchResult | ItemFailure]:
        out: dict[int, MatchResult | ItemFailure] = {}
        for position, reason in _malformed(response, invalid).items():
            index, (kind, _) = batch[position]
            out[index] = ItemFailure(index, kind, InvalidRequest(reason))
        for result in response.results:
            index, (kind, keys) = batch[result.index]
            out[index] = self._decode_result(index, kind, keys, result)
        return out

    def _decode_result(
        self, index: int, kind: str, keys: TokenKeys, result: exchange_pb2.MatchResult
    ) -> MatchResult:
        labels = []
        for sealed in result.labels:
            try:
                text: str | None = open_label(
                    keys.label_key, keys.match_token, kind, sealed.contributor, sealed.sealed_label
                ).decode("utf-8", "replace")
            except LabelError:
                text = None
            labels.append(Label(sealed.contributor, text))
        return MatchResult(
            index=index,
            kind=kind,
            matched=result.matched,
            disclosure=disclosure_word(result.disclosure),
            contributors=result.contributors,
            categories=tuple(common_pb2.Category.Name(c).lower() for c in result.categories),
            first_seen=(
                result.first_seen.ToDatetime(tzinfo=UTC) if result.HasField("first_seen") else None
            ),
            last_seen=(
                result.last_seen.ToDatetime(tzinfo=UTC) if result.HasField("last_seen") else None
            ),
            max_confidence=result.max_confidence,
            labels=tuple(labels),
            reasons=tuple(result.reasons),
        )

    # --- bulk -------------------------------------------------------------------------------------

    def contribute_csv(
        self,
        path: Path,
        *,
        purpose: str,
        case_reference: str | None = None,
        window: int = DEFAULT_WINDOW,
        progress: bool = True,
    ) -> BulkSummary:
        """Contribute every row of a CSV.

        Columns ``kind``, ``value``, ``category`` and optional ``confidence``,
        ``observed_at``, ``expires_at`` (ISO 8601 with a zone), ``label``.  A
        row that cannot be parsed is a failure of that row (numbered from 1,
        header excluded); the others are still contributed.
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
                send = self._contribution(
                    [item for _, item in parsed], purpose, case_reference, streaming=True
                )
                pipeline.push(send, partial(tally, parsed, offset))
        summary.failures.sort(key=lambda f: f.index)
        return summary

    def match_csv(
        self,
        path: Path,
        out: IO[str],
        *,
        purpose: str,
        case_reference: str | None = None,
        window: int = DEFAULT_WINDOW,
        progress: bool = True,
    ) -> BulkSummary:
        """Screen every row of a CSV with columns ``kind`` and ``value``.

        Writes one CSV row per input row to ``out``: the input's other columns
        (the value column is left out, so the result file does not copy raw
        values), then the result.
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
                send = self._screening(pairs, purpose, case_reference, streaming=True)
                pipeline.push(send, partial(write, rows, offset))
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


def _malformed(
    response: exchange_pb2.ContributeResponse | exchange_pb2.MatchResponse,
    invalid: InvalidItems | None,
) -> dict[int, str]:
    """Reason by position of each malformed item: the response lists all of them,
    the INVALID_ARGUMENT status only the first 50 (and a stream's status counts
    positions across the stream, so it is only used with the response it came with)."""
    found = {e.index: e.reason for e in (invalid.items if invalid else ())}
    found.update((m.index, m.reason) for m in response.malformed)
    return found


def _contribute_results(
    batch: Sequence[tuple[int, exchange_pb2.Indicator]],
    response: exchange_pb2.ContributeResponse,
    invalid: InvalidItems | None,
) -> dict[int, Contributed | ItemFailure]:
    """Per-item outcomes of one request (or one stream) of ``batch``."""
    out: dict[int, Contributed | ItemFailure] = {}
    bad = _malformed(response, invalid)
    rejected = {r.index: r.reason for r in response.rejected_items}
    clipped = {c.index: c.expires_at.ToDatetime(tzinfo=UTC) for c in response.clipped}
    for position, (index, message) in enumerate(batch):
        if position in bad:
            out[index] = ItemFailure(index, message.kind, InvalidRequest(bad[position]))
        elif position in rejected:
            reasons = tuple(rejected[position].split(","))
            denied = PolicyDenied("the policy refuses this item", reasons)
            out[index] = ItemFailure(index, message.kind, denied)
        else:
            out[index] = Contributed(index, message.kind, clipped.get(position))
    return out


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
    with handle, tqdm(desc=what, unit="row", disable=not progress) as bar:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"kind", "value"} <= set(reader.fieldnames):
            raise ConfigurationError(f"{path}: the header must name the columns kind and value")
        offset = 0
        rows: list[dict[str, str]] = []
        for row in reader:
            rows.append(row)
            if len(rows) == window:
                yield rows, offset
                bar.update(len(rows))
                offset += len(rows)
                rows = []
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
        "labels": " | ".join(f"{lb.contributor}: {lb.text}" for lb in outcome.labels),
        "error": "",
    }
