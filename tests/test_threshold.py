"""Threshold VOPRF: t-of-n shares combine to RFC 9497 Evaluate; liars are named."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core import _sodium as sodium
from client_sdk.core import oprf, threshold
from client_sdk.core.errors import ConfigurationError, HolderError, InvalidElementError, Unavailable

SEED = bytes(range(32))
INPUTS = [b"fraudhub/v1\x00phone\x00+8613800138000", b"", b"\x00" * 40]


def group_key(epoch: int = 1) -> bytes:
    """The key a seeded ceremony shares (what no party holds in production)."""
    info = f"fraudhub/v1 key epoch {epoch}".encode()
    return oprf.derive_key_pair(SEED, info, oprf.Mode.VOPRF)[0]


@pytest.mark.parametrize(("t", "n"), [(1, 1), (2, 2), (2, 3), (3, 5), (5, 5)])
def test_every_t_subset_equals_single_key_evaluate(t: int, n: int) -> None:
    shares, public = threshold.deal(t, n, seed=SEED)
    public.check_consistent()
    k = group_key()
    assert public.group_public_key == sodium.scalarmult_base(k)
    expected = [oprf.evaluate(k, x, oprf.Mode.VOPRF) for x in INPUTS]
    batch = threshold.blind_batch(INPUTS)
    responses = {s.index: threshold.holder_evaluate(s, batch.blinded_elements) for s in shares}
    for subset in itertools.combinations(sorted(responses), t):
        assert threshold.combine(public, batch, [responses[i] for i in subset]) == expected
    # More than t answers: still the same output.
    assert threshold.combine(public, batch, list(responses.values())) == expected


def test_one_of_one_is_rfc9497_voprf() -> None:
    shares, public = threshold.deal(1, 1, seed=SEED)
    k = group_key()
    assert shares[0].secret == k  # f(x) = k: the share is the key
    batch = threshold.blind_batch(INPUTS)
    resp = threshold.holder_evaluate(shares[0], batch.blinded_elements)
    # The holder's answer is a plain RFC 9497 VOPRF BlindEvaluate: RFC Finalize accepts it.
    rfc = oprf.finalize_batch(
        list(batch.inputs),
        list(batch.blinds),
        list(batch.blinded_elements),
        resp.evaluated_elements,
        resp.proof,
        public.group_public_key,
    )
    assert rfc == threshold.combine(public, batch, [resp])


@pytest.mark.parametrize(("t", "n"), [(2, 3), (3, 5)])
def test_t_minus_one_holders_give_no_output(t: int, n: int) -> None:
    shares, public = threshold.deal(t, n)
    batch = threshold.blind_batch(INPUTS)
    responses = [threshold.holder_evaluate(s, batch.blinded_elements) for s in shares[: t - 1]]
    with pytest.raises(Unavailable):
        threshold.combine(public, batch, responses)
    # The same answer twice does not count as two holders.
    with pytest.raises(Unavailable):
        threshold.combine(public, batch, responses + responses)


def test_t_minus_one_shares_interpolate_to_a_wrong_key() -> None:
    shares, public = threshold.deal(3, 5, seed=SEED)
    k = group_key()
    x = INPUTS[0]
    batch = threshold.blind_batch([x])
    responses = [threshold.holder_evaluate(s, batch.blinded_elements) for s in shares[:2]]
    # Pretend a 2-of-5 key: the combination is wrong, not a leak of Evaluate(k, x).
    fake = dataclasses.replace(public, threshold=2)
    assert threshold.combine(fake, batch, responses) != [oprf.evaluate(k, x, oprf.Mode.VOPRF)]


def _lying(response: threshold.HolderResponse, how: str) -> threshold.HolderResponse:
    elements = list(response.evaluated_elements)
    if how == "wrong-element":
        elements[0] = sodium.scalarmult(sodium.scalar_random(), elements[0])
        return dataclasses.replace(response, evaluated_elements=elements)
    if how == "forged-proof":
        proof = bytearray(response.proof)
        proof[5] ^= 0x01
        return dataclasses.replace(response, proof=bytes(proof))
    if how == "swapped":
        return dataclasses.replace(response, evaluated_elements=elements[::-1])
    if how == "identity":
        elements[0] = bytes(32)
        return dataclasses.replace(response, evaluated_elements=elements)
    if how == "short":
        return dataclasses.replace(response, evaluated_elements=elements[:-1])
    if how == "epoch":
        return dataclasses.replace(response, epoch=response.epoch + 1)
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["wrong-element", "forged-proof", "swapped", "identity", "short", "epoch"]
)
def test_lying_holder_is_detected_and_named(how: str) -> None:
    shares, public = threshold.deal(2, 3)
    batch = threshold.blind_batch(INPUTS)
    honest = [threshold.holder_evaluate(s, batch.blinded_elements) for s in shares]
    liar = _lying(honest[1], how)
    with pytest.raises(HolderError) as info:
        threshold.combine(public, batch, [honest[0], liar])
    assert info.value.holder == 2
    assert "key holder 2" in str(info.value)
    # The client skips the liar and uses another holder.
    verified = []
    for r in (honest[0], liar, honest[2]):
        try:
            verified.append(threshold.verify_response(public, batch, r))
        except HolderError as exc:
            assert exc.holder == 2
    assert len(verified) == 2
    assert threshold.combine(public, batch, verified) == threshold.combine(
        public, batch, [honest[0], honest[2]]
    )


def test_holder_refuses_bad_blinded_element_naming_its_position() -> None:
    shares, _ = threshold.deal(2, 3)
    good = oprf.blind(b"x", oprf.Mode.VOPRF)[1]
    with pytest.raises(InvalidElementError, match="blinded element 1"):
        threshold.holder_evaluate(shares[0], [good, bytes(32)])


def test_key_files_round_trip_and_hide_secrets() -> None:
    shares, public = threshold.deal(2, 3, epoch=7)
    for s in shares:
        assert threshold.KeyShare.from_json(s.to_json()) == s
        assert s.secret.hex() not in repr(s)
    assert threshold.PublicKeyInfo.from_json(public.to_json()) == public


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other"),
        lambda d: d.update(suite="P256-SHA256"),
        lambda d: d.update(index=9),
        lambda d: d.update(secret_share="00" * 32),
        lambda d: d.update(secret_share="zz"),
        lambda d: d.pop("epoch"),
        lambda d: d.update(threshold=4),
    ],
    ids=["format", "suite", "index", "zero-secret", "hex", "missing-epoch", "t>n"],
)
def test_bad_share_files_are_refused(mutate: object) -> None:
    import json

    shares, _ = threshold.deal(2, 3)
    data = json.loads(shares[0].to_json())
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ConfigurationError):
        threshold.KeyShare.from_json(json.dumps(data))


def test_inconsistent_public_file_is_detected() -> None:
    _, public = threshold.deal(2, 3)
    _, other = threshold.deal(2, 3)
    mixed = dataclasses.replace(
        public, public_shares={**public.public_shares, 3: other.public_shares[3]}
    )
    with pytest.raises(ConfigurationError, match="public share 3"):
        mixed.check_consistent()
    wrong_group = dataclasses.replace(public, group_public_key=other.group_public_key)
    with pytest.raises(ConfigurationError):
        wrong_group.check_consistent()


@settings(max_examples=10, deadline=None)
@given(
    params=st.integers(1, 5).flatmap(lambda n: st.tuples(st.integers(min(2, n), n), st.just(n))),
    data=st.data(),
)
def test_property_any_t_subset_combines_to_the_same_output(
    params: tuple[int, int], data: st.DataObject
) -> None:
    t, n = params
    shares, public = threshold.deal(t, n)
    subset_a = data.draw(st.permutations(range(n)))[:t]
    subset_b = data.draw(st.permutations(range(n)))[:t]
    batch = threshold.blind_batch([b"x", b"y"])
    ra = [threshold.holder_evaluate(shares[i], batch.blinded_elements) for i in subset_a]
    rb = [threshold.holder_evaluate(shares[i], batch.blinded_elements) for i in subset_b]
    assert threshold.combine(public, batch, ra) == threshold.combine(public, batch, rb)
