"""``fraudhub serve``: run a hub.

``serve`` runs a hub until SIGTERM or SIGINT (graceful stop), reloads its
policy on SIGHUP, and prints the bound port on stdout so ``--listen
127.0.0.1:0`` works in scripts.  It also prints the verifier key of the
hub's audit log key, which regulators pin (``audit verify --log-key``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hub.cli.database import add_database_arguments
from hub.infra.argtypes import positive_float, positive_int
from hub.services.audit import log_signer
from hub.services.config import (
    CHECKPOINT_EVERY_EVENTS,
    CHECKPOINT_EVERY_SECONDS,
    DEFAULT_LISTEN,
    HubConfig,
    default_policy,
)
from hub.services.server import HubServer

__all__ = ["register"]


def _cmd_serve(args: argparse.Namespace) -> int:
    config = HubConfig(
        data_dir=args.data_dir,
        public_key=args.public,
        listen=args.listen,
        database_url=args.database_url,
        policy_paths=tuple(args.policy or [default_policy()]),
        insecure=args.insecure,
        max_workers=args.workers,
        checkpoint_every_events=args.checkpoint_every,
        checkpoint_every_seconds=args.checkpoint_seconds,
    )
    hub = HubServer(config)
    port = hub.start()
    hub.install_signal_handlers()
    print(f"hub listening on port {port}")
    # Regulators pin this key (audit verify --log-key); it is public.
    print(f"audit log key {log_signer(config.data_dir).verifier_key()}")
    sys.stdout.flush()
    hub.wait()
    return 0


def register(sub: Any) -> None:
    """Add ``serve``."""
    serve = sub.add_parser("serve", help="run the hub (Exchange, Admin, Audit over gRPC)")
    add_database_arguments(serve)
    serve.add_argument(
        "--public", type=Path, required=True, help="public.json of the OPRF key (keys deal)"
    )
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help=f"host:port ({DEFAULT_LISTEN})")
    serve.add_argument(
        "--policy",
        type=Path,
        action="append",
        help="policy file; repeat for overrides (stricter wins). Default: policies/default.yaml",
    )
    serve.add_argument("--insecure", action="store_true", help="serve WITHOUT TLS (development)")
    serve.add_argument(
        "--workers", type=positive_int(), default=8, help="RPC worker threads (default 8)"
    )
    serve.add_argument(
        "--checkpoint-every",
        type=positive_int(),
        default=CHECKPOINT_EVERY_EVENTS,
        metavar="N",
        help=f"sign an audit checkpoint every N events (default {CHECKPOINT_EVERY_EVENTS})",
    )
    serve.add_argument(
        "--checkpoint-seconds",
        type=positive_float,
        default=CHECKPOINT_EVERY_SECONDS,
        metavar="T",
        help=f"... or every T seconds when the log grew (default {CHECKPOINT_EVERY_SECONDS:g})",
    )
    serve.set_defaults(func=_cmd_serve)
