"""Test helpers: TLS identities, institutions and real key holder servers on loopback.

Shared by test_auth.py, test_keyholder.py and test_tokenizer.py.  Servers bind
127.0.0.1:0; each holder has its own directory with its own TLS identity and
its own registry of admitted institutions (``fraudhub keyholder init``,
``hub.keyholder.admission``), as in a real deployment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from client_sdk.client.tokenizer import HolderEndpoint
from client_sdk.core.threshold import KeyShare, PublicKeyInfo, deal
from client_sdk.wire.auth import (
    BearerAuth,
    InstitutionKey,
    generate_key,
    keyholder_audience,
    public_key_bytes,
)
from client_sdk.wire.channels import ChannelSecurity, holder_server_name, open_channel
from hub.keyholder.admission import HolderRegistry, admit
from hub.keyholder.cli import init_holder
from hub.keyholder.server import KeyHolderServer, KeyHolderServicer, QuotaLedger
from hub.wire.auth import Institution, TokenVerifier
from hub.wire.tls import HOLDER_STEM, load_server_credentials, tls_files

SEED = bytes(range(32))


@dataclass(frozen=True)
class World:
    """Everything a test needs to run key holders and call them."""

    holder_dirs: dict[int, Path]
    keys: dict[str, InstitutionKey]
    shares: list[KeyShare]
    public: PublicKeyInfo

    def security(self, index: int) -> ChannelSecurity:
        """Key holder ``index``'s pin: its own CA and server name."""
        ca = tls_files(self.holder_dirs[index], HOLDER_STEM).ca
        return ChannelSecurity.from_ca_file(str(ca), holder_server_name(index))

    def endpoint(self, index: int, port: int) -> HolderEndpoint:
        return HolderEndpoint(index, f"127.0.0.1:{port}", security=self.security(index))

    def channel(
        self, index: int, port: int, institution: str | None, audience: str
    ) -> grpc.Channel:
        auth = BearerAuth(self.keys[institution], audience) if institution else None
        return open_channel(f"127.0.0.1:{port}", self.security(index), auth)


INSTITUTIONS = {
    "bank-a": ("Bank A", "bank", False),
    "carrier-b": ("Carrier B", "carrier", False),
    "regulator-c": ("Regulator C", "regulator", False),
    "bank-off": ("Disabled Bank", "bank", True),
}


def make_world(root: Path, threshold: int = 2, holders: int = 3) -> World:
    """Holders with their own identities, each admitting :data:`INSTITUTIONS`."""
    keys = {i: InstitutionKey(i, generate_key()) for i in INSTITUTIONS}
    holder_dirs = {i: root / f"holder-{i}" for i in range(1, holders + 1)}
    for index, directory in holder_dirs.items():
        init_holder(directory, holder_server_name(index))
        for i, (name, role, disabled) in INSTITUTIONS.items():
            admitted = Institution(i, name, role, public_key_bytes(keys[i].private_key), disabled)
            admit(directory, admitted, daily_quota=10**9, monthly_quota=10**9)
    shares, public = deal(threshold, holders, seed=SEED)
    return World(holder_dirs, keys, shares, public)


def start_holder(
    world: World,
    share: KeyShare,
    state_dir: Path,
    *,
    servicer_class: type[KeyHolderServicer] = KeyHolderServicer,
    daily_quota: int = 1_000_000,
) -> KeyHolderServer:
    directory = world.holder_dirs[share.index]
    quota = QuotaLedger(state_dir / f"quota-{share.index}.sqlite3", daily_quota)
    registry = HolderRegistry(directory, holder_server_name(share.index))
    verifier = TokenVerifier(registry, keyholder_audience(share.index))
    server = KeyHolderServer.create(
        servicer_class(share, world.public, quota),
        verifier,
        "127.0.0.1:0",
        load_server_credentials(tls_files(directory, HOLDER_STEM)),
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
