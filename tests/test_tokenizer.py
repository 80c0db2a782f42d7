"""The remote threshold tokenizer against three real key holders (2-of-3) on loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import grpc
import pytest
from _keyholders import SEED, World, make_world, running_holders
from fraudhub.v1 import keyholder_pb2

from client_sdk.client.tokenizer import HolderEndpoint, Tokenizer
from client_sdk.core import oprf
from client_sdk.core.errors import ConfigurationError, PermissionDenied, Unavailable
from client_sdk.core.tokens import TokenKeys, derive_token_keys, oprf_input
from hub.keyholder.server import KeyHolderServer, KeyHolderServicer

pytestmark = pytest.mark.e2e

ITEMS = [("phone", f"+86138{i:08d}") for i in range(6)] + [
    ("bank_account", "ICBC:6222020200112233"),
    ("url", "https://phish.example/login"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("tokenizer"))


def expected_keys(world: World, items: list[tuple[str, str]]) -> list[TokenKeys]:
    """Tokens from the un-shared key: what ``deal(seed=SEED)`` split."""
    k, pk = oprf.derive_key_pair(SEED, b"fraudhub/v1 key epoch 1", oprf.Mode.VOPRF)
    assert pk == world.public.group_public_key
    return [
        derive_token_keys(oprf.evaluate(k, oprf_input(*item), oprf.Mode.VOPRF)) for item in items
    ]


def tokenizer(
    world: World, servers: dict[int, KeyHolderServer], caller: str = "bank-a", **options: int
) -> Tokenizer:
    endpoints = [world.endpoint(i, s.port) for i, s in sorted(servers.items())]
    return Tokenizer(endpoints, world.public, world.keys[caller], timeout=10, **options)


class LyingServicer(KeyHolderServicer):
    """Evaluates honestly, then swaps in a different (valid) element."""

    def BlindEvaluate(
        self, request: keyholder_pb2.BlindEvaluateRequest, context: grpc.ServicerContext
    ) -> keyholder_pb2.BlindEvaluateResponse:
        reply = super().BlindEvaluate(request, context)
        reply.evaluated_elements[0] = oprf.GENERATOR
        return reply


class CountingServicer(KeyHolderServicer):
    batch_sizes: ClassVar[list[int]] = []

    def BlindEvaluate(
        self, request: keyholder_pb2.BlindEvaluateRequest, context: grpc.ServicerContext
    ) -> keyholder_pb2.BlindEvaluateResponse:
        self.batch_sizes.append(len(request.blinded_elements))
        return super().BlindEvaluate(request, context)


@pytest.fixture
def servers(world: World, tmp_path: Path) -> Iterator[dict[int, KeyHolderServer]]:
    with running_holders(world, tmp_path) as running:
        yield running


def test_tokens_equal_the_unshared_oprf(world: World, servers: dict[int, KeyHolderServer]) -> None:
    with tokenizer(world, servers) as t:
        assert t.tokenize(ITEMS) == expected_keys(world, ITEMS)
        assert t.tokenize([]) == []


def test_one_holder_down_still_works(world: World, servers: dict[int, KeyHolderServer]) -> None:
    servers[1].stop(None)
    with tokenizer(world, servers) as t:
        assert t.tokenize(ITEMS) == expected_keys(world, ITEMS)
        assert t.excluded_holders == frozenset()  # down is not lying


def test_two_holders_down_is_unavailable_naming_them(
    world: World, servers: dict[int, KeyHolderServer]
) -> None:
    servers[1].stop(None)
    servers[3].stop(None)
    with tokenizer(world, servers) as t, pytest.raises(Unavailable) as info:
        t.tokenize(ITEMS)
    message = str(info.value)
    assert "holder 1" in message and "holder 3" in message and "holder 2" not in message


def test_a_lying_holder_is_detected_named_and_skipped(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        running_holders(world, tmp_path, {1: LyingServicer}) as running,
        tokenizer(world, running) as t,
        caplog.at_level(logging.ERROR, logger="client_sdk.client.tokenizer"),
    ):
        assert t.tokenize(ITEMS) == expected_keys(world, ITEMS)
        assert t.excluded_holders == frozenset({1})
        assert any("key holder 1 " in r.getMessage() for r in caplog.records)


def test_a_liar_and_a_down_holder_leave_too_few(world: World, tmp_path: Path) -> None:
    with running_holders(world, tmp_path, {1: LyingServicer}) as running:
        running[2].stop(None)
        with tokenizer(world, running) as t, pytest.raises(Unavailable, match="wrongly"):
            t.tokenize(ITEMS)


def test_batches_are_bounded(world: World, tmp_path: Path) -> None:
    CountingServicer.batch_sizes.clear()
    counting = dict.fromkeys((1, 2, 3), CountingServicer)
    with (
        running_holders(world, tmp_path, counting) as running,
        tokenizer(world, running, max_batch=3) as t,
    ):
        assert t.tokenize(ITEMS) == expected_keys(world, ITEMS)
    # 8 items in batches of at most 3, each sent to t = 2 holders.
    assert sorted(CountingServicer.batch_sizes) == [2, 2, 3, 3, 3, 3]


def test_large_inputs_use_the_process_pool(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled: list[int] = []
    original = Tokenizer._tokenize_parallel

    def spy(self: Tokenizer, chunks: list[tuple[bytes, ...]]) -> list[TokenKeys]:
        pooled.append(len(chunks))
        return original(self, chunks)

    monkeypatch.setattr(Tokenizer, "_tokenize_parallel", spy)
    items = [("phone", f"+86139{i:08d}") for i in range(24)]
    with running_holders(world, tmp_path, {2: LyingServicer}) as running:
        with tokenizer(world, running, max_batch=5, processes=2, parallel_min_items=10) as t:
            assert t.tokenize(items) == expected_keys(world, items)
            assert t.excluded_holders == frozenset({2})
            workers = t._pool
            # The next large input reuses the worker processes; close() ends them.
            assert t.tokenize(items[:12]) == expected_keys(world, items[:12])
            assert workers is not None and t._pool is workers
        assert t._pool is None
    # mypy keeps `t._pool` narrowed to not-None from inside the block (close() reset it).
    assert pooled == [5, 3]  # type: ignore[unreachable]


def test_configuration_is_checked(world: World) -> None:
    key = world.keys["bank-a"]
    one = [HolderEndpoint(1, "127.0.0.1:1", security=world.security(1))]
    with pytest.raises(ConfigurationError, match="needs 2"):
        Tokenizer(one, world.public, key)
    with pytest.raises(ConfigurationError, match="distinct"):
        Tokenizer(one + one, world.public, key)
    seven = HolderEndpoint(7, "127.0.0.1:1", security=world.security(1))
    with pytest.raises(ConfigurationError, match="not in the public key"):
        Tokenizer([*one, seven], world.public, key)


def test_a_refused_caller_gets_its_refusal_not_unavailable(
    world: World, servers: dict[int, KeyHolderServer]
) -> None:
    """Regulators audit, they do not tokenize: every holder says PERMISSION_DENIED.

    That is the caller's to fix, so it must not look like a retryable outage.
    """
    with tokenizer(world, servers, caller="regulator-c") as t, pytest.raises(PermissionDenied):
        t.tokenize(ITEMS)
