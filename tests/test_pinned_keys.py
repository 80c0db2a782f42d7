"""Every pinned Ed25519 key passes the one weak-key check (issue 10, finding 5).

Witness cosignature keys (``CosignatureVerifier``, the hub's ``--witness``
endpoints, ``fraudhub audit verify --witness``), the log key and DKG identity
keys go through ``client_sdk.core.pinned_keys.check_public_key`` (re-exported
as ``client_sdk.wire.auth.check_public_key``): a small-order key would make
any forged cosignature verify, so a quorum of "witnesses" could be faked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client_sdk.core.errors import ConfigurationError
from client_sdk.core.pinned_keys import check_public_key
from client_sdk.wire import auth
from client_sdk.wire.auth import generate_key, public_key_bytes
from hub.audit.checkpoint import verifier_key
from hub.audit.cosignature import COSIGNATURE_TYPE, CosignatureVerifier
from hub.cli import main
from hub.services.config import WitnessEndpoint

DATA = json.loads(
    (Path(__file__).parent / "data" / "ed25519_small_order_encodings.json").read_text()
)
SMALL_ORDER = [bytes.fromhex(h) for h in (*DATA["canonical"], *DATA["non_canonical"])]
NAME = "fraudhub/keyholder-1/witness"


def weak_witness_vkey(key: bytes) -> str:
    """A well-formed cosignature verifier key string around a weak key."""
    return verifier_key(NAME, key, COSIGNATURE_TYPE)


def test_the_sdk_and_the_core_share_one_check() -> None:
    assert auth.check_public_key is check_public_key


@pytest.mark.parametrize("key", SMALL_ORDER, ids=bytes.hex)
def test_a_weak_witness_key_is_refused(key: bytes) -> None:
    with pytest.raises(ConfigurationError, match=f"the key of {NAME}: .*weak Ed25519 key"):
        CosignatureVerifier(NAME, key)
    with pytest.raises(ConfigurationError, match="weak Ed25519 key"):
        CosignatureVerifier.from_verifier_key(weak_witness_vkey(key))


def test_an_honest_witness_key_is_accepted() -> None:
    key = public_key_bytes(generate_key())
    assert CosignatureVerifier.from_verifier_key(weak_witness_vkey(key)).public_key == key


def test_the_hub_refuses_a_witness_endpoint_with_a_weak_key() -> None:
    vkey = weak_witness_vkey(SMALL_ORDER[0])
    with pytest.raises(ConfigurationError, match="weak Ed25519 key"):
        WitnessEndpoint.parse(f"127.0.0.1:9001,{vkey},fraudhub:keyholder:1")


def test_audit_verify_refuses_a_weak_witness_key_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "reg.pem"
    auth.save_private_key(generate_key(), key)
    log_key = verifier_key("fraudhub.example/log", public_key_bytes(generate_key()))
    status = main(
        [
            "audit", "verify", "--hub", "127.0.0.1:1", "--institution", "reg-r",
            "--key", str(key), "--log-key", log_key,
            "--state", str(tmp_path / "state.json"),
            "--witness", weak_witness_vkey(SMALL_ORDER[3]),
        ]
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert "weak Ed25519 key" in err and "Traceback" not in err
