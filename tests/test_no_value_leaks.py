"""No error message, repr, traceback or log record shows a raw indicator value.

DESIGN.md: raw values never reach logs, audit events or error messages.  Each
part of fraudhub adds a section below that drives known values through its
error paths and hands everything a person or a log could see to
``leakcheck.assert_no_leak``: the exception (``leakcheck.rendered``: message,
repr, formatted traceback with chained causes, args) and the log records
captured at DEBUG.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import idna
import phonenumbers
import pytest
from leakcheck import assert_no_leak, digits_of, rendered
from stdnum.us import ssn

from client_sdk.core import tokens
from client_sdk.core.errors import FraudhubError, InvalidIndicator, InvalidRequest
from client_sdk.core.indicators import canonicalize, canonicalize_many

PHONE = "+86 138 0013 8000"
CARD = "4111 1111 1111 1111"
RIC = "360426199101010071"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, so a leak at any level is seen."""
    caplog.set_level(logging.DEBUG)
    yield caplog


def _secrets_of(value: str) -> list[str]:
    # The whole value and each ":"-separated part (a CC:number's number alone, a handle).
    return [value, *value.split(":")]


def _assert_error_shows_nothing(
    error: FraudhubError, values: list[str], logs: pytest.LogCaptureFixture
) -> None:
    assert_no_leak(rendered(error), values)
    assert_no_leak(logs.text, values)
    assert_no_leak("\n".join(repr(record.args) for record in logs.records), values)


# --- the checker itself -------------------------------------------------------------


def test_leakcheck_finds_a_value_spelled_differently() -> None:
    with pytest.raises(AssertionError):
        assert_no_leak("refused 138-0013-8000 for you", ["13800138000"])
    with pytest.raises(AssertionError):
        assert_no_leak("card (4111) 1111.1111 1111 bad", [CARD])
    with pytest.raises(AssertionError):
        assert_no_leak("handle SCAM_BOT refused", ["telegram:scam_bot", "scam_bot"])
    assert digits_of(PHONE) == "8613800138000"


def test_leakcheck_ignores_short_values_and_clean_text() -> None:
    assert_no_leak("item 12 (phone): a card number has 12 to 19 digits", [PHONE, CARD, "x:@", "12"])


@pytest.mark.parametrize(
    "library_call, value",
    [
        (lambda v: idna.encode(v, uts46=True, std3_rules=True), "exa_mple-shop.com"),
        (ipaddress.ip_address, "10.0.0.999"),
        (lambda v: ssn.validate(v) and int(v), "12345678x"),
    ],
    ids=["idna", "ipaddress", "int"],
)
def test_library_errors_would_leak_without_mapping(
    library_call: Callable[[str], object], value: str
) -> None:
    """The reason this module exists: the libraries quote their input."""
    with pytest.raises(ValueError) as caught:
        library_call(value)
    with pytest.raises(AssertionError):
        assert_no_leak(rendered(caught.value), [value])


# --- indicators ---------------------------------------------------------------------

_FIXTURE = json.loads(
    (Path(__file__).parent / "data" / "indicator_cases.json").read_text(encoding="utf-8")
)
# (kind, value, fragment of the reason): one error path each, beyond the fixture's
# invalid cases.  Several values are valid for another kind or almost valid.
INDICATOR_CASES: list[tuple[str, str, str]] = [
    *((c["kind"], c["input"], c["reason"]) for c in _FIXTURE["invalid"]),
    ("health", PHONE, "prohibited kind"),
    ("criminal_record", RIC, "prohibited kind"),
    ("biometric", "minutiae 4111111111111111", "prohibited kind"),
    ("religion", "member-id 360426199101010071", "prohibited kind"),
    ("genetic", "rs1801133 CT 13800138000", "prohibited kind"),
    ("phone_number", PHONE, "unknown kind"),
    ("phone", PHONE * 40, "longer than 512"),
    ("url", "https://pay.example/?card=4111111111111111&" + "a" * 2048, "longer than 2048"),
    ("bank_card", CARD + "\udc80", "not valid Unicode"),
    ("phone", PHONE + " ext 12", "only digits"),
    ("phone", "+86 138 0013 800", "not a valid number"),
    ("bank_card", "4111 1111 1111 1112", "Luhn"),
    ("bank_account", "ICBC:6222 0212 3456 7890 1234 5678 9012 3456 7890", "account must be"),
    ("national_id", "US:078-05-1120", "invalid part"),
    ("national_id", "CN:11010519A91231002X", "CN resident ID is malformed"),
    ("national_id", "CN:11010519491231002Y", "check digits"),
    ("national_id", "TW:A123456789", "no identity-number validator"),
    ("device_id", "MEID:ZZ0123450ABCDE", "MEID is malformed"),
    ("device_id", "MEID:AF01_23450ABCDE", "hexadecimal"),
    ("device_id", "IMEI:35209900176148", "15 digits"),
    ("email", "victim.13800138000@" + "a" * 64 + ".example", "not a valid IDNA"),
    ("email", "v" * 65 + "@bank.example", "64 octets"),
    ("email", "victim13800138000@" + ".".join(["a" * 60] * 4) + ".co", "254 characters"),
    ("email", "victim13800138000", "local-part@domain"),
    ("ip", "203.0.113.1/32", "network"),
    ("ip", "2001:db8::13800138000", "not an IPv4 or IPv6"),
    ("url", "http://[2001:db8::1/phish", "not a parseable URL"),
    ("url", "https://victim13800138000:pw@bank.example/", "userinfo"),
    ("url", "https://bank.example:138001/", "port out of range"),
    ("url", "https://13800138000/", "dotted-quad"),
    ("url", "https://bank.example/\u0000" + CARD, "control characters"),
    ("wallet", "TRX:T0NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", "base58"),
    ("wallet", "ETH:0x52908400098527886E0F7030069857D2E4169EZ7", "40 hex digits"),
    ("wallet", "BTC:bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj1", "bech32m"),
    ("social_account", "telegram:" + "scam" * 33, "1 to 128"),
    ("social_account", "wechat:victim 13800138000", "only letters"),
]


@pytest.mark.parametrize(
    "kind, value, reason",
    INDICATOR_CASES,
    ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(INDICATOR_CASES)],
)
def test_indicator_error_shows_no_value(
    kind: str, value: str, reason: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(InvalidIndicator) as caught:
        canonicalize(kind, value)
    error = caught.value
    assert reason in error.reason, "the case no longer reaches the error path it names"
    assert error.__cause__ is None and error.__context__ is None
    _assert_error_shows_nothing(error, _secrets_of(value), debug_logs)
    _assert_error_shows_nothing(error.at(7), _secrets_of(value), debug_logs)
    assert_no_leak(str(error.item()), _secrets_of(value))


def test_batch_errors_show_no_value(debug_logs: pytest.LogCaptureFixture) -> None:
    items = [(kind, value) for kind, value, _ in INDICATOR_CASES]
    results = canonicalize_many([("phone", PHONE), *items])
    assert results[0] == "+8613800138000"
    for index, ((_, value), result) in enumerate(zip(items, results[1:], strict=True), start=1):
        assert isinstance(result, InvalidIndicator)
        assert result.index == index
        _assert_error_shows_nothing(result, _secrets_of(value), debug_logs)


def test_value_passed_as_kind_is_not_echoed(debug_logs: pytest.LogCaptureFixture) -> None:
    # Arguments swapped by mistake: the "kind" is the raw value.
    for value in [PHONE, RIC, "victim13800138000@bank.example", "telegram:scam_bot"]:
        with pytest.raises(InvalidIndicator) as caught:
            canonicalize(value, "phone")
        assert caught.value.kind == "unknown"
        _assert_error_shows_nothing(caught.value, _secrets_of(value), debug_logs)


def test_unexpected_validator_exception_is_mapped_not_forwarded(
    monkeypatch: pytest.MonkeyPatch, debug_logs: pytest.LogCaptureFixture
) -> None:
    """A stdnum validator that fails outside its contract still leaks nothing."""

    def quoting_validate(number: str) -> str:
        raise ValueError(f"invalid literal for int() with base 10: {number!r}")

    monkeypatch.setattr(ssn, "validate", quoting_validate)
    value = "US:536-90-4399"
    with pytest.raises(InvalidIndicator) as caught:
        canonicalize("national_id", value)
    assert caught.value.reason == "identity number is malformed"
    _assert_error_shows_nothing(caught.value, _secrets_of(value), debug_logs)


def test_phonenumbers_parse_errors_are_reworded(debug_logs: pytest.LogCaptureFixture) -> None:
    for value in ["+", "+999 13800138000", "+86 13800138000138001380001380013800"]:
        with pytest.raises(phonenumbers.NumberParseException) as library_error:
            phonenumbers.parse(value, "CN")
        with pytest.raises(InvalidIndicator) as caught:
            canonicalize("phone", value)
        assert str(library_error.value) not in str(caught.value)
        _assert_error_shows_nothing(caught.value, [value], debug_logs)


# --- tokens -------------------------------------------------------------------------


def _sealed_phone_label() -> tuple[tokens.TokenKeys, bytes, list[str]]:
    value = "+8613800138000"
    label = f"case 2026-0113 victim {PHONE} card {CARD}"
    # A stand-in 64-byte OPRF output: derive_token_keys only needs the length.
    keys = tokens.derive_token_keys(hashlib.sha512(value.encode()).digest())
    sealed = tokens.seal_label(keys.label_key, keys.match_token, "phone", "bank-a", label.encode())
    secrets = [value, label, PHONE, CARD, keys.label_key.hex(), keys.match_token.hex()]
    return keys, sealed, secrets


def test_open_label_failures_show_no_label_value_or_key(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    keys, sealed, secrets = _sealed_phone_label()
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    attempts: list[Callable[[], bytes]] = [
        lambda: tokens.open_label(bytes(32), keys.match_token, "phone", "bank-a", sealed),
        lambda: tokens.open_label(keys.label_key, keys.match_token, "bank_card", "bank-a", sealed),
        lambda: tokens.open_label(keys.label_key, keys.match_token, "phone", "bank-b", sealed),
        lambda: tokens.open_label(keys.label_key, keys.match_token, "phone", "bank-a", tampered),
        lambda: tokens.open_label(keys.label_key, keys.match_token, "phone", "bank-a", sealed[:20]),
        lambda: tokens.open_label(keys.label_key[:16], keys.match_token, "phone", "bank-a", sealed),
        lambda: tokens.open_label(keys.label_key, keys.match_token[:8], "phone", "bank-a", sealed),
    ]
    for attempt in attempts:
        with pytest.raises(tokens.LabelError) as caught:
            attempt()
        _assert_error_shows_nothing(caught.value, secrets, debug_logs)
    assert_no_leak(repr(keys), [keys.label_key.hex()])


def test_too_long_oprf_input_shows_no_value(debug_logs: pytest.LogCaptureFixture) -> None:
    value = "+8613800138000" * 5000
    with pytest.raises(InvalidRequest) as caught:
        tokens.oprf_input("phone", value)
    _assert_error_shows_nothing(caught.value, [value, "+8613800138000"], debug_logs)
