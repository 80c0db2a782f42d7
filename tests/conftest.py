"""Shared test setup: make the generated ``fraudhub.v1`` package importable.

pyproject maps the ``fraudhub`` package to ``protos/fraudhub``; the repository
is not pip-installed in development, so ``protos/`` goes on ``sys.path``.

Markers: a test that starts a gRPC server or a subprocess must be marked
``e2e`` (``make test-fast`` leaves those out); one that is not marked and
tries fails at once (:func:`_unmarked_tests_start_nothing`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

_PROTOS = str(Path(__file__).resolve().parent.parent / "protos")
if _PROTOS not in sys.path:
    sys.path.insert(0, _PROTOS)

# pysodium finds libsodium by running `ldconfig -p` when first imported; load it
# here, before the fixture below refuses subprocesses in unmarked tests.
import client_sdk.core._sodium  # noqa: E402, F401

# --- markers ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _unmarked_tests_start_nothing(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep the ``e2e`` marker honest: only marked tests start servers or subprocesses."""
    if request.node.get_closest_marker("e2e") is not None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(
            "this test starts a server or a subprocess: mark it @pytest.mark.e2e", pytrace=False
        )

    monkeypatch.setattr(grpc, "server", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


# --- databases (hub store and end-to-end tests) --------------------------------

PG_URL = os.environ.get("FRAUDHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def postgres_schema_url(prefix: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema of the shared test database.

    Other suites use the same database at the same time, so every user gets
    its own schema, dropped afterwards.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty hub database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        from hub.storage.store import sqlite_url

        yield sqlite_url(tmp_path)
        return
    with postgres_schema_url("hub_test") as url:
        yield url


# --- end-to-end: a hub and 3 key holders (2-of-3) on loopback -------------------

E2E_INSTITUTIONS = {
    "bank-a": "bank",
    "bank-b": "bank",
    "bank-c": "bank",
    "carrier-x": "carrier",
    "regulator-r": "regulator",
    "operator-o": "operator",
}


E2E_EMPTY_OVERRIDE = "format: fraudhub-policy/1\nname: e2e-override\nrules: []\n"


def _switchable_liar() -> type:
    """A key holder servicer that lies (a wrong, valid element) while ``lying`` is set."""
    from fraudhub.v1 import keyholder_pb2

    from client_sdk.core import oprf
    from hub.keyholder.server import KeyHolderServicer

    class SwitchableLiar(KeyHolderServicer):
        lying = False

        def BlindEvaluate(
            self, request: keyholder_pb2.BlindEvaluateRequest, context: object
        ) -> keyholder_pb2.BlindEvaluateResponse:
            reply = super().BlindEvaluate(request, context)  # type: ignore[arg-type]
            if type(self).lying:
                reply.evaluated_elements[0] = oprf.GENERATOR
            return reply

    return SwitchableLiar


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def e2e_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """A started ``hub.devtools.deployment.LocalDeployment`` with the E2E institutions registered.

    Key holder 1's servicer can be made to lie (``world.liar.lying = True``).
    The policy is a copy of policies/default.yaml in ``world.policy_path`` and
    an empty override in ``world.override_path``, so tests can break or narrow
    it and reload (restoring :data:`E2E_EMPTY_OVERRIDE` afterwards).  On
    PostgreSQL the hub uses a fresh schema of the shared test database.
    """
    import shutil

    from hub.devtools.deployment import LocalDeployment
    from hub.services.config import default_policy

    root = tmp_path_factory.mktemp(f"e2e-{request.param}")
    policy_path = root / "policy.yaml"
    shutil.copyfile(default_policy(), policy_path)
    override_path = root / "override.yaml"
    override_path.write_text(E2E_EMPTY_OVERRIDE)
    liar = _switchable_liar()

    @contextmanager
    def database() -> Iterator[str | None]:
        if request.param == "sqlite":
            yield None
        else:
            with postgres_schema_url("hub_e2e") as url:
                yield url

    with (
        database() as url,
        LocalDeployment(
            root / "data",
            root / "clients",
            database_url=url,
            policy_paths=(policy_path, override_path),
            servicers={1: liar},
            log_to_file=False,
            grace=0.2,
        ) as world,
    ):
        world.start()
        for institution, role in E2E_INSTITUTIONS.items():
            world.register(institution, role)
        world.policy_path = policy_path  # type: ignore[attr-defined]
        world.override_path = override_path  # type: ignore[attr-defined]
        world.liar = liar  # type: ignore[attr-defined]
        yield world


@pytest.fixture
def world(e2e_world: Any) -> Iterator[Any]:
    """The shared end-to-end deployment (tests/test_e2e*.py), left as the next test expects it."""
    from hub.devtools.deployment import LocalDeployment

    assert isinstance(e2e_world, LocalDeployment)
    yield e2e_world
    # Leave the shared deployment as the next test expects it.
    e2e_world.liar.lying = False  # type: ignore[attr-defined]
    for index in e2e_world.shares:
        if index not in e2e_world.holders:
            e2e_world.start_holder(index)
