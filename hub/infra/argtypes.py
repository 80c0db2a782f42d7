"""argparse ``type=`` converters shared by the CLI modules.

:func:`deprecated_alias` keeps an old option spelling working, hidden from
``--help``, with a one-line warning on stderr each time it is used.

A number a command cannot use (zero workers, a negative window) is refused by
argparse with a usage error that names the option, before anything starts.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError

__all__ = [
    "deprecated_alias",
    "port_number",
    "positive_float",
    "positive_int",
    "public_key_option",
]


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


def port_number(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port between 0 and 65535, got {value}")
    return value


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.replacement: str = kwargs.pop("replacement")
        self.constant: Any = kwargs.pop("constant", None)
        nargs = 0 if self.constant is not None else None
        super().__init__(option_strings, dest, nargs=nargs, help=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"fraudhub: warning: {option_string} is deprecated; use {self.replacement}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, self.constant if self.constant is not None else values)


def deprecated_alias(
    parser: argparse.ArgumentParser | argparse._ActionsContainer,
    old: str,
    replacement: str,
    *,
    dest: str,
    type: Any = None,
    constant: Any = None,
) -> None:
    """Accept ``old`` (hidden) for ``dest``, warning that ``replacement`` is the spelling.

    ``constant`` makes it a flag that stores that value (like ``store_true``).
    """
    kwargs: dict[str, Any] = {
        "replacement": replacement,
        "dest": dest,
        "default": argparse.SUPPRESS,
    }
    if constant is not None:
        kwargs["constant"] = constant
    elif type is not None:
        kwargs["type"] = type
    parser.add_argument(old, action=_DeprecatedAlias, **kwargs)
