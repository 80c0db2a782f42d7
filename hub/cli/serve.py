"""``fraudhub serve``, ``contribute``, ``match``, ``policy reload`` and the hub's
``institution`` actions.

``policy reload`` asks a running hub to re-read its policy files
(Admin.ReloadPolicy, operator role); a file that does not validate is refused
with its file, line and field, and the hub keeps its running policy.  SIGHUP
to ``fraudhub serve`` does the same from the hub's machine.

``contribute FILE`` and ``match FILE`` run an institution's bulk job with the
SDK (``client_sdk.HubClient``) from a client JSON file; they exit 1 if any row
failed (each failure is listed on stderr by row number, never by value).

``serve`` runs a hub until SIGTERM or SIGINT (graceful stop), reloads its
policy on SIGHUP, and prints the bound port on stdout so ``--listen
127.0.0.1:0`` works in scripts.

``institution add|list|disable|export`` work on the hub's database directly
(the operator's bootstrap path: the first operator institution cannot be
registered over an authenticated RPC).  Each change is appended to the audit
log as done by the local operator (``local-operator``), in the same
transaction as the change.  ``export`` writes the JSON registry that key
holders read (``hub.wire.auth.JsonFileRegistry``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from pathlib import Path
from typing import Any

import grpc
from fraudhub.v1 import admin_pb2, admin_pb2_grpc

from client_sdk.client.hub import BulkSummary, ClientConfig, HubClient
from client_sdk.core.errors import ConfigurationError
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, InstitutionKey
from client_sdk.wire.channels import ChannelSecurity, errors_from_status, open_channel
from hub.infra.argtypes import positive_float, positive_int
from hub.services.admin import (
    add_institution_locally,
    disable_institution_locally,
    to_registered,
)
from hub.services.audit import log_signer
from hub.services.config import (
    CHECKPOINT_EVERY_EVENTS,
    CHECKPOINT_EVERY_SECONDS,
    DEFAULT_LISTEN,
    HubConfig,
    default_policy,
)
from hub.services.server import HubServer
from hub.storage.models import Institution, utcnow
from hub.storage.store import (
    SQLITE_FILENAME,
    Store,
    list_institutions,
    sqlite_url,
)
from hub.wire.auth import ROLES, dump_registry

__all__ = ["register", "register_institution_actions", "register_policy_reload"]


def _add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="the hub's data directory (state, TLS)"
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (default: SQLite file in the data directory)"
    )


def _store(args: argparse.Namespace, *, create: bool = False) -> Store:
    """The hub's store, migrated.  Only ``create`` may start a new SQLite file:
    reading or changing the registry of a mistyped --data-dir must not make one."""
    if args.database_url is None and not create:
        database = Path(args.data_dir) / SQLITE_FILENAME
        if not database.exists():
            raise ConfigurationError(
                f"no hub database at {database}: check --data-dir (or give --database-url)"
            )
    store = Store(args.database_url or sqlite_url(args.data_dir))
    store.migrate()
    return store


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


def _client(args: argparse.Namespace) -> HubClient:
    return HubClient.from_config(ClientConfig.load(args.config))


def _report(summary: BulkSummary) -> int:
    for failure in summary.failures:
        print(f"row {failure.index} ({failure.kind}): {failure.reason}", file=sys.stderr)
    return 1 if summary.failures else 0


def _cmd_contribute(args: argparse.Namespace) -> int:
    with _client(args) as client:
        summary = client.contribute_csv(
            args.file,
            purpose=args.purpose,
            case_reference=args.case_reference,
            progress=not args.no_progress,
        )
    print(f"{summary.stored} of {summary.rows} rows stored, {len(summary.failures)} failed")
    return _report(summary)


def _cmd_match(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.out is None:
            summary = client.match_csv(
                args.file,
                sys.stdout,
                purpose=args.purpose,
                case_reference=args.case_reference,
                progress=not args.no_progress,
            )
        else:
            with args.out.open("w", newline="", encoding="utf-8") as out:
                summary = client.match_csv(
                    args.file,
                    out,
                    purpose=args.purpose,
                    case_reference=args.case_reference,
                    progress=not args.no_progress,
                )
    print(
        f"{summary.rows} rows screened, {summary.matched} matched, {len(summary.failures)} failed",
        file=sys.stderr,
    )
    return _report(summary)


def _add_client_arguments(parser: argparse.ArgumentParser, purpose_help: str) -> None:
    parser.add_argument("file", type=Path, help="CSV file with a header (kind, value, ...)")
    parser.add_argument(
        "--config", type=Path, required=True, help="client JSON (institution, key, hub, holders)"
    )
    parser.add_argument("--purpose", required=True, help=purpose_help)
    parser.add_argument("--case-reference", help="case or ticket reference (audited as a digest)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: Any) -> None:
    contribute = sub.add_parser("contribute", help="contribute the indicators of a CSV file")
    _add_client_arguments(contribute, "a contribution purpose of the policy (fraud_reporting)")
    contribute.set_defaults(func=_cmd_contribute)

    match = sub.add_parser("match", help="screen the values of a CSV file")
    _add_client_arguments(match, "a screening purpose of the policy (payment_screening...)")
    match.add_argument("--out", type=Path, help="result CSV (default stdout; no raw values)")
    match.set_defaults(func=_cmd_match)

    serve = sub.add_parser("serve", help="run the hub (Exchange, Admin, Audit over gRPC)")
    _add_database_arguments(serve)
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


# --- policy reload ------------------------------------------------------------------------


def _cmd_policy_reload(args: argparse.Namespace) -> int:
    key = InstitutionKey.load(args.institution, args.key)
    if args.insecure:
        security = ChannelSecurity(insecure=True)
    elif args.ca is not None:
        security = ChannelSecurity.from_ca_file(str(args.ca))
    else:
        raise ConfigurationError("give --ca (the hub's CA certificate) or --insecure")
    channel = open_channel(args.hub, security, BearerAuth(key, HUB_AUDIENCE))
    try:
        reply = admin_pb2_grpc.AdminStub(channel).ReloadPolicy(
            admin_pb2.ReloadPolicyRequest(), timeout=args.timeout
        )
    except grpc.RpcError as exc:
        raise errors_from_status(exc) from None
    finally:
        channel.close()
    changed = "changed" if reply.policy_version != reply.previous_version else "unchanged"
    print(f"policy {reply.policy_version} ({changed}; was {reply.previous_version})")
    return 0


def register_policy_reload(commands: Any) -> None:
    """Add ``reload`` to the ``policy`` group: Admin.ReloadPolicy as an operator."""
    reload = commands.add_parser(
        "reload", help="make a running hub re-read its policy files (operator role)"
    )
    reload.add_argument("--hub", required=True, help="host:port of the hub")
    reload.add_argument("--institution", required=True, help="the operator institution's id")
    reload.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
    reload.add_argument("--ca", type=Path, help="CA certificate of the hub (tls/ca.pem)")
    reload.add_argument("--insecure", action="store_true", help="plaintext (development only)")
    reload.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    reload.set_defaults(func=_cmd_policy_reload)


# --- institution add | list | disable | export ----------------------------------------


def _public_key(args: argparse.Namespace) -> bytes:
    text = args.public_key
    if args.public_key_file is not None:
        try:
            text = args.public_key_file.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read {args.public_key_file}: {exc.strerror}"
            ) from None
    if not text:
        raise ConfigurationError("give --public-key or --public-key-file")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("the public key must be base64 (institution keygen)") from None


def _cmd_add(args: argparse.Namespace) -> int:
    row = Institution(
        id=args.id,
        role=args.role,
        public_key=_public_key(args),
        display_name=args.name or args.id,
        created_at=utcnow(),
    )
    to_registered(row)  # validates id, role and key length (ConfigurationError)
    store = _store(args, create=True)
    try:
        add_institution_locally(store, row, "cli")
    finally:
        store.dispose()
    print(f"registered {row.id} ({row.role})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    with store.session() as session:
        rows = list_institutions(session, include_disabled=args.all)
    store.dispose()
    print(f"{'id':<24} {'role':<10} {'status':<9} name")
    for row in rows:
        status = "enabled" if row.enabled else "disabled"
        print(f"{row.id:<24} {row.role:<10} {status:<9} {row.display_name}")
    return 0


def _cmd_disable(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        disable_institution_locally(store, args.id, "cli")
    finally:
        store.dispose()
    print(f"disabled {args.id}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    store = _store(args)
    with store.session() as session:
        rows = list_institutions(session, include_disabled=True)
    store.dispose()
    text = dump_registry([to_registered(r) for r in rows]) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"wrote {len(rows)} institution(s) to {args.out}")
    return 0


def register_institution_actions(actions: Any) -> None:
    """Add ``add``, ``list``, ``disable`` and ``export`` to the ``institution`` group."""
    add = actions.add_parser("add", help="register an institution at the hub")
    _add_database_arguments(add)
    add.add_argument("--id", required=True, help="1..64 characters of [a-z0-9._-]")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", help="display name")
    add.add_argument("--public-key", default="", help="base64 Ed25519 public key (keygen)")
    add.add_argument("--public-key-file", type=Path, help="the <key>.pub file of keygen")
    add.set_defaults(func=_cmd_add)

    listing = actions.add_parser("list", help="list registered institutions")
    _add_database_arguments(listing)
    listing.add_argument("--all", action="store_true", help="include disabled institutions")
    listing.set_defaults(func=_cmd_list)

    disable = actions.add_parser("disable", help="refuse every later call of an institution")
    _add_database_arguments(disable)
    disable.add_argument("--id", required=True)
    disable.set_defaults(func=_cmd_disable)

    export = actions.add_parser("export", help="write the registry JSON for key holders")
    _add_database_arguments(export)
    export.add_argument("--out", type=Path, help="file to write (default: stdout)")
    export.set_defaults(func=_cmd_export)
