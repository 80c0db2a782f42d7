"""The normalizer of each indicator kind: one canonical form, or a precise refusal.

The private half of :mod:`client_sdk.core.indicators` (whose docstring is the
table of canonical forms): per-kind functions ``(text, region) -> canonical``
that raise :class:`Reject` with a reason, never quoting the value, and
:data:`NORMALIZERS`, the table from kind to function.  Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import re
import string
import unicodedata
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import idna
import phonenumbers
from stdnum import bitcoin, iban, imei, luhn, meid
from stdnum.cn import ric
from stdnum.exceptions import (
    InvalidChecksum,
    InvalidComponent,
    InvalidFormat,
    InvalidLength,
    ValidationError,
)
from stdnum.se import personnummer

__all__ = [
    "MAX_URL_CHARS",
    "MAX_VALUE_CHARS",
    "NATIONAL_ID_COUNTRIES",
    "NORMALIZERS",
    "PROHIBITED_REASON",
    "UNKNOWN_KIND",
    "WALLET_CHAINS",
    "Reject",
]

#: What errors call a kind that is not in ALL_KINDS (the text may be a value).
UNKNOWN_KIND = "unknown"
PROHIBITED_REASON = "prohibited kind: never stored or matched"
MAX_VALUE_CHARS = 512
# Phishing URLs carry long tracking queries; 2048 is the classic browser limit.
MAX_URL_CHARS = 2048

# ISO 3166-1 alpha-2 -> stdnum module of that country's personal identity number
# (not tax or company numbers).
_NATIONAL_ID_MODULES: Mapping[str, str] = {
    "AR": "ar.dni", "BE": "be.nn", "BG": "bg.egn", "BR": "br.cpf", "CN": "cn.ric",
    "CZ": "cz.rc", "DK": "dk.cpr", "DO": "do.cedula", "EC": "ec.ci", "EE": "ee.ik",
    "ES": "es.dni", "FI": "fi.hetu", "FR": "fr.nir", "ID": "id.nik", "IL": "il.idnr",
    "IN": "in_.aadhaar", "JP": "jp.in_", "KR": "kr.rrn", "LT": "lt.asmens", "MX": "mx.curp",
    "MY": "my.nric", "NL": "nl.bsn", "NO": "no.fodselsnummer", "PK": "pk.cnic",
    "PL": "pl.pesel", "PT": "pt.cc", "RO": "ro.cnp", "SE": "se.personnummer",
    "SI": "si.emso", "SK": "sk.rc", "TH": "th.pin", "TR": "tr.tckimlik", "US": "us.ssn",
    "ZA": "za.idnr",
}  # fmt: skip
NATIONAL_ID_COUNTRIES: tuple[str, ...] = tuple(sorted(_NATIONAL_ID_MODULES))

_BTC_CHAINS = frozenset({"BTC"})
_EVM_CHAINS = frozenset({"ETH", "USDT-ERC20", "USDC-ERC20", "BSC", "USDT-BEP20"})
_TRON_CHAINS = frozenset({"TRX", "USDT-TRC20", "USDC-TRC20"})
_VERBATIM_CHAINS = frozenset({"LTC", "BCH", "DOGE", "XRP", "XMR", "SOL", "TON"})
WALLET_CHAINS: tuple[str, ...] = tuple(
    sorted(_BTC_CHAINS | _EVM_CHAINS | _TRON_CHAINS | _VERBATIM_CHAINS)
)


# "-" last so it stays a literal inside the character classes below.
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212-"
_SEPARATORS = re.compile(f"[\\s{_DASHES}]+")
_DIGITS = re.compile(r"[0-9]+")
_ALNUM = re.compile(r"[A-Z0-9]+")
_PHONE_TEXT = re.compile(f"[0-9+().\\s{_DASHES}]+")
_NATIONAL_ID_TEXT = re.compile(f"[A-Za-z0-9./+\\s{_DASHES}]+")
_COUNTRY = re.compile(r"[A-Z]{2}")
_IBAN_START = re.compile(r"[A-Z]{2}[0-9]{2}")
_BANK_CODE = re.compile(r"[A-Z0-9]{2,16}")
_ACCOUNT = re.compile(r"[A-Z0-9]{4,34}")
_EVM_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_VERBATIM_ADDRESS = re.compile(r"[A-Za-z0-9:_-]{20,128}")
_PLATFORM = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_URL_CHARS = _UNRESERVED | frozenset(":/?#[]@!$&'()*+,;=")
_NETLOC = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[0-9]*))?")
_DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}
_HEX = frozenset(string.hexdigits)
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"  # BIP 173
_BC_HRP_EXPANDED = (3, 3, 0, 2, 3)  # BIP 173 hrp_expand("bc")
_BECH32M_CONSTANT = 0x2BC830A3  # BIP 350

_PHONE_PARSE_REASONS: Mapping[int, str] = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country calling code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the prefix",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short for a phone number",
    phonenumbers.NumberParseException.TOO_LONG: "too long for a phone number",
}


class Reject(Exception):
    """Internal: a normalizer refuses a value for one of this module's reasons."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- shared helpers ------------------------------------------------------------


def _nfkc(text: str) -> str:
    # Fullwidth digits, letters and punctuation (common in CJK input) become ASCII.
    return unicodedata.normalize("NFKC", text)


def _fold(text: str) -> str:
    """NFKC, lower-case, NFKC: a fixpoint on every single code point."""
    return _nfkc(_nfkc(text).lower())


def _is_word_char(char: str) -> bool:
    """A letter, digit or combining mark (RFC 6532 non-ASCII, minus spaces and controls)."""
    return char.isalnum() or unicodedata.category(char).startswith("M")


def _drop_separators(text: str) -> str:
    return _SEPARATORS.sub("", text)


def _stdnum_reason(error: ValidationError, subject: str) -> str:
    """Our own words for a stdnum failure; its message is never forwarded."""
    if isinstance(error, InvalidChecksum):
        return f"{subject} check digits do not match"
    if isinstance(error, InvalidLength):
        return f"{subject} has the wrong length"
    if isinstance(error, InvalidComponent):
        return f"{subject} has an invalid part (such as a date, region or country code)"
    if isinstance(error, InvalidFormat):
        return f"{subject} is malformed"
    return f"{subject} is not valid"


def _stdnum_validate(validate: Callable[[str], str], number: str, subject: str) -> str:
    try:
        return validate(number)
    except ValidationError as error:
        raise Reject(_stdnum_reason(error, subject)) from None
    except (ValueError, LookupError):
        # Not stdnum's contract, but a validator that int()s or indexes its input
        # first would raise with the input in the message: never let that escape.
        raise Reject(f"{subject} is malformed") from None


def _split_prefix(text: str, what: str) -> tuple[str, str]:
    prefix, colon, rest = text.partition(":")
    if not colon:
        raise Reject(f"expected {what}")
    return prefix.strip(), rest.strip()


# --- normalizers, one per kind --------------------------------------------------


# Short numbers (service lines) have 3 to 6 digits in the metadata phonenumbers ships.
_MAX_SHORT_NUMBER = 6


def _phone(text: str, region: str) -> str:
    text = _nfkc(text)
    # No letters: phonenumbers would read vanity numbers (1-800-FLOWERS) and
    # extensions ("ext. 12", "#12"), neither of which has an E.164 form.
    if not _PHONE_TEXT.fullmatch(text):
        raise Reject("a phone number may contain only digits, spaces and + - . ( )")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        raise Reject(_PHONE_PARSE_REASONS.get(error.error_type, "not a phone number")) from None
    if not phonenumbers.is_valid_number(number) and not (
        text.lstrip().startswith("+") and _is_service_short_number(number)
    ):
        raise Reject("not a valid number for its country (phonenumbers)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _is_service_short_number(number: phonenumbers.PhoneNumber) -> bool:
    """A valid short service number (95588, 96110): scammers spoof these as caller ID,
    and warning lists hold them (issue 12).  Canonical form ``+CC`` + the digits."""
    return len(str(number.national_number)) <= _MAX_SHORT_NUMBER and (
        phonenumbers.is_valid_short_number(number)
    )


def _bank_card(text: str, _region: str) -> str:
    digits = _drop_separators(_nfkc(text))
    if not _DIGITS.fullmatch(digits):
        raise Reject("a card number may contain only digits, spaces and dashes")
    if not 12 <= len(digits) <= 19:
        raise Reject("a card number has 12 to 19 digits")
    if not luhn.is_valid(digits):
        raise Reject("Luhn check digit does not match")
    return digits


def _iban(text: str) -> str:
    compact = _drop_separators(text).upper()
    if not _ALNUM.fullmatch(compact) or not _IBAN_START.match(compact):
        raise Reject("an IBAN starts with a country code and two check digits")
    return "IBAN:" + _stdnum_validate(iban.validate, compact, "IBAN")


def _bank_account(text: str, _region: str) -> str:
    text = _nfkc(text)
    if ":" not in text:
        if not _IBAN_START.match(_drop_separators(text).upper()):
            raise Reject("expected BANKCODE:ACCOUNT or an IBAN")
        return _iban(text)
    code, account = _split_prefix(text, "BANKCODE:ACCOUNT")
    code = _drop_separators(code).upper()
    if code == "IBAN":
        return _iban(account)
    if not _BANK_CODE.fullmatch(code):
        raise Reject("bank code must be 2 to 16 letters or digits")
    account = _drop_separators(account).upper()
    if not _ACCOUNT.fullmatch(account):
        raise Reject("account must be 4 to 34 letters or digits (spaces and dashes allowed)")
    return f"{code}:{account}"


def _national_id_validator(country: str) -> Callable[[str], str]:
    module = importlib.import_module("stdnum." + _NATIONAL_ID_MODULES[country])
    validate: Callable[[str], str] = module.validate
    return validate


def _national_id(text: str, _region: str) -> str:
    text = _nfkc(text)
    if ":" in text:
        country, number = _split_prefix(text, "CC:number")
        country = country.upper()
    elif len(_drop_separators(text)) == 18:
        country, number = "CN", text
    else:
        raise Reject("without a CC: prefix only an 18-character CN resident ID is accepted")
    if not _COUNTRY.fullmatch(country):
        raise Reject("country must be an ISO 3166-1 alpha-2 code")
    if country not in _NATIONAL_ID_MODULES:
        raise Reject(
            "no identity-number validator for this country; supported: "
            + ", ".join(NATIONAL_ID_COUNTRIES)
        )
    if not _NATIONAL_ID_TEXT.fullmatch(number):
        raise Reject("an identity number may contain only letters, digits and separators")
    if country == "CN":
        # Only the 18-character second-generation ID; 15-digit first-generation
        # numbers expired in 2013 and have no check digit.
        return "CN:" + _stdnum_validate(ric.validate, _drop_separators(number), "CN resident ID")
    if country == "SE":
        return "SE:" + _personnummer(number)
    # Other modules strip their own separators; some carry meaning (the FI
    # century sign), so they are not dropped here.
    return f"{country}:" + _stdnum_validate(
        _national_id_validator(country), number, "identity number"
    )


def _personnummer(number: str) -> str:
    """The 12-digit form (century included) of a Swedish personnummer.

    It is written with 10 digits (``YYMMDD-NNNC``, ``+`` from the year its
    holder turns 100) or 12; stdnum keeps whichever it was given.  Only the
    12-digit form is one text per person that never changes.
    """
    compact = _stdnum_validate(personnummer.validate, number, "identity number")
    century = personnummer.get_birth_date(compact).year // 100
    return f"{century}{compact.replace('-', '').replace('+', '')[-10:]}"


def _device_id(text: str, _region: str) -> str:
    text = _nfkc(text)
    scheme, number = _split_prefix(text, "IMEI: or MEID:") if ":" in text else ("IMEI", text)
    scheme = scheme.upper()
    if scheme == "IMEI":
        digits = _drop_separators(number)
        if not _DIGITS.fullmatch(digits) or len(digits) != 15:
            raise Reject("an IMEI is 15 digits including its Luhn check digit")
        return "IMEI:" + _stdnum_validate(imei.validate, digits, "IMEI")
    if scheme == "MEID":
        compact = _drop_separators(number).upper()
        if not _ALNUM.fullmatch(compact):
            raise Reject("a MEID is hexadecimal or decimal digits")
        return "MEID:" + _stdnum_validate(meid.validate, compact, "MEID")
    raise Reject("device_id scheme must be IMEI or MEID")


def _domain_name(text: str) -> str:
    """Lower-case A-label form of a DNS name; shared by domain, email and url."""
    name = _nfkc(text)  # fullwidth and halfwidth full stops become "." and "。"
    if name.endswith((".", "。")):
        name = name[:-1]  # the DNS root
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise Reject("not a valid IDNA domain name") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise Reject("a domain name needs at least two labels")
    if not labels[-1][:1].isalpha():
        raise Reject("the top-level label must start with a letter (addresses are kind ip)")
    return ascii_name


def _domain(text: str, _region: str) -> str:
    return _domain_name(text)


def _email(text: str, _region: str) -> str:
    local, at, domain = _fold(text).rpartition("@")
    if not at or not local:
        raise Reject("expected local-part@domain")
    if domain.startswith("["):
        raise Reject("address literals are not accepted; use a domain")
    atoms = local.split(".")
    if not all(atoms) or not all(c in _ATEXT or _is_word_char(c) for c in "".join(atoms)):
        raise Reject("local part must be a dot-atom (quoted local parts are not accepted)")
    if len(local.encode()) > 64:
        raise Reject("local part longer than 64 octets")
    address = f"{local}@{_domain_name(domain)}"
    if len(address) > 254:
        raise Reject("address longer than 254 characters")
    return address


def _ip_text(text: str) -> str:
    if "%" in text:
        raise Reject("scoped addresses (with a %zone) identify nothing outside one host")
    if "/" in text:
        raise Reject("a network is not an address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise Reject("not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _ip(text: str, _region: str) -> str:
    text = _nfkc(text)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return _ip_text(text)


def _normalize_escapes(component: str) -> str:
    """RFC 3986 section 6.2.2: upper-case escapes, decode unreserved, escape the rest."""
    out: list[str] = []
    i = 0
    while i < len(component):
        char = component[i]
        pair = component[i + 1 : i + 3]
        if char == "%" and len(pair) == 2 and set(pair) <= _HEX:
            decoded = chr(int(pair, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + pair.upper())
            i += 3
            continue
        # A bare "%" (not an escape) is escaped itself, as are non-ASCII characters.
        out.append(char if char in _URL_CHARS else "".join(f"%{b:02X}" for b in char.encode()))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    trailing = path.endswith(("/.", "/.."))
    return "/" + "/".join(output) + ("/" if trailing and output else "")


def _url_host(host: str) -> str:
    if host.startswith("["):
        address = _ip_text(host[1:-1])
        return f"[{address}]" if ":" in address else address
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if last_label.isdigit():
        # Browsers read a host ending in a number as IPv4; only dotted quads are accepted.
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise Reject("a numeric host must be a dotted-quad IPv4 address") from None
    return _domain_name(host)


def _url(text: str, _region: str) -> str:
    if any(c.isspace() or unicodedata.category(c) == "Cc" or c == "\\" for c in text):
        raise Reject("a URL may not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise Reject("not a parseable URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise Reject("only http and https URLs are accepted")
    if "@" in parts.netloc:
        raise Reject("URLs with userinfo (user:password@) are refused; submit the host without it")
    netloc = _NETLOC.fullmatch(parts.netloc)
    if netloc is None or not netloc["host"]:
        raise Reject("URL has no valid host")
    host = _url_host(netloc["host"])
    port = netloc["port"]
    if port:
        if int(port) > 65535:
            raise Reject("port out of range")
        if int(port) != _DEFAULT_PORTS[scheme]:
            host = f"{host}:{int(port)}"
    path = _remove_dot_segments(_normalize_escapes(parts.path or "/"))
    query = _normalize_escapes(parts.query)
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def _tron_address(address: str) -> str:
    # Tron addresses are base58check (the Bitcoin alphabet) over 0x41 + 20 bytes.
    if len(address) != 34 or not address.startswith("T"):
        raise Reject("a Tron address is 34 base58 characters starting with T")
    try:
        raw = bitcoin.b58decode(address)
    except ValueError:
        raise Reject("a Tron address is base58") from None
    checksum = hashlib.sha256(hashlib.sha256(raw[:-4]).digest()).digest()[:4]
    if len(raw) != 25 or raw[0] != 0x41 or checksum != raw[-4:]:
        raise Reject("Tron address checksum does not match")
    return address


def _segwit_v1_address(address: str) -> str:
    """A BIP 350 bech32m address (witness v1-16, e.g. Taproot ``bc1p...``).

    stdnum.bitcoin checks only BIP 173 bech32, which BIP 350 keeps for witness
    v0; its checksum primitive is reused here with the bech32m constant.
    """
    if not 14 <= len(address) <= 90 or not set(address[3:]) <= set(_BECH32_CHARSET):
        raise Reject("a bech32m address is 14 to 90 bech32 characters")
    values = [_BECH32_CHARSET.index(char) for char in address[3:]]
    if bitcoin.bech32_checksum([*_BC_HRP_EXPANDED, *values]) != _BECH32M_CONSTANT:
        raise Reject("Bitcoin address check digits do not match")
    try:
        program = bitcoin.b32decode(values[1:-6])
    except ValidationError:
        raise Reject("Bitcoin address has invalid padding") from None
    if values[0] > 16 or not 2 <= len(program) <= 40:
        raise Reject("Bitcoin address has an invalid witness version or program")
    return address


def _bitcoin_address(address: str) -> str:
    if not address.isascii() or not address.isalnum():
        raise Reject("a Bitcoin address is base58 or bech32")
    lowered = address.lower()
    if lowered.startswith("bc1") and lowered[3:4] != "q":
        return _segwit_v1_address(lowered)
    return _stdnum_validate(bitcoin.validate, address, "Bitcoin address")


def _wallet(text: str, _region: str) -> str:
    chain, address = _split_prefix(_nfkc(text), "CHAIN:address")
    chain = chain.upper()
    if chain in _BTC_CHAINS:
        address = _bitcoin_address(address)
    elif chain in _EVM_CHAINS:
        address = address.lower()
        if not _EVM_ADDRESS.fullmatch(address):
            raise Reject("an EVM address is 0x followed by 40 hex digits")
    elif chain in _TRON_CHAINS:
        address = _tron_address(address)
    elif chain in _VERBATIM_CHAINS:
        if not _VERBATIM_ADDRESS.fullmatch(address):
            raise Reject("address must be 20 to 128 letters, digits or : _ -")
    else:
        raise Reject("unknown chain; supported: " + ", ".join(WALLET_CHAINS))
    return f"{chain}:{address}"


def _social_account(text: str, _region: str) -> str:
    platform, handle = _split_prefix(_fold(text), "platform:handle")
    if not _PLATFORM.fullmatch(platform):
        raise Reject("platform must be 1 to 32 of a-z 0-9 . _ - starting with a letter or digit")
    handle = handle.removeprefix("@")
    if not handle or len(handle) > 128:
        raise Reject("handle must be 1 to 128 characters")
    if not all(c in "._-" or _is_word_char(c) for c in handle):
        raise Reject("handle may contain only letters, digits and . _ -")
    return f"{platform}:{handle}"


NORMALIZERS: Mapping[str, Callable[[str, str], str]] = {
    "phone": _phone,
    "bank_card": _bank_card,
    "bank_account": _bank_account,
    "national_id": _national_id,
    "device_id": _device_id,
    "email": _email,
    "ip": _ip,
    "url": _url,
    "domain": _domain,
    "wallet": _wallet,
    "social_account": _social_account,
}
