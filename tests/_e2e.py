"""Shared pieces of the end-to-end tests over real gRPC (tests/test_e2e*.py)."""

from __future__ import annotations

import json
from typing import Any

from fraudhub.v1 import exchange_pb2_grpc
from sqlmodel import func, select

from client_sdk.client.results import ItemFailure, MatchResult
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth
from client_sdk.wire.channels import open_channel
from hub.devtools.deployment import LocalDeployment
from hub.storage import auditlog
from hub.storage.models import Indicator as IndicatorRow

__all__ = [
    "EPOCH",
    "PAYMENT",
    "REPORT",
    "SIM",
    "audit_size",
    "last_event",
    "only",
    "phone",
    "rows_of",
    "stub",
]

REPORT = "fraud_reporting"
SIM = "sim_activation_screening"
PAYMENT = "payment_screening"
EPOCH = 1


def phone(n: int) -> str:
    return f"+86 139 {n // 10000:04d} {n % 10000:04d}"


def stub(world: LocalDeployment, institution: str) -> exchange_pb2_grpc.ExchangeStub:
    channel = open_channel(
        world.hub_address, world.security, BearerAuth(world.keys[institution], HUB_AUDIENCE)
    )
    return exchange_pb2_grpc.ExchangeStub(channel)


def rows_of(world: LocalDeployment, institution: str) -> int:
    with world.hub.store.session() as session:
        statement = select(func.count()).where(IndicatorRow.contributor == institution)
        return int(session.exec(statement).one())


def audit_size(world: LocalDeployment) -> int:
    with world.hub.store.session() as session:
        return auditlog.tree_size(session)


def last_event(world: LocalDeployment) -> dict[str, Any]:
    with world.hub.store.session() as session:
        size = auditlog.tree_size(session)
        [event] = auditlog.list_events(session, size - 1, size)
    decoded: dict[str, Any] = json.loads(event.body)
    return decoded


def only(results: list[MatchResult | ItemFailure]) -> MatchResult:
    [result] = results
    assert isinstance(result, MatchResult), result
    return result
