"""The SDK's public surface: ``client_sdk.__all__`` resolves, lazily, and nothing else does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import client_sdk


def test_every_public_name_resolves() -> None:
    for name in client_sdk.__all__:
        assert getattr(client_sdk, name) is not None, name
    assert sorted(dir(client_sdk)) == sorted(client_sdk.__all__)


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError):
        _ = client_sdk.Store


@pytest.mark.e2e
def test_importing_errors_does_not_load_grpc() -> None:
    code = "import sys, client_sdk.core.errors; print('grpc' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.strip() == "False"
