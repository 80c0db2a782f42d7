"""Witness cosignatures (C2SP tlog-cosignature) and the witness's add-checkpoint rules.

Known answers pin the cosignature format; the witness core is exercised
directly (no transport): it cosigns only checkpoints signed by the log key it
knows that extend what it cosigned before, answers a stale old size with its
own size, and refuses rollbacks and forks.
"""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core.errors import (
    CheckpointError,
    CheckpointRefused,
    ConfigurationError,
    InconsistentCheckpoint,
    UnknownLog,
    WitnessConflict,
)
from hub.audit import merkle
from hub.audit.checkpoint import Checkpoint, LogSigner, LogVerifier, NoteSignature, split_note
from hub.audit.cosignature import (
    CosignatureVerifier,
    Cosigner,
    check_quorum,
    cosigned_message,
    with_cosignatures,
)
from hub.audit.witness import MemoryWitnessState, Witness
from hub.cli import main
from hub.keyholder.witness import WITNESS_KEY_FILENAME, open_witness
from hub.services.config import WitnessEndpoint

ORIGIN = "fraudhub.test/audit"
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SEED = bytes(range(32))
# Computed once with the format of c2sp.org/tlog-cosignature; must never change.
KAT_LINE = (
    "\u2014 witness.example.com/w1 oAWfEQAAAABkGFDLBuRDazBLVac2NE+Y+IjbjQOcXLfF9CSDZVUIoS83rE1n"
    "FZsVE8YiWV6Ngr7lV8H6bdoBQGP/l73euDMQ9k+bBQ==\n"
)
KAT_VKEY = "witness.example.com/w1+a0059f11+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"


def _cosigner(name: str = "witness.example.com/w1", seed: bytes = SEED) -> Cosigner:
    return Cosigner(name, Ed25519PrivateKey.from_private_bytes(seed))


def test_cosigned_message_is_header_time_and_body() -> None:
    assert cosigned_message(SPEC_BODY, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n" + SPEC_BODY.encode()
    )
    with pytest.raises(CheckpointError):
        cosigned_message(SPEC_BODY, 2**63)
    with pytest.raises(CheckpointError):
        cosigned_message(SPEC_BODY.rstrip("\n"), 1)


def test_known_answer_cosignature_line_and_verifier_key() -> None:
    cosigner = _cosigner()
    line = cosigner.cosign(SPEC_BODY, 1679315147).line()
    assert line == KAT_LINE
    assert cosigner.verifier_key() == KAT_VKEY
    # The key id commits to signature type 0x04 (a cosignature), not 0x01 (a log key).
    expected_id = hashlib.sha256(b"witness.example.com/w1\n\x04" + cosigner.public_key).digest()
    assert cosigner.key_id == expected_id[:4]
    blob = base64.b64decode(line.split(" ")[2])
    assert blob[:4] == cosigner.key_id
    # Timestamp: 8 bytes big-endian, the same bytes as the spec's example line.
    assert blob[4:12] == (1679315147).to_bytes(8, "big")
    verifier = CosignatureVerifier.from_verifier_key(KAT_VKEY)
    _, (parsed,) = split_note(SPEC_BODY + "\n" + line)
    assert verifier.verify(SPEC_BODY, parsed) == 1679315147


def test_verifier_key_types_are_kept_apart() -> None:
    log_key = LogSigner("witness.example.com/w1", Ed25519PrivateKey.from_private_bytes(SEED))
    with pytest.raises(ConfigurationError, match="signature type 0x04"):
        CosignatureVerifier.from_verifier_key(log_key.verifier_key())
    with pytest.raises(ConfigurationError, match="signature type 0x01"):
        LogVerifier.from_verifier_key(KAT_VKEY)
    tampered = KAT_VKEY.replace("+a0059f11+", "+a0059f12+")
    with pytest.raises(ConfigurationError, match="key id does not match"):
        CosignatureVerifier.from_verifier_key(tampered)


def _log(size: int) -> tuple[LogSigner, list[bytes]]:
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    return signer, [f"event {i}".encode() for i in range(size)]


class _Tree:
    """A log in memory: checkpoints and proofs over ``bodies``."""

    def __init__(self, signer: LogSigner, bodies: list[bytes]) -> None:
        self.signer = signer
        self.leaves = [merkle.leaf_hash(b) for b in bodies]
        self.nodes = _nodes(self.leaves)

    def get_nodes(self, ids: object) -> dict[merkle.NodeId, bytes]:
        return self.nodes

    def note(self, size: int) -> str:
        root = merkle.tree_root(size, self)
        return self.signer.sign_checkpoint(Checkpoint(ORIGIN, size, root))

    def proof(self, old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(old, new, self)


def _nodes(leaves: list[bytes]) -> dict[merkle.NodeId, bytes]:
    nodes: dict[merkle.NodeId, bytes] = {}
    level, hashes = 0, leaves
    while hashes:
        nodes.update({merkle.NodeId(level, i): h for i, h in enumerate(hashes)})
        hashes = [merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes) - 1, 2)]
        level += 1
    return nodes


def _witness(signer: LogSigner, clock: float = 1_700_000_000.0) -> Witness:
    logs = {ORIGIN: LogVerifier(signer.name, signer.public_key)}
    return Witness(_cosigner(), logs, MemoryWitnessState(), clock=lambda: clock)


def test_witness_cosigns_consistent_extensions_and_serves_them_in_a_quorum() -> None:
    signer, bodies = _log(20)
    tree = _Tree(signer, bodies)
    witness = _witness(signer)
    first = witness.add_checkpoint(0, [], tree.note(5))
    assert witness.size(ORIGIN) == 5
    note = tree.note(13)
    line = witness.add_checkpoint(5, tree.proof(5, 13), note)
    cosigned = with_cosignatures(note, [line])
    pinned = [CosignatureVerifier.from_verifier_key(witness.cosigner.verifier_key())]
    assert check_quorum(cosigned, pinned, 1).cosigned == (pinned[0].label(),)
    # The first cosignature is over another checkpoint: it does not count for this one.
    with pytest.raises(CheckpointError, match="bad cosignature"):
        check_quorum(with_cosignatures(note, [first]), pinned, 1)
    # Re-cosigning the same size and root is allowed (a fresh timestamp).
    witness.add_checkpoint(13, [], note)


def test_witness_answers_a_stale_old_size_with_its_own() -> None:
    signer, bodies = _log(10)
    tree = _Tree(signer, bodies)
    witness = _witness(signer)
    witness.add_checkpoint(0, [], tree.note(6))
    with pytest.raises(WitnessConflict) as caught:
        witness.add_checkpoint(4, tree.proof(4, 9), tree.note(9))
    assert caught.value.size == 6
    assert "witness is at size 6" in str(caught.value)
    witness.add_checkpoint(caught.value.size, tree.proof(6, 9), tree.note(9))


def test_witness_refuses_rollback_fork_unknown_log_and_bad_signatures() -> None:
    signer, bodies = _log(10)
    tree = _Tree(signer, bodies)
    witness = _witness(signer)
    witness.add_checkpoint(0, [], tree.note(8))
    with pytest.raises(InconsistentCheckpoint, match="rollback"):
        witness.add_checkpoint(8, [], tree.note(5))
    # The operator's split view: event 3 never happened.
    forked = _Tree(signer, bodies[:3] + bodies[4:] + [b"later"])
    with pytest.raises(InconsistentCheckpoint, match="does not extend the tree of size 8"):
        witness.add_checkpoint(8, forked.proof(8, 10), forked.note(10))
    with pytest.raises(InconsistentCheckpoint, match="forked"):
        witness.add_checkpoint(8, [], forked.note(8))
    other = LogSigner(ORIGIN, Ed25519PrivateKey.generate())
    with pytest.raises(CheckpointRefused, match="unknown key"):
        witness.add_checkpoint(8, tree.proof(8, 10), _Tree(other, bodies).note(10))
    stranger = LogSigner("someone.else/log", Ed25519PrivateKey.generate())
    with pytest.raises(UnknownLog):
        witness.add_checkpoint(
            0, [], stranger.sign_checkpoint(Checkpoint("someone.else/log", 1, b"\x00" * 32))
        )
    with pytest.raises(CheckpointRefused, match="not a signed note"):
        witness.add_checkpoint(8, [], "no signature block")
    assert witness.size(ORIGIN) == 8


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6),
    drop=st.integers(min_value=0, max_value=39),
)
def test_witness_only_ever_cosigns_one_consistent_history(sizes: list[int], drop: int) -> None:
    signer, bodies = _log(41)
    honest = _Tree(signer, bodies)
    forked = _Tree(signer, bodies[:drop] + bodies[drop + 1 :] + [b"padding"])
    witness = _witness(signer)
    accepted: list[tuple[int, bytes]] = []
    for size in sizes:
        for tree in (forked, honest):
            current = witness.size(ORIGIN)
            if size < current:
                continue
            try:
                witness.add_checkpoint(current, tree.proof(current, size), tree.note(size))
            except InconsistentCheckpoint:
                continue
            accepted.append((size, merkle.tree_root(size, tree)))
    # Every head it ever cosigned lies on ONE history (they agree below ``drop``).
    assert all(root == merkle.tree_root(n, honest) for n, root in accepted) or all(
        root == merkle.tree_root(n, forked) for n, root in accepted
    )


def test_quorum_names_missing_and_bad_cosignatures() -> None:
    signer, bodies = _log(4)
    note = _Tree(signer, bodies).note(4)
    body, _ = split_note(note)
    good, silent, liar = (_cosigner(f"w{i}.test", bytes([i]) * 32) for i in (1, 2, 3))
    forged = NoteSignature(liar.name, liar.key_id, good.cosign(body, 5).signature)
    served = with_cosignatures(note, [good.cosign(body, 5), forged])
    pinned = [CosignatureVerifier.from_verifier_key(c.verifier_key()) for c in (good, silent, liar)]
    result = check_quorum(served, pinned, 1)
    assert result.cosigned == (pinned[0].label(),)
    assert result.problems == (
        f"witness {pinned[1].label()}: no cosignature",
        f"witness {pinned[2].label()}: bad cosignature (the cosignature by witness "
        f"{pinned[2].label()} does not verify over this checkpoint)",
    )
    with pytest.raises(CheckpointError, match=r"missing witness quorum: 1 of the required 2"):
        check_quorum(served, pinned, 2)
    with pytest.raises(ConfigurationError):
        check_quorum(served, pinned, 4)


def test_witness_state_file_survives_a_restart(tmp_path: Path) -> None:
    signer, bodies = _log(12)
    tree = _Tree(signer, bodies)
    log_key = signer.verifier_key()
    witness, state = open_witness(tmp_path, "w1.test/witness", [log_key])
    witness.add_checkpoint(0, [], tree.note(9))
    vkey = witness.cosigner.verifier_key()
    state.close()
    assert stat.S_IMODE((tmp_path / WITNESS_KEY_FILENAME).stat().st_mode) == 0o600
    # Restarted: same key, same head; a rollback or a fork is still refused.
    witness, state = open_witness(tmp_path, "w1.test/witness", [log_key])
    try:
        assert witness.cosigner.verifier_key() == vkey
        assert witness.size(ORIGIN) == 9
        with pytest.raises(WitnessConflict) as caught:
            witness.add_checkpoint(0, [], tree.note(4))
        assert caught.value.size == 9
        forked = _Tree(signer, bodies[:2] + bodies[3:] + [b"x"])
        with pytest.raises(InconsistentCheckpoint):
            witness.add_checkpoint(9, forked.proof(9, 12), forked.note(12))
        witness.add_checkpoint(9, tree.proof(9, 12), tree.note(12))
        assert witness.size(ORIGIN) == 12
    finally:
        state.close()


def test_witness_key_command_prints_one_stable_verifier_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["witness-key", "--state-dir", str(tmp_path), "--name", "fraudhub/keyholder-1/witness"]
    assert main(args) == 0
    first = capsys.readouterr().out.strip()
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == first
    assert CosignatureVerifier.from_verifier_key(first).name == "fraudhub/keyholder-1/witness"


def test_serve_witness_flag_is_checked() -> None:
    endpoint = WitnessEndpoint.parse(f"127.0.0.1:9001,{KAT_VKEY},fraudhub:keyholder:1")
    assert endpoint.audience == "fraudhub:keyholder:1"
    with pytest.raises(ConfigurationError, match="HOST:PORT,WITNESS_VKEY,AUDIENCE"):
        WitnessEndpoint.parse("127.0.0.1:9001")
    log_key = LogSigner("w", Ed25519PrivateKey.from_private_bytes(SEED)).verifier_key()
    with pytest.raises(ConfigurationError, match="signature type 0x04"):
        WitnessEndpoint.parse(f"127.0.0.1:9001,{log_key},fraudhub:keyholder:1")


def test_witness_endpoint_pins_the_holders_own_ca_and_name() -> None:
    text = (
        f"127.0.0.1:9001,{KAT_VKEY},fraudhub:keyholder:1,kh1/tls/ca.pem,holder-1.fraudhub.internal"
    )
    endpoint = WitnessEndpoint.parse(text)
    assert endpoint.ca == Path("kh1/tls/ca.pem")
    assert endpoint.server_name == "holder-1.fraudhub.internal"
    with pytest.raises(ConfigurationError, match="CA_FILE"):
        WitnessEndpoint.parse(f"{text},extra")
