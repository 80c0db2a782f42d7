"""``fraudhub policy``: check, test and explain privacy policies.

- ``fraudhub policy check FILE [OVERRIDE ...]`` validates the files, composes
  them (stricter wins) and prints the policy version.  Exit 0, or 2 with a
  ``file:line: field: message`` error.
- ``fraudhub policy test FILE SCENARIOS [--override F ...]`` runs a scenario
  table.  Exit 0 when every scenario passes, 1 when one fails, 2 when a file
  does not validate.
- ``fraudhub policy explain --policy FILE [--policy OVERRIDE ...] --role R
  --purpose P --kind K [--action A] [--case-reference X] [--format json]`` prints one
  decision with its reasons, obligations and the policy version.  Exit 0 when
  allowed, 1 when refused, so scripts can branch on it.

Errors are :class:`client_sdk.core.errors.PolicyError`; ``hub.cli`` prints them.
The case reference given to ``explain`` is never printed back.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from fraudhub.v1 import admin_pb2, admin_pb2_grpc

from client_sdk.wire.status import errors_from_status
from hub.cli.options import add_hub_connection, hub_channel
from hub.infra.argtypes import deprecated_alias
from hub.policy.engine import Policy
from hub.policy.model import ACTIONS, AUDIT_KIND, TIERS, Context, Decision, Principal
from hub.policy.reader import load_policy
from hub.policy.scenarios import read_scenarios, run_scenarios

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``policy`` command group."""
    parser = subparsers.add_parser(
        "policy", help="check, test and explain privacy policies", description=__doc__
    )
    commands = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)

    check = commands.add_parser("check", help="validate policy files and print the version")
    check.add_argument("files", nargs="+", metavar="FILE", help="operator policy, then overrides")
    _format_option(check)
    check.set_defaults(func=_check)

    test = commands.add_parser("test", help="run a scenario table against a policy")
    test.add_argument("file", metavar="FILE", help="operator policy")
    test.add_argument("scenarios", metavar="SCENARIOS", help="scenario table (YAML)")
    test.add_argument(
        "--override", action="append", default=[], metavar="FILE", help="override (repeatable)"
    )
    test.set_defaults(func=_test)

    explain = commands.add_parser("explain", help="show one decision and why")
    explain.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="FILE",
        help="operator policy; repeat for overrides (stricter wins)",
    )
    explain.add_argument("--role", required=True)
    explain.add_argument("--purpose", required=True)
    explain.add_argument(
        "--kind", default=AUDIT_KIND, help="indicator kind (omit for --action audit)"
    )
    explain.add_argument("--action", choices=ACTIONS, default="match")
    explain.add_argument("--case-reference", dest="case_ref", default=None, metavar="X")
    deprecated_alias(explain, "--case-ref", "--case-reference", dest="case_ref")
    explain.add_argument("--institution", default="cli", help="institution id (informational)")
    _format_option(explain)
    explain.set_defaults(func=_explain)

    _register_reload(commands)


def _check(args: argparse.Namespace) -> int:
    policy = load_policy(*args.files)
    summary = _summary(policy)
    if args.format == "json":
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        tiers = ", ".join(f"{tier} {len(kinds)}" for tier, kinds in summary["tiers"].items())
        print(
            f"ok: {' + '.join(args.files)}: {summary['rules']} rules, kinds by tier: {tiers}; "
            f"{len(summary['roles'])} roles, {len(summary['purposes'])} purposes"
        )
        print(f"version: {policy.version}")
    return 0


def _summary(policy: Policy) -> dict[str, Any]:
    by_tier: dict[str, list[str]] = {tier: [] for tier in TIERS}
    for kind, tier in sorted(policy.tiers.items()):
        by_tier[tier].append(kind)
    return {
        "files": [layer.source for layer in policy.layers],
        "version": policy.version,
        "rules": sum(len(layer.rules) for layer in policy.layers),
        "tiers": by_tier,
        "roles": sorted(policy.roles),
        "purposes": sorted(policy.purposes),
    }


def _test(args: argparse.Namespace) -> int:
    policy = load_policy(args.file, *args.override)
    scenarios = read_scenarios(args.scenarios)
    results = run_scenarios(policy, scenarios)
    failed = [r for r in results if not r.passed]
    for result in results:
        scenario = result.scenario
        if result.passed:
            print(f"ok    {scenario.name}")
            continue
        print(f"FAIL  {scenario.name} ({args.scenarios}:{scenario.line})")
        for mismatch in result.mismatches:
            print(f"        {mismatch}")
    print(
        f"{len(results)} scenarios, {len(results) - len(failed)} passed, {len(failed)} failed; "
        f"policy version {policy.version}"
    )
    return 1 if failed else 0


def _explain(args: argparse.Namespace) -> int:
    policy = load_policy(*args.policy)
    decision = policy.decide(
        Principal(args.institution, args.role),
        args.action,
        args.kind,
        args.purpose,
        Context(case_reference=args.case_ref),
    )
    if args.format == "json":
        request = {
            "role": args.role,
            "action": args.action,
            "kind": args.kind,
            "purpose": args.purpose,
            "case_reference_given": Context(args.case_ref).has_case_reference,
        }
        print(json.dumps({"request": request, **decision.to_dict()}, indent=2, sort_keys=True))
    else:
        print(_render(decision))
    return 0 if decision.allow else 1


def _render(decision: Decision) -> str:
    verdict = "allow" if decision.allow else "deny"
    lines = [
        f"decision: {verdict} (disclosure {decision.disclosure.word})",
        f"tier: {decision.tier or '-'}",
        "reasons:",
    ]
    lines += [
        f"  {code}: {text}"
        for code, text in zip(decision.reasons, decision.explanations, strict=True)
    ]
    lines.append("obligations:")
    lines += [f"  {key}: {value}" for key, value in decision.obligations.to_dict().items()]
    lines.append(f"version: {decision.version}")
    return "\n".join(lines)


# --- policy reload ------------------------------------------------------------------------


def _cmd_policy_reload(args: argparse.Namespace) -> int:
    """Ask a running hub to re-read its policy files (Admin.ReloadPolicy, operator role).

    A file that does not validate is refused with its file, line and field,
    and the hub keeps its running policy; SIGHUP to ``fraudhub serve`` does
    the same from the hub's machine.  (The module docstring is the group's
    ``--help`` text, so ``reload`` is described here.)  Raises the fraudhub
    error of the hub's status, or ConfigurationError for a bad --config.
    """
    channel = hub_channel(args)
    try:
        reply = admin_pb2_grpc.AdminStub(channel).ReloadPolicy(
            admin_pb2.ReloadPolicyRequest(), timeout=args.timeout
        )
    except grpc.RpcError as exc:
        raise errors_from_status(exc) from None
    finally:
        channel.close()
    changed = "changed" if reply.policy_version != reply.previous_version else "unchanged"
    print(f"policy {reply.policy_version} ({changed}; was {reply.previous_version})")
    return 0


def _text_is_table(value: str) -> str:
    if value == "text":
        print("fraudhub: warning: --format text is deprecated; use --format table", file=sys.stderr)
        return "table"
    return value


def _format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        type=_text_is_table,
        choices=("table", "json"),
        default="table",
        help="table (for people, the default) or json",
    )


def _register_reload(commands: Any) -> None:
    """Add ``reload`` to the ``policy`` group: Admin.ReloadPolicy as an operator."""
    reload = commands.add_parser(
        "reload", help="make a running hub re-read its policy files (operator role)"
    )
    add_hub_connection(reload, "the operator institution")
    reload.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    reload.set_defaults(func=_cmd_policy_reload)
