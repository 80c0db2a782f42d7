"""Audit events and their canonical encoding (hub.audit.events)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core.errors import InvalidRequest
from hub.audit.events import AuditEvent, case_ref_digest, decode, request_digest

WHEN = datetime(2026, 11, 24, 18, 0, 1, 250000, tzinfo=UTC)


def make_event(**changes: object) -> AuditEvent:
    event = AuditEvent(
        time=WHEN,
        institution="bank-a",
        role="bank",
        action="Exchange.Match",
        purpose="payee_screening",
        legal_basis="AML-Art.16",
        case_ref_digest=case_ref_digest("CASE-1"),
        kinds=("phone", "bank_account"),
        tiers=("sensitive", "context_dependent"),
        item_count=3,
        match_count=1,
        outcome="ok",
        reasons=("allowed_by_rule.payee_screening",),
        policy_version="ab" * 32,
        request_digest=request_digest(b"request"),
    )
    return replace(event, **changes)  # type: ignore[arg-type]


def test_encoding_is_sorted_compact_versioned_json() -> None:
    data = make_event().encode()
    obj = json.loads(data)
    assert obj["v"] == 1
    assert list(obj) == sorted(obj)
    assert b" " not in data
    assert obj["time"] == "2026-11-24T18:00:01.250000Z"
    assert obj["kinds"] == ["bank_account", "phone"]


def test_decode_roundtrip() -> None:
    event = make_event()
    assert decode(event.encode()) == event


def test_times_are_normalised_to_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=8)))
    assert make_event(time=local).encode() == make_event().encode()


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        json.dumps({"v": 2}).encode(),
        # Same content, not canonical (spaces).
        json.dumps(json.loads(make_event().encode()), sort_keys=True).encode(),
        make_event().encode().replace(b'"v":1', b'"v":1,"extra":0'),
    ],
)
def test_decode_rejects_non_canonical(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"time": datetime(2026, 1, 1)},  # naive
        {"institution": "bank a"},  # free text
        {"case_ref_digest": "CASE-1"},  # a raw reference, not a digest
        {"request_digest": "AB" * 32},
        {"item_count": -1},
        {"match_count": True},
        {"kinds": "phone"},
        {"reasons": ("+8613800138000 matched",)},
    ],
)
def test_malformed_fields_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        make_event(**changes)


def test_case_ref_digest() -> None:
    assert case_ref_digest(None) == ""
    assert case_ref_digest("") == ""
    assert len(case_ref_digest("CASE-1")) == 64


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.lists(st.sampled_from(["phone", "email", "url", "bank_card"]), max_size=4),
)
def test_any_valid_event_roundtrips(items: int, matches: int, kinds: list[str]) -> None:
    event = make_event(item_count=items, match_count=matches, kinds=tuple(kinds))
    assert decode(event.encode()) == event
