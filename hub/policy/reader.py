"""Reading and validating policy and scenario files (YAML).

Guarantees:

- Every error is a :class:`PolicyError` whose message is
  ``FILE:LINE: FIELD: MESSAGE``, where LINE is the 1-based line of the
  offending node (YAML's node API, :func:`yaml.compose`, keeps positions) and
  FIELD is a dotted path such as ``rules[3].disclosure``.
- Unknown keys, duplicate keys, wrong types, undeclared roles, purposes and
  kinds, a kind in two tiers, a rule allowing a prohibited tier or kind, and
  fields that mean nothing for a rule's action or effect are all refused; no
  value is guessed or silently dropped.
- Only YAML's safe types are constructed (no Python objects).

The schema itself is documented in ``policies/README.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from client_sdk.core.errors import PolicyError
from hub.policy.engine import (
    RULE_ACTIONS,
    TIERS,
    Context,
    Decision,
    Disclosure,
    Policy,
    PolicyLayer,
    Principal,
    Rule,
)

__all__ = [
    "POLICY_FORMAT",
    "SCENARIO_FORMAT",
    "Scenario",
    "ScenarioResult",
    "parse_layer",
    "parse_scenarios",
    "read_layer",
    "read_scenarios",
    "run_scenarios",
]

POLICY_FORMAT: Final[str] = "fraudhub-policy/1"
SCENARIO_FORMAT: Final[str] = "fraudhub-policy-scenarios/1"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_DECIMAL = re.compile(r"-?[0-9]+")
_NULL = "tag:yaml.org,2002:null"

# Fields an allow rule may carry, by action (beyond the common ones).
_COMMON_RULE_KEYS: Final[frozenset[str]] = frozenset(
    {"id", "description", "effect", "action", "roles", "purposes", "tiers", "kinds", "legal_basis"}
)
_ALLOW_KEYS: Final[dict[str, frozenset[str]]] = {
    "match": frozenset(
        {
            "disclosure",
            "min_contributors",
            "case_reference_required",
            "daily_quota",
            "attribution",
        }
    ),
    "contribute": frozenset({"retention_days", "case_reference_required", "daily_quota"}),
    "audit": frozenset({"case_reference_required", "daily_quota", "attribution"}),
}
_ALL_RULE_KEYS: Final[frozenset[str]] = _COMMON_RULE_KEYS.union(*_ALLOW_KEYS.values())


class _Reader:
    """Typed access to a composed YAML node tree, failing with file:line: field."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()

    def fail(self, node: Node | None, where: str, message: str) -> NoReturn:
        line = node.start_mark.line + 1 if node is not None else 1
        raise PolicyError(f"{self.source}:{line}: {where}: {message}")

    def compose(self, text: str) -> Node:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise PolicyError(f"{self.source}:{line}: (yaml): {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{self.source}:1: (yaml): {exc}") from None
        if node is None:
            raise PolicyError(f"{self.source}:1: (document): the file is empty")
        return node

    def mapping(
        self,
        node: Node,
        where: str,
        allowed: frozenset[str],
        required: frozenset[str] = frozenset(),
    ) -> dict[str, tuple[Node, Node]]:
        """Keys -> (key node, value node); refuses unknown, duplicate and missing keys."""
        if not isinstance(node, MappingNode):
            self.fail(node, where or "(document)", "expected a mapping")
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self.fail(key_node, where or "(document)", "keys must be plain strings")
            key = str(key_node.value)
            path = f"{where}.{key}" if where else key
            if key in out:
                first = out[key][0].start_mark.line + 1
                self.fail(key_node, path, f"duplicate key (first on line {first})")
            if key not in allowed:
                self.fail(
                    key_node, path, f"unknown key; allowed here: {', '.join(sorted(allowed))}"
                )
            out[key] = (key_node, value_node)
        for key in sorted(required - out.keys()):
            self.fail(node, f"{where}.{key}" if where else key, "required key is missing")
        return out

    def scalar(self, node: Node, where: str, tag: str, expected: str) -> Any:
        if not isinstance(node, ScalarNode) or node.tag != tag:
            self.fail(node, where, f"expected {expected}")
        return self._constructor.construct_object(node)

    def string(self, node: Node, where: str, *, pattern: re.Pattern[str] | None = None) -> str:
        value = str(self.scalar(node, where, _STR, "a string"))
        if pattern is not None and not pattern.match(value):
            self.fail(node, where, f"{value!r} does not match {pattern.pattern}")
        if pattern is None and not value.strip():
            self.fail(node, where, "must not be empty")
        return value

    def integer(
        self, node: Node, where: str, *, minimum: int, nullable: bool = False
    ) -> int | None:
        if nullable and isinstance(node, ScalarNode) and node.tag == _NULL:
            return None
        value = self.scalar(node, where, _INT, "an integer" + (" or null" if nullable else ""))
        assert isinstance(value, int)
        if not _DECIMAL.fullmatch(str(node.value)):
            # YAML 1.1 also reads 0x10, 0o20 and 1_000 as integers: a reviewer should not have to.
            self.fail(node, where, "write the number in plain decimal digits")
        if value < minimum:
            self.fail(node, where, f"must be at least {minimum}")
        return value

    def boolean(self, node: Node, where: str) -> bool:
        return bool(self.scalar(node, where, _BOOL, "true or false"))

    def names(
        self,
        node: Node,
        where: str,
        *,
        pattern: re.Pattern[str] = _NAME,
        nonempty: bool = True,
    ) -> list[tuple[str, Node]]:
        """A list of distinct names, each with its node (for line numbers)."""
        if not isinstance(node, SequenceNode):
            self.fail(node, where, "expected a list")
        if nonempty and not node.value:
            self.fail(node, where, "must not be empty")
        out: list[tuple[str, Node]] = []
        seen: set[str] = set()
        for i, item in enumerate(node.value):
            name = self.string(item, f"{where}[{i}]", pattern=pattern)
            if name in seen:
                self.fail(item, f"{where}[{i}]", f"{name!r} is listed twice")
            seen.add(name)
            out.append((name, item))
        return out


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise PolicyError(f"{path}:1: (file): cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{path}:1: (file): not UTF-8 text") from None


def read_layer(
    path: str, *, override: bool = False, before: Sequence[PolicyLayer] = ()
) -> PolicyLayer:
    """Read and validate one policy file.  Raises PolicyError (file:line: field: message)."""
    return parse_layer(_read_text(path), path, override=override, before=before)


@dataclass
class _Declared:
    """What earlier layers declared, so an override's references can be checked."""

    tiers: dict[str, str] = field(default_factory=dict)
    roles: set[str] = field(default_factory=set)
    purposes: set[str] = field(default_factory=set)
    rule_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, layers: Sequence[PolicyLayer]) -> _Declared:
        out = cls()
        for layer in layers:
            out.tiers.update(layer.tiers or {})
            out.roles.update(layer.roles or ())
            out.purposes.update(layer.purposes or ())
            out.rule_ids.update({rule.id: rule.where() for rule in layer.rules})
        return out


def parse_layer(
    text: str,
    source: str = "<string>",
    *,
    override: bool = False,
    before: Sequence[PolicyLayer] = (),
) -> PolicyLayer:
    """Validate one policy document.

    ``override`` is true for every file after the operator's; ``before`` are
    the layers read so far (an override's roles, purposes and kinds are
    checked against them).  Raises PolicyError.
    """
    if override and not before:
        raise PolicyError(f"{source}:1: (document): an override needs the operator's policy first")
    reader = _Reader(source)
    root = reader.compose(text)
    top_required = {"format", "name", "rules"}
    if not override:
        top_required |= {"tiers", "roles", "purposes"}
    top = reader.mapping(
        root,
        "",
        frozenset({"format", "name", "description", "tiers", "roles", "purposes", "rules"}),
        frozenset(top_required),
    )
    fmt = reader.string(top["format"][1], "format")
    if fmt != POLICY_FORMAT:
        reader.fail(top["format"][1], "format", f"expected {POLICY_FORMAT!r}")
    name = reader.string(top["name"][1], "name")
    if "description" in top:
        reader.string(top["description"][1], "description")
    declared = _Declared.of(before)

    tiers: dict[str, str] | None = None
    basis: dict[str, str] = {}
    if "tiers" in top:
        tiers, basis = _parse_tiers(reader, top["tiers"][1], declared, override=override)
        for kind, tier in tiers.items():
            # For references inside this file: the stricter of the tiers wins.
            current = declared.tiers.get(kind)
            if current is None or TIERS.index(tier) < TIERS.index(current):
                declared.tiers[kind] = tier
    roles = _parse_declared(reader, top, "roles", declared.roles, override)
    purposes = _parse_declared(reader, top, "purposes", declared.purposes, override)
    rules_node = top["rules"][1]
    if not isinstance(rules_node, SequenceNode):
        reader.fail(rules_node, "rules", "expected a list")
    rules: list[Rule] = []
    ids: dict[str, int] = {}
    for i, rule_node in enumerate(rules_node.value):
        rule = _parse_rule(
            reader,
            rule_node,
            f"rules[{i}]",
            roles=roles if roles is not None else frozenset(declared.roles),
            purposes=purposes if purposes is not None else frozenset(declared.purposes),
            tiers=declared.tiers,
        )
        if rule.id in ids:
            reader.fail(rule_node, f"rules[{i}].id", f"duplicate rule id (line {ids[rule.id]})")
        if rule.id in declared.rule_ids:
            reader.fail(
                rule_node,
                f"rules[{i}].id",
                f"rule id already used in {declared.rule_ids[rule.id]}; ids name rules in "
                "reason codes, so they must be unique across layers",
            )
        ids[rule.id] = rule.line
        rules.append(rule)
    return PolicyLayer(
        source=source,
        rules=tuple(rules),
        tiers=tiers,
        roles=roles,
        purposes=purposes,
        name=name,
        tier_basis=basis,
    )


def _parse_tiers(
    reader: _Reader, node: Node, declared: _Declared, *, override: bool
) -> tuple[dict[str, str], dict[str, str]]:
    required = frozenset() if override else frozenset(TIERS)
    entries = reader.mapping(node, "tiers", frozenset(TIERS), required)
    table: dict[str, str] = {}
    lines: dict[str, int] = {}
    basis: dict[str, str] = {}
    for tier in TIERS:
        if tier not in entries:
            continue
        where = f"tiers.{tier}"
        body = reader.mapping(
            entries[tier][1], where, frozenset({"kinds", "basis"}), frozenset({"kinds"})
        )
        if "basis" in body:
            basis[tier] = reader.string(body["basis"][1], f"{where}.basis")
        for i, (kind, item) in enumerate(
            reader.names(body["kinds"][1], f"{where}.kinds", nonempty=False)
        ):
            path = f"{where}.kinds[{i}]"
            if kind in table:
                reader.fail(
                    item, path, f"{kind} is already in tier {table[kind]} (line {lines[kind]})"
                )
            if override and kind not in declared.tiers and tier != "prohibited":
                reader.fail(item, path, "an override may add a new kind only as prohibited")
            table[kind] = tier
            lines[kind] = item.start_mark.line + 1
    return table, basis


def _parse_declared(
    reader: _Reader,
    top: dict[str, tuple[Node, Node]],
    key: str,
    known: set[str],
    override: bool,
) -> frozenset[str] | None:
    if key not in top:
        return None
    names = reader.names(top[key][1], key)
    if override:
        for i, (name, item) in enumerate(names):
            if name not in known:
                reader.fail(
                    item,
                    f"{key}[{i}]",
                    f"{name} is not declared by the operator's policy; an override can only narrow",
                )
    return frozenset(name for name, _ in names)


def _parse_rule(  # noqa: PLR0912, PLR0915 - one branch per rule key; being table-driven in the policy split
    reader: _Reader,
    node: Node,
    where: str,
    *,
    roles: frozenset[str],
    purposes: frozenset[str],
    tiers: dict[str, str],
) -> Rule:
    body = reader.mapping(
        node, where, _ALL_RULE_KEYS, frozenset({"id", "action", "roles", "purposes"})
    )
    rule_id = reader.string(body["id"][1], f"{where}.id", pattern=_RULE_ID)
    effect = "allow"
    if "effect" in body:
        effect = reader.string(body["effect"][1], f"{where}.effect")
        if effect not in ("allow", "deny"):
            reader.fail(body["effect"][1], f"{where}.effect", "expected allow or deny")
    action_node = body["action"][1]
    action = reader.string(action_node, f"{where}.action")
    if action == "revoke":
        reader.fail(
            action_node,
            f"{where}.action",
            "revoke is not written as a rule: a role may revoke the kinds it may contribute",
        )
    if action not in RULE_ACTIONS:
        reader.fail(action_node, f"{where}.action", f"expected one of {', '.join(RULE_ACTIONS)}")
    allowed = _COMMON_RULE_KEYS | (_ALLOW_KEYS[action] if effect == "allow" else frozenset())
    for key, (key_node, _) in body.items():
        if key not in allowed:
            why = (
                "has no meaning on a deny rule"
                if effect == "deny"
                else f"does not apply to {action} rules"
            )
            reader.fail(key_node, f"{where}.{key}", why)
    if effect == "allow" and "legal_basis" not in body:
        reader.fail(node, f"{where}.legal_basis", "an allow rule must name its legal basis")

    rule_roles = _references(reader, body["roles"][1], f"{where}.roles", roles, "role")
    rule_purposes = _references(
        reader, body["purposes"][1], f"{where}.purposes", purposes, "purpose"
    )
    rule_tiers: frozenset[str] = frozenset()
    rule_kinds: frozenset[str] = frozenset()
    if action == "audit":
        for key in ("tiers", "kinds"):
            if key in body:
                reader.fail(
                    body[key][0],
                    f"{where}.{key}",
                    "audit rules cover the whole log (it holds no indicator values); "
                    "name no tier or kind",
                )
    else:
        if ("tiers" in body) == ("kinds" in body):
            reader.fail(
                node, f"{where}.tiers", f"a {action} rule names exactly one of tiers, kinds"
            )
        if "tiers" in body:
            rule_tiers = _references(
                reader, body["tiers"][1], f"{where}.tiers", frozenset(TIERS), "tier"
            )
        else:
            rule_kinds = _references(
                reader, body["kinds"][1], f"{where}.kinds", frozenset(tiers), "kind"
            )
        if effect == "allow":
            _refuse_prohibited(reader, body, where, rule_tiers, rule_kinds, tiers)

    values: dict[str, Any] = {}
    if "disclosure" in body:
        word_node = body["disclosure"][1]
        word = reader.string(word_node, f"{where}.disclosure")
        try:
            if word != word.lower():
                raise ValueError(word)
            level = Disclosure.parse(word)
        except ValueError:
            reader.fail(
                word_node,
                f"{where}.disclosure",
                "expected one of " + ", ".join(d.word for d in Disclosure if d),
            )
        if level == Disclosure.NONE:
            reader.fail(word_node, f"{where}.disclosure", "use effect: deny to refuse a match")
        values["disclosure"] = level
    elif action == "match" and effect == "allow":
        reader.fail(node, f"{where}.disclosure", "a match rule must set its disclosure level")
    if action == "contribute" and effect == "allow" and "retention_days" not in body:
        reader.fail(node, f"{where}.retention_days", "a contribute rule must cap retention")
    for key, minimum, nullable in (
        ("min_contributors", 1, False),
        ("daily_quota", 1, True),
        ("retention_days", 1, True),
    ):
        if key in body:
            values[key] = reader.integer(
                body[key][1], f"{where}.{key}", minimum=minimum, nullable=nullable
            )
    for key in ("case_reference_required", "attribution"):
        if key in body:
            values[key] = reader.boolean(body[key][1], f"{where}.{key}")
    for key in ("legal_basis", "description"):
        if key in body:
            values[key] = reader.string(body[key][1], f"{where}.{key}")
    return Rule(
        id=rule_id,
        action=action,
        roles=rule_roles,
        purposes=rule_purposes,
        effect=effect,
        tiers=rule_tiers,
        kinds=rule_kinds,
        source=reader.source,
        line=node.start_mark.line + 1,
        **values,
    )


def _references(
    reader: _Reader, node: Node, where: str, known: frozenset[str], what: str
) -> frozenset[str]:
    names = reader.names(node, where)
    for i, (name, item) in enumerate(names):
        if name not in known:
            reader.fail(item, f"{where}[{i}]", f"undeclared {what} {name!r}")
    return frozenset(name for name, _ in names)


def _refuse_prohibited(
    reader: _Reader,
    body: dict[str, tuple[Node, Node]],
    where: str,
    rule_tiers: frozenset[str],
    rule_kinds: frozenset[str],
    tiers: dict[str, str],
) -> None:
    message = "prohibited kinds are never stored or matched; no rule may allow them"
    if "prohibited" in rule_tiers:
        reader.fail(body["tiers"][1], f"{where}.tiers", message)
    for kind in sorted(rule_kinds):
        if tiers.get(kind) == "prohibited":
            reader.fail(body["kinds"][1], f"{where}.kinds", f"{kind}: {message}")


# --- scenarios ---------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One row of a scenario table: a request and the decision expected for it.

    ``expect`` holds only the keys the file sets: ``allow`` (always),
    ``disclosure``, ``tier``, ``reasons`` (exact, in order) and
    ``obligations`` (a subset of :class:`hub.policy.engine.Obligations` fields).
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


_OBLIGATION_KEYS: Final[dict[str, tuple[str, int | None]]] = {
    "min_contributors": (_INT, 1),
    "daily_quota": (_INT, 0),
    "retention_days": (_INT, 0),
    "case_reference_required": (_BOOL, None),
    "attribution_allowed": (_BOOL, None),
    "legal_basis": (_STR, None),
    "quota_bucket": (_STR, None),
}


def read_scenarios(path: str) -> list[Scenario]:
    """Read a scenario table.  Raises PolicyError (file:line: field: message)."""
    return parse_scenarios(_read_text(path), path)


def parse_scenarios(text: str, source: str = "<string>") -> list[Scenario]:
    """Validate a scenario document (format in ``policies/README.md``).  Raises PolicyError."""
    reader = _Reader(source)
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
            case_reference = str(
                reader.scalar(
                    body["case_reference"][1], f"{where}.case_reference", _STR, "a string"
                )
            )
        # Role, action, kind and purpose are taken as written (even unknown or
        # empty ones) because scenarios test that the engine refuses them.
        fields = {
            key: str(reader.scalar(body[key][1], f"{where}.{key}", _STR, "a string"))
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


def _parse_expect(reader: _Reader, node: Node, where: str) -> dict[str, Any]:
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
        except ValueError:
            reader.fail(word_node, f"{where}.disclosure", "unknown disclosure level")
    if "tier" in body:
        expect["tier"] = str(reader.scalar(body["tier"][1], f"{where}.tier", _STR, "a string"))
    if "reasons" in body:
        codes = reader.names(
            body["reasons"][1], f"{where}.reasons", pattern=re.compile(r"^[A-Z_]+(:.+)?$")
        )
        expect["reasons"] = tuple(code for code, _ in codes)
    if "obligations" in body:
        entries = reader.mapping(
            body["obligations"][1], f"{where}.obligations", frozenset(_OBLIGATION_KEYS)
        )
        obligations: dict[str, Any] = {}
        for key, (_, value_node) in entries.items():
            tag, minimum = _OBLIGATION_KEYS[key]
            path = f"{where}.obligations.{key}"
            if tag == _INT:
                assert minimum is not None
                obligations[key] = reader.integer(value_node, path, minimum=minimum, nullable=True)
            elif tag == _BOOL:
                obligations[key] = reader.boolean(value_node, path)
            elif isinstance(value_node, ScalarNode) and value_node.tag == _NULL:
                obligations[key] = None
            else:
                obligations[key] = str(reader.scalar(value_node, path, _STR, "a string"))
        expect["obligations"] = obligations
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
