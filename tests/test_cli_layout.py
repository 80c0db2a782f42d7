"""``hub.cli``: one module per command group, each registering exactly its own commands."""

from __future__ import annotations

import argparse
import importlib

import pytest

from hub import cli

# module -> {command: its actions (empty for a command without actions)}
GROUPS: dict[str, dict[str, set[str]]] = {
    "hub.cli.serve": {"serve": set()},
    "hub.cli.exchange": {"contribute": set(), "match": set(), "revoke": set()},
    "hub.cli.institution": {
        "institution": {"keygen", "add", "list", "disable", "enable", "rotate-key", "export"}
    },
    "hub.cli.dispute": {"dispute": {"open", "list", "resolve"}},
    "hub.cli.policy": {"policy": {"check", "test", "explain", "reload"}},
    "hub.cli.audit": {"audit": {"verify", "log-key", "policy", "report", "anomalies"}},
}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("module", sorted(GROUPS))
def test_each_command_group_lives_in_its_own_module(module: str) -> None:
    assert module in cli.COMMAND_MODULES
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(module).register(sub)
    commands = _subcommands(parser)
    assert {name: set(_subcommands(p)) for name, p in commands.items()} == GROUPS[module]


def test_every_command_is_registered_once() -> None:
    # A command added by two modules would make argparse keep the last one silently.
    seen: dict[str, str] = {}
    for module in cli.COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        for name in _subcommands(parser):
            assert name not in seen, (name, module, seen.get(name))
            seen[name] = module
    assert set(_subcommands(cli.build_parser())) == set(seen)
