"""DKG core (GJKR): any t DKG shares evaluate like the combined key; cheaters are named.

The combined key ``k`` is computed here, in the test only, by Lagrange
interpolation of the shares, to compare against RFC 9497 Evaluate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core import _sodium as sodium
from client_sdk.core import dkg, oprf, threshold
from client_sdk.core.envelope import EnvelopeError, open_envelope, seal_envelope
from client_sdk.core.errors import ConfigurationError, DkgError
from client_sdk.core.threshold import KeyShare, PublicKeyInfo

INPUTS = [b"fraudhub/v1\x00phone\x00+8613800138000", b"fraudhub/v1\x00account\x00x"]
Tamper = Callable[[int, int, tuple[bytes, bytes]], tuple[bytes, bytes]]


def combined_key(shares: list[KeyShare]) -> bytes:
    """Test-only: interpolate ``k`` from ``t`` shares."""
    idx = [s.index for s in shares]
    k = sodium.scalar_from_int(0)
    for s in shares:
        lam = threshold.lagrange_at_zero(idx, s.index)
        k = sodium.scalar_add(k, sodium.scalar_mul(lam, s.secret))
    return k


def run(
    session: dkg.Session,
    *,
    old_shares: Mapping[int, KeyShare] | None = None,
    tamper: Tamper | None = None,
    answer_tamper: Tamper | None = None,
    silent_answer: frozenset[int] = frozenset(),
    bad_feldman: frozenset[int] = frozenset(),
) -> tuple[list[KeyShare], PublicKeyInfo, dkg.Outcome]:
    """All rounds in memory (the file transport runs the same calls per process)."""
    dealings = {i: dkg.new_dealing(session, i, (old_shares or {}).get(i)) for i in session.dealers}
    pedersen = {i: d.pedersen_commitments() for i, d in dealings.items()}
    received = {
        (i, j): (tamper(i, j, d.share_for(j)) if tamper else d.share_for(j))
        for i, d in dealings.items()
        for j in session.recipients
    }
    complaints = {
        j: frozenset(
            i
            for i in session.dealers
            if not dkg.verify_pedersen(session, pedersen[i], j, received[i, j])
        )
        for j in session.recipients
    }
    answers = {
        i: {
            j: (answer_tamper(i, j, d.share_for(j)) if answer_tamper else d.share_for(j))
            for j in session.recipients
            if i in complaints[j] and i not in silent_answer
        }
        for i, d in dealings.items()
    }
    outcome = dkg.resolve_complaints(session, pedersen, complaints, answers)
    for i, revealed in answers.items():
        for j, pair in revealed.items():
            received[i, j] = pair
    evaluations: dict[int, dict[int, bytes]] = {}
    for i in outcome.qualified:
        feldman = dealings[i].feldman_commitments()
        if i in bad_feldman:
            feldman[0] = sodium.scalarmult_base(sodium.scalar_random())
        failed = any(
            not dkg.verify_feldman(session, feldman, j, received[i, j][0])
            for j in session.recipients
        )
        if failed:
            revealed = {j: received[i, j] for j in session.recipients}
            evaluations[i] = dkg.reconstruct_dealer(session, pedersen[i], revealed)
        else:
            evaluations[i] = dkg.feldman_evaluations(session, feldman)
    results = [
        dkg.finish(
            session,
            outcome.qualified,
            evaluations,
            j,
            {i: received[i, j][0] for i in outcome.qualified},
        )
        for j in session.recipients
    ]
    publics = {r[1].to_json() for r in results}
    assert len(publics) == 1  # every holder computed the same public file
    return [r[0] for r in results], results[0][1], outcome


def assert_evaluates_as(shares: list[KeyShare], public: PublicKeyInfo, k: bytes) -> None:
    expected = [oprf.evaluate(k, x, oprf.Mode.VOPRF) for x in INPUTS]
    batch = threshold.blind_batch(INPUTS)
    responses = {s.index: threshold.holder_evaluate(s, batch.blinded_elements) for s in shares}
    for subset in itertools.combinations(sorted(responses), public.threshold):
        assert threshold.combine(public, batch, [responses[i] for i in subset]) == expected


def fresh(t: int, n: int, epoch: int = 1) -> dkg.Session:
    return dkg.Session(t, n, epoch, tuple(range(1, n + 1)))


@pytest.mark.parametrize(("t", "n"), [(1, 1), (2, 2), (2, 3), (3, 5)])
def test_any_t_dkg_shares_evaluate_like_the_combined_key(t: int, n: int) -> None:
    shares, public, outcome = run(fresh(t, n))
    assert outcome.disqualified == {}
    k = combined_key(shares[:t])
    assert public.group_public_key == sodium.scalarmult_base(k)
    assert_evaluates_as(shares, public, k)


@settings(max_examples=8, deadline=None)
# Threshold 1 only with a single holder: 1-of-n, n > 1, is refused (review-2 S4).
@given(
    st.integers(1, 4).flatmap(lambda t: st.tuples(st.just(t), st.integers(t, 5 if t > 1 else 1)))
)
def test_dkg_property_every_subset_interpolates_to_one_key(tn: tuple[int, int]) -> None:
    t, n = tn
    shares, public, _ = run(fresh(t, n))
    keys = {combined_key(list(c)) for c in itertools.combinations(shares, t)}
    assert len(keys) == 1
    assert sodium.scalarmult_base(keys.pop()) == public.group_public_key


def test_pedersen_generator_is_fixed_and_not_g() -> None:
    h = dkg.pedersen_generator()
    assert sodium.is_valid_element(h) and h != sodium.scalarmult_base(sodium.scalar_from_int(1))
    assert h == dkg.pedersen_generator()


def _corrupt(pair: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    return sodium.scalar_add(pair[0], sodium.scalar_from_int(1)), pair[1]


def test_bad_share_is_detected_and_answered_dealer_stays_qualified() -> None:
    # Dealer 2 sends holder 3 a wrong share, then answers the complaint correctly.
    session = fresh(2, 3)
    shares, public, outcome = run(
        session, tamper=lambda i, j, p: _corrupt(p) if (i, j) == (2, 3) else p
    )
    assert outcome.qualified == (1, 2, 3)
    assert_evaluates_as(shares, public, combined_key(shares[:2]))


def test_bad_answer_disqualifies_and_names_the_dealer() -> None:
    session = fresh(2, 4)
    bad = lambda i, j, p: _corrupt(p) if (i, j) == (2, 3) else p  # noqa: E731
    shares, public, outcome = run(session, tamper=bad, answer_tamper=bad)
    assert outcome.qualified == (1, 3, 4)
    assert outcome.disqualified == {2: "answered the complaint of holder 3 with a bad share"}
    assert_evaluates_as(shares, public, combined_key(shares[:2]))


def test_unanswered_complaint_disqualifies() -> None:
    session = fresh(2, 3)
    _, _, outcome = run(
        session,
        tamper=lambda i, j, p: _corrupt(p) if (i, j) == (1, 2) else p,
        silent_answer=frozenset({1}),
    )
    assert outcome.disqualified == {1: "did not answer the complaint of holder 2"}


def test_t_complaints_disqualify_and_too_few_dealers_name_the_cheaters() -> None:
    session = fresh(2, 3)
    with pytest.raises(DkgError, match="participant 3: drew 2 complaints") as info:
        run(
            session,
            tamper=lambda i, j, p: _corrupt(p) if i in (2, 3) and j != i else p,
        )
    assert set(info.value.disqualified) == {2, 3}


def test_bad_feldman_commitments_are_reconstructed_not_dropped() -> None:
    # GJKR phase 2: the dealer stays in QUAL, its polynomial is rebuilt from shares.
    shares, public, outcome = run(fresh(2, 3), bad_feldman=frozenset({1}))
    assert outcome.qualified == (1, 2, 3)
    assert_evaluates_as(shares, public, combined_key(shares[:2]))


def test_refresh_keeps_k_and_old_new_mix_is_useless() -> None:
    old_shares, old_public, _ = run(fresh(2, 3))
    k = combined_key(old_shares[:2])
    session = dkg.Session(2, 3, 1, (1, 2, 3), old_public)
    new_shares, new_public, _ = run(session, old_shares={s.index: s for s in old_shares})
    assert new_public.group_public_key == old_public.group_public_key
    assert all(n.secret != o.secret for n, o in zip(new_shares, old_shares, strict=True))
    assert_evaluates_as(new_shares, new_public, k)
    # An old share with a new one interpolates to something that is not k.
    assert combined_key([old_shares[0], new_shares[1]]) != k
    x = INPUTS[0]
    mixed = oprf.evaluate(combined_key([old_shares[0], new_shares[1]]), x, oprf.Mode.VOPRF)
    assert mixed != oprf.evaluate(k, x, oprf.Mode.VOPRF)


def test_reshare_2_of_3_to_3_of_4_keeps_the_key() -> None:
    old_shares, old_public, _ = run(fresh(2, 3, epoch=4))
    k = combined_key(old_shares[:2])
    # Only holders 1 and 3 deal (holder 2 is offline); the new set is 3-of-4.
    session = dkg.Session(3, 4, 4, (1, 3), old_public)
    new_shares, new_public, _ = run(session, old_shares={s.index: s for s in old_shares})
    assert (new_public.threshold, new_public.holders, new_public.epoch) == (3, 4, 4)
    assert new_public.group_public_key == old_public.group_public_key
    assert_evaluates_as(new_shares, new_public, k)


def test_reshare_dealer_that_deals_another_secret_is_named() -> None:
    _, old_public, _ = run(fresh(2, 3))
    session = dkg.Session(2, 3, 1, (1, 2), old_public)
    impostor = KeyShare(2, sodium.scalar_random(), 1, 2, 3)
    with pytest.raises(ConfigurationError, match="does not match the old public key"):
        dkg.new_dealing(session, 2, impostor)


def test_session_rules() -> None:
    _, old_public, _ = run(fresh(2, 3))
    with pytest.raises(ConfigurationError, match="exactly the holders"):
        dkg.Session(2, 3, 1, (1, 2))
    with pytest.raises(ConfigurationError, match="at least 2 old holders"):
        dkg.Session(2, 3, 1, (1,), old_public)
    with pytest.raises(ConfigurationError, match="keeps the key epoch"):
        dkg.Session(2, 3, 2, (1, 2), old_public)


def test_envelope_round_trip_and_tamper() -> None:
    e = sodium.scalar_random()
    sealed = seal_envelope(sodium.scalarmult_base(e), b"share", b"aad")
    assert open_envelope(e, sealed, b"aad") == b"share"
    with pytest.raises(EnvelopeError):
        open_envelope(e, sealed, b"other")
    with pytest.raises(EnvelopeError):
        open_envelope(sodium.scalar_random(), sealed, b"aad")
    with pytest.raises(EnvelopeError):
        open_envelope(e, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"aad")
