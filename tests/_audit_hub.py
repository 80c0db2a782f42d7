"""A real hub on loopback for the audit tests, and the regulator's CLI against it.

The hub is ``hub.services.server.HubServer`` on a SQLite file in a temporary directory,
plaintext gRPC on port 0 (``insecure``: TLS is covered by the transport tests),
with one regulator (``reg-1``) and one bank (``bank-a``) registered.  Tests
edit its database file through :meth:`RunningHub.sql`, a second connection,
while it runs.  With ``witnesses=n`` it first starts n real key holder servers
(plaintext, port 0) that witness its log (``hub.keyholder.witness``); the hub
calls them as the operator institution ``hub-operator``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from fraudhub.v1 import exchange_pb2, exchange_pb2_grpc

from client_sdk.client.config import ClientConfig
from client_sdk.wire.auth import (
    HUB_AUDIENCE,
    BearerAuth,
    InstitutionKey,
    generate_key,
    keyholder_audience,
    public_key_bytes,
    save_private_key,
)
from client_sdk.wire.channels import ChannelSecurity, open_channel
from hub.cli import main
from hub.cli.audit import load_verified_state
from hub.keyholder.ceremony import deal_to_directory
from hub.keyholder.keyfiles import load_public, load_share
from hub.keyholder.server import KeyHolderServer, KeyHolderServicer, QuotaLedger
from hub.keyholder.witness import WitnessServicer, WitnessStateFile, open_witness
from hub.services.audit import log_signer
from hub.services.config import HubConfig, WitnessEndpoint, WitnessIdentity
from hub.services.server import HubServer
from hub.storage.models import Institution
from hub.storage.store import SQLITE_FILENAME, add_institution
from hub.wire.auth import Institution as RegistryEntry
from hub.wire.auth import JsonFileRegistry, TokenVerifier, dump_registry

__all__ = ["RunningHub"]


class RunningHub:
    """A real hub on loopback, its regulator and bank credentials, and its database."""

    def __init__(
        self,
        root: Path,
        capsys: pytest.CaptureFixture[str],
        *,
        witnesses: int = 0,
        witness_clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self._witness_clock = witness_clock
        self.capsys = capsys
        shares, public = deal_to_directory(
            min(2, max(1, witnesses)), max(1, witnesses), root / "keys"
        )
        self.witness_servers: list[KeyHolderServer] = []
        self._witness_files: list[WitnessStateFile | QuotaLedger] = []
        self.witness_keys: list[str] = []
        endpoints = [self._start_witness(root, path, public) for path in shares[:witnesses]]
        self.config = HubConfig(
            data_dir=root / "data",
            public_key=public,
            listen="127.0.0.1:0",
            insecure=True,
            witnesses=tuple(endpoints),
            witness_identity=(
                WitnessIdentity("hub-operator", root / "hub-operator.pem") if witnesses else None
            ),
        )
        self.server = HubServer(self.config)
        self.port = self.server.start()
        with self.server.store.session() as session:
            for institution, role in (("reg-1", "regulator"), ("bank-a", "bank")):
                key = generate_key()
                save_private_key(key, root / f"{institution}.pem")
                add_institution(
                    session,
                    Institution(id=institution, role=role, public_key=public_key_bytes(key)),
                )
            session.commit()
        self.log_key = log_signer(self.config.data_dir).verifier_key()
        self.state = root / "audit-state.json"
        self.db = self.config.data_dir / SQLITE_FILENAME

    def _start_witness(self, root: Path, share_path: Path, public: Path) -> WitnessEndpoint:
        registry = root / "holder-registry.json"
        if not registry.exists():
            operator = generate_key()
            save_private_key(operator, root / "hub-operator.pem")
            entry = RegistryEntry("hub-operator", "hub", "operator", public_key_bytes(operator))
            registry.write_text(dump_registry([entry]))
        share = load_share(share_path)
        state_dir = root / f"witness-{share.index}"
        log_key = log_signer(root / "data").verifier_key()  # the hub's, made before it starts
        witness, state = open_witness(
            state_dir, f"w{share.index}.test/witness", [log_key], clock=self._witness_clock
        )
        quota = QuotaLedger(state_dir / "quota.sqlite3", 10)
        server = KeyHolderServer.create(
            KeyHolderServicer(share, load_public(public), quota),
            TokenVerifier(JsonFileRegistry(registry), keyholder_audience(share.index)),
            "127.0.0.1:0",
            None,
            insecure=True,
            witness=WitnessServicer(witness),
        )
        server.start()
        self.witness_servers.append(server)
        self._witness_files += [state, quota]
        self.witness_keys.append(witness.cosigner.verifier_key())
        return WitnessEndpoint(
            f"127.0.0.1:{server.port}",
            witness.cosigner.verifier_key(),
            keyholder_audience(share.index),
        )

    def restart(self) -> None:
        self.server.stop(0)
        self.server = HubServer(self.config)
        self.port = self.server.start()

    def stop(self) -> None:
        self.server.stop(0)
        for witness in self.witness_servers:
            witness.stop(0)
        for file in self._witness_files:
            file.close()

    def channel(self, institution: str) -> grpc.Channel:
        auth = BearerAuth(
            InstitutionKey.load(institution, self.root / f"{institution}.pem"), HUB_AUDIENCE
        )
        return open_channel(f"127.0.0.1:{self.port}", ChannelSecurity(insecure=True), auth)

    def traffic(self, calls: int) -> None:
        """``calls`` real Match RPCs by the bank: one audit event each."""
        with self.channel("bank-a") as channel:
            stub = exchange_pb2_grpc.ExchangeStub(channel)
            for _ in range(calls):
                stub.Match(
                    exchange_pb2.MatchRequest(
                        purpose="payment_screening",
                        queries=[
                            exchange_pb2.MatchQuery(token=os.urandom(32), kind="url", key_epoch=1)
                        ],
                    ),
                    timeout=10,
                )

    def cli(self, *args: str, institution: str = "reg-1") -> tuple[int, str, str]:
        self.capsys.readouterr()
        config = str(self.client_config(institution))
        status = main(["audit", args[0], "--config", config, "--insecure", *args[1:]])
        out, err = self.capsys.readouterr()
        return status, out, err

    def client_config(self, institution: str) -> Path:
        """``<root>/<institution>.json``: the client configuration the CLI reads (--config)."""
        path = self.root / f"{institution}.json"
        path.write_text(
            ClientConfig(
                institution=institution,
                key=self.root / f"{institution}.pem",
                hub=f"127.0.0.1:{self.port}",
                holders=(),
                public=self.config.public_key,
            ).dump()
        )
        return path

    def verify(self, *extra: str) -> tuple[int, str]:
        status, out, err = self.cli(
            "verify", "--log-key", self.log_key, "--state", str(self.state), *extra
        )
        return status, out + err

    def verified_size(self) -> int:
        state = load_verified_state(self.state)
        assert state is not None
        return state.size

    def sql(self) -> sqlite3.Connection:
        """A second connection to the hub's database file: the attacker's."""
        return sqlite3.connect(self.db, isolation_level=None, timeout=30)
