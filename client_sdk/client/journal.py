"""Bulk job journals: what the hub answered for each row, so a stopped job resumes.

A journal is a JSON-lines file beside the job's output (``<out>.journal``).
The first line names the job (``job``, ``purpose``, the input's column
names); every other line is one row's :class:`RowOutcome`: its data-row number
(1-based, header excluded), its kind, its status, its reason codes and, for a
screening, the result columns the hub's answer filled.  It never holds the
row's value, label or other input columns: those stay in the institution's
own input file, and a resumed job reads them from there again.

Guarantees:

- :meth:`Journal.record` appends a window's outcomes and fsyncs before it
  returns, so every outcome the job wrote or counted is on disk; the job
  writes output rows only after recording them.
- A torn last line (the process died while writing it) is ignored on resume:
  its rows were not written to the output either, and are asked again.
- The file is created 0600; a journal of another job (other command, purpose
  or columns) is refused with ConfigurationError, as is starting over where a
  stopped job's journal exists (``--resume`` continues it; deleting it starts
  over).  :meth:`Journal.finish` deletes it once every row is done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from client_sdk.client.results import RowOutcome
from client_sdk.core.errors import ConfigurationError

__all__ = ["JOURNAL_SUFFIX", "JobHeader", "Journal"]

JOURNAL_SUFFIX = ".journal"
_VERSION = 1


@dataclass(frozen=True)
class JobHeader:
    """What makes two runs the same job: the command, its purpose and the input columns."""

    job: str
    purpose: str
    columns: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "fraudhub_journal": _VERSION,
            "job": self.job,
            "purpose": self.purpose,
            "columns": list(self.columns),
        }


class Journal:
    """The outcome of every row done so far; append-only while the job runs."""

    def __init__(self, path: Path, header: JobHeader, done: dict[int, RowOutcome]) -> None:
        self.path = path
        self.header = header
        self.done = done
        self._handle: IO[str] | None = None

    @classmethod
    def open(cls, path: Path, header: JobHeader, *, resume: bool) -> Journal:
        """The journal at ``path`` for this job: continued with ``resume``, else new.

        Raises ConfigurationError: ``resume`` without a journal, or of another
        job; a new job where a stopped one's journal exists; an unwritable path.
        """
        exists = path.exists()
        if resume and not exists:
            raise ConfigurationError(f"--resume: no journal at {path} (nothing to resume)")
        if not resume and exists:
            raise ConfigurationError(
                f"{path} holds a stopped job's journal: rerun with --resume, "
                "or delete it to start over"
            )
        if not resume:
            journal = cls(path, header, {})
            journal._write_lines([header.to_json()], create=True)
            return journal
        found, done = _read(path)
        if found != header.to_json():
            raise ConfigurationError(
                f"{path} is the journal of another job (command, purpose or input columns differ)"
            )
        return cls(path, header, done)

    def record(self, outcomes: Iterable[RowOutcome]) -> None:
        """Append ``outcomes`` and fsync; raises ConfigurationError if the disk refuses."""
        fresh = [o for o in outcomes if o.row not in self.done]
        if not fresh:
            return
        self._write_lines([o.to_json() for o in fresh], create=False)
        self.done.update((o.row, o) for o in fresh)

    def finish(self) -> None:
        """Every row is done: close and delete the journal (the output is complete)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _write_lines(self, lines: list[dict[str, Any]], *, create: bool) -> None:
        try:
            if self._handle is None:
                flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
                descriptor = os.open(self.path, flags, 0o600)
                self._handle = os.fdopen(descriptor, "a", encoding="utf-8")
            self._handle.write("".join(json.dumps(line) + "\n" for line in lines))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the job journal {self.path}: {exc.strerror}"
            ) from None


def _read(path: Path) -> tuple[dict[str, Any], dict[int, RowOutcome]]:
    """The header and outcomes of a journal; a torn last line is left out."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ConfigurationError(f"cannot read the job journal {path}") from None
    lines = text.split("\n")
    if text and not text.endswith("\n"):
        # The process died while writing the last line: its rows were never written.
        lines.pop()
        _truncate(path, len(text.encode("utf-8")) - len(text.rsplit("\n", 1)[-1].encode("utf-8")))
    number = 1
    try:
        header = json.loads(lines[0])
        if not isinstance(header, dict):
            raise TypeError("header")
        done: dict[int, RowOutcome] = {}
        for line in lines[1:]:
            number += 1
            if line:
                outcome = RowOutcome.from_json(json.loads(line))
                done[outcome.row] = outcome
    except (ValueError, KeyError, TypeError, IndexError):
        where = f"line {number}" if number > 1 else "its header"
        raise ConfigurationError(f"{path} is not a fraudhub job journal ({where})") from None
    return header, done


def _truncate(path: Path, size: int) -> None:
    try:
        with path.open("r+b") as handle:
            handle.truncate(size)
    except OSError as exc:
        raise ConfigurationError(f"cannot repair the job journal {path}: {exc.strerror}") from None
