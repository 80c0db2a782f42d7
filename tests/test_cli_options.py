"""One spelling of each option across all commands; the old spellings still work,
hidden from --help, with a one-line deprecation warning."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _audit_hub import RunningHub
from test_demo import ROOT

from hub.cli import build_parser, main

DEFAULT_POLICY = str(ROOT / "policies" / "default.yaml")
#: Spellings replaced by --config, --case-reference and --state-dir.
OLD_SPELLINGS = {"--hub", "--key", "--ca", "--server-name", "--case-ref"}
FORMATS = {"table", "json", "jsonl", "csv"}


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_command_spells_each_option_one_way() -> None:
    seen = 0
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            visible = action.help != argparse.SUPPRESS
            for option in action.option_strings:
                seen += 1
                if visible:
                    assert option not in OLD_SPELLINGS, (path, option)
                if option == "--state" and visible:
                    # Only the regulator's state FILE is --state; a directory is --state-dir.
                    assert path[0] == "audit", path
                if option == "--format" and visible:
                    assert set(action.choices or ()) <= FORMATS, (path, action.choices)
                if (
                    option == "--config"
                    and visible
                    and path not in {("serve",), ("keyholder", "serve")}
                ):
                    # A client configuration JSON, as for contribute and match.
                    assert "JSON" in (action.help or ""), path
    assert seen > 100


def test_old_spellings_warn_and_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    explain = ["policy", "explain", "--policy", DEFAULT_POLICY, "--role", "bank"]
    explain += ["--purpose", "fraud_investigation", "--kind", "national_id", "--format", "json"]
    assert main([*explain, "--case-reference", "C-1"]) == 0
    new = capsys.readouterr()
    assert new.err == ""
    assert main([*explain, "--case-ref", "C-1"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out and json.loads(old.out)["request"]["case_reference_given"] is True
    assert old.err == "fraudhub: warning: --case-ref is deprecated; use --case-reference\n"
    assert main(["policy", "check", DEFAULT_POLICY, "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert main(["policy", "check", DEFAULT_POLICY, "--format", "text"]) == 0
    text = capsys.readouterr()
    assert text.out == table
    assert text.err == "fraudhub: warning: --format text is deprecated; use --format table\n"
    args = build_parser().parse_args(
        ["keys", "dkg", "init", "--name", "h1", "--state", "s", "--exchange", "x"]
    )
    assert args.state == Path("s")
    assert "--state is deprecated; use --state-dir" in capsys.readouterr().err


@pytest.mark.e2e
def test_regulator_commands_take_config_and_the_old_flags_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = RunningHub(tmp_path, capsys)
    try:
        hub.traffic(2)
        status, out, err = hub.cli("report", "--format", "jsonl")
        assert (status, err) == (0, "")
        rows = {row["institution"]: row for row in map(json.loads, out.splitlines())}
        assert rows["bank-a"]["requests"] == 2
        old = ["--hub", f"127.0.0.1:{hub.port}", "--institution", "reg-1"]
        old += ["--key", str(tmp_path / "reg-1.pem"), "--insecure"]
        capsys.readouterr()
        assert main(["audit", "report", *old, "--format", "csv"]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith("institution,requests,")
        assert captured.err.count("is deprecated; use --config") == 3
        # Neither: the error says what to give.
        assert main(["audit", "report", "--insecure"]) == 2
        assert "give --config FILE" in capsys.readouterr().err
    finally:
        hub.stop()
