"""Reading and validating policy files (YAML) into the policy model.

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

Reading files is this module's only I/O: :func:`load_policy` reads, validates
and composes the layers, and :mod:`hub.policy.engine` decides without ever
touching a file or YAML.  :class:`NodeReader` and :func:`read_text` also serve
:mod:`hub.policy.scenarios`, so both document kinds fail the same way.

The schema itself is documented in ``policies/README.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from client_sdk.core.errors import InvalidRequest, PolicyError
from hub.policy.engine import Policy
from hub.policy.lifecycle import parse_decay, read_evidence, require_evidence_for_sensitive
from hub.policy.model import (
    KINDLESS_ACTIONS,
    POLICY_FORMAT,
    RULE_ACTIONS,
    TIERS,
    DecayModel,
    Disclosure,
    PolicyLayer,
    Rule,
)

__all__ = [
    "POLICY_FORMAT",
    "NodeReader",
    "load_policy",
    "parse_layer",
    "read_layer",
    "read_text",
]

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
            "min_evidence",
        }
    ),
    "contribute": frozenset(
        {"retention_days", "case_reference_required", "daily_quota", "min_evidence"}
    ),
    # A watch is a standing match: the same evidence floor applies to what it alerts.
    "watch": frozenset(
        {
            "disclosure",
            "min_contributors",
            "daily_quota",
            "retention_days",
            "attribution",
            "min_evidence",
        }
    ),
    "audit": frozenset({"case_reference_required", "daily_quota", "attribution"}),
    "dispute": frozenset({"dispute_response_days", "case_reference_required", "daily_quota"}),
    "sighting": frozenset({"case_reference_required", "daily_quota"}),
    "warninglist": frozenset({"daily_quota"}),
}
_ALL_RULE_KEYS: Final[frozenset[str]] = _COMMON_RULE_KEYS.union(*_ALLOW_KEYS.values())
#: Fields an allow rule of an action must set, with the message when it does not
#: (``legal_basis``, required of every allow rule, is checked before the references).
_ALLOW_REQUIRES: Final[Mapping[str, Mapping[str, str]]] = {
    "match": {"disclosure": "a match rule must set its disclosure level"},
    "contribute": {"retention_days": "a contribute rule must cap retention"},
    "watch": {
        "disclosure": "a watch rule must set its disclosure level",
        "retention_days": "a watch rule must cap retention",
    },
    "audit": {},
    "dispute": {"dispute_response_days": "a dispute rule must give contributors a time to answer"},
    "sighting": {},
    "warninglist": {},
}
#: Reads one field's value node; raises PolicyError (file:line: field: message).
_FieldReader = Callable[["NodeReader", Node, str], Any]


class NodeReader:
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

    @staticmethod
    def is_null(node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _NULL

    def verbatim(self, node: Node, where: str) -> str:
        """A string taken as written, an empty or blank one included."""
        return str(self.scalar(node, where, _STR, "a string"))

    def integer(
        self, node: Node, where: str, *, minimum: int, nullable: bool = False
    ) -> int | None:
        if nullable and self.is_null(node):
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


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise PolicyError(f"{path}:1: (file): cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{path}:1: (file): not UTF-8 text") from None


def load_policy(*paths: str) -> Policy:
    """Read, validate and compose policy files.

    The first path is the operator's policy; later paths are overrides
    (stricter wins).  Raises PolicyError as ``file:line: field: message`` for
    a file that does not parse or validate, or layers that do not compose.
    """
    if not paths:
        raise PolicyError("no policy file given")
    layers: list[PolicyLayer] = []
    for position, path in enumerate(paths):
        layers.append(read_layer(path, override=position > 0, before=layers))
    return Policy(layers)


def read_layer(
    path: str, *, override: bool = False, before: Sequence[PolicyLayer] = ()
) -> PolicyLayer:
    """Read and validate one policy file.  Raises PolicyError (file:line: field: message)."""
    return parse_layer(read_text(path), path, override=override, before=before)


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
    reader = NodeReader(source)
    root = reader.compose(text)
    top_required = {"format", "name", "rules"}
    if not override:
        top_required |= {"tiers", "roles", "purposes"}
    top = reader.mapping(
        root,
        "",
        frozenset(
            {"format", "name", "description", "tiers", "roles", "purposes", "rules", "decay"}
        ),
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
    decay, default_decay = _parse_decay_section(reader, top, declared, override=override)
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
        decay=decay,
        default_decay=default_decay,
    )


def _parse_decay_section(
    reader: NodeReader, top: dict[str, tuple[Node, Node]], declared: _Declared, *, override: bool
) -> tuple[dict[str, DecayModel], DecayModel | None]:
    if "decay" not in top:
        return {}, None
    if override:
        reader.fail(top["decay"][0], "decay", "only the operator's policy sets decay models")
    return parse_decay(reader, top["decay"][1], declared.tiers)


def _parse_tiers(
    reader: NodeReader, node: Node, declared: _Declared, *, override: bool
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
    reader: NodeReader,
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


def _parse_rule(
    reader: NodeReader,
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
    action = _parse_action(reader, body["action"][1], f"{where}.action")
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
    rule_tiers, rule_kinds = _parse_targets(reader, body, node, where, action, tiers)
    if effect == "allow":
        if action not in KINDLESS_ACTIONS:
            _refuse_prohibited(reader, body, where, rule_tiers, rule_kinds, tiers)
        if action == "contribute":
            require_evidence_for_sensitive(reader, body, where, rule_tiers, rule_kinds, tiers)
        for key, message in _ALLOW_REQUIRES[action].items():
            if key not in body:
                reader.fail(node, f"{where}.{key}", message)
    values = {
        key: read(reader, body[key][1], f"{where}.{key}")
        for key, read in _RULE_FIELDS.items()
        if key in body
    }
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


def _parse_action(reader: NodeReader, node: Node, where: str) -> str:
    action = reader.string(node, where)
    if action == "revoke":
        reader.fail(
            node,
            where,
            "revoke is not written as a rule: a role may revoke the kinds it may contribute",
        )
    if action not in RULE_ACTIONS:
        reader.fail(node, where, f"expected one of {', '.join(RULE_ACTIONS)}")
    return action


def _parse_targets(
    reader: NodeReader,
    body: dict[str, tuple[Node, Node]],
    node: Node,
    where: str,
    action: str,
    tiers: dict[str, str],
) -> tuple[frozenset[str], frozenset[str]]:
    """The rule's (tiers, kinds): exactly one of them, none for audit and warninglist."""
    if action in KINDLESS_ACTIONS:
        why = {
            "audit": "audit rules cover the whole log (it holds no indicator values)",
            "warninglist": "warninglist rules cover every list and kind",
        }[action]
        for key in ("tiers", "kinds"):
            if key in body:
                reader.fail(body[key][0], f"{where}.{key}", f"{why}; name no tier or kind")
        return frozenset(), frozenset()
    if ("tiers" in body) == ("kinds" in body):
        reader.fail(node, f"{where}.tiers", f"a {action} rule names exactly one of tiers, kinds")
    if "tiers" in body:
        named = _references(reader, body["tiers"][1], f"{where}.tiers", frozenset(TIERS), "tier")
        return named, frozenset()
    named = _references(reader, body["kinds"][1], f"{where}.kinds", frozenset(tiers), "kind")
    return frozenset(), named


def _read_disclosure(reader: NodeReader, node: Node, where: str) -> Disclosure:
    word = reader.string(node, where)
    try:
        if word != word.lower():
            raise InvalidRequest(word)
        level = Disclosure.parse(word)
    except InvalidRequest:
        reader.fail(node, where, "expected one of " + ", ".join(d.word for d in Disclosure if d))
    if level == Disclosure.NONE:
        reader.fail(node, where, "use effect: deny to refuse a match")
    return level


def _read_count(minimum: int, *, nullable: bool) -> _FieldReader:
    def read(reader: NodeReader, node: Node, where: str) -> int | None:
        return reader.integer(node, where, minimum=minimum, nullable=nullable)

    return read


def _read_text_field(reader: NodeReader, node: Node, where: str) -> str:
    return reader.string(node, where)


#: How each valued field of a rule is read, in the order its errors are reported
#: (the structural keys id, effect, action, roles, purposes, tiers, kinds are
#: read above).  Every key of ``_ALL_RULE_KEYS`` is either structural or here.
_RULE_FIELDS: Final[Mapping[str, _FieldReader]] = {
    "disclosure": _read_disclosure,
    "min_contributors": _read_count(1, nullable=False),
    "daily_quota": _read_count(1, nullable=True),
    "retention_days": _read_count(1, nullable=True),
    "dispute_response_days": _read_count(1, nullable=False),
    "case_reference_required": NodeReader.boolean,
    "attribution": NodeReader.boolean,
    "min_evidence": read_evidence,
    "legal_basis": _read_text_field,
    "description": _read_text_field,
}


def _references(
    reader: NodeReader, node: Node, where: str, known: frozenset[str], what: str
) -> frozenset[str]:
    names = reader.names(node, where)
    for i, (name, item) in enumerate(names):
        if name not in known:
            reader.fail(item, f"{where}[{i}]", f"undeclared {what} {name!r}")
    return frozenset(name for name, _ in names)


def _refuse_prohibited(
    reader: NodeReader,
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
