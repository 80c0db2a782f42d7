"""The hub database options that ``serve`` and the ``institution`` actions share,
and ``fraudhub db upgrade|status``.

``--data-dir`` names the hub's data directory (state, TLS, the SQLite file);
``--database-url`` a PostgreSQL database instead of that file.

``db status`` prints the schema revision of the hub's database and the newest
this version knows, and exits 0 when they agree, 3 when an upgrade is
pending; ``db upgrade`` applies the pending migrations (``serve`` also does
at start; run it yourself to upgrade before starting, or with several
replicas).  Neither creates a SQLite file that is not there.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError
from hub.storage.store import SQLITE_FILENAME, Store, sqlite_url

__all__ = ["EXIT_UPGRADE_PENDING", "add_database_arguments", "open_store", "register"]

#: ``db status`` exit status when the schema is behind this version.
EXIT_UPGRADE_PENDING = 3


def add_database_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--data-dir`` and ``--database-url`` (``required=False``: a config file may give them)."""
    parser.add_argument(
        "--data-dir", type=Path, required=required, help="the hub's data directory (state, TLS)"
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (default: SQLite file in the data directory)"
    )


def _existing_store(args: argparse.Namespace) -> Store:
    """The hub's store, not migrated; raises ConfigurationError when the SQLite
    file is missing: reading or changing a mistyped --data-dir must not make one."""
    if args.database_url is None:
        database = Path(args.data_dir) / SQLITE_FILENAME
        if not database.exists():
            raise ConfigurationError(
                f"no hub database at {database}: check --data-dir (or give --database-url)"
            )
    return Store(args.database_url or sqlite_url(args.data_dir))


def open_store(args: argparse.Namespace, *, create: bool = False) -> Store:
    """The hub's store, migrated.  Only ``create`` may start a new SQLite file.

    Raises ConfigurationError when the SQLite file is missing and not ``create``.
    """
    store = Store(args.database_url or sqlite_url(args.data_dir)) if create else None
    store = store or _existing_store(args)
    store.migrate()
    return store


def shown_url(store: Store) -> str:
    """The database URL without its password."""
    return store.url.render_as_string(hide_password=True)


def _cmd_status(args: argparse.Namespace) -> int:
    store = _existing_store(args)
    try:
        current, head = store.revisions()
    finally:
        store.dispose()
    print(f"database: {shown_url(store)}")
    print(f"schema revision: {current or 'none'} (this version: {head})")
    if current == head:
        print("up to date")
        return 0
    print("upgrade pending: run `fraudhub db upgrade` with the same options")
    return EXIT_UPGRADE_PENDING


def _cmd_upgrade(args: argparse.Namespace) -> int:
    store = _existing_store(args)
    try:
        before, head = store.revisions()
        store.migrate()
    finally:
        store.dispose()
    if before == head:
        print(f"already at revision {head}")
    else:
        print(f"upgraded from revision {before or 'none'} to {head}")
    return 0


def register(sub: Any) -> None:
    """Add ``db status`` and ``db upgrade``."""
    db = sub.add_parser("db", help="the hub database's schema: status, upgrade")
    actions = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status", help=f"schema revision; exit {EXIT_UPGRADE_PENDING} if an upgrade is pending"
    )
    add_database_arguments(status)
    status.set_defaults(func=_cmd_status)
    upgrade = actions.add_parser("upgrade", help="apply pending schema migrations")
    add_database_arguments(upgrade)
    upgrade.set_defaults(func=_cmd_upgrade)
