"""``fraudhub init`` and ``fraudhub keyholder``.

``init --data-dir DIR`` writes the local TLS material (``hub.wire.tls``).
``keyholder`` runs one key holder until SIGINT or SIGTERM, then drains calls
for a few seconds and exits 0.  It prints the bound port on stdout, so
``--listen 127.0.0.1:0`` works in scripts.  With ``--witness-log-key`` it also
witnesses the hub's audit log (``hub.keyholder.witness``, ADR 0010).
``witness-key --state-dir DIR --name NAME`` prints that witness's verifier key.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from client_sdk.core.errors import ConfigurationError
from client_sdk.core.threshold import MAX_HOLDERS
from client_sdk.wire.auth import keyholder_audience
from hub.infra.argtypes import positive_int
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
from hub.wire.auth import JsonFileRegistry, TokenVerifier
from hub.wire.tls import TlsFiles, init_tls, keyholder_name, load_server_credentials, tls_files

__all__ = ["register"]

STOP_GRACE_SECONDS = 5.0


def _cmd_init(args: argparse.Namespace) -> int:
    written = init_tls(args.data_dir, holders=args.holders, extra_hosts=args.host)
    print(f"TLS material for the hub and {args.holders} key holder(s) in {args.data_dir / 'tls'}:")
    for path in written:
        print(f"  {path}")
    print("clients trust tls/ca.pem; *.key files are private (mode 0600)")
    return 0


def _tls(args: argparse.Namespace, index: int) -> TlsFiles | None:
    if args.insecure:
        return None
    if args.tls_cert and args.tls_key:
        return TlsFiles(ca=Path(), certificate=args.tls_cert, key=args.tls_key)
    if args.data_dir is None:
        raise ConfigurationError(
            "give --data-dir (from `fraudhub init`), --tls-cert/--tls-key, or --insecure"
        )
    return tls_files(args.data_dir, keyholder_name(index))


def _cmd_keyholder(args: argparse.Namespace) -> int:
    share = load_share(args.share)
    public = load_public(args.public)
    check_share(share, public)
    files = _tls(args, share.index)
    credentials = load_server_credentials(files) if files is not None else None
    seen = SeenTokenFile(args.state_dir / "seen-tokens.sqlite3")
    verifier = TokenVerifier(
        JsonFileRegistry(args.registry),
        args.audience or keyholder_audience(share.index),
        replay=seen,
    )
    quota = QuotaLedger(args.state_dir / "quota.sqlite3", args.daily_quota)
    witness = None
    witness_state = None
    if args.witness_log_key:
        name = args.witness_name or default_witness_name(share.index)
        witness, witness_state = open_witness(args.state_dir, name, args.witness_log_key)
    server = KeyHolderServer.create(
        KeyHolderServicer(share, public, quota),
        verifier,
        args.listen,
        credentials,
        insecure=args.insecure,
        max_workers=args.workers,
        witness=WitnessServicer(witness) if witness is not None else None,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    print(f"key holder {share.index} (epoch {share.epoch}) listening on port {server.port}")
    if witness is not None:
        print(f"witness key {witness.cosigner.verifier_key()}")
    sys.stdout.flush()
    # Wake up now and then: a signal delivered to one of gRPC's threads only runs
    # its Python handler once the main thread executes again.
    while not stop.wait(0.5):
        pass
    server.stop(STOP_GRACE_SECONDS)
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
    init = sub.add_parser("init", help="create a local CA and TLS certificates")
    init.add_argument("--data-dir", type=Path, required=True)
    init.add_argument(
        "--holders",
        type=positive_int(MAX_HOLDERS),
        default=3,
        help="number of key holders (default 3)",
    )
    init.add_argument(
        "--host", action="append", default=[], help="extra host name or IP for the certificates"
    )
    init.set_defaults(func=_cmd_init)

    kh = sub.add_parser("keyholder", help="run a key holder server for one key share")
    kh.add_argument("--share", type=Path, required=True, help="share-<i>.json (mode 0600)")
    kh.add_argument("--public", type=Path, required=True, help="public.json of the same key")
    kh.add_argument(
        "--registry", type=Path, required=True, help="institutions JSON (institution export)"
    )
    kh.add_argument(
        "--state-dir", type=Path, required=True, help="where the quota and token-id files live"
    )
    kh.add_argument("--listen", default="127.0.0.1:0", help="host:port (default 127.0.0.1:0)")
    kh.add_argument("--data-dir", type=Path, help="data dir of `fraudhub init` (TLS files)")
    kh.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    kh.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    kh.add_argument("--insecure", action="store_true", help="serve WITHOUT TLS (development only)")
    kh.add_argument(
        "--daily-quota",
        type=positive_int(),
        default=DEFAULT_DAILY_QUOTA,
        help=f"elements per institution per UTC day (default {DEFAULT_DAILY_QUOTA})",
    )
    kh.add_argument("--audience", help="JWT audience (default fraudhub:keyholder:<index>)")
    kh.add_argument(
        "--workers", type=positive_int(), default=8, help="RPC worker threads (default 8)"
    )
    kh.add_argument(
        "--witness-log-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="also witness the audit log with this log key (the hub's `audit log-key`); "
        "repeatable. The witness key is witness-key.pem in --state-dir",
    )
    kh.add_argument(
        "--witness-name", help="witness key name (default fraudhub/keyholder-<index>/witness)"
    )
    kh.set_defaults(func=_cmd_keyholder)

    wk = sub.add_parser(
        "witness-key", help="print (creating if missing) a key holder's witness verifier key"
    )
    wk.add_argument("--state-dir", type=Path, required=True, help="the key holder's state dir")
    wk.add_argument(
        "--name", required=True, help="witness key name, e.g. fraudhub/keyholder-1/witness"
    )
    wk.set_defaults(func=_cmd_witness_key)
