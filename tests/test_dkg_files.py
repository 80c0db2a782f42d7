"""The signed-file DKG transport in one process (the rounds of several holders in turn).

A cheating holder is played by rewriting its own exchange files and signing
them with its own identity key, as a malicious operator could.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client_sdk.core import _sodium as sodium
from client_sdk.core.envelope import seal_envelope
from client_sdk.core.errors import ConfigurationError, DkgError
from hub.keyholder import dkg_files
from hub.keyholder.dkg_files import ROUNDS, init_participant, run_round
from hub.keyholder.keyfiles import load_public, load_share


def setup(tmp_path: Path, n: int) -> tuple[list[Path], Path]:
    states = [tmp_path / f"h{i}" for i in range(1, n + 1)]
    exchange = tmp_path / "exchange"
    for i, state in enumerate(states, start=1):
        init_participant(state, exchange, f"holder-{i}", index=i)
    return states, exchange


def run(states: list[Path], exchange: Path, rounds: tuple[str, ...], t: int) -> dict[int, str]:
    disqualified: dict[int, str] = {}
    for name in rounds:
        for state in states:
            result = run_round(name, state, exchange, threshold=t, holders=len(states))
            disqualified.update(result.disqualified)
    return disqualified


def resign(state: Path, exchange: Path, round_name: str, edit: dict[str, object]) -> None:
    """The participant of ``state`` rewrites its own file for ``round_name``."""
    ctx = dkg_files._context(state, exchange)
    body = json.loads((exchange / f"{round_name}-{ctx.me.name}.json").read_text())["body"]
    body.update(edit)
    for key in ("session", "round", "from"):
        body.pop(key)
    ctx.sign_and_write(round_name, body)


def bad_share_for(state: Path, exchange: Path, recipient: int) -> str:
    ctx = dkg_files._context(state, exchange)
    s, s_blind = dkg_files._dealing(ctx).share_for(recipient)
    s = sodium.scalar_add(s, sodium.scalar_from_int(1))
    key = ctx.by_recipient[recipient].envelope_key
    assert ctx.me.dealer is not None
    return seal_envelope(key, s + s_blind, ctx.aad(ctx.me.dealer, recipient)).hex()


def test_bad_share_then_bad_answer_is_disqualified_and_named(tmp_path: Path) -> None:
    states, exchange = setup(tmp_path, 4)
    run(states, exchange, ("deal",), 2)
    deal = json.loads((exchange / "deal-holder-2.json").read_text())["body"]
    deal["shares"]["3"] = bad_share_for(states[1], exchange, 3)
    resign(states[1], exchange, "deal", {"shares": deal["shares"]})
    run(states, exchange, ("complain", "answer"), 2)
    complaint = json.loads((exchange / "complain-holder-3.json").read_text())["body"]
    assert complaint["complaints"] == [2]
    resign(states[1], exchange, "answer", {"answers": {"3": ["00" * 32, "00" * 32]}})
    disqualified = run(states, exchange, ROUNDS[3:], 2)
    assert disqualified == {2: "answered the complaint of holder 3 with a bad share"}
    # The qualified set (1, 3, 4) still makes a working key.
    public = load_public(states[0] / "public.json")
    for i, state in enumerate(states, start=1):
        assert load_share(state / f"share-{i}.json").public_share == public.public_shares[i]


def test_too_many_cheaters_abort_naming_them(tmp_path: Path) -> None:
    states, exchange = setup(tmp_path, 3)
    run(states, exchange, ("deal",), 2)
    for cheater in (2, 3):
        deal = json.loads((exchange / f"deal-holder-{cheater}.json").read_text())["body"]
        for j in {1, 2, 3} - {cheater}:
            deal["shares"][str(j)] = bad_share_for(states[cheater - 1], exchange, j)
        resign(states[cheater - 1], exchange, "deal", {"shares": deal["shares"]})
    run(states, exchange, ("complain", "answer"), 2)
    with pytest.raises(DkgError, match=r"participant 2: drew 2 complaints.*participant 3"):
        run_round("commit", states[0], exchange)


def test_a_file_signed_by_someone_else_is_refused(tmp_path: Path) -> None:
    states, exchange = setup(tmp_path, 3)
    run(states, exchange, ("deal",), 2)
    # Holder 1 writes a deal "from holder-2", signed with holder 1's own key.
    forged = json.loads((exchange / "deal-holder-1.json").read_text())
    forged["body"]["from"] = "holder-2"
    (exchange / "deal-holder-2.json").write_text(json.dumps(forged))
    with pytest.raises(ConfigurationError, match=r"deal-holder-2\.json: signature is not holder-2"):
        run_round("complain", states[2], exchange)


def test_rounds_run_in_order_and_identities_must_cover_the_holders(tmp_path: Path) -> None:
    states, exchange = setup(tmp_path, 3)
    with pytest.raises(ConfigurationError, match="out of order: next is deal"):
        run_round("complain", states[0], exchange)
    with pytest.raises(ConfigurationError, match=r"new indices \[1, 2, 3\], expected 1..4"):
        run_round("deal", states[0], exchange, threshold=2, holders=4)
    with pytest.raises(ConfigurationError, match="already has a DKG state"):
        init_participant(states[0], exchange, "holder-1", index=1)


def test_no_secret_reaches_the_exchange_or_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shares and polynomial coefficients appear only in each holder's own state dir."""
    from hub.keyholder import dkg_cli

    states, exchange = setup(tmp_path, 3)
    secrets: list[str] = []
    for name in ROUNDS:
        for state in states:
            argv = ["dkg", "round", name, "--state-dir", str(state), "--exchange", str(exchange)]
            assert dkg_cli.main([*argv, "-t", "2", "-n", "3"]) == 0
            if name == "deal":
                secrets += dkg_files._load_state(state)["dealing"]["coefficients"]
    secrets += [load_share(s / f"share-{i}.json").secret.hex() for i, s in enumerate(states, 1)]
    public_text = "".join(p.read_text() for p in exchange.iterdir()) + capsys.readouterr().out
    assert len(secrets) == 9
    for secret in secrets:
        assert secret not in public_text
    for state in states:
        assert (state / dkg_files.STATE_NAME).stat().st_mode & 0o077 == 0
        assert "dealing" not in dkg_files._load_state(state)  # dropped at finish
