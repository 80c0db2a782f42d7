"""``fraudhub backup`` and ``fraudhub restore``: the hub's data directory, safely copied.

``backup --data-dir DIR --to PATH`` makes the directory PATH holding:

- ``hub.sqlite3``: a consistent copy of the live database made with SQLite's
  online backup API (the WAL's committed transactions included), while the
  hub keeps serving;
- every other file of the data directory (``log-key.pem``, without which no
  new checkpoint verifies against the regulators' pinned key; ``tls/``),
  except the live database's -wal and -shm files;
- ``backup.json``: the time, the audit log size and schema revision at
  backup time, and the SHA-256 of each file.

With ``--database-url`` (PostgreSQL) the database is not copied: the backup
holds the files and says to run ``pg_dump`` (docs/OPERATIONS.md).

``restore --from PATH --data-dir NEW`` checks every file against
``backup.json``, then copies them into NEW, which must be empty or missing.
Files are written 0600 in 0700 directories.  Start the hub on NEW and run
``audit verify`` with a state saved no later than the backup: the restored
log is consistent with it (a regulator state saved after the backup reports
the lost tail, as it must).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError
from hub.cli.database import add_database_arguments, shown_url
from hub.infra.privatefiles import create_private_file, private_directory
from hub.storage import auditlog
from hub.storage.store import SQLITE_FILENAME, Store, sqlite_url

__all__ = ["MANIFEST", "register"]

MANIFEST = "backup.json"
FORMAT = "fraudhub-backup/1"
# The live database's files: copied through the backup API, never byte by byte.
_LIVE = {SQLITE_FILENAME, *(f"{SQLITE_FILENAME}-{suffix}" for suffix in ("wal", "shm", "journal"))}
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _copy_private(source: Path, target: Path) -> None:
    create_private_file(target)
    with source.open("rb") as src, target.open("wb") as dst:
        while block := src.read(_CHUNK):
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())


def _empty_target(path: Path, option: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigurationError(f"{option} {path} exists and is not an empty directory")
    private_directory(path)


def _sqlite(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA busy_timeout=30000")
    return db


def _backup_sqlite(source: Path, target: Path) -> None:
    """Copy the live database with the online backup API (a consistent snapshot)."""
    create_private_file(target)
    try:
        src, dst = _sqlite(source), _sqlite(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot back up {source}: {exc}") from None


def _standalone(path: Path) -> None:
    """Fold the copy's WAL into it: one file, its hash stable."""
    db = _sqlite(path)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()


def _cmd_backup(args: argparse.Namespace) -> int:
    data: Path = args.data_dir
    if args.database_url is None and not (data / SQLITE_FILENAME).exists():
        raise ConfigurationError(f"no hub database at {data / SQLITE_FILENAME}: check --data-dir")
    if args.to.resolve().is_relative_to(data.resolve()):
        raise ConfigurationError(f"--to {args.to} is inside --data-dir: back up elsewhere")
    _empty_target(args.to, "--to")
    files: dict[str, str] = {}
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        relative = path.relative_to(data)
        if str(relative) in _LIVE:
            continue
        target = args.to / relative
        private_directory(target.parent)
        _copy_private(path, target)
        files[str(relative)] = _sha256(target)
    if args.database_url is None:
        _backup_sqlite(data / SQLITE_FILENAME, args.to / SQLITE_FILENAME)
    # What the backup holds: read from the copy (SQLite) or the database itself.
    store = Store(args.database_url or sqlite_url(args.to))
    try:
        current, _ = store.revisions()
        with store.session() as session:
            size = auditlog.tree_size(session)
        where = shown_url(store)
    finally:
        store.dispose()
    if args.database_url is None:
        _standalone(args.to / SQLITE_FILENAME)
        files[SQLITE_FILENAME] = _sha256(args.to / SQLITE_FILENAME)
    manifest = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "audit_log_size": size,
        "schema_revision": current,
        "database_included": args.database_url is None,
        "files": files,
    }
    create_private_file(args.to / MANIFEST)
    (args.to / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"backed up {len(files)} file(s) to {args.to}: audit log of {size} event(s)")
    if args.database_url is not None:
        print(f"the database {where} is NOT in this backup: dump it with pg_dump (OPERATIONS.md)")
    return 0


def _manifest(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{source / MANIFEST}: not a fraudhub backup ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigurationError(f"{source / MANIFEST}: not a {FORMAT} manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ConfigurationError(f"{source / MANIFEST}: no file list")
    return manifest


def _cmd_restore(args: argparse.Namespace) -> int:
    source: Path = args.source
    manifest = _manifest(source)
    files: dict[str, str] = manifest["files"]
    for name, digest in files.items():
        path = source / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ConfigurationError(f"{source / MANIFEST}: file name {name!r} leaves the backup")
        if not path.is_file() or _sha256(path) != digest:
            raise ConfigurationError(f"backup file {path} is missing or changed since the backup")
    _empty_target(args.data_dir, "--data-dir")
    for name in files:
        target = args.data_dir / name
        private_directory(target.parent)
        _copy_private(source / name, target)
    print(
        f"restored {len(files)} file(s) into {args.data_dir}: audit log of "
        f"{manifest.get('audit_log_size')} event(s) as of {manifest.get('created')}"
    )
    if not manifest.get("database_included"):
        print("the database was not in this backup: restore it with pg_restore first")
    return 0


def register(sub: Any) -> None:
    """Add ``backup`` and ``restore``."""
    backup = sub.add_parser("backup", help="copy the hub's database, log key and TLS files")
    add_database_arguments(backup)
    backup.add_argument(
        "--to", type=Path, required=True, help="new (or empty) directory for the backup"
    )
    backup.set_defaults(func=_cmd_backup)
    restore = sub.add_parser("restore", help="restore a backup into a new data directory")
    restore.add_argument(
        "--from", dest="source", type=Path, required=True, help="a directory made by `backup`"
    )
    restore.add_argument(
        "--data-dir", type=Path, required=True, help="new (or empty) data directory"
    )
    restore.set_defaults(func=_cmd_restore)
