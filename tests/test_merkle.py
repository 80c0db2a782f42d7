"""RFC 9162 Merkle hashing and proofs (hub.audit.merkle).

Vectors: ``tests/data/merkle_vectors.json`` holds transparency-dev/merkle
``testdata/`` inclusion and consistency cases (file and commit recorded per
case) and the RFC 6962 reference test tree with its prefix roots.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core.errors import ConsistencyProofError, InclusionProofError, InvalidRequest
from hub.audit import merkle
from hub.audit.merkle import NodeId

VECTORS = json.loads((Path(__file__).parent / "data" / "merkle_vectors.json").read_text())


def _b64(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


class DictNodes:
    """All complete subtrees of a list of leaf hashes, built by brute force."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.nodes: dict[NodeId, bytes] = {}
        level_hashes = [merkle.leaf_hash(x) for x in leaves]
        level = 0
        while level_hashes:
            for i, h in enumerate(level_hashes):
                self.nodes[NodeId(level, i)] = h
            level_hashes = [
                merkle.node_hash(level_hashes[i], level_hashes[i + 1])
                for i in range(0, len(level_hashes) - 1, 2)
            ]
            level += 1
        self.calls = 0

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        self.calls += 1
        return {i: self.nodes[i] for i in ids}


def _mth(entries: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH, written exactly as the RFC's recursion (reference)."""
    n = len(entries)
    if n == 0:
        return merkle.EMPTY_ROOT
    if n == 1:
        return merkle.leaf_hash(entries[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return merkle.node_hash(_mth(entries[:k]), _mth(entries[k:]))


REFERENCE_LEAVES = [bytes.fromhex(x) for x in VECTORS["reference_tree"]["leaves_hex"]]


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_tree_roots(size: int) -> None:
    expected = bytes.fromhex(VECTORS["reference_tree"]["roots_hex"][str(size)])
    assert merkle.root_hash(REFERENCE_LEAVES[:size]) == expected
    assert merkle.tree_root(size, DictNodes(REFERENCE_LEAVES)) == expected


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.root_hash([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: c["file"])
def test_transparency_dev_inclusion(case: dict[str, Any]) -> None:
    args = (
        base64.b64decode(case["leafHash"]),
        case["leafIdx"],
        case["treeSize"],
        _b64(case["proof"]),
        base64.b64decode(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(InclusionProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)
        # Our generator produces the same proof over the reference tree.
        assert merkle.inclusion_proof(
            case["leafIdx"], case["treeSize"], DictNodes(REFERENCE_LEAVES)
        ) == _b64(case["proof"])


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: c["file"])
def test_transparency_dev_consistency(case: dict[str, Any]) -> None:
    args = (
        case["size1"],
        case["size2"],
        base64.b64decode(case["root1"]),
        base64.b64decode(case["root2"]),
        _b64(case["proof"]),
    )
    if case["wantErr"]:
        with pytest.raises(ConsistencyProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)
        assert merkle.consistency_proof(
            case["size1"], case["size2"], DictNodes(REFERENCE_LEAVES)
        ) == _b64(case["proof"])


def _entries(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_generated_inclusion_proofs_verify(size_index: tuple[int, int]) -> None:
    size, index = size_index
    entries = _entries(size)
    source = DictNodes(entries)
    proof = merkle.inclusion_proof(index, size, source)
    assert source.calls == 1  # one batched read per proof
    assert len(proof) <= size.bit_length()
    root = _mth(entries)
    merkle.verify_inclusion(merkle.leaf_hash(entries[index]), index, size, proof, root)
    other = merkle.leaf_hash(b"not in the log")
    with pytest.raises(InclusionProofError):
        merkle.verify_inclusion(other, index, size, proof, root)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_generated_consistency_proofs_verify(sizes: tuple[int, int]) -> None:
    old, new = sizes
    entries = _entries(new)
    source = DictNodes(entries)
    proof = merkle.consistency_proof(old, new, source)
    old_root, new_root = _mth(entries[:old]), _mth(entries)
    merkle.verify_consistency(old, new, old_root, new_root, proof)
    if 0 < old < new:
        # Any single flipped bit in the proof is caught.
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            with pytest.raises(ConsistencyProofError):
                merkle.verify_consistency(old, new, old_root, new_root, bad)
        # A forked history (one old entry changed) is not consistent.
        forked = _mth([b"forged", *entries[1:old]])
        with pytest.raises(ConsistencyProofError):
            merkle.verify_consistency(old, new, forked, new_root, proof)


def test_equal_sizes_with_different_roots_is_a_fork() -> None:
    a, b = _mth(_entries(5)), _mth([b"x", *_entries(5)[1:]])
    with pytest.raises(ConsistencyProofError, match="forked"):
        merkle.verify_consistency(5, 5, a, b, [])


def test_shrinking_tree_is_rejected() -> None:
    with pytest.raises(ConsistencyProofError):
        merkle.verify_consistency(6, 5, _mth(_entries(6)), _mth(_entries(5)), [])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 200), st.integers(1, 40))
def test_compact_range_matches_root_and_stored_nodes(start: int, extra: int) -> None:
    entries = _entries(start + extra)
    source = DictNodes(entries)
    ids = merkle.root_nodes(start)
    compact = merkle.CompactRange(start, [source.nodes[i] for i in ids])
    for e in entries[start:]:
        compact.append(merkle.leaf_hash(e))
    assert compact.root() == _mth(entries)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300))
def test_new_complete_nodes_build_every_complete_subtree(size: int) -> None:
    entries = _entries(size + 1)
    source = DictNodes(entries)
    leaf = merkle.leaf_hash(entries[size])
    siblings = {i: source.nodes[i] for i in merkle.left_sibling_ids(size)}
    created = merkle.new_complete_nodes(size, leaf, siblings)
    # Exactly the nodes whose last leaf is ``size``.
    expected = {
        nid: h for nid, h in source.nodes.items() if (nid.index + 1) << nid.level == size + 1
    }
    assert dict(created) == expected


def test_bad_arguments_to_generators_are_caller_errors() -> None:
    source = DictNodes(_entries(4))
    with pytest.raises(InvalidRequest):
        merkle.inclusion_proof(4, 4, source)
    with pytest.raises(InvalidRequest):
        merkle.consistency_proof(5, 4, source)
    with pytest.raises(InvalidRequest):
        merkle.CompactRange(3, [b"\x00" * 32])
