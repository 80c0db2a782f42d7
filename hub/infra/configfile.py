"""TOML configuration files for the long-running commands (``serve``, ``keyholder``).

A command declares its settings once, as :class:`Setting` rows: the TOML key
(``data_dir``), the argparse destination, the kind of value, its default and
whether it is required.  :func:`add_settings` adds the ``--config`` and
``--print-config`` options; :func:`resolve` then fills in, for each setting,
the command-line value if one was given, else the file's, else the default.

Guarantees:

- Every problem in a file is a :class:`ConfigurationError` naming the file and
  the key (``hub.toml: workers: expected a whole number >= 1, got 'eight'``):
  TOML syntax (with its line), unknown keys, wrong types, bad values.
- Relative paths in a file are relative to the file's directory, so a config
  file works from any working directory.
- :func:`render` prints the effective settings as TOML that :func:`resolve`
  reads back, with the password of a database URL replaced by ``***``.
"""

from __future__ import annotations

import argparse
import math
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from client_sdk.core.errors import ConfigurationError

__all__ = ["Setting", "add_settings", "render", "resolve"]

Kind = Literal["path", "str", "int", "float", "bool", "paths", "strs", "ints", "secret_url"]
_MISSING = object()


@dataclass(frozen=True)
class Setting:
    """One setting: TOML ``key``, argparse ``dest`` (default: the key), kind, default."""

    key: str
    kind: Kind
    default: Any = None
    required: bool = False
    dest: str = ""
    # Converts (and checks) a value of the right kind; raises ValueError or
    # argparse.ArgumentTypeError with the reason.
    check: Callable[[Any], Any] | None = None

    @property
    def attribute(self) -> str:
        return self.dest or self.key

    @property
    def flag(self) -> str:
        return "--" + self.attribute.replace("_", "-")


def add_settings(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.toml`` and ``--print-config``."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="read settings from this TOML file; command-line options override it",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings as TOML (no secrets) and exit",
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None


def _expect(kind: str, value: Any) -> bool:
    if kind in ("path", "str", "secret_url"):
        return isinstance(value, str) and value != ""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "ints":
        return isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


_KIND_NAMES = {
    "path": "a non-empty string (a path)",
    "str": "a non-empty string",
    "secret_url": "a non-empty string (a URL)",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "paths": "a list of paths (strings)",
    "strs": "a list of non-empty strings",
    "ints": "a list of whole numbers",
}


def _from_file(path: Path, setting: Setting, value: Any) -> Any:
    where = f"{path}: {setting.key}"
    if not _expect(setting.kind, value):
        raise ConfigurationError(f"{where}: expected {_KIND_NAMES[setting.kind]}, got {value!r}")
    if setting.kind == "float" and not math.isfinite(float(value)):
        raise ConfigurationError(f"{where}: expected a finite number, got {value!r}")
    base = path.parent
    if setting.kind == "path":
        value = base / value
    elif setting.kind == "paths":
        value = [base / v for v in value]
    if setting.check is not None:
        items = value if isinstance(value, list) else [value]
        try:
            numeric = setting.kind in ("int", "float", "ints")
            checked = [setting.check(str(v) if numeric else v) for v in items]
        except (ValueError, argparse.ArgumentTypeError, ConfigurationError) as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        value = checked if isinstance(value, list) else checked[0]
    return value


def resolve(args: argparse.Namespace, settings: Sequence[Setting], command: str) -> None:
    """Fill ``args`` from ``args.config`` (if given) and the defaults; flags win.

    The parser must leave every setting's option at ``None`` when it is not
    given (``default=None``, never ``required=True``).  Raises
    ConfigurationError for a bad file, or naming both ways to give a
    required setting that is missing.
    """
    path: Path | None = getattr(args, "config", None)
    values = _load(path) if path is not None else {}
    known = {s.key: s for s in settings}
    unknown = sorted(set(values) - set(known))
    if unknown and path is not None:
        raise ConfigurationError(
            f"{path}: unknown key {unknown[0]!r} for `fraudhub {command}` "
            f"(known: {', '.join(sorted(known))})"
        )
    for setting in settings:
        given = getattr(args, setting.attribute, None)
        if given is not None and given != []:
            continue
        if path is not None and setting.key in values:
            setattr(args, setting.attribute, _from_file(path, setting, values[setting.key]))
        elif setting.required:
            where = f" or `{setting.key}` in {path}" if path is not None else " (or --config FILE)"
            raise ConfigurationError(f"{command} needs {setting.flag}{where}")
        else:
            default = setting.default
            fresh = list(default) if isinstance(default, list) else default
            setattr(args, setting.attribute, fresh)


def _redact(url: str) -> str:
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def _toml_value(setting: Setting, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        items = (repr(v) if isinstance(v, int) else _toml_string(str(v)) for v in value)
        return "[" + ", ".join(items) + "]"
    text = str(value)
    return _toml_string(_redact(text) if setting.kind == "secret_url" else text)


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render(
    args: argparse.Namespace, settings: Sequence[Setting], shown: Callable[[Any], Any] = str
) -> str:
    """The effective settings as TOML (unset ones commented out), secrets redacted.

    ``shown`` turns a parsed value that is not a plain type (e.g. a witness
    endpoint) back into its text.
    """
    lines = []
    for setting in settings:
        value = getattr(args, setting.attribute, None)
        if value is None or value == []:
            lines.append(f"# {setting.key} =")
            continue
        if isinstance(value, list | tuple):
            value = [v if isinstance(v, str | Path | int) else shown(v) for v in value]
        lines.append(f"{setting.key} = {_toml_value(setting, value)}")
    return "\n".join(lines) + "\n"
