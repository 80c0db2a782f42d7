"""Which endpoint failed, and which field of the client configuration to fix.

When a command that reads a client configuration (``--config FILE``) fails
because a peer is unreachable or refused it, :func:`diagnose` tries each
endpoint the file names once, the hub and every key holder, and says for each
one that fails what went wrong and which field to fix::

    key holder 2 at 10.0.0.7:7444 (holders[1].address): connection refused

The checks, in order: the connection (refused, or no answer within the
timeout: ``hub`` / ``holders[i].address``), TLS (certificate not signed by
``ca``; host name not in the certificate: ``server_name`` or the address),
then authentication (a real call: the hub audits it; a refusal names
``institution`` and ``key``).  Nothing secret is printed: addresses, field
names and gRPC's own description of the transport failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from fraudhub.v1 import exchange_pb2, exchange_pb2_grpc, keyholder_pb2, keyholder_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk.client.config import ClientConfig
from client_sdk.core.errors import ConfigurationError
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth, InstitutionKey, keyholder_audience
from client_sdk.wire.channels import ChannelSecurity, open_channel

__all__ = ["Endpoint", "diagnose", "endpoints"]

DIAGNOSE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Endpoint:
    """One peer a client configuration names: who, where, under which fields, its pin."""

    name: str  # "hub" or "key holder N"
    address: str
    field: str  # "hub" or "holders[i].address"
    audience: str
    security: ChannelSecurity
    prefix: str  # of its pin's fields: "" (ca, server_name) or "holders[i]."

    def __str__(self) -> str:
        return f"{self.name} at {self.address} ({self.field})"


def endpoints(config: ClientConfig, *, insecure: bool = False) -> list[Endpoint]:
    """The hub, then each key holder in file order, each with its own TLS pin
    (ADR 0012); raises ConfigurationError for an unreadable CA file."""
    plain = ChannelSecurity(insecure=True)
    found = [
        Endpoint(
            "hub", config.hub, "hub", HUB_AUDIENCE, plain if insecure else config.hub_security(), ""
        )
    ]
    for position, holder in enumerate(config.holders):
        pinned = holder.endpoint().security
        found.append(
            Endpoint(
                f"key holder {holder.index}",
                holder.address,
                f"holders[{position}].address",
                keyholder_audience(holder.index),
                plain if insecure or pinned is None else pinned,
                f"holders[{position}].",
            )
        )
    return found


def _transport_problem(endpoint: Endpoint, error: grpc.RpcError) -> str:
    details = str(error.details() or "")
    code = error.code()
    if "Hostname Verification" in details or "No match found for server name" in details:
        return (
            f"{endpoint}: the TLS certificate is not for the expected server name: fix "
            f"`{endpoint.prefix}server_name` or `{endpoint.prefix}ca`"
        )
    if "CERTIFICATE_VERIFY_FAILED" in details or "handshake" in details.lower():
        return (
            f"{endpoint}: TLS failed (the certificate is not signed by the CA in "
            f"`{endpoint.prefix}ca`, or the server does not speak TLS): fix `{endpoint.prefix}ca`"
        )
    if "refused" in details.lower():
        return f"{endpoint}: connection refused: is it running? fix `{endpoint.field}`"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{endpoint}: no answer within {DIAGNOSE_TIMEOUT:g}s: fix `{endpoint.field}`"
    return f"{endpoint}: unreachable ({code.name}): check `{endpoint.field}`"


def _auth_call(endpoint: Endpoint) -> Callable[[grpc.Channel], object]:
    if endpoint.field == "hub":
        # An empty Match: any authenticated caller gets a decision, not UNAUTHENTICATED.
        return lambda channel: exchange_pb2_grpc.ExchangeStub(channel).Match(
            exchange_pb2.MatchRequest(), timeout=DIAGNOSE_TIMEOUT
        )
    return lambda channel: keyholder_pb2_grpc.KeyHolderStub(channel).GetKeyInfo(
        keyholder_pb2.GetKeyInfoRequest(), timeout=DIAGNOSE_TIMEOUT
    )


def _check(endpoint: Endpoint, key: InstitutionKey) -> str | None:
    security = endpoint.security
    with open_channel(endpoint.address, security) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=DIAGNOSE_TIMEOUT
            )
        except grpc.RpcError as error:
            return _transport_problem(endpoint, error)
    with open_channel(endpoint.address, security, BearerAuth(key, endpoint.audience)) as channel:
        try:
            _auth_call(endpoint)(channel)
        except grpc.RpcError as error:
            # Every role may call GetKeyInfo: a holder's PERMISSION_DENIED is a
            # refused admission; the hub's is a role refusal after authentication.
            refused = {grpc.StatusCode.UNAUTHENTICATED}
            if endpoint.field != "hub":
                refused.add(grpc.StatusCode.PERMISSION_DENIED)
            if error.code() in refused:
                where = (
                    "registered at the hub (institution add)"
                    if endpoint.field == "hub"
                    else "admitted by this key holder (keyholder institution add)"
                )
                return (
                    f"{endpoint}: refused `institution` {key.institution_id!r} "
                    f"({error.details()}): is it {where}, and is `key` its key?"
                )
    return None


def diagnose(path: Path, *, insecure: bool = False) -> list[str]:
    """One line per endpoint of the client configuration ``path`` that fails a check.

    Raises ConfigurationError if the file itself does not load.
    """
    config = ClientConfig.load(path)
    peers = endpoints(config, insecure=insecure)
    try:
        key = InstitutionKey.load(config.institution, config.key)
    except ConfigurationError as exc:
        return [f"{path}: `key`: {exc}"]
    problems = []
    for endpoint in peers:
        problem = _check(endpoint, key)
        if problem is not None:
            problems.append(f"{path}: {problem}")
    return problems
