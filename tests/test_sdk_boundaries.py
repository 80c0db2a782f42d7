"""Nothing outside the FraudhubError hierarchy escapes the SDK's public functions,
and the SDK has one retry loop (``call_with_retry``) for hub calls and key holders alike."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fraudhub.v1 import common_pb2, exchange_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.client import bulk
from client_sdk.client.config import ClientConfig
from client_sdk.client.csvrows import CsvSource
from client_sdk.client.hub import HubClient
from client_sdk.client.messages import contribute_outcomes, match_result
from client_sdk.client.results import Contributed, ItemFailure, MatchResult
from client_sdk.core.errors import (
    ConfigurationError,
    FraudhubError,
    InvalidRequest,
    PermissionDenied,
    Unavailable,
)
from client_sdk.core.threshold import PublicKeyInfo
from client_sdk.core.tokens import TokenKeys
from client_sdk.core.vocabulary import Disclosure
from client_sdk.wire.auth import InstitutionKey
from client_sdk.wire.channels import ChannelSecurity, RetryPolicy, call_with_retry

# --- no ValueError / KeyError / TypeError ------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_disclosure_parse_raises_invalid_request_without_echoing(word: str) -> None:
    try:
        level = Disclosure.parse(word)
    except InvalidRequest as exc:
        # A fixed text: the caller's input is not echoed.
        assert str(exc) == "unknown disclosure level (one of none, match, count, summary, labels)"
    else:
        assert level.word == word.lower()


def test_disclosure_parse_refuses_unknown_words() -> None:
    with pytest.raises(InvalidRequest, match="unknown disclosure level"):
        Disclosure.parse("everything")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=64),
        _JSON.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "institution": _JSON,
                "key": _JSON,
                "hub": _JSON,
                "holders": st.lists(st.dictionaries(st.sampled_from(["index", "address"]), _JSON)),
                "public": _JSON,
            }
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_client_config_load_raises_only_configuration_error(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "client.json"  # overwritten by every example
    path.write_bytes(body)
    with contextlib.suppress(ConfigurationError):
        ClientConfig.load(path)


def test_client_config_refuses_non_utf8_and_huge_numbers(tmp_path: Path) -> None:
    path = tmp_path / "client.json"
    path.write_bytes(b'{"institution": "\xff"}')
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        ClientConfig.load(path)
    path.write_text(
        '{"institution": "a", "key": "k", "hub": "h", "public": "p",'
        ' "holders": [{"index": 1e400, "address": "x"}]}'
    )
    with pytest.raises(ConfigurationError, match="invalid field"):
        ClientConfig.load(path)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_public_key_file_raises_only_configuration_error(text: str) -> None:
    with contextlib.suppress(ConfigurationError):
        PublicKeyInfo.from_json(text)


def _contribution(items: Sequence[object]) -> Callable[[], list[Contributed | ItemFailure]]:
    return lambda: [Contributed(i, "phone") for i in range(len(items))]


@pytest.mark.parametrize(
    ("body", "row", "message"),
    [
        (b"kind,value,category\nphone,\xff\xfe,scam_phone\n", 1, "not valid utf-8"),
        (
            b"kind,value\n" + b"phone,13800138000\n" * 3 + b'phone,"' + b"x" * 200_000,
            4,
            "a field is longer than 131072 characters",
        ),
    ],
    ids=["not-utf8", "field-over-the-csv-limit"],
)
def test_unreadable_csv_rows_are_row_errors_and_the_others_go(
    tmp_path: Path, body: bytes, row: int, message: str
) -> None:
    """Issue 13: these aborted the run (ConfigurationError); now the row fails alone."""
    path = tmp_path / "in.csv"
    path.write_bytes(body)
    spec = bulk.contribution_job("fraud_reporting", _contribution)
    summary = bulk.run_job(CsvSource(path), spec, progress=False)
    assert [(f.index, f.reason) for f in summary.failures] == [(row, message)]
    assert summary.stored == summary.rows - 1


_KEYS = TokenKeys(match_token=b"\x01" * 32, label_key=b"\x02" * 32)


def test_a_category_newer_than_the_sdk_is_left_out() -> None:
    result = exchange_pb2.MatchResult(
        matched=True,
        disclosure=common_pb2.SUMMARY,
        categories=[common_pb2.SCAM_PHONE, common_pb2.Category.ValueType(99)],
    )
    decoded = match_result(0, "phone", _KEYS, result)
    assert decoded == MatchResult(0, "phone", True, "summary", categories=("scam_phone",))


def test_hub_times_out_of_range_are_invalid_request() -> None:
    result = exchange_pb2.MatchResult(matched=True, disclosure=common_pb2.SUMMARY)
    result.first_seen.seconds = 2**62
    with pytest.raises(InvalidRequest, match="first_seen"):
        match_result(0, "phone", _KEYS, result)
    response = exchange_pb2.ContributeResponse()
    clipped = response.clipped.add(index=0)
    clipped.expires_at.nanos = -1
    with pytest.raises(InvalidRequest, match=r"clipped\.expires_at"):
        contribute_outcomes([(0, exchange_pb2.Indicator(kind="phone"))], response, None)


def test_in_range_times_still_decode() -> None:
    result = exchange_pb2.MatchResult(matched=True, disclosure=common_pb2.SUMMARY)
    result.first_seen.FromDatetime(datetime(2026, 1, 2, tzinfo=UTC))
    assert match_result(0, "phone", _KEYS, result).first_seen == datetime(2026, 1, 2, tzinfo=UTC)


# --- one retry loop ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_errors_the_caller_names_are_retried_within_the_deadline() -> None:
    clock = FakeClock()
    attempts: list[float] = []

    def call(timeout: float) -> str:
        attempts.append(timeout)
        if len(attempts) < 3:
            raise Unavailable("too few key holders")
        return "ok"

    policy = RetryPolicy(deadline=10, initial_backoff=1, max_backoff=1)
    result = call_with_retry(
        call,
        policy,
        retry_if=lambda e: isinstance(e, Unavailable),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(3),
    )
    assert result == "ok" and len(clock.sleeps) == 2


@pytest.mark.parametrize(
    "retry_if",
    [None, lambda e: isinstance(e, Unavailable)],
    ids=["default", "only-unavailable"],
)
def test_other_fraudhub_errors_are_raised_at_once(retry_if: object) -> None:
    clock = FakeClock()
    attempts: list[float] = []

    def call(timeout: float) -> str:
        attempts.append(timeout)
        raise PermissionDenied("no") if retry_if else Unavailable("down")

    options = {"retry_if": retry_if} if retry_if else {}
    with pytest.raises(FraudhubError):
        call_with_retry(call, clock=clock, sleep=clock.sleep, **options)  # type: ignore[arg-type]
    assert len(attempts) == 1 and clock.sleeps == []


class FlakyTokenizer:
    """Stands in for the key holders: ``failures`` Unavailable answers, then tokens."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> list[TokenKeys]:
        self.calls += 1
        if self.calls <= self.failures:
            raise Unavailable("1 of the 2 key holders needed answered correctly")
        return [_KEYS for _ in pairs]

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("failures", "succeeds"), [(2, True), (100, False)])
def test_hub_client_retries_key_holder_outages_with_the_retry_policy(
    failures: int, succeeds: bool
) -> None:
    tokenizer = FlakyTokenizer(failures)
    key = InstitutionKey("bank-a", Ed25519PrivateKey.generate())
    policy = RetryPolicy(deadline=2, initial_backoff=0.01, max_backoff=0.02, max_attempts=5)
    with HubClient(
        "127.0.0.1:1",  # never dialled: revoking nothing sends no request
        key,
        tokenizer,  # type: ignore[arg-type]
        ChannelSecurity(insecure=True),
        key_epoch=1,
        retry=policy,
    ) as client:
        if succeeds:
            result = client.revoke([], reason="false_positive")
            assert (result.revoked, tokenizer.calls) == (0, 3)
        else:
            with pytest.raises(Unavailable):
                client.revoke([], reason="false_positive")
            assert tokenizer.calls == policy.max_attempts
