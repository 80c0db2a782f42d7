"""RFC 9496 section 4.3.1: every incoming ristretto255 element has one encoding only.

libsodium 1.0.18 ignores bit 255 of an encoding, so the base point with the
top bit set was evaluated as the base point.  These tests feed that and the
other non-canonical encodings (s >= p, negative s, RFC 9496 Appendix A.2's
bad encodings from tests/data) to every place an element arrives: the group
operations, RFC 9497 deserialization and DLEQ proofs, the public key file and
a real key holder's BlindEvaluate over gRPC.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _keyholders import World, make_world, start_holder
from fraudhub.v1 import keyholder_pb2, keyholder_pb2_grpc

from client_sdk.core import _sodium as sodium
from client_sdk.core import oprf, threshold
from client_sdk.core.errors import (
    ConfigurationError,
    HolderError,
    InvalidElementError,
    InvalidItems,
)
from client_sdk.wire.auth import keyholder_audience
from client_sdk.wire.status import errors_from_status
from hub.keyholder.server import KeyHolderServer

DATA = Path(__file__).parent / "data" / "rfc9496_ristretto255_bad_encodings.json"
# RFC 9496 Appendix A.1: the encoding of the generator B.
BASE = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")
P = 2**255 - 19
ONE = (1).to_bytes(32, "little")


def _top_bit(element: bytes) -> bytes:
    return element[:31] + bytes([element[31] | 0x80])


def _bad_vectors() -> list[tuple[str, bytes]]:
    groups: dict[str, list[str]] = json.loads(DATA.read_text())["groups"]
    return [(group, bytes.fromhex(h)) for group, items in groups.items() for h in items]


def _non_canonical_aliases() -> list[bytes]:
    """Second encodings of valid elements: top bit set, and s + p where that is < 2^256."""
    aliases = [_top_bit(BASE)]
    element = BASE
    for _ in range(6):
        aliases.append(_top_bit(element))
        element = sodium.element_add(element, BASE)
    # s >= p: every 255-bit value in [p, 2^255) with the low bit clear.
    aliases.extend((P + k).to_bytes(32, "little") for k in range(1, 19, 2))
    return aliases


def test_the_vector_file_has_rfc_9496_appendix_a2() -> None:
    vectors = _bad_vectors()
    assert len(vectors) == 29
    assert "RFC 9496" in json.loads(DATA.read_text())["source"]


@pytest.mark.parametrize(
    ("group", "encoding"), _bad_vectors(), ids=lambda v: v.hex() if isinstance(v, bytes) else ""
)
def test_rfc_9496_bad_encodings_are_refused(group: str, encoding: bytes) -> None:
    assert not sodium.is_valid_element(encoding), group
    with pytest.raises(InvalidElementError):
        oprf.deserialize_element(encoding)
    with pytest.raises(InvalidElementError):
        sodium.scalarmult(ONE, encoding)


def test_base_point_with_bit_255_set_is_refused_everywhere() -> None:
    bad = _top_bit(BASE)
    assert sodium.is_valid_element(BASE)
    assert not sodium.is_canonical_encoding(bad)
    assert not sodium.is_valid_element(bad)
    operations: tuple[Callable[[], object], ...] = (
        lambda: sodium.scalarmult(ONE, bad),
        lambda: sodium.element_add(BASE, bad),
        lambda: sodium.element_add(bad, BASE),
        lambda: sodium.element_sub(bad, BASE),
        lambda: oprf.deserialize_element(bad),
        lambda: oprf.blind_evaluate(sodium.scalar_random(), bad),
    )
    for operation in operations:
        with pytest.raises(InvalidElementError, match="canonical"):
            operation()


@pytest.mark.parametrize("encoding", _non_canonical_aliases(), ids=bytes.hex)
def test_second_encodings_are_refused(encoding: bytes) -> None:
    assert not sodium.is_canonical_encoding(encoding)
    assert not sodium.is_valid_element(encoding)
    with pytest.raises(InvalidElementError):
        sodium.scalarmult(ONE, encoding)


def test_negative_s_is_refused() -> None:
    negative = bytes([BASE[0] | 1]) + BASE[1:]  # odd: a negative field element
    assert not sodium.is_canonical_encoding(negative)
    with pytest.raises(InvalidElementError):
        sodium.scalarmult(ONE, negative)


def test_canonical_elements_still_decode() -> None:
    element = BASE
    for _ in range(16):
        assert sodium.is_canonical_encoding(element)
        assert sodium.scalarmult(ONE, element) == element
        element = sodium.element_add(element, BASE)


def test_dleq_proof_over_a_second_encoding_is_refused() -> None:
    """A holder answering with bit 255 set on its evaluated element is caught.

    The proof is computed over the non-canonical bytes, so it verifies on a
    decoder that ignores the top bit; RFC 9496 4.3.1 refuses the element.
    """
    sk, pk = oprf.derive_key_pair(bytes(32), b"test", oprf.Mode.VOPRF)
    _, blinded = oprf.blind(b"input", oprf.Mode.VOPRF)
    evaluated, _ = oprf.blind_evaluate_batch(sk, pk, [blinded])
    forged = [_top_bit(evaluated[0])]
    proof = oprf.generate_proof(sk, pk, [blinded], forged, oprf.Mode.VOPRF)
    with pytest.raises(InvalidElementError, match="canonical"):
        oprf.verify_proof(pk, [blinded], forged, proof, oprf.Mode.VOPRF)


def test_client_refuses_a_holder_response_with_a_second_encoding() -> None:
    shares, public = threshold.deal(2, 3, seed=bytes(range(32)))
    batch = threshold.blind_batch([b"13987654321"])
    honest = threshold.holder_evaluate(shares[0], batch.blinded_elements)
    forged = [_top_bit(e) for e in honest.evaluated_elements]
    proof = oprf.generate_proof(
        shares[0].secret, shares[0].public_share, batch.blinded_elements, forged, oprf.Mode.VOPRF
    )
    response = threshold.HolderResponse(honest.index, honest.epoch, forged, proof)
    with pytest.raises(HolderError, match="canonical"):
        threshold.verify_response(public, batch, response)


def test_public_key_file_with_a_second_encoding_is_refused() -> None:
    _, public = threshold.deal(2, 3, seed=bytes(range(32)))
    with pytest.raises(ConfigurationError, match="invalid group element"):
        threshold.PublicKeyInfo(
            epoch=public.epoch,
            threshold=public.threshold,
            holders=public.holders,
            group_public_key=_top_bit(public.group_public_key),
            public_shares=public.public_shares,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("encodings"))


@pytest.fixture
def holder(world: World, tmp_path: Path) -> Iterator[KeyHolderServer]:
    server = start_holder(world, world.shares[0], tmp_path)
    yield server
    server.stop(None)


@pytest.mark.e2e
def test_blind_evaluate_refuses_the_base_point_with_bit_255_set(
    world: World, holder: KeyHolderServer
) -> None:
    channel = world.channel(1, holder.port, "bank-a", keyholder_audience(1))
    stub: Any = keyholder_pb2_grpc.KeyHolderStub(channel)
    request = keyholder_pb2.BlindEvaluateRequest(
        epoch=1, blinded_elements=[BASE, _top_bit(BASE), (P + 2).to_bytes(32, "little")]
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.BlindEvaluate(request, timeout=10)
    error = errors_from_status(info.value)
    assert isinstance(error, InvalidItems)
    assert [(i.index, i.field) for i in error.items] == [
        (1, "blinded_elements"),
        (2, "blinded_elements"),
    ]
