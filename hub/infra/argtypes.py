"""argparse ``type=`` converters shared by the CLI modules.

A number a command cannot use (zero workers, a negative window) is refused by
argparse with a usage error that names the option, before anything starts.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import math
from collections.abc import Callable
from pathlib import Path

from client_sdk.core.errors import ConfigurationError

__all__ = ["positive_float", "positive_int", "public_key_option"]


def positive_int(maximum: int | None = None) -> Callable[[str], int]:
    """A converter accepting whole numbers in ``1..maximum``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < 1 or (maximum is not None and value > maximum):
            bound = f"between 1 and {maximum}" if maximum is not None else "at least 1"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return convert


def positive_float(text: str) -> float:
    """A finite number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def public_key_option(text: str, path: Path | None) -> bytes:
    """An institution's public key from ``--public-key`` or ``--public-key-file``.

    Raises ConfigurationError if neither is given, the file is unreadable or
    the text is not base64 (the key's length is checked where it is registered).
    """
    if path is not None:
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    if not text:
        raise ConfigurationError("give --public-key or --public-key-file")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("the public key must be base64 (institution keygen)") from None
