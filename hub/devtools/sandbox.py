"""``fraudhub sandbox``: a local deployment that stays up, to try fraudhub by hand.

Starts what ``fraudhub demo`` starts (``hub.devtools.deployment.LocalDeployment``:
the hub and three key holders of a 2-of-3 key on loopback, TLS, the default
policy; the holders generate the key by DKG, ADR 0009) and registers
:data:`SANDBOX_INSTITUTIONS`, then waits for SIGINT or SIGTERM.  ``DIR`` holds:

- ``DIR/state/``: the hub's directory (its own TLS identity, its database
  unless ``--database-url``, the audit log key, ``logs/servers.log``); it
  holds no key of any key holder;
- ``DIR/holders/holder-<i>/``: key holder ``i``'s own directory (its TLS
  identity, its registry of the institutions it admitted, its quota and
  token-id files, its DKG state and its own key share ``share-<i>.json``),
  and ``DIR/holders/dkg-exchange/`` the DKG's public round files (with
  ``--key-ceremony deal``, a dealer's ``DIR/holders/keys/`` instead);
- ``DIR/clients/<id>.pem`` and ``DIR/clients/<id>.json``: each institution's
  private key and its client configuration, in the format
  ``fraudhub contribute|match --config`` reads (``ClientConfig``; paths in it
  are relative to the file);
- ``DIR/clients/audit-log-key.txt``: the hub's public audit log key, which a
  regulator pins (``fraudhub audit verify --log-key @FILE``).

Guarantees:

- stdout receives exactly one line, ``sandbox ready: DIR``, once the hub and
  every key holder answer gRPC health checking over TLS with SERVING; the
  instructions and any warnings go to stderr.
- SIGINT or SIGTERM stops every server (graceful, ``grace`` seconds) and the
  command exits 0.
- While it runs, the files and directories it creates are private to the user
  (mode 0600 and 0700); an existing ``DIR`` keeps its own mode.
- Running it again on the same ``DIR`` reuses the TLS material, key shares,
  database and institution keys (ports are new, the client configurations
  are rewritten); nothing is wiped.  A second sandbox on a ``DIR`` in use is
  refused (ConfigurationError).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk.core.errors import ConfigurationError, Unavailable
from client_sdk.wire.channels import ChannelSecurity, open_channel
from hub.devtools.deployment import LocalDeployment
from hub.services.audit import log_signer

__all__ = [
    "READY_PREFIX",
    "SANDBOX_INSTITUTIONS",
    "instructions",
    "register",
    "run_sandbox",
    "wait_serving",
]

#: Institution id -> role, registered by every sandbox.
SANDBOX_INSTITUTIONS: dict[str, str] = {
    "bank-a": "bank",
    "bank-b": "bank",
    "carrier-c": "carrier",
    "reg-r": "regulator",
    "op-o": "operator",
}
READY_PREFIX = "sandbox ready: "
LOG_KEY_FILENAME = "audit-log-key.txt"
LOCK_FILENAME = "sandbox.lock"
# Bound on the wait for the servers' health checks (they are started already).
READY_TIMEOUT = 30.0
PRIVATE_UMASK = 0o077


def wait_serving(endpoints: Sequence[tuple[str, ChannelSecurity]], timeout: float) -> None:
    """Return once every ``(address, pin)`` answers gRPC health checking with SERVING.

    Raises Unavailable naming the address that did not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    for address, security in endpoints:
        channel = open_channel(address, security)
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(f"{address} did not report SERVING within {timeout:g} s")
                try:
                    reply = stub.Check(
                        health_pb2.HealthCheckRequest(), timeout=remaining, wait_for_ready=True
                    )
                except grpc.RpcError:  # not up yet, or the deadline passed
                    reply = None
                if reply is not None and reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.05)
        finally:
            channel.close()


@contextmanager
def _private_files() -> Iterator[None]:
    """Files and directories created inside are 0600 and 0700 (umask 077)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock file; ConfigurationError if another sandbox does.

    The kernel drops the lock when the process ends, so a killed sandbox leaves
    no stale lock behind.
    """
    with (directory / LOCK_FILENAME).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(f"{directory} is in use by another sandbox") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def instructions(directory: Path, world: LocalDeployment) -> str:
    """What to run against the sandbox: every command takes a --config of clients/."""
    clients = directory / "clients"
    holders = ", ".join(endpoint.address for endpoint in world.holder_endpoints())
    members = ", ".join(f"{i} ({role})" for i, role in SANDBOX_INSTITUTIONS.items())
    return "\n".join(
        [
            f"fraudhub sandbox: hub {world.hub_address}, key holders {holders} (2-of-3, TLS)",
            f"  institutions: {members}",
            f"  client configurations: {clients}/<id>.json; servers' log: "
            f"{world.data_dir / 'logs'}",
            "  try:",
            f"    fraudhub contribute --config {clients / 'bank-a.json'} --purpose "
            "fraud_reporting examples/bank_a.csv",
            f"    fraudhub match --config {clients / 'carrier-c.json'} --purpose "
            "sim_activation_screening examples/carrier_subscribers.csv",
            f"    fraudhub audit verify --config {clients / 'reg-r.json'} "
            f"--log-key @{clients / LOG_KEY_FILENAME} "
            f"--state {clients / 'reg-r-audit-state.json'}",
            f"    fraudhub audit report --config {clients / 'reg-r.json'}",
            f"    fraudhub policy reload --config {clients / 'op-o.json'}",
            "  Ctrl-C (SIGINT) or SIGTERM stops it; run it again on the same directory to resume.",
        ]
    )


def run_sandbox(
    directory: Path,
    stop: threading.Event,
    *,
    database_url: str | None = None,
    key: Literal["deal", "dkg"] = "dkg",
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    grace: float = 1.0,
) -> None:
    """Start the sandbox in ``directory``, report ready on ``out``, run until ``stop``.

    Raises ConfigurationError (``directory`` in use, or state that does not
    fit together, e.g. a registered institution whose key file is gone) and
    Unavailable (a server did not report SERVING in time).
    """
    directory = directory.resolve()
    with _private_files():
        (directory / "clients").mkdir(parents=True, exist_ok=True)
        with (
            _exclusive(directory),
            LocalDeployment(
                directory / "state",
                directory / "clients",
                database_url=database_url,
                grace=grace,
                reuse=True,
                key=key,
            ) as world,
        ):
            world.start()
            for institution, role in SANDBOX_INSTITUTIONS.items():
                world.enroll(institution, role)
                world.client_config(institution)
            log_key = log_signer(world.data_dir).verifier_key()
            (directory / "clients" / LOG_KEY_FILENAME).write_text(log_key + "\n")
            endpoints = [(world.hub_address, world.security)] + [
                (e.address, world.holder_security(e.index)) for e in world.holder_endpoints()
            ]
            wait_serving(endpoints, READY_TIMEOUT)
            print(instructions(directory, world), file=err, flush=True)
            print(f"{READY_PREFIX}{directory}", file=out, flush=True)
            # A timed wait, so the signal handler that sets ``stop`` runs promptly.
            while not stop.wait(0.2):
                pass
            print("fraudhub sandbox: stopping", file=err, flush=True)


def _cmd_sandbox(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Before anything starts: a signal during start-up stops the sandbox
    # right after it is up, through the same clean path.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run_sandbox(args.data_dir, stop, database_url=args.database_url, key=args.key_ceremony)
    return 0


def register(sub: Any) -> None:
    sandbox = sub.add_parser(
        "sandbox",
        help="run a hub, 3 key holders and 5 institutions on loopback until SIGINT/SIGTERM",
    )
    sandbox.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        help="directory for the state and client configurations (reused when run again)",
    )
    sandbox.add_argument(
        "--database-url", help="PostgreSQL URL (default: SQLite file in DIR/state)"
    )
    sandbox.add_argument(
        "--key-ceremony",
        choices=("dkg", "deal"),
        default="dkg",
        help="how a new sandbox's key is made: DKG among the holders (default) or a dealer",
    )
    sandbox.set_defaults(func=_cmd_sandbox)
