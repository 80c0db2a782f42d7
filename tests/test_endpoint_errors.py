"""Connection errors name the endpoint (hub, key holder N at ADDRESS) and the
client configuration field to fix, for a refused connection, a TLS failure, a
host name mismatch and an authentication refusal (``hub.cli.diagnose``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client_sdk.client.config import ClientConfig
from hub.cli import main
from hub.cli.diagnose import diagnose
from hub.devtools.deployment import LocalDeployment
from hub.wire.tls import init_tls


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    root = tmp_path_factory.mktemp("endpoints")
    with LocalDeployment(root / "data", root / "clients", grace=0.2) as deployment:
        deployment.start()
        deployment.register("bank-a", "bank")
        deployment.register("reg-r", "regulator")
        yield deployment


def _write(world: LocalDeployment, name: str, **changes: Any) -> Path:
    config = ClientConfig.load(world.client_config("reg-r"))
    path = world.client_dir / f"{name}.json"
    path.write_text(dataclasses.replace(config, **changes).dump())
    return path


@pytest.mark.e2e
def test_a_good_configuration_has_no_problem(world: LocalDeployment) -> None:
    assert diagnose(world.client_config("bank-a")) == []


@pytest.mark.e2e
def test_each_failure_names_its_endpoint_and_field(world: LocalDeployment, tmp_path: Path) -> None:
    good = ClientConfig.load(world.client_config("reg-r"))
    holder2 = good.holders[1]
    refused = (dataclasses.replace(holder2, address="127.0.0.1:1"),)
    other_ca = tmp_path / "other"
    init_tls(other_ca)
    stranger = other_ca / "tls" / "ca.pem"
    cases: dict[str, tuple[dict[str, Any], list[str]]] = {
        "hub-refused": (
            {"hub": "127.0.0.1:1"},
            ["hub at 127.0.0.1:1 (hub): connection refused: is it running? fix `hub`"],
        ),
        "holder-refused": (
            {"holders": (good.holders[0], *refused, *good.holders[2:])},
            [
                f"key holder {holder2.index} at 127.0.0.1:1 (holders[1].address): "
                "connection refused: is it running? fix `holders[1].address`"
            ],
        ),
        "wrong-ca": ({"ca": stranger}, ["hub at", "TLS failed", "fix `ca`"]),
        "holder-wrong-ca": (
            {"holders": (*good.holders[:2], dataclasses.replace(good.holders[2], ca=stranger))},
            ["(holders[2].address): TLS failed", "fix `holders[2].ca`"],
        ),
        "name-mismatch": ({"server_name": "evil.example"}, ["hub at", "fix `server_name`"]),
        "unregistered": (
            {"institution": "reg-zz"},
            ["refused `institution` 'reg-zz' (unknown institution)", "`key`"],
        ),
    }
    for name, (changes, expected) in cases.items():
        problems = diagnose(_write(world, name, **changes))
        text = "\n".join(problems)
        for fragment in expected:
            assert fragment in text, (name, text)
        if name == "unregistered":
            # Every endpoint of the file fails the same way, each named.
            assert len(problems) == 1 + len(good.holders), (name, text)
            assert "hub at " in problems[0] and "(holders[2].address)" in problems[-1]
        else:
            assert len(problems) == 1, (name, text)


@pytest.mark.e2e
def test_the_cli_prints_the_diagnosis_after_the_error(
    world: LocalDeployment, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(world, "cli-hub-refused", hub="127.0.0.1:1")
    assert main(["audit", "report", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    first, *rest = err.splitlines()
    assert first.startswith("fraudhub audit: error: ")
    assert rest == [
        f"  {config}: hub at 127.0.0.1:1 (hub): connection refused: is it running? fix `hub`"
    ]
