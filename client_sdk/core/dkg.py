"""Dealerless key generation and proactive re-sharing of the OPRF key (sans-IO).

The protocol is the one of Gennaro, Jarecki, Krawczyk and Rabin, "Secure
Distributed Key Generation for Discrete-Log Based Cryptosystems" (GJKR),
over ristretto255, with degree ``t-1`` polynomials (any ``t`` of ``n`` shares
reconstruct).  ``H`` is a second generator nobody knows the discrete log of:
RFC 9496 hash-to-group of :data:`PEDERSEN_GENERATOR_DST`.

Phase 1 (fixes the qualified set QUAL):

1. every dealer ``i`` picks ``f_i(X) = a_i0 + ... `` and a blinding
   ``f'_i(X) = b_i0 + ...``, publishes Pedersen commitments
   ``C_ik = a_ik*G + b_ik*H`` and sends recipient ``j`` (confidentially)
   ``(s_ij, s'_ij) = (f_i(j), f'_i(j))``;
2. ``j`` checks ``s_ij*G + s'_ij*H == sum_k j^k C_ik`` and complains against
   every dealer whose share fails;
3. a dealer answers each complaint by publishing the complainer's share;
4. a dealer is disqualified when it sent no valid commitments, drew ``t`` or
   more complaints (an honest dealer draws at most ``t-1``, from the at most
   ``t-1`` corrupt holders the threshold tolerates), or left a complaint
   unanswered or answered it with a share that does not verify.

Phase 2 (extracts the public key): every dealer in QUAL publishes Feldman
commitments ``A_ik = a_ik*G``; recipient ``j`` checks ``s_ij*G == sum_k j^k
A_ik``.  A failure is proven by publishing ``(s_ij, s'_ij)`` (it verifies
against the Pedersen commitments, so the dealer, not the complainer, lied);
the dealer stays in QUAL and its polynomial is reconstructed in the open from
the shares of ``t`` recipients (:func:`reconstruct_dealer`), as GJKR does, so
a dealer cannot bias the key by dropping out after seeing the others.

Recipient ``j`` ends with ``k_j = sum_{i in QUAL} w_i s_ij``, and everyone
computes ``K_j = sum_i w_i F_i(j)`` and ``K = sum_i w_i F_i(0)`` where
``F_i(x) = f_i(x)*G``.  For a fresh key ``w_i = 1`` and ``k = sum_i a_i0`` is
never held by anyone.  For a re-share (:attr:`Session.old_public` set) the
dealers are the holders of the old sharing, dealer ``i`` shares its old share
(``a_i0 = k_i``, checked: ``F_i(0)`` must equal the old ``K_i``) and ``w_i``
is its Lagrange coefficient over QUAL, so ``k`` is unchanged while every share
is new: proactive refresh (same ``t``, same holders) and re-sharing to another
``t'``-of-``n'`` are the same code.

Every group and scalar operation is libsodium's (``_sodium``); no field
arithmetic here.  Functions raise :class:`~client_sdk.core.errors.DkgError`
naming the disqualified participants, and ConfigurationError for a session
that cannot be run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from client_sdk.core import _sodium as sodium
from client_sdk.core.errors import ConfigurationError, DkgError, InvalidElementError
from client_sdk.core.threshold import (
    KeyShare,
    PublicKeyInfo,
    check_params,
    evaluate_polynomial,
    lagrange_at,
    lagrange_at_zero,
)

__all__ = [
    "PEDERSEN_GENERATOR_DST",
    "Dealing",
    "Outcome",
    "Session",
    "feldman_evaluations",
    "finish",
    "new_dealing",
    "pedersen_generator",
    "reconstruct_dealer",
    "resolve_complaints",
    "verify_feldman",
    "verify_pedersen",
]

PEDERSEN_GENERATOR_DST = b"fraudhub/v1 dkg pedersen generator H (GJKR)"

SharePair = tuple[bytes, bytes]


def pedersen_generator() -> bytes:
    """``H``: hash-to-group of a fixed string, so nobody knows ``log_G H``."""
    return sodium.element_from_hash(hashlib.sha512(PEDERSEN_GENERATOR_DST).digest())


_H = pedersen_generator()


@dataclass(frozen=True)
class Session:
    """What every participant must agree on before dealing.

    ``dealers`` are the indices that deal (for a fresh key, the holders
    ``1..holders``; for a re-share, old holder indices of ``old_public``);
    recipients are always ``1..holders`` of the new sharing.
    """

    threshold: int
    holders: int
    epoch: int
    dealers: tuple[int, ...]
    old_public: PublicKeyInfo | None = None

    def __post_init__(self) -> None:
        check_params(self.threshold, self.holders)  # also refuses 1-of-n, n > 1
        if len(set(self.dealers)) != len(self.dealers) or not self.dealers:
            raise ConfigurationError("dealers must be distinct and non-empty")
        old = self.old_public
        if old is None:
            if sorted(self.dealers) != list(range(1, self.holders + 1)):
                raise ConfigurationError("a fresh key is dealt by exactly the holders 1..n")
            return
        if old.epoch != self.epoch:
            raise ConfigurationError("a re-share keeps the key epoch (the key does not change)")
        if not set(self.dealers) <= set(old.public_shares):
            raise ConfigurationError("every re-share dealer must hold a share of the old key")
        if len(self.dealers) < old.threshold:
            raise ConfigurationError(
                f"a re-share needs at least {old.threshold} old holders, got {len(self.dealers)}"
            )

    @property
    def recipients(self) -> range:
        return range(1, self.holders + 1)

    @property
    def dealers_needed(self) -> int:
        """How many dealers must survive: ``t`` (fresh) or the old ``t`` (re-share)."""
        return self.threshold if self.old_public is None else self.old_public.threshold


@dataclass(frozen=True)
class Dealing:
    """One dealer's secret polynomials; only :meth:`share_for` output leaves the dealer."""

    dealer: int
    coefficients: tuple[bytes, ...] = field(repr=False)
    blinding: tuple[bytes, ...] = field(repr=False)

    def pedersen_commitments(self) -> list[bytes]:
        """``C_k = a_k*G + b_k*H`` (published in phase 1)."""
        return [
            sodium.element_add(sodium.scalarmult_base(a), sodium.scalarmult(b, _H))
            for a, b in zip(self.coefficients, self.blinding, strict=True)
        ]

    def feldman_commitments(self) -> list[bytes]:
        """``A_k = a_k*G`` (published in phase 2, by dealers in QUAL only)."""
        return [sodium.scalarmult_base(a) for a in self.coefficients]

    def share_for(self, recipient: int) -> SharePair:
        """``(f(j), f'(j))`` for recipient ``j``: secret, sent encrypted."""
        return (
            evaluate_polynomial(self.coefficients, recipient),
            evaluate_polynomial(self.blinding, recipient),
        )


def new_dealing(session: Session, dealer: int, old_share: KeyShare | None = None) -> Dealing:
    """Random polynomials for ``dealer``; a re-share dealer passes its old share.

    Raises ConfigurationError if the dealer is not in the session or the old
    share does not belong to the session's old public key.
    """
    if dealer not in session.dealers:
        raise ConfigurationError(f"participant {dealer} is not a dealer of this session")
    t = session.threshold
    if session.old_public is None:
        if old_share is not None:
            raise ConfigurationError("a fresh key takes no old share")
        secret = sodium.scalar_random()
    else:
        if old_share is None or old_share.index != dealer:
            raise ConfigurationError(f"re-share dealer {dealer} needs its own old share")
        if old_share.public_share != session.old_public.public_shares[dealer]:
            raise ConfigurationError(f"old share {dealer} does not match the old public key")
        secret = old_share.secret
    coefficients = (secret, *(sodium.scalar_random() for _ in range(t - 1)))
    blinding = tuple(sodium.scalar_random() for _ in range(t))
    return Dealing(dealer, coefficients, blinding)


def _evaluate_in_exponent(commitments: Sequence[bytes], x: int) -> bytes:
    """``sum_k x^k commitments[k]`` by Horner; raises InvalidElementError."""
    if x == 0:
        return commitments[0]
    acc = commitments[-1]
    xs = sodium.scalar_from_int(x)
    for c in reversed(commitments[:-1]):
        acc = sodium.element_add(sodium.scalarmult(xs, acc), c)
    return acc


def _well_formed(session: Session, commitments: Sequence[bytes] | None) -> bool:
    return (
        commitments is not None
        and len(commitments) == session.threshold
        and all(sodium.is_valid_element(c) for c in commitments)
    )


def verify_pedersen(
    session: Session, commitments: Sequence[bytes], recipient: int, share: SharePair
) -> bool:
    """Does ``share`` for ``recipient`` open the Pedersen commitments? (phase 1 check)."""
    s, s_blind = share
    if not (_well_formed(session, commitments) and _canonical(s) and _canonical(s_blind)):
        return False
    try:
        lhs = sodium.element_add(sodium.scalarmult_base(s), sodium.scalarmult(s_blind, _H))
        return lhs == _evaluate_in_exponent(commitments, recipient)
    except InvalidElementError:
        return False


def verify_feldman(
    session: Session, commitments: Sequence[bytes], recipient: int, share: bytes
) -> bool:
    """Does ``share`` match the Feldman commitments? (phase 2 check)."""
    if not (_well_formed(session, commitments) and _canonical(share)):
        return False
    try:
        return sodium.scalarmult_base(share) == _evaluate_in_exponent(commitments, recipient)
    except InvalidElementError:
        return False


def _canonical(s: bytes) -> bool:
    return sodium.scalar_is_canonical(s) and s != bytes(sodium.SCALAR_BYTES)


@dataclass(frozen=True)
class Outcome:
    """The qualified set after phase 1, and why each other dealer was disqualified."""

    qualified: tuple[int, ...]
    disqualified: dict[int, str]


def resolve_complaints(
    session: Session,
    commitments: Mapping[int, Sequence[bytes] | None],
    complaints: Mapping[int, frozenset[int]],
    answers: Mapping[int, Mapping[int, SharePair]],
) -> Outcome:
    """Phase 1 verdict, computed identically by every participant from public data.

    ``commitments[i]`` are dealer ``i``'s Pedersen commitments (None if it sent
    nothing usable); ``complaints[j]`` the dealers recipient ``j`` complained
    about; ``answers[i][j]`` the share dealer ``i`` revealed for ``j``.  Raises
    DkgError naming every disqualified dealer if fewer than
    :attr:`Session.dealers_needed` remain.
    """
    disqualified: dict[int, str] = {}
    for i in session.dealers:
        against = sorted(j for j, named in complaints.items() if i in named)
        published = commitments.get(i)
        if published is None or not _well_formed(session, published):
            disqualified[i] = "published no valid commitments"
        elif len(against) >= session.threshold:
            disqualified[i] = f"drew {len(against)} complaints (from {against})"
        else:
            for j in against:
                answer = answers.get(i, {}).get(j)
                if answer is None:
                    disqualified[i] = f"did not answer the complaint of holder {j}"
                    break
                if not verify_pedersen(session, published, j, answer):
                    disqualified[i] = f"answered the complaint of holder {j} with a bad share"
                    break
    qualified = tuple(i for i in session.dealers if i not in disqualified)
    if len(qualified) < session.dealers_needed:
        raise DkgError(
            f"only {len(qualified)} qualified dealers, {session.dealers_needed} needed",
            disqualified,
        )
    return Outcome(qualified, disqualified)


def feldman_evaluations(session: Session, commitments: Sequence[bytes]) -> dict[int, bytes]:
    """``F(x) = f(x)*G`` for ``x`` in ``0..n`` from Feldman commitments."""
    return {x: _evaluate_in_exponent(commitments, x) for x in range(session.holders + 1)}


def reconstruct_dealer(
    session: Session,
    pedersen: Sequence[bytes],
    revealed: Mapping[int, SharePair],
) -> dict[int, bytes]:
    """Phase-2 reconstruction of a dealer whose Feldman commitments were proven wrong.

    ``revealed[j]`` is the share recipient ``j`` published; shares that do not
    open ``pedersen`` are ignored.  Returns ``F(x) = f(x)*G`` for ``x`` in
    ``0..n`` (the same shape as :func:`feldman_evaluations`).  Raises DkgError
    if fewer than ``t`` valid shares were revealed.
    """
    valid = sorted(j for j, pair in revealed.items() if verify_pedersen(session, pedersen, j, pair))
    base = valid[: session.threshold]
    if len(base) < session.threshold:
        raise DkgError(f"only {len(valid)} valid shares to reconstruct a dealer, need t")
    out: dict[int, bytes] = {}
    for x in range(session.holders + 1):
        value = sodium.scalar_from_int(0)
        for j in base:
            term = sodium.scalar_mul(lagrange_at(base, j, x), revealed[j][0])
            value = sodium.scalar_add(value, term)
        out[x] = sodium.scalarmult_base(value)
    return out


def _weights(session: Session, qualified: Sequence[int]) -> dict[int, bytes]:
    if session.old_public is None:
        return {i: sodium.scalar_from_int(1) for i in qualified}
    base = sorted(qualified)[: session.old_public.threshold]
    return {i: lagrange_at_zero(base, i) for i in base}


def finish(
    session: Session,
    qualified: Sequence[int],
    evaluations: Mapping[int, Mapping[int, bytes]],
    recipient: int,
    shares: Mapping[int, bytes],
) -> tuple[KeyShare, PublicKeyInfo]:
    """Recipient's new share and the public key file contents.

    ``evaluations[i]`` is dealer ``i``'s ``F_i`` (:func:`feldman_evaluations`
    or :func:`reconstruct_dealer`); ``shares[i]`` the verified ``s_ij``.  For a
    re-share, raises DkgError naming a dealer whose ``F_i(0)`` is not its old
    public share; raises ConfigurationError if the result is inconsistent.
    """
    weights = _weights(session, qualified)
    old = session.old_public
    if old is not None:
        wrong = {
            i: "dealt something other than its old share"
            for i in weights
            if evaluations[i][0] != old.public_shares[i]
        }
        if wrong:
            raise DkgError("a re-share dealer changed the key", wrong)
    secret = sodium.scalar_from_int(0)
    for i, w in weights.items():
        secret = sodium.scalar_add(secret, sodium.scalar_mul(w, shares[i]))
    points: dict[int, bytes] = {}
    for x in range(session.holders + 1):
        acc: bytes | None = None
        for i, w in weights.items():
            term = sodium.scalarmult(w, evaluations[i][x])
            acc = term if acc is None else sodium.element_add(acc, term)
        assert acc is not None  # weights is never empty: QUAL has >= 1 dealer
        points[x] = acc
    if old is not None and points[0] != old.group_public_key:
        raise ConfigurationError("re-shared key differs from the old group key")
    public = PublicKeyInfo(
        epoch=session.epoch,
        threshold=session.threshold,
        holders=session.holders,
        group_public_key=points[0],
        public_shares={j: points[j] for j in session.recipients},
    )
    public.check_consistent()
    share = KeyShare(recipient, secret, session.epoch, session.threshold, session.holders)
    if share.public_share != public.public_shares[recipient]:
        raise ConfigurationError(f"new share {recipient} does not match its public share")
    return share, public
