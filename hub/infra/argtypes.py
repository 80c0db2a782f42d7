"""argparse ``type=`` converters shared by the CLI modules.

A number a command cannot use (zero workers, a negative window) is refused by
argparse with a usage error that names the option, before anything starts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["positive_float", "positive_int"]


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
