"""The committed generated code matches the .proto files.

Regenerates every ``protos/fraudhub/v1/*.proto`` into a temporary directory
with ``protos/generate.py`` and compares byte for byte, so a .proto edited
without ``make protos`` fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "protos" / "fraudhub" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _generated(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.name.endswith(GENERATED_SUFFIXES)
    }


@pytest.mark.e2e
def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "protos" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = _generated(tmp_path / "fraudhub" / "v1")
    committed = _generated(PACKAGE)
    protos = sorted(p.stem for p in PACKAGE.glob("*.proto"))
    assert protos, "no .proto files found"
    assert sorted(fresh) == sorted(
        f"{stem}{suffix}" for stem in protos for suffix in GENERATED_SUFFIXES
    )
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    assert not stale, f"regenerate with `python protos/generate.py`: {stale}"


def test_generated_modules_import_as_fraudhub_v1() -> None:
    from fraudhub.v1 import exchange_pb2, keyholder_pb2_grpc

    request = exchange_pb2.MatchRequest(purpose="payee_screening")
    request.queries.add(token=bytes(32), kind="phone", key_epoch=1)
    assert exchange_pb2.MatchRequest.FromString(request.SerializeToString()) == request
    assert keyholder_pb2_grpc.KeyHolderStub.__name__ == "KeyHolderStub"
