"""Run a DKG or a refresh on one machine with every holder in its own process.

For tests and the demo: each participant's rounds run as separate
``python -m hub.keyholder.dkg_cli dkg|refresh ...`` subprocesses (the
``fraudhub keys dkg|refresh`` commands without the hub's other command groups) against that
participant's state dir, so no process ever sees more than one holder's
secrets.  All participants run a round in parallel, one round at a time, as
the operators of separate holders would.

Raises ConfigurationError with the failing participant's own error line if
any subprocess fails or a round takes longer than two minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from client_sdk.core.errors import ConfigurationError
from hub.keyholder.dkg_files import ROUNDS, STATE_NAME

__all__ = ["Participant", "RunStats", "run_dkg_locally", "run_refresh_locally"]

_ROUND_TIMEOUT = 120.0


@dataclass(frozen=True)
class Participant:
    """One participant of a refresh: state dir, new index (None: leaves), old share."""

    state_dir: Path
    index: int | None
    old_share: Path | None = None


@dataclass(frozen=True)
class RunStats:
    """Wall time of the whole run, CPU seconds (user + system) per participant,
    and the session fingerprint every participant printed (operators compare it).
    """

    wall_seconds: float
    cpu_seconds: dict[str, float]
    session_fingerprint: str = ""


def _wait(pid: int, deadline: float) -> tuple[int, float]:
    """Reap ``pid`` (exit status, CPU seconds); kill it at ``deadline``."""
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            _, status, usage = os.wait4(pid, 0)
            return -9, usage.ru_utime + usage.ru_stime
        time.sleep(0.005)


def _run_parallel(commands: dict[str, list[str]], cpu: dict[str, float]) -> None:
    """Run one round: every participant's command at once; add each one's CPU time."""
    with tempfile.TemporaryDirectory(prefix="fraudhub-dkg-") as tmp:
        started = {}
        for name, argv in commands.items():
            err = open(Path(tmp) / name, "w")  # noqa: SIM115 - closed right after spawn
            with err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "hub.keyholder.dkg_cli", *argv[1:]],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            started[name] = proc
        deadline = time.monotonic() + _ROUND_TIMEOUT
        failures = []
        for name, proc in started.items():
            code, seconds = _wait(proc.pid, deadline)
            proc.returncode = code  # reaped by os.wait4, not by Popen
            cpu[name] = cpu.get(name, 0.0) + seconds
            if code != 0:
                lines = (Path(tmp) / name).read_text().strip().splitlines()
                failures.append(f"{name}: {lines[-1] if lines else f'exit status {code}'}")
        if failures:
            raise ConfigurationError("; ".join(failures))


def _all_rounds(
    command: str,
    states: dict[str, Path],
    exchange: Path,
    threshold: int,
    holders: int,
    epoch: int,
) -> dict[str, float]:
    cpu: dict[str, float] = {}
    for round_name in ROUNDS:
        argv = {
            name: [
                *("keys", command, "round", round_name),
                *("--state-dir", str(state), "--exchange", str(exchange)),
                *("-t", str(threshold), "-n", str(holders), "--epoch", str(epoch)),
            ]
            for name, state in states.items()
        }
        _run_parallel(argv, cpu)
    return cpu


def run_dkg_locally(
    state_dirs: Sequence[Path], threshold: int, holders: int, exchange: Path, *, epoch: int = 1
) -> RunStats:
    """DKG among ``holders`` processes; holder ``i`` (1-based) uses ``state_dirs[i-1]``.

    Each state dir ends with ``share-<i>.json`` and ``public.json``.
    """
    if len(state_dirs) != holders:
        raise ConfigurationError(f"need {holders} state dirs, got {len(state_dirs)}")
    start = time.monotonic()
    states = {f"holder-{i}": Path(d) for i, d in enumerate(state_dirs, start=1)}
    cpu: dict[str, float] = {}
    _run_parallel(
        {
            name: [
                *("keys", "dkg", "init", "--name", name, "--index", name.split("-")[1]),
                *("--state-dir", str(state), "--exchange", str(exchange)),
            ]
            for name, state in states.items()
        },
        cpu,
    )
    for name, seconds in _all_rounds("dkg", states, exchange, threshold, holders, epoch).items():
        cpu[name] += seconds
    return RunStats(time.monotonic() - start, cpu, _agreed_fingerprint(states.values()))


def run_refresh_locally(
    participants: Sequence[Participant],
    threshold: int,
    holders: int,
    old_public: Path,
    exchange: Path,
) -> RunStats:
    """Refresh or re-share the key of ``old_public`` to ``threshold``-of-``holders``.

    Every participant with a new index ends with a new ``share-<index>.json``
    and ``public.json`` in its state dir; the key (and every token) is the same.
    """
    start = time.monotonic()
    states: dict[str, Path] = {}
    init: dict[str, list[str]] = {}
    for n, p in enumerate(participants, start=1):
        name = f"participant-{n}"
        states[name] = p.state_dir
        argv = ["keys", "refresh", "init", "--name", name, "--old-public", str(old_public)]
        argv += ["--state-dir", str(p.state_dir), "--exchange", str(exchange)]
        if p.index is not None:
            argv += ["--index", str(p.index)]
        if p.old_share is not None:
            argv += ["--old-share", str(p.old_share)]
        init[name] = argv
    cpu: dict[str, float] = {}
    _run_parallel(init, cpu)
    for name, seconds in _all_rounds("refresh", states, exchange, threshold, holders, 1).items():
        cpu[name] += seconds
    return RunStats(time.monotonic() - start, cpu, _agreed_fingerprint(states.values()))


def _agreed_fingerprint(state_dirs: Iterable[Path]) -> str:
    """The session fingerprint all participants ran under; ConfigurationError if they differ."""
    seen = {_session_fingerprint(d) for d in state_dirs}
    if len(seen) != 1:
        raise ConfigurationError(f"participants ran different sessions: {sorted(seen)}")
    return seen.pop()


def _session_fingerprint(state_dir: Path) -> str:
    """What ``round`` prints as the session: the start of the session id in the state."""
    try:
        state = json.loads((state_dir / STATE_NAME).read_text())
        return str(state["session_id"])[:16]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigurationError(f"{state_dir} has no DKG session") from None
