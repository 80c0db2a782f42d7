"""The hub database options that ``serve`` and the ``institution`` actions share.

``--data-dir`` names the hub's data directory (state, TLS, the SQLite file);
``--database-url`` a PostgreSQL database instead of that file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from client_sdk.core.errors import ConfigurationError
from hub.storage.store import SQLITE_FILENAME, Store, sqlite_url

__all__ = ["add_database_arguments", "open_store"]


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="the hub's data directory (state, TLS)"
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (default: SQLite file in the data directory)"
    )


def open_store(args: argparse.Namespace, *, create: bool = False) -> Store:
    """The hub's store, migrated.  Only ``create`` may start a new SQLite file:
    reading or changing the registry of a mistyped --data-dir must not make one.

    Raises ConfigurationError when the SQLite file is missing and not ``create``.
    """
    if args.database_url is None and not create:
        database = Path(args.data_dir) / SQLITE_FILENAME
        if not database.exists():
            raise ConfigurationError(
                f"no hub database at {database}: check --data-dir (or give --database-url)"
            )
    store = Store(args.database_url or sqlite_url(args.data_dir))
    store.migrate()
    return store
