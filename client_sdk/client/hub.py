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
  deadline, by the one retry loop (``client_sdk.wire.channels.call_with_retry``).
  Retrying is safe:
  contributions are idempotent per (institution, kind, token, epoch) and
  matches do not change stored data.
- The bulk variants (:meth:`HubClient.contribute_csv`,
  :meth:`HubClient.match_csv`, ``client_sdk.client.bulk``) read the CSV in
  windows of ``window`` rows, so memory stays flat whatever the file size; the
  tokenizer spreads the crypto of large windows over all cores; each window
  travels as one client stream (ContributeStream) or bidirectional stream
  (MatchStream) of batches and is retried as a whole; every row ends answered,
  refused or failed, a stopped job resumes from its journal, and a progress bar
  counts answered rows.

- During an OPRF key change (ADR 0013) a client given ``previous`` (a client of
  the previous key epoch) screens, revokes and disputes under both epochs and
  contributes under the current one (``client_sdk.client.epochs``).

The result types live in ``client_sdk.client.results`` and the configuration
file in ``client_sdk.client.config``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import grpc
from fraudhub.v1 import exchange_pb2, exchange_pb2_grpc
from google.protobuf.message import Message

from client_sdk.client import bulk
from client_sdk.client.alerts import AlertsClient, RefMap, WatchResult
from client_sdk.client.config import ClientConfig, check_separate_pins
from client_sdk.client.csvrows import CsvSource
from client_sdk.client.disputes import DisputeClient
from client_sdk.client.epochs import combine
from client_sdk.client.feedback import SightingMethods
from client_sdk.client.messages import (
    contribute_outcomes,
    indicator_message,
    malformed,
    match_outcome,
    partial_response,
)
from client_sdk.client.results import (
    BulkSummary,
    Contributed,
    Indicator,
    ItemFailure,
    MatchResult,
    RevokeResult,
)
from client_sdk.client.tokenizer import HolderEndpoint, Tokenizer
from client_sdk.core import indicators
from client_sdk.core.errors import (
    ConfigurationError,
    InvalidIndicator,
    InvalidItems,
    InvalidRequest,
    PolicyDenied,
    Unavailable,
)
from client_sdk.core.threshold import PublicKeyInfo
from client_sdk.core.tokens import TokenKeys
from client_sdk.core.vocabulary import REVOKE_REASONS
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, InstitutionKey
from client_sdk.wire.channels import (
    ChannelSecurity,
    RetryPolicy,
    call_with_retry,
    open_channel,
    with_timeout,
)

__all__ = ["DEFAULT_BATCH", "HubClient"]

#: Items per request message (exchange.proto allows up to 10000).
DEFAULT_BATCH = 2000

_R = TypeVar("_R", bound=Message)
_B = TypeVar("_B")
_O = TypeVar("_O")

_Q = TypeVar("_Q", bound=Message)


class HubClient(SightingMethods):
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
        previous: HubClient | None = None,
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
        self.alerts = AlertsClient(
            self._channel, key_epoch, self._retry, self._tokenize, batch_size
        )
        # The previous key epoch's client during a key change (ADR 0013), else None.
        self._previous = previous

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
        """A client whose tokenizer uses ``holders`` (any ``t`` of them suffice).

        ``security`` pins the hub only: every holder must carry its own pin
        (``HolderEndpoint.security``, ADR 0012), and no two endpoints may be
        pinned to the same CA certificate.  Otherwise whoever holds the hub's
        TLS key could pose as a holder and collect the holder JWTs, each good
        for one evaluation of elements of its choosing at the real holder.
        Raises ConfigurationError.
        """
        check_separate_pins(security, holders)
        tokenizer = Tokenizer(holders, public, key)
        return cls(hub, key, tokenizer, security, key_epoch=public.epoch, **options)

    @classmethod
    def from_config(cls, config: ClientConfig, **options: Any) -> HubClient:
        """A client from a :class:`ClientConfig`; raises ConfigurationError."""
        try:
            public = PublicKeyInfo.from_json(config.public.read_text("utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {config.public}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigurationError(f"{config.public}: not UTF-8") from None
        key = InstitutionKey.load(config.institution, config.key)
        if config.previous_public is not None:
            old = replace(
                config, holders=config.previous_holders, public=config.previous_public,
                previous_public=None, previous_holders=(),
            )  # fmt: skip
            options["previous"] = cls.from_config(old, **options)
        holders = [h.endpoint() for h in config.holders]
        return cls.connect(config.hub, holders, public, key, config.hub_security(), **options)

    @property
    def disputes(self) -> DisputeClient:
        """Open, list and answer data subjects' disputes (:mod:`client_sdk.client.disputes`)."""
        return DisputeClient(self._channel, self._tokenize_one, self._retry)

    def _tokenize_one(self, kind: str, value: str) -> list[tuple[int, TokenKeys]]:
        """One value's token keys under each key epoch of this client; raises InvalidIndicator."""
        canonical = indicators.canonicalize(kind, value, default_region=self._region)
        [keys] = self._tokenize_retrying([(kind, canonical)])
        older = [] if self._previous is None else self._previous._tokenize_one(kind, value)
        return [(self._epoch, keys), *older]

    def close(self) -> None:
        if self._previous is not None:
            self._previous.close()
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
        return call_with_retry(
            lambda _timeout: self._tokenizer.tokenize(pairs),
            self._retry,
            retry_if=lambda error: isinstance(error, Unavailable),
        )

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
                    found = partial_response(exc, response_type)
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
                message = indicator_message(
                    items[index],
                    kind,
                    keys,
                    epoch=self._epoch,
                    institution=self.institution,
                    now=now,
                )
                messages.append((index, message))
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
                results.update(contribute_outcomes(messages, response, invalid))
            else:
                results.update(
                    self._batch_by_batch(
                        batches,
                        lambda batch: self._unary(
                            with_timeout(self._stub.Contribute, request(batch)),
                            exchange_pb2.ContributeResponse,
                        ),
                        contribute_outcomes,
                        lambda message: message.kind,
                    )
                )
            return [results[i] for i in range(len(items))]

        return send

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
                with_timeout(self._stub.Revoke, request),
                exchange_pb2.RevokeResponse,
            )
            revoked += response.revoked
            not_found += response.not_found
        if self._previous is not None:
            # The same values' contributions under the previous key epoch go too.
            older = self._previous.revoke(items, reason=reason)
            revoked, not_found = revoked + older.revoked, not_found + older.not_found
        return RevokeResult(revoked, not_found, tuple(failures))

    def revoke_csv(self, path: Path | str, *, reason: str, **job: Any) -> BulkSummary:
        """Withdraw the contributions named by a CSV's ``kind``, ``value`` rows as a bulk
        job (:func:`client_sdk.client.bulk.revocation_job`; ``job`` as contribute_csv);
        ``reason`` as :meth:`revoke`."""
        if reason not in REVOKE_REASONS:  # before the file is read or a holder asked
            raise InvalidRequest("reason must be one of " + ", ".join(REVOKE_REASONS))
        spec = bulk.revocation_job(reason, lambda pairs: lambda: self.revoke(pairs, reason=reason))
        return self._bulk(path, spec, job)

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
        """Tokenize ``values`` now; return the call that asks the hub (see _contribution).

        With a previous key epoch the values are screened under both and each
        pair of answers combined (:func:`client_sdk.client.epochs.combine`).
        """
        current = self._screening_at_epoch(values, purpose, case_reference, streaming=streaming)
        if self._previous is None:
            return current
        previous = self._previous._screening(values, purpose, case_reference, streaming=streaming)
        return lambda: [combine(a, b) for a, b in zip(current(), previous(), strict=True)]

    def _screening_at_epoch(
        self,
        values: Sequence[tuple[str, str]],
        purpose: str,
        case_reference: str | None,
        *,
        streaming: bool,
    ) -> Callable[[], list[MatchResult | ItemFailure]]:
        """:meth:`_screening` under this client's own key epoch only."""
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
                            with_timeout(self._stub.Match, request(batch)),
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
        for position, reason in malformed(response, invalid).items():
            index, (kind, _) = batch[position]
            out[index] = ItemFailure(index, kind, InvalidRequest(reason))
        for result in response.results:
            index, (kind, keys) = batch[result.index]
            out[index] = match_outcome(index, kind, keys, result)
        return out

    # --- bulk (client_sdk.client.bulk) -------------------------------------------------------

    def contribute_csv(
        self, path: Path | str, *, purpose: str, case_reference: str | None = None, **job: Any
    ) -> BulkSummary:
        """Contribute every row of a CSV (``-``: stdin) as a bulk job (``client_sdk.client.bulk``).

        Columns ``kind``, ``value``, ``category`` and optional ``confidence``,
        ``observed_at``, ``expires_at`` (ISO 8601 with a zone), ``label``.  Every
        row ends ``stored``, ``refused`` or ``error`` (numbered from 1, header
        excluded); ``job`` takes :func:`bulk.run_job`'s ``out``, ``journal``,
        ``resume``, ``stop``, ``window`` and ``progress``, and ``encoding``.
        Raises ConfigurationError, :class:`~client_sdk.client.bulk.JobStopped`.
        """
        spec = bulk.contribution_job(
            purpose,
            lambda items: self._contribution(items, purpose, case_reference, streaming=True),
        )
        return self._bulk(path, spec, job)

    def match_csv(
        self,
        path: Path | str,
        out: IO[str] | None,
        *,
        purpose: str,
        case_reference: str | None = None,
        **job: Any,
    ) -> BulkSummary:
        """Screen every row of a CSV with columns ``kind`` and ``value`` (as contribute_csv).

        Writes one CSV row per input row to ``out``: the input's other columns
        (the value column is left out, so the result file does not copy raw
        values), ``status`` (``match``, ``no_match``, ``refused``, ``error``),
        ``reasons``, then the result.
        """
        spec = bulk.screening_job(
            purpose, lambda pairs: self._screening(pairs, purpose, case_reference, streaming=True)
        )
        return self._bulk(path, spec, {**job, "out": out})

    @staticmethod
    def _bulk(path: Path | str, spec: bulk.JobSpec, job: dict[str, Any]) -> BulkSummary:
        source = CsvSource.of(path, job.pop("encoding", "utf-8"))
        return bulk.run_job(source, spec, **job)

    # --- watchlists (client_sdk.client.alerts; alerts: self.alerts.follow, .list, .ack) -----

    def watch(
        self, values: Sequence[tuple[str, str]], *, purpose: str, **options: Any
    ) -> WatchResult:
        """Watch ``(kind, value)`` pairs: :meth:`AlertsClient.watch` (``reference``,
        this institution's own row references, go only to its ``ref_map``)."""
        return self.alerts.watch(values, purpose=purpose, **options)

    def unwatch(self, values: Sequence[tuple[str, str]], *, ref_map: RefMap | None = None) -> int:
        """Stop watching ``(kind, value)`` pairs; returns how many watches were removed."""
        return self.alerts.unwatch(values, ref_map=ref_map)
