"""Scenario tables: requests with the decisions a policy must give them.

A scenario file (``format: fraudhub-policy-scenarios/1``, documented in
``policies/README.md``) is read and validated with the policy reader's
:class:`~hub.policy.reader.NodeReader`, so every error is a
:class:`PolicyError` ``FILE:LINE: FIELD: MESSAGE``.  Role, action, kind and
purpose are taken as written (even unknown or empty ones), because scenarios
test that the engine refuses them.  :func:`run_scenarios` is pure: it decides
each row and lists every way the decision differs from the expectation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from yaml.nodes import Node, SequenceNode

from client_sdk.core.errors import InvalidRequest
from hub.policy.engine import Policy
from hub.policy.model import Context, Decision, Disclosure, Principal
from hub.policy.reader import NodeReader, read_text

__all__ = [
    "SCENARIO_FORMAT",
    "Scenario",
    "ScenarioResult",
    "parse_scenarios",
    "read_scenarios",
    "run_scenarios",
]

SCENARIO_FORMAT: Final[str] = "fraudhub-policy-scenarios/1"

#: Reads one value node; raises PolicyError (file:line: field: message).
_ValueReader = Callable[[NodeReader, Node, str], Any]


@dataclass(frozen=True)
class Scenario:
    """One row of a scenario table: a request and the decision expected for it.

    ``expect`` holds only the keys the file sets: ``allow`` (always),
    ``disclosure``, ``tier``, ``reasons`` (exact, in order) and
    ``obligations`` (a subset of :class:`hub.policy.model.Obligations` fields).
    """

    name: str
    line: int
    principal: Principal
    action: str
    kind: str
    purpose: str
    context: Context
    expect: dict[str, Any]


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    decision: Decision
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


def _read_count(minimum: int) -> _ValueReader:
    def read(reader: NodeReader, node: Node, where: str) -> int | None:
        return reader.integer(node, where, minimum=minimum, nullable=True)

    return read


def _read_optional_text(reader: NodeReader, node: Node, where: str) -> str | None:
    return None if reader.is_null(node) else reader.verbatim(node, where)


#: The obligations a scenario may expect, each with how its value is read.
_OBLIGATION_KEYS: Final[Mapping[str, _ValueReader]] = {
    "min_contributors": _read_count(1),
    "daily_quota": _read_count(0),
    "retention_days": _read_count(0),
    "dispute_response_days": _read_count(1),
    "case_reference_required": NodeReader.boolean,
    "attribution_allowed": NodeReader.boolean,
    "legal_basis": _read_optional_text,
    "quota_bucket": _read_optional_text,
    "min_evidence": _read_optional_text,
}


def read_scenarios(path: str) -> list[Scenario]:
    """Read a scenario table.  Raises PolicyError (file:line: field: message)."""
    return parse_scenarios(read_text(path), path)


def parse_scenarios(text: str, source: str = "<string>") -> list[Scenario]:
    """Validate a scenario document (format in ``policies/README.md``).  Raises PolicyError."""
    reader = NodeReader(source)
    top = reader.mapping(
        reader.compose(text),
        "",
        frozenset({"format", "description", "scenarios"}),
        frozenset({"format", "scenarios"}),
    )
    if reader.string(top["format"][1], "format") != SCENARIO_FORMAT:
        reader.fail(top["format"][1], "format", f"expected {SCENARIO_FORMAT!r}")
    rows = top["scenarios"][1]
    if not isinstance(rows, SequenceNode) or not rows.value:
        reader.fail(rows, "scenarios", "expected a non-empty list")
    out: list[Scenario] = []
    names: dict[str, int] = {}
    for i, node in enumerate(rows.value):
        where = f"scenarios[{i}]"
        body = reader.mapping(
            node,
            where,
            frozenset(
                {
                    "name",
                    "institution",
                    "role",
                    "action",
                    "kind",
                    "purpose",
                    "case_reference",
                    "expect",
                }
            ),
            frozenset({"name", "role", "action", "kind", "purpose", "expect"}),
        )
        name = reader.string(body["name"][1], f"{where}.name")
        line = node.start_mark.line + 1
        if name in names:
            reader.fail(
                body["name"][1], f"{where}.name", f"duplicate scenario name (line {names[name]})"
            )
        names[name] = line
        institution = "scenario-institution"
        if "institution" in body:
            institution = reader.string(body["institution"][1], f"{where}.institution")
        case_reference = None
        if "case_reference" in body:
            # Taken as written: a blank reference must be refused like a missing one.
            case_reference = reader.verbatim(body["case_reference"][1], f"{where}.case_reference")
        # Role, action, kind and purpose are taken as written (even unknown or
        # empty ones) because scenarios test that the engine refuses them.
        fields = {
            key: reader.verbatim(body[key][1], f"{where}.{key}")
            for key in ("role", "action", "kind", "purpose")
        }
        out.append(
            Scenario(
                name=name,
                line=line,
                principal=Principal(institution, fields["role"]),
                action=fields["action"],
                kind=fields["kind"],
                purpose=fields["purpose"],
                context=Context(case_reference=case_reference),
                expect=_parse_expect(reader, body["expect"][1], f"{where}.expect"),
            )
        )
    return out


def _parse_expect(reader: NodeReader, node: Node, where: str) -> dict[str, Any]:
    body = reader.mapping(
        node,
        where,
        frozenset({"allow", "disclosure", "tier", "reasons", "obligations"}),
        frozenset({"allow"}),
    )
    expect: dict[str, Any] = {"allow": reader.boolean(body["allow"][1], f"{where}.allow")}
    if "disclosure" in body:
        word_node = body["disclosure"][1]
        try:
            expect["disclosure"] = Disclosure.parse(reader.string(word_node, f"{where}.disclosure"))
        except InvalidRequest:
            reader.fail(word_node, f"{where}.disclosure", "unknown disclosure level")
    if "tier" in body:
        expect["tier"] = reader.verbatim(body["tier"][1], f"{where}.tier")
    if "reasons" in body:
        codes = reader.names(
            body["reasons"][1], f"{where}.reasons", pattern=re.compile(r"^[A-Z_]+(:.+)?$")
        )
        expect["reasons"] = tuple(code for code, _ in codes)
    if "obligations" in body:
        entries = reader.mapping(
            body["obligations"][1], f"{where}.obligations", frozenset(_OBLIGATION_KEYS)
        )
        expect["obligations"] = {
            key: _OBLIGATION_KEYS[key](reader, value_node, f"{where}.obligations.{key}")
            for key, (_, value_node) in entries.items()
        }
    return expect


def run_scenarios(policy: Policy, scenarios: Sequence[Scenario]) -> list[ScenarioResult]:
    """Decide every scenario and compare with its expectation (pure)."""
    results: list[ScenarioResult] = []
    for scenario in scenarios:
        decision = policy.decide(
            scenario.principal, scenario.action, scenario.kind, scenario.purpose, scenario.context
        )
        results.append(ScenarioResult(scenario, decision, _mismatches(scenario.expect, decision)))
    return results


def _mismatches(expect: dict[str, Any], decision: Decision) -> tuple[str, ...]:
    out: list[str] = []
    if expect["allow"] != decision.allow:
        out.append(f"allow: expected {expect['allow']}, got {decision.allow}")
    if "disclosure" in expect and expect["disclosure"] != decision.disclosure:
        out.append(
            f"disclosure: expected {expect['disclosure'].word}, got {decision.disclosure.word}"
        )
    if "tier" in expect and expect["tier"] != decision.tier:
        out.append(f"tier: expected {expect['tier']}, got {decision.tier}")
    if "reasons" in expect and expect["reasons"] != decision.reasons:
        out.append(f"reasons: expected {list(expect['reasons'])}, got {list(decision.reasons)}")
    actual = decision.obligations.to_dict()
    for key, value in expect.get("obligations", {}).items():
        if actual[key] != value:
            out.append(f"obligations.{key}: expected {value!r}, got {actual[key]!r}")
    return tuple(out)
