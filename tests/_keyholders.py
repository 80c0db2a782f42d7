"""Test helpers: TLS material, institutions and real key holder servers on loopback.

Shared by test_auth.py, test_keyholder.py and test_tokenizer.py.  Servers bind
127.0.0.1:0 with TLS certificates made by ``fraudhub init`` (``hub.wire.tls``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from client_sdk.core.threshold import KeyShare, PublicKeyInfo, deal
from client_sdk.wire.auth import (
    BearerAuth,
    InstitutionKey,
    generate_key,
    keyholder_audience,
    public_key_bytes,
)
from client_sdk.wire.channels import ChannelSecurity, open_channel
from hub.keyholder.server import KeyHolderServer, KeyHolderServicer, QuotaLedger
from hub.wire.auth import Institution, JsonFileRegistry, TokenVerifier, dump_registry
from hub.wire.tls import init_tls, keyholder_name, load_server_credentials, tls_files

SEED = bytes(range(32))


@dataclass(frozen=True)
class World:
    """Everything a test needs to run key holders and call them."""

    data_dir: Path
    registry_path: Path
    keys: dict[str, InstitutionKey]
    shares: list[KeyShare]
    public: PublicKeyInfo

    @property
    def security(self) -> ChannelSecurity:
        return ChannelSecurity.from_ca_file(str(self.data_dir / "tls" / "ca.pem"))

    def channel(self, port: int, institution: str | None, audience: str) -> grpc.Channel:
        auth = BearerAuth(self.keys[institution], audience) if institution else None
        return open_channel(f"127.0.0.1:{port}", self.security, auth)


INSTITUTIONS = {
    "bank-a": ("Bank A", "bank", False),
    "carrier-b": ("Carrier B", "carrier", False),
    "regulator-c": ("Regulator C", "regulator", False),
    "bank-off": ("Disabled Bank", "bank", True),
}


def make_world(root: Path, threshold: int = 2, holders: int = 3) -> World:
    data_dir = root / "data"
    init_tls(data_dir, holders=holders)
    keys = {i: InstitutionKey(i, generate_key()) for i in INSTITUTIONS}
    registry_path = root / "institutions.json"
    registry_path.write_text(
        dump_registry(
            [
                Institution(i, name, role, public_key_bytes(keys[i].private_key), disabled)
                for i, (name, role, disabled) in INSTITUTIONS.items()
            ]
        )
    )
    shares, public = deal(threshold, holders, seed=SEED)
    return World(data_dir, registry_path, keys, shares, public)


def start_holder(
    world: World,
    share: KeyShare,
    state_dir: Path,
    *,
    servicer_class: type[KeyHolderServicer] = KeyHolderServicer,
    daily_quota: int = 1_000_000,
) -> KeyHolderServer:
    quota = QuotaLedger(state_dir / f"quota-{share.index}.sqlite3", daily_quota)
    verifier = TokenVerifier(JsonFileRegistry(world.registry_path), keyholder_audience(share.index))
    server = KeyHolderServer.create(
        servicer_class(share, world.public, quota),
        verifier,
        "127.0.0.1:0",
        load_server_credentials(tls_files(world.data_dir, keyholder_name(share.index))),
        max_workers=4,
    )
    server.start()
    return server


@contextmanager
def running_holders(
    world: World,
    state_dir: Path,
    servicers: Mapping[int, type[KeyHolderServicer]] | None = None,
) -> Iterator[dict[int, KeyHolderServer]]:
    """Start one server per share (optionally a tampered servicer class per index)."""
    servers: dict[int, KeyHolderServer] = {}
    try:
        for share in world.shares:
            cls = (servicers or {}).get(share.index, KeyHolderServicer)
            servers[share.index] = start_holder(world, share, state_dir, servicer_class=cls)
        yield servers
    finally:
        for server in servers.values():
            server.stop(None)
