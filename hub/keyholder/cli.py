"""``fraudhub init`` (the hub's TLS identity) and ``fraudhub keyholder ...``.

Every party makes its own TLS identity in its own directory (ADR 0012):

- ``init --data-dir DIR``: the hub's CA and certificate (``hub.fraudhub.internal``)
  in ``DIR/tls``; no key of any holder.
- ``keyholder init --state-dir DIR --name NAME``: one key holder's CA and
  certificate in ``DIR/tls`` (mode 0700 directory, 0600 key); the holder's
  server name is remembered in ``DIR/holder.json``.
- ``keyholder serve --state-dir DIR --share ... --public ...``: runs the holder
  until SIGINT or SIGTERM, then drains calls for a few seconds and exits 0.  It
  prints the bound port on stdout, so ``--listen 127.0.0.1:0`` works in scripts.
  It admits only the institutions of its own registry (``DIR/admitted.json``,
  ``keyholder institution ...`` in ``hub.keyholder.admission_cli``).  With
  ``--witness-log-key`` it also witnesses the hub's audit log
  (``hub.keyholder.witness``, ADR 0010).
- ``witness-key --state-dir DIR --name NAME`` prints that witness's verifier key.

``keyholder serve --config holder.toml`` reads its settings from a TOML file
(flags override it; ``--print-config`` prints them, ``hub.infra.configfile``);
``--metrics-port`` serves Prometheus metrics on loopback (``hub.wire.metrics``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from client_sdk.core.errors import ConfigurationError
from client_sdk.wire.auth import keyholder_audience
from hub.infra.argtypes import port_number, positive_int
from hub.infra.configfile import Setting, add_settings, render, resolve
from hub.infra.privatefiles import LOG_KEY_FILENAME, load_or_create_log_key
from hub.infra.process import exit_leaving_stuck_calls
from hub.keyholder.admission import HolderRegistry
from hub.keyholder.admission_cli import register_admission_actions
from hub.keyholder.keyfiles import check_share, load_public, load_share
from hub.keyholder.server import (
    DEFAULT_DAILY_QUOTA,
    KeyHolderServer,
    KeyHolderServicer,
    QuotaLedger,
    SeenTokenFile,
)
from hub.keyholder.witness import (
    WitnessServicer,
    default_witness_name,
    load_cosigner,
    open_witness,
)
from hub.wire.auth import TokenVerifier
from hub.wire.metrics import ServerMetrics
from hub.wire.tls import (
    HOLDER_STEM,
    TlsFiles,
    init_identity,
    init_tls,
    load_server_credentials,
    tls_files,
)

__all__ = ["holder_audience", "holder_name", "init_holder", "register"]

STOP_GRACE_SECONDS = 5.0
IDENTITY_FILENAME = "holder.json"


def init_holder(state_dir: Path, name: str, extra_hosts: tuple[str, ...] = ()) -> list[Path]:
    """A key holder's own TLS identity and name in ``state_dir``; return the files written.

    Raises ConfigurationError if ``state_dir`` already holds an identity.
    """
    written = init_identity(state_dir, HOLDER_STEM, name, extra_hosts)
    identity = state_dir / IDENTITY_FILENAME
    identity.write_text(json.dumps({"name": name}) + "\n")
    return [*written, identity]


def holder_name(state_dir: Path) -> str:
    """The server name ``keyholder init`` gave this holder; raises ConfigurationError."""
    path = state_dir / IDENTITY_FILENAME
    try:
        name = json.loads(path.read_text("utf-8"))["name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigurationError(
            f"{path} missing or invalid; run `fraudhub keyholder init --state-dir {state_dir}`"
        ) from None
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{path}: name must be text")
    return name


def _cmd_init(args: argparse.Namespace) -> int:
    written = init_tls(args.data_dir, extra_hosts=args.host)
    print(f"TLS identity of the hub in {args.data_dir / 'tls'}:")
    for path in written:
        print(f"  {path}")
    print("clients pin tls/ca.pem for the hub; hub.key is private (mode 0600)")
    # The log key too, so its verifier key can go to witnesses and regulators
    # before the hub first starts ('fraudhub audit log-key' prints it).
    load_or_create_log_key(args.data_dir / LOG_KEY_FILENAME)
    print(f"audit log key in {args.data_dir / LOG_KEY_FILENAME} (private, mode 0600)")
    return 0


def _cmd_holder_init(args: argparse.Namespace) -> int:
    written = init_holder(args.state_dir, args.name, tuple(args.host))
    print(f"TLS identity of key holder {args.name} in {args.state_dir / 'tls'}:")
    for path in written:
        print(f"  {path}")
    print("clients pin tls/ca.pem for this holder; keyholder.key is private (mode 0600)")
    return 0


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    if args.insecure:
        return None
    if args.tls_cert and args.tls_key:
        return TlsFiles(ca=Path(), certificate=args.tls_cert, key=args.tls_key)
    return tls_files(args.state_dir, HOLDER_STEM)


def holder_audience(index: int, requested: str | None) -> str:
    """The JWT audience holder ``index`` serves: its own unless ``requested`` names another.

    Any ``fraudhub:`` audience other than ``fraudhub:keyholder:<index>`` is
    another server's (the hub's, another holder's): serving it would accept
    every token an institution sends there, replayed by whoever receives
    them.  Raises ConfigurationError.
    """
    own = keyholder_audience(index)
    if requested is None or requested == own:
        return own
    if requested.startswith("fraudhub:"):
        raise ConfigurationError(
            f"--audience {requested!r} is not this key holder's audience ({own}): it names "
            "another server, whose tokens would then be good here too"
        )
    return requested


#: The settings of ``keyholder serve``, on the command line and in its TOML file.
SETTINGS: tuple[Setting, ...] = (
    Setting("share", "path", required=True),
    Setting("public", "path", required=True),
    Setting("state_dir", "path", required=True),
    Setting("listen", "str", "127.0.0.1:0"),
    Setting("tls_cert", "path"),
    Setting("tls_key", "path"),
    Setting("insecure", "bool", False),
    Setting("audience", "str"),
    Setting("workers", "int", 8, check=positive_int()),
    Setting("witness_log_key", "strs", []),
    Setting("witness_name", "str"),
    Setting("metrics_port", "int", check=port_number),
    Setting("metrics_host", "str", "127.0.0.1"),
)


def _cmd_serve(args: argparse.Namespace) -> int:
    resolve(args, SETTINGS, "keyholder serve")
    if args.print_config:
        print(render(args, SETTINGS), end="")
        return 0
    share = load_share(args.share)
    public = load_public(args.public)
    check_share(share, public)
    audience = holder_audience(share.index, args.audience)
    files = _tls(args)
    credentials = load_server_credentials(files) if files is not None else None
    registry = HolderRegistry(args.state_dir, holder_name(args.state_dir))
    seen = SeenTokenFile(args.state_dir / "seen-tokens.sqlite3")
    verifier = TokenVerifier(registry, audience, replay=seen)
    quota = QuotaLedger(
        args.state_dir / "quota.sqlite3", DEFAULT_DAILY_QUOTA, limits=registry.quota_limits
    )
    witness = None
    witness_state = None
    if args.witness_log_key:
        name = args.witness_name or default_witness_name(share.index)
        witness, witness_state = open_witness(args.state_dir, name, args.witness_log_key)
    metrics = ServerMetrics("keyholder")
    server = KeyHolderServer.create(
        KeyHolderServicer(share, public, quota),
        verifier,
        args.listen,
        credentials,
        insecure=args.insecure,
        max_workers=args.workers,
        witness=WitnessServicer(witness) if witness is not None else None,
        metrics=metrics,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    print(f"key holder {share.index} (epoch {share.epoch}) listening on port {server.port}")
    if args.metrics_port is not None:
        metrics_port = metrics.serve(args.metrics_port, args.metrics_host)
        print(f"metrics on http://{args.metrics_host}:{metrics_port}/metrics")
    if witness is not None:
        print(f"witness key {witness.cosigner.verifier_key()}")
    sys.stdout.flush()
    # Wake up now and then: a signal delivered to one of gRPC's threads only runs
    # its Python handler once the main thread executes again.
    while not stop.wait(0.5):
        pass
    stopped = server.stop(STOP_GRACE_SECONDS)
    metrics.close()
    if not stopped:
        exit_leaving_stuck_calls()
    quota.close()
    seen.close()
    if witness_state is not None:
        witness_state.close()
    return 0


def _cmd_witness_key(args: argparse.Namespace) -> int:
    # The key is created here if missing: the holder's operator runs this on
    # the holder's machine, before or after first start, to hand the verifier
    # key to the hub's operator and to regulators (audit verify --witness).
    print(load_cosigner(args.state_dir, args.name).verifier_key())
    return 0


def register(sub: Any) -> None:
    init = sub.add_parser("init", help="create the hub's own CA and TLS certificate")
    init.add_argument("--data-dir", type=Path, required=True)
    init.add_argument(
        "--host", action="append", default=[], help="extra host name or IP for the certificate"
    )
    init.set_defaults(func=_cmd_init)

    group = sub.add_parser("keyholder", help="a key holder: its identity, server and registry")
    actions = group.add_subparsers(dest="keyholder_command", metavar="ACTION", required=True)

    holder_init = actions.add_parser("init", help="create this holder's own CA and certificate")
    holder_init.add_argument("--state-dir", type=Path, required=True)
    holder_init.add_argument(
        "--name", required=True, help="its TLS server name, e.g. holder-1.fraudhub.internal"
    )
    holder_init.add_argument(
        "--host", action="append", default=[], help="extra host name or IP for the certificate"
    )
    holder_init.set_defaults(func=_cmd_holder_init)

    kh = actions.add_parser("serve", help="run the key holder server for one key share")
    add_settings(kh)
    kh.add_argument("--share", type=Path, help="share-<i>.json (mode 0600)")
    kh.add_argument("--public", type=Path, help="public.json of the same key")
    kh.add_argument(
        "--state-dir",
        type=Path,
        help="this holder's directory (keyholder init): TLS, registry, quota and token-id files",
    )
    kh.add_argument("--listen", help="host:port (default 127.0.0.1:0)")
    kh.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM) from your PKI")
    kh.add_argument("--tls-key", type=Path, help="server private key (PEM) from your PKI")
    kh.add_argument(
        "--insecure", action="store_true", default=None, help="serve WITHOUT TLS (development only)"
    )
    kh.add_argument("--audience", help="JWT audience (default fraudhub:keyholder:<index>)")
    kh.add_argument("--workers", type=positive_int(), help="RPC worker threads (default 8)")
    kh.add_argument(
        "--witness-log-key",
        action="append",
        metavar="VKEY",
        help="also witness the audit log with this log key (the hub's `audit log-key`); "
        "repeatable. The witness key is witness-key.pem in --state-dir",
    )
    kh.add_argument(
        "--witness-name", help="witness key name (default fraudhub/keyholder-<index>/witness)"
    )
    kh.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="PORT",
        help="serve Prometheus metrics on this port (0: any free port; default: none)",
    )
    kh.add_argument(
        "--metrics-host", help="address of the metrics endpoint (default 127.0.0.1, loopback)"
    )
    kh.set_defaults(func=_cmd_serve)

    register_admission_actions(actions)

    wk = sub.add_parser(
        "witness-key", help="print (creating if missing) a key holder's witness verifier key"
    )
    wk.add_argument("--state-dir", type=Path, required=True, help="the key holder's state dir")
    wk.add_argument(
        "--name", required=True, help="witness key name, e.g. fraudhub/keyholder-1/witness"
    )
    wk.set_defaults(func=_cmd_witness_key)
