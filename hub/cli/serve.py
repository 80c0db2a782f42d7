"""``fraudhub serve``: run a hub.

``serve`` runs a hub until SIGTERM or SIGINT (graceful stop), reloads its
policy on SIGHUP, and prints the bound port on stdout so ``--listen
127.0.0.1:0`` works in scripts.  It also prints the verifier key of the
hub's audit log key, which regulators pin (``audit verify --log-key``).
``--witness`` (repeatable) names the witnesses asked to cosign each audit
checkpoint (ADR 0010).  ``--config hub.toml`` reads the same settings from a
TOML file (keys are the option names with underscores; flags override it),
``--print-config`` prints the effective settings, ``--metrics-port`` serves
Prometheus metrics on loopback (``hub.wire.metrics``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError
from hub.cli.database import add_database_arguments
from hub.infra.argtypes import port_number, positive_float, positive_int
from hub.infra.configfile import Setting, add_settings, render, resolve
from hub.infra.process import exit_leaving_stuck_calls
from hub.services.audit import log_signer
from hub.services.config import (
    CHECKPOINT_EVERY_EVENTS,
    CHECKPOINT_EVERY_SECONDS,
    COSIGNATURE_REFRESH_SECONDS,
    DEFAULT_LISTEN,
    HubConfig,
    WitnessEndpoint,
    WitnessIdentity,
    default_policy,
)
from hub.services.server import HubServer

__all__ = ["register"]


def _shown(value: object) -> str:
    if isinstance(value, WitnessEndpoint):
        parts = [value.address, value.verifier_key, value.audience]
        if value.ca is not None:
            parts.append(str(value.ca))
            if value.server_name:
                parts.append(value.server_name)
        return ",".join(parts)
    return str(value)


def _cmd_serve(args: argparse.Namespace) -> int:
    resolve(args, SETTINGS, "serve")
    if args.print_config:
        print(render(args, SETTINGS, _shown), end="")
        return 0
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
        cosignature_refresh_seconds=args.witness_refresh,
        previous_epochs=tuple(args.accept_epoch or ()),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    hub = HubServer(config)
    port = hub.start()
    hub.install_signal_handlers()
    print(f"hub listening on port {port}")
    if hub.metrics_port is not None:
        print(f"metrics on http://{config.metrics_host}:{hub.metrics_port}/metrics")
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


#: The settings of ``serve``, on the command line and in its TOML file.
SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "path", required=True),
    Setting("database_url", "secret_url"),
    Setting("public", "path", required=True),
    Setting("listen", "str", DEFAULT_LISTEN),
    Setting("policy", "paths", []),
    Setting("insecure", "bool", False),
    Setting("workers", "int", 8, check=positive_int()),
    Setting("grace", "float", HubConfig.shutdown_grace, check=positive_float),
    Setting("checkpoint_every", "int", CHECKPOINT_EVERY_EVENTS, check=positive_int()),
    Setting("checkpoint_seconds", "float", CHECKPOINT_EVERY_SECONDS, check=positive_float),
    Setting("witness", "strs", [], check=_witness_endpoint),
    Setting("witness_institution", "str"),
    Setting("witness_key", "path"),
    Setting("accept_epoch", "ints", [], check=positive_int()),
    Setting("metrics_port", "int", check=port_number),
    Setting("metrics_host", "str", "127.0.0.1"),
)


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
    add_settings(serve)
    add_database_arguments(serve, required=False)
    serve.add_argument("--public", type=Path, help="public.json of the OPRF key (keys deal)")
    serve.add_argument("--listen", help=f"host:port ({DEFAULT_LISTEN})")
    serve.add_argument(
        "--policy",
        type=Path,
        action="append",
        help="policy file; repeat for overrides (stricter wins). Default: policies/default.yaml",
    )
    serve.add_argument(
        "--insecure", action="store_true", default=None, help="serve WITHOUT TLS (development)"
    )
    serve.add_argument("--workers", type=positive_int(), help="RPC worker threads (default 8)")
    serve.add_argument(
        "--grace",
        type=positive_float,
        metavar="SECONDS",
        help="on SIGTERM, let in-flight calls finish this long, then cancel them "
        f"(default {HubConfig.shutdown_grace:g})",
    )
    serve.add_argument(
        "--checkpoint-every",
        type=positive_int(),
        metavar="N",
        help=f"sign an audit checkpoint every N events (default {CHECKPOINT_EVERY_EVENTS})",
    )
    serve.add_argument(
        "--checkpoint-seconds",
        type=positive_float,
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
        "--witness-refresh",
        type=positive_float,
        default=COSIGNATURE_REFRESH_SECONDS,
        metavar="SECONDS",
        help="ask the witnesses again for an unchanged head once its newest cosignature is "
        f"this old (default {COSIGNATURE_REFRESH_SECONDS:g}; keep it at most half the "
        "regulators' `audit verify --max-age`)",
    )
    serve.add_argument(
        "--accept-epoch",
        type=positive_int(),
        action="append",
        metavar="EPOCH",
        help="an earlier OPRF key epoch still accepted and matched while institutions "
        "re-contribute (repeatable; README 'keys' runbook, ADR 0013)",
    )
    serve.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="PORT",
        help="serve Prometheus metrics on this port (0: any free port; default: none)",
    )
    serve.add_argument(
        "--metrics-host", help="address of the metrics endpoint (default 127.0.0.1, loopback)"
    )
    serve.set_defaults(func=_cmd_serve)
