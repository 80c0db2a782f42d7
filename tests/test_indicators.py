"""client_sdk.core.indicators: one canonical form per kind, precise refusals.

Table-driven cases live in ``tests/data/indicator_cases.json`` (sources named
there); hypothesis checks idempotence, spelling equivalence and robustness on
arbitrary text for every kind.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import idna
import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.provisional import domains
from stdnum import iban, luhn, meid
from stdnum.cn import ric

from client_sdk.core import tokens
from client_sdk.core.errors import ConfigurationError, InvalidIndicator
from client_sdk.core.indicators import (
    ALL_KINDS,
    CATEGORIES,
    KINDS,
    MAX_URL_CHARS,
    MAX_VALUE_CHARS,
    NATIONAL_ID_COUNTRIES,
    PROHIBITED_KINDS,
    PROHIBITED_REASON,
    WALLET_CHAINS,
    canonicalize,
    canonicalize_many,
)

CASES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "indicator_cases.json").read_text(encoding="utf-8")
)
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _case_id(case: dict[str, str]) -> str:
    return f"{case['kind']}:{case['input']}"


# --- table-driven cases ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES["valid"], ids=_case_id)
def test_valid_value_has_its_canonical_form(case: dict[str, str]) -> None:
    region = case.get("region", "CN")
    canonical = canonicalize(case["kind"], case["input"], default_region=region)
    assert canonical == case["canonical"]
    assert canonicalize(case["kind"], canonical, default_region=region) == canonical


@pytest.mark.parametrize("case", CASES["invalid"], ids=_case_id)
def test_invalid_value_is_refused_with_its_reason(case: dict[str, str]) -> None:
    with pytest.raises(InvalidIndicator) as caught:
        canonicalize(case["kind"], case["input"], default_region=case.get("region", "CN"))
    error = caught.value
    assert error.kind == case["kind"]
    assert case["reason"] in error.reason
    assert error.index is None
    assert str(error) == f"({case['kind']}): {error.reason}"


@pytest.mark.parametrize(
    "example", CASES["national_id_examples"], ids=lambda example: example["country"]
)
def test_every_national_id_country_accepts_its_stdnum_example(example: dict[str, str]) -> None:
    canonical = canonicalize("national_id", f"{example['country'].lower()}:{example['input']}")
    assert canonical == example["canonical"]
    assert canonicalize("national_id", canonical) == canonical


def test_national_id_examples_cover_every_supported_country() -> None:
    countries = [example["country"] for example in CASES["national_id_examples"]]
    assert tuple(sorted(countries)) == NATIONAL_ID_COUNTRIES


def test_every_kind_has_valid_and_invalid_cases() -> None:
    for table in ("valid", "invalid"):
        assert {case["kind"] for case in CASES[table]} == set(KINDS), table


# --- kinds, categories, bounds -----------------------------------------------------


def test_kind_lists_follow_the_design() -> None:
    assert set(KINDS).isdisjoint(PROHIBITED_KINDS)
    assert ALL_KINDS == KINDS + PROHIBITED_KINDS
    assert set(PROHIBITED_KINDS) == {
        "genetic",
        "health",
        "criminal_record",
        "biometric",
        "religion",
    }
    assert CATEGORIES == (
        "money_mule",
        "scam_phone",
        "card_seller",
        "phishing",
        "fake_investment",
        "romance_scam",
        "gambling",
        "identity_theft",
        "other",
    )


@pytest.mark.parametrize("kind", PROHIBITED_KINDS)
@pytest.mark.parametrize("value", ["AB+", "anything at all", ""])
def test_prohibited_kinds_are_refused_whatever_the_value(kind: str, value: str) -> None:
    with pytest.raises(InvalidIndicator) as caught:
        canonicalize(kind, value)
    assert (caught.value.kind, caught.value.reason) == (kind, PROHIBITED_REASON)


@pytest.mark.parametrize("kind", ["passport", "PHONE", "13800138000", ""])
def test_unknown_kind_is_refused_without_echoing_it(kind: str) -> None:
    with pytest.raises(InvalidIndicator) as caught:
        canonicalize(kind, "+8613800138000")
    assert caught.value.kind == "unknown"
    assert caught.value.reason.startswith("unknown kind; accepted kinds: phone, bank_card")


@pytest.mark.parametrize("kind", KINDS)
def test_overlong_value_is_refused_before_parsing(kind: str) -> None:
    limit = MAX_URL_CHARS if kind == "url" else MAX_VALUE_CHARS
    with pytest.raises(InvalidIndicator) as caught:
        canonicalize(kind, "1" * (limit + 1))
    assert caught.value.reason == f"longer than {limit} characters"


def test_longest_accepted_url_is_the_bound() -> None:
    prefix = "https://example.com/"
    url = prefix + "a" * (MAX_URL_CHARS - len(prefix))
    assert canonicalize("url", url) == url


@pytest.mark.parametrize("kind", KINDS)
def test_lone_surrogate_is_refused(kind: str) -> None:
    with pytest.raises(InvalidIndicator) as caught:
        canonicalize(kind, "a\udc80b")
    assert caught.value.reason == "not valid Unicode text"


def test_default_region_reads_national_phone_formats() -> None:
    assert canonicalize("phone", "020 7946 0018", default_region="gb") == "+442079460018"
    # The same digits read in CN are a different (Guangzhou) number.
    assert canonicalize("phone", "020 7946 0018") == "+862079460018"


@pytest.mark.parametrize("region", ["XX", "China", ""])
def test_unknown_default_region_is_a_configuration_error(region: str) -> None:
    with pytest.raises(ConfigurationError):
        canonicalize("phone", "13800138000", default_region=region)
    with pytest.raises(ConfigurationError):
        canonicalize_many([("phone", "13800138000")], default_region=region)


def test_canonicalize_many_locates_each_error() -> None:
    results = canonicalize_many(
        [
            ("phone", "138 0013 8000"),
            ("bank_card", "4111111111111112"),
            ("genetic", "x"),
            ("ip", "2001:DB8::1"),
        ]
    )
    assert results[0] == "+8613800138000"
    assert results[3] == "2001:db8::1"
    card, genetic = results[1], results[2]
    assert isinstance(card, InvalidIndicator)
    assert isinstance(genetic, InvalidIndicator)
    assert (card.index, card.kind) == (1, "bank_card")
    assert str(card) == "item 1 (bank_card): Luhn check digit does not match"
    assert (genetic.index, genetic.reason) == (2, PROHIBITED_REASON)
    assert str(card.item()) == "item 1 (bank_card): Luhn check digit does not match"


def test_canonicalize_many_accepts_any_iterable() -> None:
    generator = (("domain", name) for name in ["A.example", "b.EXAMPLE."])
    assert canonicalize_many(generator) == ["a.example", "b.example"]
    assert canonicalize_many([]) == []


def test_refusal_is_logged_at_debug_with_kind_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="client_sdk.core.indicators")
    with pytest.raises(InvalidIndicator):
        canonicalize("bank_card", "4111111111111112")
    assert [record.getMessage() for record in caplog.records] == [
        "indicator refused: (bank_card): Luhn check digit does not match"
    ]


# --- strategies: valid values and equivalent spellings, per kind -------------------


def _mixed_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    # ASCII only: upper-casing "ß" gives "SS", a different name.
    return "".join(
        (c.upper() if flip else c.lower()) if c.isascii() else c
        for c, flip in zip(text, flips, strict=True)
    )


def _grouped(draw: st.DrawFn, digits: str, size: int = 4) -> str:
    separator = draw(st.sampled_from(["", " ", "-", "  "]))
    return separator.join(digits[i : i + size] for i in range(0, len(digits), size))


def _padded(draw: st.DrawFn, text: str) -> str:
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " ", "\n"]))


CN_MOBILE_PREFIXES = ["130", "135", "138", "139", "150", "158", "177", "186", "189", "199"]
PHONE_REGIONS = ["CN", "US", "GB", "HK", "DE", "JP", "IN", "SG", "FR", "BR"]


@st.composite
def phone_spellings(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(region, spellings of one valid number readable in that region)."""
    if draw(st.booleans()):
        region = "CN"
        national = draw(st.sampled_from(CN_MOBILE_PREFIXES)) + draw(
            st.text("0123456789", min_size=8, max_size=8)
        )
        number = phonenumbers.parse(national, region)
    else:
        region = draw(st.sampled_from(PHONE_REGIONS))
        kind = draw(
            st.sampled_from(
                [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
            )
        )
        example = phonenumbers.example_number_for_type(region, kind)
        assert example is not None
        number = example
    assume(phonenumbers.is_valid_number(number))
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    national_text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    separator = draw(st.sampled_from([" ", "-", ".", ""]))
    spellings = [e164, international, national_text, international.replace(" ", separator)]
    if region == "CN":
        spellings.append("00" + e164[1:])  # 00 is the CN international prefix
        spellings.append("00" + draw(st.sampled_from([" ", ""])) + international[1:])
    return region, [_padded(draw, s) for s in spellings]


@st.composite
def card_spellings(draw: st.DrawFn) -> list[str]:
    body = draw(st.text("0123456789", min_size=11, max_size=18))
    digits = body + luhn.calc_check_digit(body)
    return [digits, _grouped(draw, digits), _padded(draw, _grouped(draw, digits))]


@st.composite
def bank_account_spellings(draw: st.DrawFn) -> list[str]:
    if draw(st.booleans()):
        country, bban = draw(
            st.sampled_from(
                [
                    ("GB", st.from_regex(r"[A-Z]{4}[0-9]{14}", fullmatch=True)),
                    ("DE", st.from_regex(r"[0-9]{18}", fullmatch=True)),
                    ("NL", st.from_regex(r"[A-Z]{4}[0-9]{10}", fullmatch=True)),
                ]
            )
        )
        body = draw(bban)
        number = country + iban.calc_check_digits(country + "00" + body) + body
        assume(iban.is_valid(number))
        return [
            number,
            _mixed_case(draw, _grouped(draw, number)),
            "IBAN:" + number,
            draw(st.sampled_from(["iban", "Iban", "IBAN"])) + " : " + _grouped(draw, number),
        ]
    code = draw(st.from_regex(r"[A-Z0-9]{2,16}", fullmatch=True).filter(lambda c: c != "IBAN"))
    account = draw(st.from_regex(r"[A-Z0-9]{4,34}", fullmatch=True))
    return [
        f"{code}:{account}",
        f"{_mixed_case(draw, code)} : {_mixed_case(draw, _grouped(draw, account))}",
    ]


# Administrative division codes valid for every birth year drawn below (stdnum's cn/loc.dat).
RIC_REGIONS = ["110101", "110105", "310104", "320102", "330106", "360426", "420106", "440305"]


@st.composite
def national_id_spellings(draw: st.DrawFn) -> list[str]:
    born = draw(st.dates(datetime.date(1985, 1, 1), datetime.date(2005, 12, 31)))
    body = draw(st.sampled_from(RIC_REGIONS)) + born.strftime("%Y%m%d")
    body += draw(st.text("0123456789", min_size=3, max_size=3))
    number = body + ric.calc_check_digit(body + "0")
    spaced = f"{number[:6]} {number[6:14]} {number[14:]}"
    return [number, number.lower(), "CN:" + number, "cn: " + spaced.lower(), _padded(draw, spaced)]


@st.composite
def device_id_spellings(draw: st.DrawFn) -> list[str]:
    if draw(st.booleans()):
        body = draw(st.text("0123456789", min_size=14, max_size=14))
        number = body + luhn.calc_check_digit(body)
        dashed = f"{number[:2]}-{number[2:8]}-{number[8:14]}-{number[14:]}"
        return [number, "IMEI:" + number, "imei: " + dashed, _padded(draw, dashed)]
    # A leading A-F keeps the MEID out of the all-decimal range stdnum reads as an IMEI.
    number = draw(st.sampled_from("ABCDEF")) + draw(
        st.text("0123456789ABCDEF", min_size=13, max_size=13)
    )
    check = luhn.calc_check_digit(number, alphabet="0123456789ABCDEF")
    return [
        "MEID:" + number,
        "meid:" + _mixed_case(draw, number),
        "MEID:" + meid.format(number + check, add_check_digit=True),
        "Meid: " + meid.format(number, format="dec"),
    ]


UNICODE_LABELS = ["bücher", "例え", "テスト", "пример", "münchen", "中国", "faß"]


def _idna_host_name(name: str) -> bool:
    """RFC 1035 names that IDNA 2008 also accepts (it forbids "--" in positions 3-4)."""
    try:
        idna.encode(name, uts46=True, std3_rules=True)
    except idna.IDNAError:
        return False
    return not name.rsplit(".", 1)[-1][:1].isdigit()


@st.composite
def domain_spellings(draw: st.DrawFn) -> list[str]:
    if draw(st.booleans()):
        canonical = draw(domains(max_length=60).map(str.lower).filter(_idna_host_name))
        unicode_name = idna.decode(canonical)
    else:
        labels = draw(st.lists(st.sampled_from(UNICODE_LABELS), min_size=1, max_size=3))
        tld = draw(st.sampled_from(["com", "cn", "中国", "example"]))
        unicode_name = ".".join([*labels, tld])
        canonical = idna.encode(unicode_name, uts46=True).decode()
    return [
        canonical,
        unicode_name,
        _mixed_case(draw, canonical),
        _mixed_case(draw, unicode_name) + ".",
        unicode_name.replace(".", "。"),
    ]


@st.composite
def email_spellings(draw: st.DrawFn) -> list[str]:
    local = draw(st.from_regex(r"[a-z0-9]([a-z0-9_+-]{0,10}(\.[a-z0-9]{1,5})?)?", fullmatch=True))
    names = draw(domain_spellings())
    return [f"{local}@{name.rstrip('.')}" for name in names[:3]] + [
        _mixed_case(draw, local) + "@" + names[1].rstrip("."),
        "\uff20".join([local.upper(), names[0]]),  # fullwidth @ (NFKC)
    ]


@st.composite
def ip_spellings(draw: st.DrawFn) -> list[str]:
    address = draw(st.ip_addresses())
    if address.version == 4:
        text = str(address)
        return [text, _padded(draw, text), f"::ffff:{text}", f"[::FFFF:{text}]"]
    if address.ipv4_mapped is not None:
        return [str(address), str(address.ipv4_mapped)]
    return [str(address), address.exploded, address.exploded.upper(), f"[{address.compressed}]"]


@st.composite
def url_spellings(draw: st.DrawFn) -> list[str]:
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(domain_spellings())
    port = draw(st.sampled_from(["", ":8080", ":8443"]))
    segments = draw(st.lists(st.from_regex(r"[a-z0-9_~-]{1,8}", fullmatch=True), max_size=3))
    query = draw(st.sampled_from(["", "?a=1", "?q=%E4%B8%AD&b"]))
    path = "/" + "/".join(segments)
    default_port = {"http": ":80", "https": ":443"}[scheme]
    tilde_escaped = path.replace("~", "%7e")
    dotted = "/./x/.." + path
    return [
        f"{scheme}://{host[0]}{port}{path}{query}",
        f"{scheme.upper()}://{host[1]}{port or default_port}{tilde_escaped}{query}#frag",
        f"{_mixed_case(draw, scheme)}://{host[2]}{port}{dotted}{query}",
    ]


def _base58check(payload: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    value, text = int.from_bytes(data, "big"), ""
    while value:
        value, digit = divmod(value, 58)
        text = alphabet[digit] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


@st.composite
def wallet_spellings(draw: st.DrawFn) -> list[str]:
    family = draw(st.sampled_from(["evm", "tron", "btc"]))
    if family == "evm":
        chain = draw(st.sampled_from(["ETH", "USDT-ERC20", "USDC-ERC20", "BSC", "USDT-BEP20"]))
        address = "0x" + draw(st.text("0123456789abcdef", min_size=40, max_size=40))
        variants = [address, "0x" + _mixed_case(draw, address[2:])]
    elif family == "tron":
        chain = draw(st.sampled_from(["TRX", "USDT-TRC20", "USDC-TRC20"]))
        address = _base58check(b"\x41" + draw(st.binary(min_size=20, max_size=20)))
        variants = [address, f" {address} "]
    else:
        chain = "BTC"
        address = draw(
            st.sampled_from(
                ["1NEDqZPvTWRaoho48qXuLLsrYomMXPABfD", "bc1qardv855yjngspvxuttq897aqca3lxju2y69jce"]
            )
        )
        variants = [address, address.upper() if address.startswith("bc1") else address]
    return [f"{_mixed_case(draw, chain)}:{variant}" for variant in variants]


@st.composite
def social_spellings(draw: st.DrawFn) -> list[str]:
    platform = draw(
        st.sampled_from(["telegram", "wechat", "qq", "weibo", "x", "whatsapp.business"])
    )
    handle = draw(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True))
    return [
        f"{platform}:{handle}",
        f"{_mixed_case(draw, platform)}:@{_mixed_case(draw, handle)}",
        f" {platform} : @{handle.upper()} ",
    ]


def _region_free(
    strategy: st.SearchStrategy[list[str]],
) -> st.SearchStrategy[tuple[str, list[str]]]:
    return strategy.map(lambda spellings: ("CN", spellings))


SPELLINGS: dict[str, st.SearchStrategy[tuple[str, list[str]]]] = {
    "phone": phone_spellings(),
    "bank_card": _region_free(card_spellings()),
    "bank_account": _region_free(bank_account_spellings()),
    "national_id": _region_free(national_id_spellings()),
    "device_id": _region_free(device_id_spellings()),
    "email": _region_free(email_spellings()),
    "ip": _region_free(ip_spellings()),
    "url": _region_free(url_spellings()),
    "domain": _region_free(domain_spellings()),
    "wallet": _region_free(wallet_spellings()),
    "social_account": _region_free(social_spellings()),
}


def test_every_kind_has_a_spelling_strategy() -> None:
    assert set(SPELLINGS) == set(KINDS)


# --- properties ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_equivalent_spellings_give_one_idempotent_canonical_form(kind: str) -> None:
    @PROPERTY
    @given(SPELLINGS[kind])
    def check(drawn: tuple[str, list[str]]) -> None:
        region, spellings = drawn
        canonical = {canonicalize(kind, s, default_region=region) for s in spellings}
        assert len(canonical) == 1, (spellings, canonical)
        (form,) = canonical
        assert canonicalize(kind, form, default_region=region) == form
        assert form == form.strip()

    check()


@pytest.mark.parametrize("kind", KINDS)
def test_arbitrary_text_is_canonical_or_refused(kind: str) -> None:
    """No input crashes a normalizer, and whatever is accepted is a fixpoint."""
    alphabet = st.characters(codec="utf-8") | st.sampled_from(":@.-+/[]%0123456789xX ")

    @settings(PROPERTY, max_examples=150)
    @given(st.text(alphabet, max_size=60))
    def check(value: str) -> None:
        try:
            canonical = canonicalize(kind, value)
        except InvalidIndicator as error:
            assert error.kind == kind
            assert error.reason
            return
        assert canonicalize(kind, canonical) == canonical

    check()


def test_phone_national_and_international_forms_agree_across_regions() -> None:
    for region in PHONE_REGIONS:
        number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert number is not None
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        assert canonicalize("phone", national, default_region=region) == e164
        assert canonicalize("phone", e164, default_region="CN") == e164


# --- OPRF inputs --------------------------------------------------------------------


def test_same_digits_in_different_kinds_give_different_oprf_inputs() -> None:
    # 490154203237518 is Luhn-valid: both a 15-digit card number and an IMEI.
    digits = "490154203237518"
    canonical = {
        "bank_card": canonicalize("bank_card", digits),
        "device_id": canonicalize("device_id", digits),
        "bank_account": canonicalize("bank_account", f"ICBC:{digits}"),
        "social_account": canonicalize("social_account", f"qq:{digits}"),
        "wallet": canonicalize("wallet", f"TON:{digits}{digits}"),
        "phone": canonicalize("phone", "13800138000"),
    }
    inputs = {tokens.oprf_input(kind, value) for kind, value in canonical.items()}
    assert len(inputs) == len(canonical)
    # Even where two kinds share the exact canonical text, the kind separates them.
    for first, second in itertools.combinations(KINDS, 2):
        assert tokens.oprf_input(first, digits) != tokens.oprf_input(second, digits)


@PROPERTY
@given(st.sampled_from(KINDS), st.sampled_from(KINDS), st.text(max_size=40))
def test_oprf_input_separates_kinds_for_any_canonical_text(
    first: str, second: str, text: str
) -> None:
    assume(first != second)
    assert tokens.oprf_input(first, text) != tokens.oprf_input(second, text)


def test_wallet_chains_are_upper_case_names() -> None:
    assert all(chain == chain.upper() for chain in WALLET_CHAINS)
    assert {"BTC", "ETH", "TRX", "USDT-TRC20"} <= set(WALLET_CHAINS)
