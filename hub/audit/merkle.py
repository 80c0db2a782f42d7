"""RFC 9162 Merkle tree hashing and proofs, with no I/O.

Guarantees:

- Hashes are exactly RFC 9162 section 2.1.1: ``leaf_hash(d) = SHA-256(0x00 || d)``,
  ``node_hash(l, r) = SHA-256(0x01 || l || r)``, the empty tree hashes to
  ``SHA-256("")``.
- Proofs are RFC 9162 ``PATH`` (inclusion, 2.1.3.1) and ``PROOF``/``SUBPROOF``
  (consistency, 2.1.4.1), built from *complete subtree* hashes only.  A complete
  subtree is named by a :class:`NodeId` ``(level, index)``: the hash of leaves
  ``[index * 2**level, (index + 1) * 2**level)``.  Once complete, such a node never
  changes, so a store keeps each one once and a proof for a tree of ``n`` leaves
  needs at most ``2 * log2(n)`` of them, fetched in ONE call to a
  :class:`NodeSource` (no rehashing of the log).
- ``verify_inclusion`` and ``verify_consistency`` follow the RFC 9162 verification
  algorithms (2.1.3.2, 2.1.4.2) and RAISE on failure
  (:class:`~client_sdk.core.errors.InclusionProofError`,
  :class:`~client_sdk.core.errors.ConsistencyProofError`); they never return False.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from client_sdk.core.errors import ConsistencyProofError, InclusionProofError, InvalidRequest

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "NodeId",
    "NodeSource",
    "consistency_proof",
    "consistency_proof_nodes",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "leaf_hash",
    "left_sibling_ids",
    "new_complete_nodes",
    "node_hash",
    "perfect_subtrees",
    "root_from_subtrees",
    "root_hash",
    "root_nodes",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


@dataclass(frozen=True, slots=True)
class NodeId:
    """A complete subtree: leaves ``[index << level, (index + 1) << level)``."""

    level: int
    index: int


class NodeSource(Protocol):
    """Where complete-subtree hashes come from (a database table, a dict...).

    ``get_nodes`` returns the hash of every requested node; it raises if one is
    missing (a store must treat that as its own corruption, not the caller's).
    """

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]: ...


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The ``k`` of RFC 9162: the largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_subtrees(begin: int, end: int) -> list[NodeId]:
    """The complete subtrees whose concatenation is the leaf range ``[begin, end)``.

    Valid for the ranges RFC 9162 proofs and roots use: ``begin`` is a multiple of
    a power of two at least ``end - begin`` (the left edge of a subtree), so the
    pieces are the binary decomposition of ``end - begin``, largest first.
    """
    pieces: list[NodeId] = []
    position = begin
    while position < end:
        remaining = end - position
        level = remaining.bit_length() - 1
        # Shrink until the piece is aligned at ``position`` (only needed for
        # unaligned ranges; RFC ranges are aligned already).
        while position % (1 << level):
            level -= 1
        pieces.append(NodeId(level, position >> level))
        position += 1 << level
    return pieces


def root_from_subtrees(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range given its :func:`perfect_subtrees` hashes, largest first.

    RFC 9162 splits at the largest power of two, so the root folds from the
    right: ``H(p0, H(p1, ... H(p_{k-2}, p_{k-1})))``.
    """
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def root_nodes(size: int) -> list[NodeId]:
    """The complete subtrees a store reads to compute the root of ``size`` leaves."""
    return perfect_subtrees(0, size)


def tree_root(size: int, source: NodeSource) -> bytes:
    """Root hash of the first ``size`` leaves, from at most log2(size)+1 stored nodes."""
    ids = root_nodes(size)
    nodes = source.get_nodes(ids)
    return root_from_subtrees([nodes[i] for i in ids])


def root_hash(entries: Iterable[bytes]) -> bytes:
    """MTH (RFC 9162 2.1.1) of a list of raw entries (hashes every leaf)."""
    compact = CompactRange()
    for entry in entries:
        compact.append(leaf_hash(entry))
    return compact.root()


class CompactRange:
    """The perfect subtrees covering leaves ``[0, size)``: enough to append and get the root.

    A verifier keeps this (at most log2(size)+1 hashes) instead of the whole log:
    appending the new events to it rebuilds the new root.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != len(root_nodes(size)):
            raise InvalidRequest(
                f"a compact range of {size} leaves has {len(root_nodes(size))} hashes, "
                f"not {len(hashes)}"
            )
        self.size = size
        self.hashes: list[bytes] = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash, merging equal-sized subtrees as RFC 9162 does."""
        merged = leaf
        size = self.size
        # Each trailing 1-bit of ``size`` is a complete left sibling to merge with.
        while size & 1:
            merged = node_hash(self.hashes.pop(), merged)
            size >>= 1
        self.hashes.append(merged)
        self.size += 1

    def root(self) -> bytes:
        return root_from_subtrees(self.hashes)


def new_complete_nodes(
    size: int, leaf: bytes, left_siblings: Mapping[NodeId, bytes]
) -> list[tuple[NodeId, bytes]]:
    """The complete subtrees that appear when leaf number ``size`` is appended.

    ``left_siblings`` must hold the nodes named by :func:`left_sibling_ids`;
    the result is the new leaf node followed by every
    parent it completes, lowest first.
    """
    created = [(NodeId(0, size), leaf)]
    merged = leaf
    index = size
    level = 0
    while index & 1:
        sibling = NodeId(level, index - 1)
        merged = node_hash(left_siblings[sibling], merged)
        index >>= 1
        level += 1
        created.append((NodeId(level, index), merged))
    return created


def left_sibling_ids(size: int) -> list[NodeId]:
    """The stored nodes needed to append leaf number ``size`` (trailing 1-bits of size)."""
    ids: list[NodeId] = []
    index = size
    level = 0
    while index & 1:
        ids.append(NodeId(level, index - 1))
        index >>= 1
        level += 1
    return ids


# --- proof generation ------------------------------------------------------------


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH form RFC 9162 ``PATH(index, D[0:size])``, leaf first."""
    ranges: list[tuple[int, int]] = []
    begin, end, m = 0, size, index
    while end - begin > 1:
        k = _largest_power_of_two_below(end - begin)
        if m < k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
            m -= k
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH form RFC 9162 ``PROOF(old_size, D[0:new_size])``, in order."""
    ranges: list[tuple[int, int]] = []
    begin, end, m, whole = 0, new_size, old_size, True
    while m != end - begin:
        k = _largest_power_of_two_below(end - begin)
        if m <= k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
            m -= k
            whole = False
    if not whole:
        ranges.append((begin, end))
    ranges.reverse()
    return ranges


def _check_sizes(index: int, size: int, what: str) -> None:
    if size < 0 or index < 0 or index >= size:
        raise InvalidRequest(f"{what} {index} is not in a tree of {size} leaves")


def inclusion_proof_nodes(index: int, size: int) -> list[NodeId]:
    """Every stored node an inclusion proof for leaf ``index`` in tree ``size`` reads."""
    _check_sizes(index, size, "leaf index")
    return [n for r in _inclusion_ranges(index, size) for n in perfect_subtrees(*r)]


def consistency_proof_nodes(old_size: int, new_size: int) -> list[NodeId]:
    """Every stored node a consistency proof from ``old_size`` to ``new_size`` reads."""
    if not 0 <= old_size <= new_size:
        raise InvalidRequest(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    return [n for r in _consistency_ranges(old_size, new_size) for n in perfect_subtrees(*r)]


def _assemble(ranges: list[tuple[int, int]], source: NodeSource) -> list[bytes]:
    pieces = [perfect_subtrees(*r) for r in ranges]
    nodes = source.get_nodes([n for p in pieces for n in p])
    return [root_from_subtrees([nodes[n] for n in p]) for p in pieces]


def inclusion_proof(index: int, size: int, source: NodeSource) -> list[bytes]:
    """RFC 9162 inclusion proof (audit path) of leaf ``index`` in the tree of ``size`` leaves.

    Raises InvalidRequest if ``index`` is not below ``size``.
    """
    _check_sizes(index, size, "leaf index")
    return _assemble(_inclusion_ranges(index, size), source)


def consistency_proof(old_size: int, new_size: int, source: NodeSource) -> list[bytes]:
    """RFC 9162 consistency proof between the trees of ``old_size`` and ``new_size`` leaves.

    Empty when ``old_size`` is 0 or equals ``new_size``.  Raises InvalidRequest if
    ``old_size > new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise InvalidRequest(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    return _assemble(_consistency_ranges(old_size, new_size), source)


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) -----------------------------------


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf HASH) is leaf ``index`` of the tree ``(size, root)``.

    Raises InclusionProofError naming what failed.
    """
    if index < 0 or index >= size:
        raise InclusionProofError(f"leaf index {index} is not in a tree of {size} leaves")
    if any(len(p) != HASH_SIZE for p in proof):
        raise InclusionProofError("an inclusion proof element is not a SHA-256 hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise InclusionProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InclusionProofError("inclusion proof is shorter than the tree is deep")
    if not _same(r, root):
        raise InclusionProofError(
            f"leaf {index} is not in the tree of {size} leaves: the proof leads to another root"
        )


def verify_consistency(  # noqa: PLR0912 - RFC 9162 2.1.4.2 transcribed step by step, to be checked against the RFC
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(old_size, old_root)`` is a prefix of ``(new_size, new_root)``.

    Raises ConsistencyProofError naming what failed.
    """
    if old_size < 0 or old_size > new_size:
        raise ConsistencyProofError(
            f"a tree of {new_size} leaves cannot extend one of {old_size} leaves"
        )
    if any(len(p) != HASH_SIZE for p in proof):
        raise ConsistencyProofError("a consistency proof element is not a SHA-256 hash")
    if old_size == new_size:
        if proof:
            raise ConsistencyProofError("a proof between equal sizes must be empty")
        if not _same(old_root, new_root):
            raise ConsistencyProofError(
                f"two different roots for the same size {old_size}: the log forked"
            )
        return
    if old_size == 0:
        if proof:
            raise ConsistencyProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ConsistencyProofError("the consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ConsistencyProofError("consistency proof is longer than expected")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ConsistencyProofError("consistency proof is shorter than expected")
    if not _same(fr, old_root):
        raise ConsistencyProofError(
            f"the tree of {new_size} leaves does not contain the verified tree of "
            f"{old_size} leaves: old root mismatch"
        )
    if not _same(sr, new_root):
        raise ConsistencyProofError(
            f"consistency proof from {old_size} does not lead to the root of size {new_size}"
        )
