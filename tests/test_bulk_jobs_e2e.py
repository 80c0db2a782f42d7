"""Bulk jobs against a real hub and key holders (issue 13, client side).

A refused query is a ``refused`` row and exit status 3, never a clean "no
match"; CSV rows the reader cannot use are row errors while every valid row
is screened; SIGINT of a real ``fraudhub match`` process stops it with "N of
M rows done" and ``--resume`` completes it without a row sent twice (the
hub's quota counter is the witness); a hub and key holder restart within the
retry deadline is invisible to the caller.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from client_sdk.client.csvrows import MAX_FIELD
from client_sdk.client.results import MatchResult
from hub.devtools.deployment import LocalDeployment
from hub.services.server import HubServer
from hub.storage.models import QuotaUsage

pytestmark = pytest.mark.e2e

SIM = "sim_activation_screening"
REPORT = "fraud_reporting"
BUCKET = "match/sim_activation_screening/context_dependent"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(e2e_world: Any) -> Iterator[LocalDeployment]:
    assert isinstance(e2e_world, LocalDeployment)
    yield e2e_world


def phone(n: int) -> str:
    return f"+86 139 {n // 10000:04d} {n % 10000:04d}"


def quota_used(world: LocalDeployment) -> int:
    """Queries the hub answered for carrier-x's SIM screening (each is counted once)."""
    with world.hub.store.session() as session:
        rows = session.exec(
            select(QuotaUsage).where(
                QuotaUsage.institution == "carrier-x", QuotaUsage.bucket == BUCKET
            )
        ).all()
    return sum(r.used for r in rows)


def data_rows(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[1:]


def test_a_refused_run_says_refused_and_exits_3(
    world: LocalDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    queries = tmp_path / "q.csv"
    queries.write_text("ref,kind,value\n" + "".join(f"r{i},phone,{phone(i)}\n" for i in range(10)))
    out = tmp_path / "out.csv"
    config = world.client_config("carrier-x")
    status = main(["match", str(queries), "--config", str(config), "--no-progress",
                   "--purpose", "nonsense", "--out", str(out)])  # fmt: skip
    assert status == 3
    rows = data_rows(out)
    assert len(rows) == 10
    assert all(r.split(",")[2:4] == ["refused", "DENY_UNKNOWN_PURPOSE"] for r in rows)
    err = capsys.readouterr().err
    assert "10 rows: 10 refused" in err and "row 1 (phone): refused (DENY_UNKNOWN_PURPOSE)" in err


def test_exported_csv_rows_that_cannot_be_read_are_row_errors(
    world: LocalDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    world.client("bank-a").contribute_csv(
        _write(tmp_path / "c.csv", f"kind,value,category\nphone,{phone(7001)},scam_phone\n"),
        purpose=REPORT,
        progress=False,
    )
    queries = tmp_path / "q.csv"
    queries.write_bytes(
        "\ufeffref,kind,value\n".encode()  # Excel's UTF-8 BOM
        + f"a,phone,{phone(7001)}\n".encode()
        + "b,phone,\u5f20\u4e09\n".encode("gbk")
        + f"c,phone,{phone(7002)},extra\n".encode()
        + f"d,phone,{'1' * (MAX_FIELD + 1)}\n".encode()
        + f"e,phone,{phone(7003)}\n".encode()
    )
    out = tmp_path / "out.csv"
    before = quota_used(world)
    config = world.client_config("carrier-x")
    status = main(["match", str(queries), "--config", str(config), "--no-progress",
                   "--purpose", SIM, "--out", str(out)])  # fmt: skip
    assert status == 3
    statuses = [(r.split(",")[0], r.split(",")[2]) for r in data_rows(out)]
    assert statuses == [("a", "match"), ("", "error"), ("", "error"), ("", "error"),
                        ("e", "no_match")]  # fmt: skip
    assert quota_used(world) - before == 2  # only the valid rows reached the hub
    err = capsys.readouterr().err
    assert "row 2 (unknown): not valid utf-8" in err
    assert "row 3 (unknown): 4 columns where the header has 3" in err
    assert "7002" not in err and "7002" not in out.read_text()
    assert "5 rows: 3 error, 1 match, 1 no_match" in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_sigint_stops_with_rows_done_and_resume_sends_no_row_twice(
    world: LocalDeployment, tmp_path: Path
) -> None:
    from hub.cli import main

    total = 240
    queries = _write(
        tmp_path / "q.csv",
        "ref,kind,value\n" + "".join(f"r{i},phone,{phone(20000 + i)}\n" for i in range(total)),
    )
    out = tmp_path / "out.csv"
    journal = tmp_path / "out.csv.journal"
    config = world.client_config("carrier-x")
    before = quota_used(world)
    command = ["match", str(queries), "--config", str(config), "--purpose", SIM,
               "--out", str(out), "--window", "3", "--no-progress"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", *command],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group, as in a terminal
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if journal.exists() and len(journal.read_text().splitlines()) > 6:
                break
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    done_line = next(line for line in err.splitlines() if "rows done" in line)
    done = int(done_line.split("fraudhub match: ")[1].split(" of ")[0])
    assert f"of {total} rows done (interrupted); rerun with --resume" in done_line
    assert 6 <= done < total
    assert len(journal.read_text().splitlines()) == 1 + done  # every answered row journaled
    assert quota_used(world) - before == done  # and nothing answered was left out
    assert main([*command, "--resume"]) == 0
    assert [r.split(",")[0] for r in data_rows(out)] == [f"r{i}" for i in range(total)]
    assert quota_used(world) - before == total  # no row sent twice
    assert not journal.exists()


def test_hub_and_key_holder_restart_within_the_deadline_is_invisible(tmp_path: Path) -> None:
    with LocalDeployment(
        tmp_path / "data", tmp_path / "clients", log_to_file=False, grace=0.2, witnesses=False
    ) as world:
        world.start()
        world.register("bank-a", "bank")
        world.register("bank-b", "bank")
        world.register("carrier-x", "carrier")
        for bank in ("bank-a", "bank-b"):
            world.client(bank).contribute_csv(
                _write(
                    tmp_path / f"{bank}.csv", f"kind,value,category\nphone,{phone(1)},scam_phone\n"
                ),
                purpose=REPORT,
                progress=False,
            )
        carrier = world.client("carrier-x")
        carrier.match([("phone", phone(2))], purpose=SIM)  # connected before the outage
        port = world.hub.port
        world.hub.stop(0.2)
        world.stop_holder(1)
        world.stop_holder(2)  # 1 of the 2 holders needed is left
        results: list[Any] = []
        started = time.monotonic()
        screening = threading.Thread(
            target=lambda: results.append(
                carrier.match([("phone", phone(1)), ("phone", phone(3))], purpose=SIM)
            )
        )
        screening.start()
        time.sleep(5)
        world.start_holder(1)
        world.start_holder(2)
        world.hub = HubServer(dataclasses.replace(world.hub.config, listen=f"127.0.0.1:{port}"))
        world.hub.start()
        screening.join(timeout=30)
        elapsed = time.monotonic() - started
    [answer] = results
    assert [type(r) for r in answer] == [MatchResult, MatchResult]
    assert [(r.matched, r.contributors) for r in answer] == [(True, 2), (False, 0)]
    assert 5 <= elapsed < 30


def test_crypto_workers_leave_ctrl_c_to_the_job(world: LocalDeployment) -> None:
    """A terminal's Ctrl-C reaches the tokenizer's worker processes too; they must
    survive it, or the job's graceful stop dies with BrokenProcessPool."""
    from client_sdk.client.tokenizer import Tokenizer

    with Tokenizer(
        world.holder_endpoints(),
        world.public,
        world.keys["carrier-x"],
        processes=2,
        parallel_min_items=4,
        max_batch=4,
    ) as tokenizer:
        pairs = [("phone", f"+861390000{i:04d}") for i in range(16)]
        first = tokenizer.tokenize(pairs)
        workers = list(tokenizer._worker_pool()._processes)
        assert workers
        deadline = time.monotonic() + 20
        while not all(_ignores_sigint(pid) for pid in workers):  # started up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert tokenizer.tokenize(pairs) == first


def test_contribute_reads_stdin(
    world: LocalDeployment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from hub.cli import main

    rows = "".join(f"phone,{phone(9000 + i)},scam_phone\n" for i in range(3))
    stdin = io.TextIOWrapper(io.BytesIO(("kind,value,category\n" + rows).encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    out = tmp_path / "stored.csv"
    config = world.client_config("bank-a")
    status = main(["contribute", "-", "--config", str(config), "--purpose", REPORT,
                   "--no-progress", "--out", str(out)])  # fmt: skip
    assert status == 0
    captured = capsys.readouterr()
    assert "3 of 3 rows stored" in captured.out and "3 rows: 3 stored" in captured.err
    assert [r.split(",")[2] for r in data_rows(out)] == ["stored"] * 3


def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGINT (Linux: the SigIgn mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False
