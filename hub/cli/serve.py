"""``fraudhub serve``: run a hub.

``serve`` runs a hub until SIGTERM or SIGINT (graceful stop), reloads its
policy on SIGHUP, and prints the bound port on stdout so ``--listen
127.0.0.1:0`` works in scripts.  It also prints the verifier key of the
hub's audit log key, which regulators pin (``audit verify --log-key``).
``--witness`` (repeatable) names the witnesses asked to cosign each audit
checkpoint (ADR 0010).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError
from hub.cli.database import add_database_arguments
from hub.infra.argtypes import positive_float, positive_int
from hub.infra.process import exit_leaving_stuck_calls
from hub.services.audit import log_signer
from hub.services.config import (
    CHECKPOINT_EVERY_EVENTS,
    CHECKPOINT_EVERY_SECONDS,
    DEFAULT_LISTEN,
    HubConfig,
    WitnessEndpoint,
    WitnessIdentity,
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
        shutdown_grace=args.grace,
        checkpoint_every_events=args.checkpoint_every,
        checkpoint_every_seconds=args.checkpoint_seconds,
        witnesses=tuple(args.witness),
        witness_identity=_witness_identity(args),
        previous_epochs=tuple(args.accept_epoch or ()),
    )
    hub = HubServer(config)
    port = hub.start()
    hub.install_signal_handlers()
    print(f"hub listening on port {port}")
    # Regulators pin this key (audit verify --log-key); it is public.
    print(f"audit log key {log_signer(config.data_dir).verifier_key()}")
    sys.stdout.flush()
    hub.wait()
    if not hub.finished_cleanly:
        exit_leaving_stuck_calls()
    return 0


def _witness_endpoint(text: str) -> WitnessEndpoint:
    try:
        return WitnessEndpoint.parse(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _witness_identity(args: argparse.Namespace) -> WitnessIdentity | None:
    if not args.witness:
        return None
    if not args.witness_institution or args.witness_key is None:
        raise ConfigurationError(
            "--witness needs --witness-institution and --witness-key: the operator "
            "institution the witnesses admitted, and its Ed25519 key"
        )
    return WitnessIdentity(args.witness_institution, args.witness_key)


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
        "--grace",
        type=positive_float,
        default=HubConfig.shutdown_grace,
        metavar="SECONDS",
        help="on SIGTERM, let in-flight calls finish this long, then cancel them "
        f"(default {HubConfig.shutdown_grace:g})",
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
    serve.add_argument(
        "--witness",
        type=_witness_endpoint,
        action="append",
        default=[],
        metavar="HOST:PORT,VKEY,AUDIENCE[,CA_FILE[,SERVER_NAME]]",
        help="a witness to ask for checkpoint cosignatures (repeatable; ADR 0010): its "
        "address, its witness verifier key, its JWT audience (e.g. fraudhub:keyholder:1), "
        "and the pin of its own TLS identity (ADR 0012)",
    )
    serve.add_argument(
        "--witness-institution", help="the operator institution id the hub calls witnesses as"
    )
    serve.add_argument("--witness-key", type=Path, help="that institution's Ed25519 key (PEM)")
    serve.add_argument(
        "--accept-epoch",
        type=positive_int(),
        action="append",
        metavar="EPOCH",
        help="an earlier OPRF key epoch still accepted and matched while institutions "
        "re-contribute (repeatable; README 'keys' runbook, ADR 0013)",
    )
    serve.set_defaults(func=_cmd_serve)
