"""Regenerate the Python code of every ``protos/fraudhub/v1/*.proto``.

Usage (from anywhere; ``make protos`` calls this)::

    python protos/generate.py            # writes next to the .proto files
    python protos/generate.py --out DIR  # writes DIR/fraudhub/v1/... instead

It runs ``grpc_tools.protoc`` with the proto root ``protos/`` and the
well-known types shipped with grpcio-tools, and writes, per ``X.proto``:
``X_pb2.py``, ``X_pb2.pyi`` and ``X_pb2_grpc.pyi`` (mypy-protobuf) and
``X_pb2_grpc.py``.  The generated imports read ``from fraudhub.v1 import
X_pb2``, which resolves with ``protos/`` on ``sys.path`` or with the
installed package (pyproject maps ``fraudhub`` to ``protos/fraudhub``), so
no import rewriting is needed.

Output is a pure function of the .proto files and the pinned tool versions:
``tests/test_protos_fresh.py`` regenerates into a temporary directory and
fails if a committed file differs.

Exit status 0 on success; protoc's status (and its message on stderr) otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_PACKAGE = Path("fraudhub") / "v1"


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """The .proto files to compile, relative to ``root``, in a stable order."""
    return sorted(p.relative_to(root) for p in (root / PROTO_PACKAGE).glob("*.proto"))


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed next to this interpreter (or on PATH).

    Raises FileNotFoundError if mypy-protobuf is not installed.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install mypy-protobuf")
    return found


def generate(out: Path, root: Path = PROTO_ROOT) -> int:
    """Compile every proto under ``root`` into ``out``; returns protoc's exit status."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # no stubs published

    out.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    files = [str(p) for p in proto_files(root)]
    if not files:
        print(f"no .proto files under {root / PROTO_PACKAGE}", file=sys.stderr)
        return 1
    args = [
        "grpc_tools.protoc",
        f"--proto_path={root}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    status: int = protoc.main(args)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=PROTO_ROOT, help="output root (default: protos/)"
    )
    args = parser.parse_args(argv)
    return generate(args.out)


if __name__ == "__main__":
    sys.exit(main())
