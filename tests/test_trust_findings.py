"""Issue 10, findings 1 and 2, as an operator-turned-attacker would try them.

1. Shadow institution: the hub's operator registers ``shadow-bank`` at the hub
   (and exports its registry); before ADR 0012 every key holder evaluated for
   it.  Now each holder answers PERMISSION_DENIED saying the institution is not
   admitted by that holder, and a hub export only becomes an admission when a
   holder's operator imports it.
2. One CA for everyone: before ADR 0012 a key holder's certificate was accepted
   as the hub's and the client sent it hub JWTs.  Now every party has its own
   CA and server name, the client pins each endpoint separately, and a server
   of another role fails the TLS handshake before any call metadata is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from fraudhub.v1 import keyholder_pb2, keyholder_pb2_grpc

from client_sdk.client.config import ClientConfig
from client_sdk.client.hub import HubClient
from client_sdk.client.tokenizer import HolderEndpoint, Tokenizer
from client_sdk.core import threshold
from client_sdk.core.errors import PermissionDenied, QuotaExhausted, Unavailable
from client_sdk.wire.auth import BearerAuth, keyholder_audience
from client_sdk.wire.channels import RetryPolicy, open_channel
from client_sdk.wire.status import errors_from_status
from hub.cli import main
from hub.devtools.deployment import LocalDeployment
from hub.wire.tls import HOLDER_STEM, HUB_STEM, TlsFiles, load_server_credentials, tls_files

pytestmark = pytest.mark.e2e

PHONE = "+8613987654321"
SCREENING = "sim_activation_screening"
# A failed handshake is UNAVAILABLE, which the client retries: keep the tests short.
SHORT_RETRY = RetryPolicy(deadline=1.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    root = tmp_path_factory.mktemp("trust")
    with LocalDeployment(root / "hub", root / "clients", log_to_file=False, grace=0.2) as d:
        d.start()
        d.register("bank-a", "bank")
        d.register("carrier-x", "carrier")
        yield d


def _evaluate(world: LocalDeployment, index: int, institution: str, elements: int = 1) -> Any:
    auth = BearerAuth(world.keys[institution], keyholder_audience(index))
    address = f"127.0.0.1:{world.holder_ports[index]}"
    channel = open_channel(address, world.holder_security(index), auth)
    try:
        batch = threshold.blind_batch([b"x%d" % i for i in range(elements)])
        return keyholder_pb2_grpc.KeyHolderStub(channel).BlindEvaluate(
            keyholder_pb2.BlindEvaluateRequest(epoch=1, blinded_elements=batch.blinded_elements),
            timeout=10,
        )
    finally:
        channel.close()


def _refusal(world: LocalDeployment, index: int, institution: str, elements: int = 1) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        _evaluate(world, index, institution, elements)
    return info.value


# --- finding 1: shadow institution -------------------------------------------------------


def test_an_institution_registered_only_at_the_hub_is_refused_by_every_holder(
    world: LocalDeployment,
) -> None:
    world.register("shadow-bank", "bank", admitted_by=())
    for index in world.holder_ports:
        error = _refusal(world, index, "shadow-bank")
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"'shadow-bank' is not admitted by key holder holder-{index}" in error.details()
    # The banks' rows stay out of reach: shadow-bank cannot make the token to ask by.
    with pytest.raises(PermissionDenied, match="not admitted"):
        world.client("shadow-bank").match([("phone", PHONE)], purpose=SCREENING)


def test_fewer_than_t_holders_admitting_is_not_enough(world: LocalDeployment) -> None:
    world.register("half-bank", "bank", admitted_by=(1,))
    _evaluate(world, 1, "half-bank")  # holder 1's operator admitted it
    with pytest.raises(PermissionDenied, match="not admitted"):
        world.client("half-bank").match([("phone", PHONE)], purpose=SCREENING)


def test_the_hubs_export_is_only_a_proposal(
    world: LocalDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world.register("proposed-bank", "bank", admitted_by=())
    export = tmp_path / "export.json"
    hub = ["institution", "export", "--data-dir", str(world.data_dir), "--out", str(export)]
    assert main(hub) == 0
    holder_dir = world.holder_dirs[2]
    review = ["keyholder", "institution", "import-proposal", "--state-dir", str(holder_dir)]
    assert main([*review, str(export)]) == 0  # shown, not admitted
    assert _refusal(world, 2, "proposed-bank").code() == grpc.StatusCode.PERMISSION_DENIED
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("proposal finger")]
    assert main([*review, str(export), "--yes", "--reviewed", line.split()[-1]]) == 0
    _evaluate(world, 2, "proposed-bank")
    assert _refusal(world, 3, "proposed-bank").code() == grpc.StatusCode.PERMISSION_DENIED


def test_each_holder_disables_and_sets_quotas_itself(world: LocalDeployment) -> None:
    holder_dir = str(world.holder_dirs[3])
    quota = ["keyholder", "institution", "quota", "--state-dir", holder_dir]
    assert main([*quota, "--id", "carrier-x", "--daily-quota", "2"]) == 0
    _evaluate(world, 3, "carrier-x", 2)
    error = errors_from_status(_refusal(world, 3, "carrier-x"))
    assert isinstance(error, QuotaExhausted) and "of 2 elements" in str(error)
    _evaluate(world, 2, "carrier-x", 2)  # another holder, its own quota
    admission = ["keyholder", "institution"]
    target = ["--state-dir", holder_dir, "--id", "bank-a"]
    assert main([*admission, "disable", *target]) == 0
    try:
        error = _refusal(world, 3, "bank-a")
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "disabled" in error.details()
        _evaluate(world, 1, "bank-a")  # the other holders decide for themselves
    finally:
        assert main([*admission, "enable", *target]) == 0
    _evaluate(world, 3, "bank-a")


# --- finding 2: one CA for everyone ------------------------------------------------------


class _Recorder(grpc.ServerInterceptor):
    """Records the metadata of every call that reaches the impostor."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, Any]] = []

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        self.metadata.append(dict(details.invocation_metadata or ()))
        return None


class _Impostor:
    """A server presenting another party's certificate and key."""

    def __init__(self, files: TlsFiles) -> None:
        self.recorder = _Recorder()
        self.server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[self.recorder])
        port = self.server.add_secure_port("127.0.0.1:0", load_server_credentials(files))
        self.address = f"127.0.0.1:{port}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(None)


@pytest.fixture
def holder_as_hub(world: LocalDeployment) -> Iterator[_Impostor]:
    impostor = _Impostor(tls_files(world.holder_dirs[1], HOLDER_STEM))
    yield impostor
    impostor.close()


def test_a_holder_posing_as_the_hub_gets_no_jwt(
    world: LocalDeployment, holder_as_hub: _Impostor
) -> None:
    client = HubClient.connect(
        holder_as_hub.address, world.holder_endpoints(), world.public, world.keys["bank-a"],
        world.security, retry=SHORT_RETRY,
    )  # fmt: skip
    with client, pytest.raises(Unavailable):
        client.revoke([("phone", PHONE)], reason="false_positive")
    assert holder_as_hub.recorder.metadata == []


def test_a_client_configuration_pins_the_hub_apart_from_the_holders(
    world: LocalDeployment, holder_as_hub: _Impostor
) -> None:
    path = world.client_config("bank-a")
    data = json.loads(path.read_text())
    assert len({h["ca"] for h in data["holders"]} | {data["ca"]}) == 4  # four parties
    data["hub"] = holder_as_hub.address  # a relay pointing the bank at holder 1
    path.write_text(json.dumps(data))
    config = ClientConfig.load(path)
    with HubClient.from_config(config, retry=SHORT_RETRY) as client, pytest.raises(Unavailable):
        client.revoke([("phone", PHONE)], reason="false_positive")
    assert holder_as_hub.recorder.metadata == []


@pytest.mark.parametrize("party", ["hub", "holder-2"])
def test_another_party_posing_as_holder_1_gets_no_jwt(world: LocalDeployment, party: str) -> None:
    files = (
        tls_files(world.data_dir, HUB_STEM)
        if party == "hub"
        else tls_files(world.holder_dirs[2], HOLDER_STEM)
    )
    impostor = _Impostor(files)
    try:
        endpoints = [
            HolderEndpoint(1, impostor.address, security=world.holder_security(1)),
            *world.holder_endpoints()[1:],
        ]
        with Tokenizer(
            endpoints, world.public, world.keys["bank-a"], fanout=3, timeout=5
        ) as tokenizer:
            keys = tokenizer.tokenize([("phone", "8613987654321")])  # holders 2 and 3 suffice
            assert len(keys) == 1
    finally:
        impostor.close()
    assert impostor.recorder.metadata == []


def test_the_hubs_directory_holds_no_key_of_a_holder(world: LocalDeployment) -> None:
    keys = sorted(str(p.relative_to(world.data_dir)) for p in world.data_dir.rglob("*.key"))
    assert keys == ["tls/hub.key"]
    assert not list(world.data_dir.rglob("share-*")) and not list(world.data_dir.rglob("ca.key"))
    for directory in world.holder_dirs.values():
        assert not directory.is_relative_to(world.data_dir)
        assert (directory.stat().st_mode & 0o777) == 0o700
        assert (tls_files(directory, HOLDER_STEM).key.stat().st_mode & 0o777) == 0o600
