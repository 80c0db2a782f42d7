"""Reading the CSV files institutions export: any encoding, BOM or not, bad rows included.

Guarantees:

- UTF-8 with or without a byte-order mark by default; any Python codec by
  name (``gb18030`` for exports of Chinese spreadsheets); ``-`` reads stdin.
- The header is the first non-blank record and must name ``kind`` and
  ``value``; a BOM before it is dropped whatever the encoding.  A header that
  does not decode or lacks a column is a ConfigurationError (nothing can be
  read), as are an unknown encoding and an unreadable file.
- Every later non-blank record is one :class:`CsvRow`, numbered from 1
  (header excluded, blank lines skipped).  A record that does not decode, has
  a field over :data:`MAX_FIELD` characters, has more or fewer columns than
  the header or is not CSV becomes a row with a ``problem`` (what is wrong,
  never the value) and no fields; the rows after it are still read.
- :func:`count_rows` counts the rows :func:`read_rows` yields, so a progress
  bar has a total.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from client_sdk.core.errors import ConfigurationError

__all__ = ["MAX_FIELD", "CsvRow", "CsvSource", "count_rows", "read_rows"]

#: The longest field accepted, in characters (the csv module's own limit).
MAX_FIELD = 131_072
_REQUIRED = ("kind", "value")
# surrogateescape turns each undecodable byte into one of these code points.
_ESCAPED = range(0xDC80, 0xDD00)


@dataclass(frozen=True)
class CsvSource:
    """A CSV file, or stdin for ``-``, in ``encoding``; ``stdin`` replaces sys.stdin (tests)."""

    path: Path | None
    encoding: str = "utf-8"
    stdin: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, path: Path | str, encoding: str = "utf-8") -> CsvSource:
        """``-`` is stdin; anything else a file path."""
        return cls(None if str(path) == "-" else Path(path), encoding)

    @property
    def name(self) -> str:
        return "stdin" if self.path is None else str(self.path)

    @property
    def is_file(self) -> bool:
        return self.path is not None

    def open(self) -> IO[str]:
        """The decoded text; raises ConfigurationError (unknown encoding, unreadable file)."""
        try:
            info = codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigurationError(f"unknown encoding {self.encoding!r}") from None
        # utf-8-sig drops a BOM if there is one; other codecs leave U+FEFF to the header.
        encoding = "utf-8-sig" if info.name == "utf-8" else info.name
        if self.path is None:
            raw: IO[bytes] = self.stdin if self.stdin is not None else sys.stdin.buffer
        else:
            try:
                raw = self.path.open("rb")
            except OSError as exc:
                raise ConfigurationError(f"cannot read {self.path}: {exc.strerror}") from None
        return io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="")


@dataclass(frozen=True)
class CsvRow:
    """Data row ``row`` (1-based): its fields by column, or the ``problem`` that spoiled it."""

    row: int
    fields: dict[str, str] = field(repr=False)
    problem: str | None = None

    def get(self, column: str) -> str:
        return self.fields.get(column) or ""


def _records(handle: IO[str]) -> Iterator[list[str] | str]:
    """The non-blank records of ``handle``: a list of fields, or the problem of a record."""
    reader = csv.reader(handle)
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader goes on with the next line; the messages never quote a field.
            too_long = "field limit" in str(exc)
            yield f"a field is longer than {MAX_FIELD} characters" if too_long else "not CSV"
            continue
        if record:
            yield record


def _escaped(text: str) -> bool:
    return any(ord(c) in _ESCAPED for c in text)


def read_rows(source: CsvSource) -> tuple[tuple[str, ...], Generator[CsvRow, None, None]]:
    """The header of ``source`` and an iterator over its rows.

    Raises ConfigurationError for an unreadable source or header; the iterator
    closes the source when exhausted or closed.
    """
    handle = source.open()
    records = _records(handle)
    try:
        first = next(records, None)
        if first is None or isinstance(first, str) or _escaped("".join(first)):
            what = "no header" if first is None else f"the header is not {source.encoding} CSV"
            raise ConfigurationError(f"{source.name}: {what}")
        header = tuple([first[0].lstrip("\ufeff"), *first[1:]])
        if not set(_REQUIRED) <= set(header):
            raise ConfigurationError(
                f"{source.name}: the header must name the columns kind and value"
            )
    except BaseException:
        handle.close()
        raise
    return header, _rows(handle, records, header, source.encoding)


def _rows(
    handle: IO[str], records: Iterator[list[str] | str], header: tuple[str, ...], encoding: str
) -> Generator[CsvRow, None, None]:
    with handle:
        for number, record in enumerate(records, start=1):
            if isinstance(record, str):
                yield CsvRow(number, {}, record)
            elif any(_escaped(f) for f in record):
                yield CsvRow(number, {}, f"not valid {encoding}")
            elif len(record) != len(header):
                problem = f"{len(record)} columns where the header has {len(header)}"
                yield CsvRow(number, {}, problem)
            else:
                yield CsvRow(number, dict(zip(header, record, strict=True)))


def count_rows(source: CsvSource) -> int | None:
    """How many rows :func:`read_rows` yields; None for stdin (it can be read once only)."""
    if not source.is_file:
        return None
    with source.open() as handle:
        return max(0, sum(1 for _ in _records(handle)) - 1)
