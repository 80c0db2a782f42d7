"""client_sdk.wire.codecs: the one proto <-> domain conversion, validating on the way in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from fraudhub.v1 import common_pb2, exchange_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.core.errors import InvalidRequest
from client_sdk.core.vocabulary import CATEGORIES, Disclosure
from client_sdk.wire import codecs


@given(st.datetimes(timezones=st.just(UTC)))
def test_timestamps_round_trip(value: datetime) -> None:
    assert codecs.to_datetime(codecs.timestamp(value)) == value


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="timezone-aware"):
        codecs.timestamp(datetime(2026, 1, 1))


def test_other_zones_become_utc() -> None:
    value = datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8)))
    assert codecs.to_datetime(codecs.timestamp(value)) == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "nanos", "message"),
    [
        (codecs.MAX_SECONDS + 1, 0, "years 1-9999"),
        (codecs.MIN_SECONDS - 1, 0, "years 1-9999"),
        (2**63 - 1, 0, "years 1-9999"),
        (0, -1, "nanos"),
        (0, 1_000_000_000, "nanos"),
    ],
)
def test_out_of_range_timestamps_name_the_field(seconds: int, nanos: int, message: str) -> None:
    item = exchange_pb2.Indicator(observed_at=Timestamp(seconds=seconds, nanos=nanos))
    with pytest.raises(InvalidRequest, match=f"observed_at: .*{message}"):
        codecs.optional_datetime(item, "observed_at")


def test_unset_timestamp_is_none() -> None:
    assert codecs.optional_datetime(exchange_pb2.Indicator(), "observed_at") is None


def test_categories_follow_the_wire_enum() -> None:
    for word in CATEGORIES:
        number = codecs.category_value(word)
        assert common_pb2.Category.Name(number).lower() == word
        assert codecs.category_word(number) == word
    assert codecs.category_word(0) == ""
    assert codecs.category_word(len(CATEGORIES) + 1) == ""
    with pytest.raises(InvalidRequest):
        codecs.category_value("nonsense")


def test_disclosure_numbers_are_the_wire_enum() -> None:
    for level in Disclosure:
        assert common_pb2.Disclosure.Value(level.name if level else "DISCLOSURE_NONE") == int(level)
        assert codecs.disclosure_word(int(level)) == level.word
    with pytest.raises(InvalidRequest):
        codecs.disclosure_word(len(Disclosure))


def test_bigint_bounds_name_the_field() -> None:
    assert codecs.bigint(codecs.MAX_BIGINT, "start") == 2**63 - 1
    assert codecs.bigint(0, "start") == 0
    with pytest.raises(InvalidRequest, match=r"start must be 0\.\."):
        codecs.bigint(2**63, "start")
    with pytest.raises(InvalidRequest, match=r"item_id must be 1\.\."):
        codecs.bigint(0, "item_id", low=1)
