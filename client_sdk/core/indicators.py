"""Indicator normalizers: one canonical form per kind, or a precise refusal.

What this module guarantees (DESIGN.md, "Indicators"):

- :func:`canonicalize` returns the one canonical text of a value for its kind;
  that text is what :func:`client_sdk.core.tokens.oprf_input` turns into an OPRF
  input.  Equivalent spellings of one indicator (separators, letter case,
  ``+86``/``0086``/national phone formats, Unicode or punycode host names, ...)
  give the same text, and canonicalisation is idempotent.
- Every other outcome is :class:`~client_sdk.core.errors.InvalidIndicator` naming
  the kind and a reason written by this module.  Reasons never contain the
  value or any part of it, and never the text of a phonenumbers, stdnum, idna
  or ipaddress exception (those quote their input).  Library exceptions are
  never chained to the error that leaves this module.
- Nothing is guessed: a value that is not clearly one indicator is refused.
- The prohibited kinds exist only to be refused, whatever the value.

Canonical forms and accepted input, per kind.  Prefixes (bank codes, ``CC``,
``IMEI``/``MEID``, chains, platforms) are accepted in any letter case.

===============  ==============================================================
phone            E.164 (``+8613800138000``).  Digits, spaces, ``+ - . ( )``;
                 ``+CC``, the region's international prefix (``0086`` in CN)
                 or national format in ``default_region``.  Must pass
                 ``phonenumbers.is_valid_number``, or be a valid short service
                 number of at most 6 digits written with ``+CC``
                 (``+86 95588`` -> ``+8695588``; a bare ``95588`` stays refused,
                 as it could be a mistyped number); letters and extensions are
                 refused.
bank_card        12-19 ASCII digits, Luhn-valid; spaces and dashes dropped.
bank_account     ``BANKCODE:ACCOUNT`` where BANKCODE is 2-16 and ACCOUNT 4-34
                 characters of ``A-Z0-9`` (upper-cased, spaces and dashes
                 dropped).
                 BANKCODE is whatever code system the members agree on (CNAPS,
                 BIC, a short name such as ``ICBC``); codes of different
                 systems are never mapped onto each other.  An IBAN, bare or
                 as ``IBAN:...``, is checked by ``stdnum.iban`` and becomes
                 ``IBAN:<compact>``; ``IBAN`` is reserved as a bank code.
national_id      ``CC:number`` with CC from :data:`NATIONAL_ID_COUNTRIES`,
                 the number in the compact form of the stdnum module for that
                 country's personal identity number (for SE the 12-digit
                 form, which keeps the century).  A bare 18-character value
                 is a CN resident ID (``stdnum.cn.ric``: region, birth date
                 and ISO 7064 check digit, ``X`` upper-case).  Countries
                 without such a module (HK, MO, TW, GB, ...) are refused
                 rather than stored unchecked.
device_id        ``IMEI:<15 digits>`` (Luhn, ``stdnum.imei``) or
                 ``MEID:<14 hex digits>`` (``stdnum.meid``, hex or 18-digit
                 decimal input, check digit dropped).  A bare value is an IMEI.
email            ``local@domain``: dot-atom local part (RFC 5322 atext, plus
                 non-ASCII per RFC 6532) NFKC-normalised and lower-cased; the
                 domain as for ``domain``.  Quoted local parts and address
                 literals are refused; provider rules (dots, ``+tags``) are
                 not applied.
ip               ``ipaddress`` text (RFC 5952 for IPv6); an IPv4-mapped IPv6
                 address becomes the IPv4 address.  Zones and networks refused.
url              ``scheme://host[:port]/path[?query]``: http/https only;
                 scheme and host lower-case, host IDNA (A-labels) or an IP
                 literal; default port, fragment and ``.``/``..`` segments
                 dropped; percent-escapes normalised (RFC 3986 section 6.2.2).
                 URLs with userinfo (``user:pass@``) are refused: the userinfo
                 may carry credentials, and ``https://bank.example@evil.example``
                 is a deception whose host the caller should submit explicitly.
domain           lower-case IDNA A-labels (UTS 46, non-transitional, STD3), one
                 trailing dot dropped, at least two labels, top-level label
                 starting with a letter (IP addresses are kind ``ip``).
wallet           ``CHAIN:address``, CHAIN from :data:`WALLET_CHAINS`.  BTC
                 is checked by ``stdnum.bitcoin`` (base58 kept, bech32
                 lower-cased), witness v1+ (Taproot) as BIP 350 bech32m; EVM
                 chains need ``0x`` + 40 hex digits and are lower-cased (EIP-55
                 mixed-case checksums are not checked: Keccak-256 is not in the
                 standard library); Tron chains need a base58check ``T``
                 address.  Other chains keep the address verbatim (case
                 matters in base58) after trimming.
social_account   ``platform:handle``: platform ``[a-z0-9][a-z0-9._-]{0,31}``
                 lower-cased; handle with one leading ``@`` dropped, NFKC-normalised
                 and lower-cased, made of letters, digits and ``. _ -``.
===============  ==============================================================

Every value is bounded before any parsing: :data:`MAX_VALUE_CHARS`
characters (:data:`MAX_URL_CHARS` for URLs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import phonenumbers

from client_sdk.core.errors import ConfigurationError, InvalidIndicator
from client_sdk.core.normalizers import (
    MAX_URL_CHARS,
    MAX_VALUE_CHARS,
    NATIONAL_ID_COUNTRIES,
    NORMALIZERS,
    PROHIBITED_REASON,
    UNKNOWN_KIND,
    WALLET_CHAINS,
    Reject,
)
from client_sdk.core.vocabulary import ALL_KINDS, CATEGORIES, KINDS, PROHIBITED_KINDS

_log = logging.getLogger(__name__)

__all__ = [
    "ALL_KINDS",
    "CATEGORIES",
    "KINDS",
    "MAX_URL_CHARS",
    "MAX_VALUE_CHARS",
    "NATIONAL_ID_COUNTRIES",
    "PROHIBITED_KINDS",
    "PROHIBITED_REASON",
    "UNKNOWN_KIND",
    "WALLET_CHAINS",
    "canonicalize",
    "canonicalize_many",
]

# --- public API ----------------------------------------------------------------


def _check_region(region: str) -> str:
    region = region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigurationError("default_region must be a region code phonenumbers supports")
    return region


def _normalize(kind: str, value: str, region: str) -> str:
    if kind in PROHIBITED_KINDS:
        raise Reject(PROHIBITED_REASON)
    normalize = NORMALIZERS.get(kind)
    if normalize is None:
        raise Reject("unknown kind; accepted kinds: " + ", ".join(KINDS))
    limit = MAX_URL_CHARS if kind == "url" else MAX_VALUE_CHARS
    if len(value) > limit:
        raise Reject(f"longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Reject("not valid Unicode text") from None
    text = value.strip()
    if not text:
        raise Reject("empty value")
    return normalize(text, region)


def canonicalize(kind: str, value: str, *, default_region: str = "CN") -> str:
    """The canonical text of ``value`` as an indicator of ``kind``.

    ``default_region`` (ISO 3166-1 alpha-2) is where phone numbers written
    without a country calling code are read.

    Raises :class:`InvalidIndicator` naming the kind and the reason (never the
    value) for an invalid value, an over-long value, an unknown kind (reported
    as kind ``unknown``: the caller's string might be a value passed in the
    wrong argument) and every prohibited kind.  Raises
    :class:`ConfigurationError` for a region phonenumbers does not know.
    """
    region = _check_region(default_region)
    try:
        return _normalize(kind, value, region)
    except Reject as rejection:
        reason = rejection.reason
    # Raised outside the handler, so no library exception is chained to it.
    error = InvalidIndicator(kind if kind in ALL_KINDS else UNKNOWN_KIND, reason)
    _log.debug("indicator refused: %s", error)
    raise error


def canonicalize_many(
    items: Iterable[tuple[str, str]], *, default_region: str = "CN"
) -> list[str | InvalidIndicator]:
    """Canonicalize each ``(kind, value)``; one result per item, in order.

    An invalid item yields its :class:`InvalidIndicator` located at the item's
    position (``error.index``) instead of a string; the other items are
    unaffected.  Raises :class:`ConfigurationError` for an unknown region.
    """
    region = _check_region(default_region)
    results: list[str | InvalidIndicator] = []
    for index, (kind, value) in enumerate(items):
        try:
            results.append(canonicalize(kind, value, default_region=region))
        except InvalidIndicator as error:
            results.append(error.at(index))
    return results
