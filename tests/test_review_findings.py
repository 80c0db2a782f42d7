"""Findings of the adversarial review of the trust model (branch review-fixes).

Each test reproduces one way a single party could still act alone against
docs/TRUST.md, and failed before its fix:

- R1: a witness verifier key that is a small-order Ed25519 point was pinned,
  so anyone (the hub's operator) could forge that witness's cosignature on a
  rewritten log;
- R2: one witness pinned twice (or one key under two names) counted twice
  toward the regulator's quorum;
- R3: :meth:`HubClient.connect` used the hub's TLS pin for a key holder that
  had none of its own, so the hub (or whoever held the hub's key) could pose
  as that holder and collect the institution's holder JWTs, each good for one
  evaluation of elements of its own choosing at the real holder;
- R4 (in test_admission.py): ``import-proposal --yes`` admitted whatever the
  hub's export said at that moment, not what the holder's operator reviewed;
- R5: a DKG participant re-signing its complaint after the dealers answered
  got an honest dealer disqualified and named as the cheat;
- R6: a quota cut written within one coarse file-time tick, at the same file
  size, never reached the running holder;
- R7: ``keyholder serve --audience fraudhub:hub`` (or another holder's)
  made every token sent to that server good at this holder too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fraudhub.v1 import keyholder_pb2, keyholder_pb2_grpc

from client_sdk.client.hub import HubClient
from client_sdk.client.tokenizer import HolderEndpoint
from client_sdk.core import threshold
from client_sdk.core.errors import ConfigurationError
from client_sdk.core.threshold import deal
from client_sdk.wire.auth import (
    BearerAuth,
    InstitutionKey,
    generate_key,
    keyholder_audience,
    load_private_key,
    public_key_bytes,
)
from client_sdk.wire.channels import HUB_SERVER_NAME, ChannelSecurity, open_channel
from hub.audit.checkpoint import Checkpoint, LogSigner, NoteSignature, verifier_key
from hub.audit.cosignature import (
    COSIGNATURE_TYPE,
    CosignatureVerifier,
    Cosigner,
    check_quorum,
    with_cosignatures,
)
from hub.cli import main
from hub.devtools.deployment import WITNESS_CLIENT, WITNESS_CLIENT_KEY, LocalDeployment
from hub.keyholder import dkg_files
from hub.keyholder.admission import REGISTRY_FILENAME, HolderRegistry, admit, set_quota
from hub.keyholder.dkg_files import init_participant, run_round
from hub.wire.auth import Institution
from hub.wire.tls import HUB_STEM, init_tls, tls_files

ORIGIN = "fraudhub.test/audit"
#: The identity point: a small-order Ed25519 key (RFC 8032 cofactorless checks
#: accept ``01 00..00 || 00..00`` as its signature of every message).
WEAK_KEY = bytes([1]) + bytes(31)


def _note(size: int = 7) -> str:
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    return signer.sign_checkpoint(Checkpoint(ORIGIN, size, b"\x11" * 32))


# --- R1 -------------------------------------------------------------------------


def test_r1_a_weak_witness_key_is_refused_so_nobody_forges_its_cosignature() -> None:
    vkey = verifier_key("fraudhub/keyholder-9/witness", WEAK_KEY, COSIGNATURE_TYPE)
    with pytest.raises(ConfigurationError, match="weak Ed25519 key"):
        CosignatureVerifier.from_verifier_key(vkey)
    with pytest.raises(ConfigurationError, match="weak Ed25519 key"):
        CosignatureVerifier("fraudhub/keyholder-9/witness", WEAK_KEY)


def test_r1_the_forgery_it_allowed_is_refused_where_the_key_is_pinned() -> None:
    # Before the fix a regulator pinning this key counted the forged line:
    # ``01 00..00 || 00..00`` "verifies" under the identity key for every body.
    name = "fraudhub/keyholder-9/witness"
    vkey = verifier_key(name, WEAK_KEY, COSIGNATURE_TYPE)
    forged = NoteSignature(
        name,
        bytes.fromhex(vkey.split("+")[1]),
        (1_700_000_000).to_bytes(8, "big") + WEAK_KEY + bytes(32),
    )
    served = with_cosignatures(_note(), [forged])
    assert forged.line() in served
    with pytest.raises(ConfigurationError, match="weak Ed25519 key"):
        check_quorum(served, [CosignatureVerifier.from_verifier_key(vkey)], 1)


# --- R2 -------------------------------------------------------------------------


def test_r2_one_witness_pinned_twice_is_refused() -> None:
    witness = Cosigner("w1.test", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
    note = _note()
    body = note.split("\n\n", 1)[0] + "\n"
    served = with_cosignatures(note, [witness.cosign(body, 5)])
    twice = [CosignatureVerifier.from_verifier_key(witness.verifier_key())] * 2
    with pytest.raises(ConfigurationError, match="pinned more than once"):
        check_quorum(served, twice, 2)
    # The same key under a second name is the same witness too.
    renamed = Cosigner("w1-again.test", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
    served = with_cosignatures(served, [renamed.cosign(body, 5)])
    pinned = [
        CosignatureVerifier.from_verifier_key(witness.verifier_key()),
        CosignatureVerifier.from_verifier_key(renamed.verifier_key()),
    ]
    with pytest.raises(ConfigurationError, match="pinned more than once"):
        check_quorum(served, pinned, 2)


# --- R3 -------------------------------------------------------------------------


def test_r3_a_holder_without_its_own_pin_never_gets_the_hubs() -> None:
    # Since review-2 (S3) an endpoint cannot even be built without its own pin,
    # so neither HubClient.connect nor a Tokenizer on its own has one to borrow.
    with pytest.raises(TypeError, match="security"):
        HolderEndpoint(1, "127.0.0.1:7501")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="key holder 1 has no TLS pin of its own"):
        HolderEndpoint(1, "127.0.0.1:7501", security=None)  # type: ignore[arg-type]


def test_r3_a_holder_pinned_with_the_hubs_ca_is_refused(tmp_path: Path) -> None:
    init_tls(tmp_path / "hub")
    ca = str(tls_files(tmp_path / "hub", HUB_STEM).ca)
    hub_pin = ChannelSecurity.from_ca_file(ca, HUB_SERVER_NAME)
    _, public = deal(2, 3, seed=bytes(range(32)))
    key = InstitutionKey("bank-a", generate_key())
    # The hub's operator made its certificate also valid for holder-1's name
    # (`fraudhub init --host holder-1.fraudhub.internal`) and handed out its CA
    # as holder 1's.
    holders = [
        HolderEndpoint(
            i, f"127.0.0.1:{7500 + i}", security=ChannelSecurity.from_ca_file(ca, f"holder-{i}")
        )
        for i in (1, 2, 3)
    ]
    with pytest.raises(ConfigurationError, match="same CA certificate"):
        HubClient.connect("127.0.0.1:7400", holders, public, key, hub_pin)


# --- R5 -------------------------------------------------------------------------


def _dkg(tmp_path: Path, n: int = 3) -> tuple[list[Path], Path]:
    states = [tmp_path / f"h{i}" for i in range(1, n + 1)]
    exchange = tmp_path / "exchange"
    for i, state in enumerate(states, start=1):
        init_participant(state, exchange, f"holder-{i}", index=i)
    return states, exchange


def _rounds(states: list[Path], exchange: Path, *names: str) -> None:
    for name in names:
        for state in states:
            run_round(name, state, exchange, threshold=2, holders=len(states))


def _rewrite_complaints(state: Path, exchange: Path, complaints: list[int]) -> None:
    """Holder 3's operator re-signs its complain file after others read it."""
    ctx = dkg_files._context(state, exchange)
    body = json.loads((exchange / f"complain-{ctx.me.name}.json").read_text())["body"]
    payload = {k: v for k, v in body.items() if k not in ("session", "round", "from")}
    ctx.sign_and_write("complain", {**payload, "complaints": complaints})


def test_r5_a_late_complaint_cannot_disqualify_an_honest_dealer(tmp_path: Path) -> None:
    # Holder 3 complains about nobody, lets the dealers answer (holder 1 has
    # nothing to answer), then re-signs its complaint naming holder 1: before
    # the fix every participant disqualified holder 1, an honest dealer, for
    # "not answering" (it is named as the cheat; holder 3 shaped the key).
    states, exchange = _dkg(tmp_path)
    _rounds(states, exchange, "deal", "complain", "answer")
    _rewrite_complaints(states[2], exchange, [1])
    for state in states[:2]:
        with pytest.raises(ConfigurationError, match=r"complain-holder-3\.json.*two versions"):
            run_round("commit", state, exchange)


def test_r5_participants_who_read_different_versions_find_out(tmp_path: Path) -> None:
    # The rewrite lands between holder 1's answer and holder 2's: each has read
    # one version only, so only holder 1's signed account of what it read
    # tells holder 2 that the views differ.
    states, exchange = _dkg(tmp_path)
    _rounds(states, exchange, "deal", "complain")
    run_round("answer", states[0], exchange)
    _rewrite_complaints(states[2], exchange, [1])
    for state in states[1:]:
        run_round("answer", state, exchange)
    with pytest.raises(ConfigurationError, match=r"complain-holder-3\.json.*holder-1"):
        run_round("commit", states[1], exchange)


# --- R6 -------------------------------------------------------------------------


def test_r6_a_quota_cut_takes_effect_even_within_one_timestamp_tick(tmp_path: Path) -> None:
    # File systems stamp modification times coarsely (a few ms on Linux, 1-2 s
    # on FAT or some network file systems): a quota cut written in the same
    # tick as the admission, with a number of the same width, left the file's
    # (mtime, size) unchanged and the running holder kept the old quota.
    state = tmp_path / "holder"
    bank = Institution("bank-a", "Bank A", "bank", public_key_bytes(generate_key()))
    admit(state, bank, daily_quota=5_000_000)
    registry = HolderRegistry(state, "holder-1.fraudhub.internal")
    assert registry.daily_quota("bank-a") == 5_000_000
    path = state / REGISTRY_FILENAME
    before = os.stat(path)
    set_quota(state, "bank-a", 1_000_000)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same tick
    assert os.stat(path).st_size == before.st_size
    assert registry.daily_quota("bank-a") == 1_000_000


# --- R7 -------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("audience", ["fraudhub:hub", "fraudhub:keyholder:2"])
def test_r7_a_holder_never_serves_another_servers_audience(tmp_path: Path, audience: str) -> None:
    # With `--audience fraudhub:hub` every JWT a bank sends the hub would be
    # good once at this holder: the hub's operator could replay them to
    # evaluate values of its choosing on the bank's account.
    state = tmp_path / "state"
    assert main(["keyholder", "init", "--state-dir", str(state), "--name", "holder-1"]) == 0
    shares, public = deal(1, 1)
    share_path, public_path = tmp_path / "share-1.json", tmp_path / "public.json"
    share_path.write_text(shares[0].to_json())
    share_path.chmod(0o600)
    public_path.write_text(public.to_json())
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "protos")])}
    command = [sys.executable, "-m", "hub.cli", "keyholder", "serve", "--listen", "127.0.0.1:0"]
    command += ["--share", str(share_path), "--public", str(public_path), "--state-dir", str(state)]
    command += ["--audience", audience]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=repo
    )
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the holder served audience {audience!r}")
    assert process.returncode == 2
    assert "is not this key holder's audience" in err


# --- guard: the hub's witness client is no evaluator --------------------------------


@pytest.mark.e2e
def test_the_hubs_witness_client_admitted_everywhere_cannot_evaluate(tmp_path: Path) -> None:
    # Every holder admits the hub's operator (role operator) so that the hub can
    # ask it to cosign; that admission must not give the hub evaluations.
    with LocalDeployment(tmp_path / "hub", tmp_path / "clients", log_to_file=False) as world:
        world.start()
        key = InstitutionKey(WITNESS_CLIENT, load_private_key(world.data_dir / WITNESS_CLIENT_KEY))
        for index, port in world.holder_ports.items():
            auth = BearerAuth(key, keyholder_audience(index))
            channel = open_channel(f"127.0.0.1:{port}", world.holder_security(index), auth)
            try:
                batch = threshold.blind_batch([b"+8613987654321"])
                with pytest.raises(grpc.RpcError) as info:
                    keyholder_pb2_grpc.KeyHolderStub(channel).BlindEvaluate(
                        keyholder_pb2.BlindEvaluateRequest(
                            epoch=world.public.epoch, blinded_elements=batch.blinded_elements
                        ),
                        timeout=10,
                    )
            finally:
                channel.close()
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "role operator may not call" in (info.value.details() or "")
