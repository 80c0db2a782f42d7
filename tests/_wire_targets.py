"""Test helpers: a real hub and key holder on loopback, every RPC of both, raw-bytes calls.

Used by the wire fuzz test and the bad-input regression tests.  The hub is a
``HubServer`` on a SQLite file (plaintext on 127.0.0.1:0), with one
institution per role; the key holder is a real ``KeyHolderServer`` with TLS.
Calls go through channels without (de)serializers, so a test sends any bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from _keyholders import make_world
from google.protobuf import descriptor_pool

from client_sdk.wire.auth import (
    HUB_AUDIENCE,
    BearerAuth,
    InstitutionKey,
    generate_key,
    keyholder_audience,
    public_key_bytes,
)
from client_sdk.wire.channels import ChannelSecurity, holder_server_name, open_channel
from hub.keyholder.admission import HolderRegistry, admit
from hub.keyholder.ceremony import deal_to_directory
from hub.keyholder.server import METHOD_ROLES, KeyHolderServer, KeyHolderServicer, QuotaLedger
from hub.keyholder.witness import METHOD_ROLES as WITNESS_ROLES
from hub.keyholder.witness import WitnessServicer, open_witness
from hub.services.audit import log_signer
from hub.services.config import HubConfig
from hub.services.server import HUB_MESSAGE_LIMITS, HubServer
from hub.storage.models import Institution
from hub.storage.store import add_institution
from hub.wire.auth import Institution as RegistryEntry
from hub.wire.auth import TokenVerifier
from hub.wire.decode import DEFAULT_LIMIT
from hub.wire.tls import HOLDER_STEM, load_server_credentials, tls_files

__all__ = ["Target", "Targets", "call_raw", "running_targets"]

HUB_INSTITUTIONS = {
    "bank-a": "bank",
    "carrier-x": "carrier",
    "reg-1": "regulator",
    "op-1": "operator",
}


@dataclass(frozen=True)
class Target:
    """One RPC of one server: where it is, its shape, who may call it."""

    server: str  # "hub" or "holder"
    method: str
    request_streaming: bool
    response_streaming: bool
    roles: frozenset[str]


@dataclass
class Targets:
    hub: HubServer
    holder_port: int
    authorized: dict[tuple[str, str], grpc.Channel]  # (server, role) -> channel
    anonymous: dict[str, grpc.Channel]  # server -> channel without a token
    targets: list[Target]

    def channel(self, target: Target, authenticated: bool) -> grpc.Channel:
        if not authenticated:
            return self.anonymous[target.server]
        return self.authorized[(target.server, min(target.roles))]


def _shape(method: str) -> tuple[bool, bool]:
    full = method.lstrip("/").replace("/", ".")
    found = descriptor_pool.Default().FindMethodByName(full)
    return bool(found.client_streaming), bool(found.server_streaming)


def _targets(server: str, roles: dict[str, frozenset[str]]) -> list[Target]:
    return [Target(server, m, *_shape(m), roles=r) for m, r in sorted(roles.items())]


@contextmanager
def running_targets(root: Path) -> Iterator[Targets]:
    """A hub and one key holder, started, with channels for every role and none."""
    from hub.services import alerts as alerts_service
    from hub.services import audit as audit_service
    from hub.services import feedback
    from hub.services.server import HUB_METHOD_ROLES

    _, public = deal_to_directory(1, 1, root / "keys")
    config = HubConfig(
        data_dir=root / "hub", public_key=public, listen="127.0.0.1:0", insecure=True
    )
    hub = HubServer(config)
    hub_port = hub.start()
    world = make_world(root / "holders", threshold=1, holders=1)
    # The holder also serves the audit log's Witness service, for an operator.
    operator = InstitutionKey("hub-operator", generate_key())
    directory = world.holder_dirs[1]
    admit(
        directory,
        RegistryEntry("hub-operator", "Hub", "operator", public_key_bytes(operator.private_key)),
        daily_quota=10**9,
    )
    state = root / "holder-state"
    witness, witness_file = open_witness(
        state, "w1.test/witness", [log_signer(config.data_dir).verifier_key()]
    )
    quota = QuotaLedger(state / "quota.sqlite3", 1_000_000)
    holder = KeyHolderServer.create(
        KeyHolderServicer(world.shares[0], world.public, quota),
        TokenVerifier(HolderRegistry(directory, holder_server_name(1)), keyholder_audience(1)),
        "127.0.0.1:0",
        load_server_credentials(tls_files(directory, HOLDER_STEM)),
        max_workers=4,
        witness=WitnessServicer(witness),
    )
    holder.start()
    world.keys["hub-operator"] = operator
    channels: list[grpc.Channel] = []
    try:
        authorized: dict[tuple[str, str], grpc.Channel] = {}
        with hub.store.session() as session:
            for institution, role in HUB_INSTITUTIONS.items():
                key = generate_key()
                add_institution(
                    session,
                    Institution(id=institution, role=role, public_key=public_key_bytes(key)),
                )
                auth = BearerAuth(InstitutionKey(institution, key), HUB_AUDIENCE)
                channel = open_channel(
                    f"127.0.0.1:{hub_port}", ChannelSecurity(insecure=True), auth
                )
                authorized[("hub", role)] = channel
            session.commit()
        holder_callers = (
            ("bank-a", "bank"),
            ("regulator-c", "regulator"),
            ("hub-operator", "operator"),
        )
        for institution, role in holder_callers:
            authorized[("holder", role)] = world.channel(
                1, holder.port, institution, keyholder_audience(1)
            )
        anonymous = {
            "hub": open_channel(f"127.0.0.1:{hub_port}", ChannelSecurity(insecure=True), None),
            "holder": world.channel(1, holder.port, None, keyholder_audience(1)),
        }
        channels = [*authorized.values(), *anonymous.values()]
        hub_roles = {
            **HUB_METHOD_ROLES,
            **audit_service.METHOD_ROLES,
            **feedback.METHOD_ROLES,
            **alerts_service.METHOD_ROLES,
        }
        holder_roles = {**METHOD_ROLES, **WITNESS_ROLES}
        targets = _targets("hub", hub_roles) + _targets("holder", holder_roles)
        # Every method the hub decodes has a target, and nothing else.
        assert {t.method for t in targets if t.server == "hub"} == set(HUB_MESSAGE_LIMITS)
        yield Targets(hub, holder.port, authorized, anonymous, targets)
    finally:
        for channel in channels:
            channel.close()
        holder.stop(0)
        hub.stop(0)
        quota.close()
        witness_file.close()


def call_raw(
    channel: grpc.Channel, target: Target, messages: Iterable[bytes], timeout: float = 10
) -> tuple[grpc.StatusCode, str]:
    """Call ``target`` with raw request bytes; its final status code and message.

    A unary-request method gets the first message (or empty bytes).
    """
    payloads = list(messages)
    first = payloads[0] if payloads else b""
    try:
        if target.request_streaming and target.response_streaming:
            both: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
                target.method
            )
            list(both(iter(payloads), timeout=timeout))
        elif target.request_streaming:
            upload: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
                target.method
            )
            upload(iter(payloads), timeout=timeout)
        elif target.response_streaming:
            download: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                target.method
            )
            list(download(first, timeout=timeout))
        else:
            unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(target.method)
            unary(first, timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code()
        details = exc.details()
        return code, details or ""
    return grpc.StatusCode.OK, ""


#: Bytes over the limit of any hub method but the contribution ones.
OVERSIZED = b"\x0a" + b"\xff\xff\x07" + b"x" * (2 * 1024 * 1024 + DEFAULT_LIMIT)
