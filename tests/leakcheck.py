"""Checks that text shown to people (errors, reprs, logs) holds no raw indicator value.

``assert_no_leak(text, values)`` fails if any value appears in ``text``:

- the value itself, trimmed, compared case-insensitively (canonical forms
  change letter case), when it has at least ``MIN_VALUE_CHARS`` characters;
  shorter strings turn up in ordinary prose by chance;
- its digits, when it has at least ``MIN_DIGITS`` of them, either as one run
  or spread over a run of digits and separators (``138-0013-8000``,
  ``+86 138 0013 8000``) in the text.

``rendered(error)`` is everything an exception shows: ``str``, ``repr``, the
formatted traceback with its chained causes, and the ``args``.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable

MIN_VALUE_CHARS = 6
MIN_DIGITS = 6
# Digits joined by the separators people write inside numbers.
_DIGIT_RUN = re.compile(r"[0-9](?:[0-9 \t.()+/\-]*[0-9])?")
_NON_DIGITS = re.compile(r"[^0-9]")


def digits_of(value: str) -> str:
    """The ASCII digits of ``value``, in order."""
    return _NON_DIGITS.sub("", value)


def rendered(error: BaseException) -> str:
    """Everything ``error`` shows a person or a log: message, repr, traceback, args."""
    parts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    parts.extend(repr(arg) for arg in error.args)
    return "\n".join(parts)


def assert_no_leak(text: str, values: Iterable[str]) -> None:
    """Fail if ``text`` contains any of ``values`` or its digits (see module doc)."""
    folded = text.casefold()
    runs = [digits_of(run) for run in _DIGIT_RUN.findall(text)]
    for value in values:
        trimmed = value.strip()
        if len(trimmed) >= MIN_VALUE_CHARS and trimmed.casefold() in folded:
            raise AssertionError(f"value {trimmed!r} leaked into: {text!r}")
        digits = digits_of(value)
        if len(digits) >= MIN_DIGITS and any(digits in run for run in runs):
            raise AssertionError(f"digits of {trimmed!r} leaked into: {text!r}")
