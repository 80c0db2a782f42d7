"""The key holder server over real gRPC + TLS on loopback (port 0)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _keyholders import World, make_world, start_holder
from fraudhub.v1 import keyholder_pb2, keyholder_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client_sdk.core import oprf, threshold
from client_sdk.core.errors import (
    AuthenticationError,
    InvalidItems,
    InvalidRequest,
    PermissionDenied,
    QuotaExhausted,
)
from client_sdk.core.tokens import oprf_input
from client_sdk.wire.auth import keyholder_audience
from client_sdk.wire.status import errors_from_status
from hub.keyholder.server import MAX_BATCH, KeyHolderServer, QuotaLedger, SeenTokenFile

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("keyholder"))


@pytest.fixture
def holder(world: World, tmp_path: Path) -> Iterator[KeyHolderServer]:
    server = start_holder(world, world.shares[0], tmp_path, daily_quota=10)
    yield server
    server.stop(None)


def _stub(world: World, server: KeyHolderServer, institution: str | None = "bank-a") -> Any:
    channel = world.channel(1, server.port, institution, keyholder_audience(1))
    return keyholder_pb2_grpc.KeyHolderStub(channel)


def _call_error(call: Any, request: Any) -> Exception:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return errors_from_status(info.value)


def test_key_info_describes_the_share(world: World, holder: KeyHolderServer) -> None:
    info = _stub(world, holder).GetKeyInfo(keyholder_pb2.GetKeyInfoRequest(), timeout=10)
    share = world.shares[0]
    assert (info.suite, info.index, info.epoch) == (oprf.SUITE, 1, share.epoch)
    assert (info.threshold, info.holders, info.max_batch) == (2, 3, MAX_BATCH)
    assert info.public_share == share.public_share
    assert info.group_public_key == world.public.group_public_key


def test_batched_evaluation_verifies_at_the_client(world: World, holder: KeyHolderServer) -> None:
    inputs = [oprf_input("phone", f"+8613800000{i:03d}") for i in range(5)]
    batch = threshold.blind_batch(inputs)
    reply = _stub(world, holder).BlindEvaluate(
        keyholder_pb2.BlindEvaluateRequest(epoch=1, blinded_elements=batch.blinded_elements),
        timeout=10,
    )
    response = threshold.HolderResponse(
        reply.index, reply.epoch, list(reply.evaluated_elements), reply.proof
    )
    threshold.verify_response(world.public, batch, response)  # raises if wrong
    assert reply.index == 1 and len(reply.evaluated_elements) == 5


def test_quota_exhaustion_is_resource_exhausted(world: World, holder: KeyHolderServer) -> None:
    stub = _stub(world, holder)
    elements = threshold.blind_batch([b"x%d" % i for i in range(6)]).blinded_elements
    request = keyholder_pb2.BlindEvaluateRequest(epoch=1, blinded_elements=elements)
    stub.BlindEvaluate(request, timeout=10)  # 6 of 10
    error = _call_error(stub.BlindEvaluate, request)  # 12 > 10
    assert isinstance(error, QuotaExhausted)
    # Another institution has its own quota.
    _stub(world, holder, "carrier-b").BlindEvaluate(request, timeout=10)


def test_quota_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "quota.sqlite3"
    first = QuotaLedger(path, 10, today=lambda: "2026-01-01")
    first.charge("bank-a", 7)
    first.close()
    second = QuotaLedger(path, 10, today=lambda: "2026-01-01")
    assert second.used("bank-a") == 7
    with pytest.raises(QuotaExhausted):
        second.charge("bank-a", 4)
    second.charge("bank-a", 3)
    tomorrow = QuotaLedger(path, 10, today=lambda: "2026-01-02")
    assert tomorrow.used("bank-a") == 0


def test_malformed_elements_are_named_per_item(world: World, holder: KeyHolderServer) -> None:
    good = threshold.blind_batch([b"a", b"b"]).blinded_elements
    elements = [good[0], b"\x01" * 31, good[1], bytes(32)]  # short; identity
    error = _call_error(
        _stub(world, holder).BlindEvaluate,
        keyholder_pb2.BlindEvaluateRequest(epoch=1, blinded_elements=elements),
    )
    assert isinstance(error, InvalidItems)
    assert [(i.index, i.field) for i in error.items] == [
        (1, "blinded_elements"),
        (3, "blinded_elements"),
    ]
    assert "32 bytes" in error.items[0].reason


def test_wrong_epoch_and_empty_batch_are_invalid(world: World, holder: KeyHolderServer) -> None:
    stub = _stub(world, holder)
    elements = threshold.blind_batch([b"a"]).blinded_elements
    wrong_epoch = keyholder_pb2.BlindEvaluateRequest(epoch=2, blinded_elements=elements)
    assert isinstance(_call_error(stub.BlindEvaluate, wrong_epoch), InvalidRequest)
    empty = keyholder_pb2.BlindEvaluateRequest(epoch=1)
    assert isinstance(_call_error(stub.BlindEvaluate, empty), InvalidRequest)


def test_unauthenticated_call_is_refused(world: World, holder: KeyHolderServer) -> None:
    error = _call_error(
        _stub(world, holder, institution=None).GetKeyInfo, keyholder_pb2.GetKeyInfoRequest()
    )
    assert isinstance(error, AuthenticationError)


def test_regulator_may_read_key_info_but_not_evaluate(
    world: World, holder: KeyHolderServer
) -> None:
    stub = _stub(world, holder, "regulator-c")
    stub.GetKeyInfo(keyholder_pb2.GetKeyInfoRequest(), timeout=10)
    elements = threshold.blind_batch([b"a"]).blinded_elements
    error = _call_error(
        stub.BlindEvaluate, keyholder_pb2.BlindEvaluateRequest(epoch=1, blinded_elements=elements)
    )
    assert isinstance(error, PermissionDenied)


def test_health_is_serving_without_a_token(world: World, holder: KeyHolderServer) -> None:
    channel = world.channel(1, holder.port, None, "")
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "fraudhub.v1.KeyHolder"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(world: World, holder: KeyHolderServer) -> None:
    channel = world.channel(1, holder.port, None, "")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    assert {"fraudhub.v1.KeyHolder", "grpc.health.v1.Health"} <= names


def test_token_ids_survive_a_restart_until_they_expire(tmp_path: Path) -> None:
    path = tmp_path / "seen-tokens.sqlite3"
    now = [1_000_000.0]
    first = SeenTokenFile(path, clock=lambda: now[0])
    first.check_and_store("bank-a", "a" * 20, now[0] + 300)
    first.check_and_store("bank-b", "a" * 20, now[0] + 300)  # per issuer
    first.close()
    restarted = SeenTokenFile(path, clock=lambda: now[0])
    with pytest.raises(AuthenticationError, match="replayed"):
        restarted.check_and_store("bank-a", "a" * 20, now[0] + 300)
    now[0] += 400  # past expiry and leeway: forgotten (and swept)
    restarted.check_and_store("bank-a", "a" * 20, now[0] + 300)
    restarted.close()
