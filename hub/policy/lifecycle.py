"""Policy parts of the indicator lifecycle (issue 12): decay models and evidence classes.

``min_evidence`` (contribute, match and watch rules) is one of the evidence ladder's
classes (``client_sdk.core.vocabulary.EVIDENCE_CLASSES`` without
``impersonation_victim``, which accuses nobody).  A contribute rule for a
sensitive tier or kind may not set ``suspected``; without ``min_evidence`` the
engine applies :data:`SENSITIVE_MIN_EVIDENCE` to sensitive kinds anyway.

The ``decay`` section holds score decay models per kind.

Schema (policies/README.md)::

    decay:
      default: {lifetime_days: 730, decay_speed: 1, threshold: 0, source: "..."}
      models:
        - name: vishing
          kinds: [phone]
          lifetime_days: 10
          decay_speed: 2.3
          threshold: 30
          source: MISP decaying model "vishing" (...)

Every model names its ``source`` (where its numbers come from); a kind is in at
most one model; kinds must be in the tier table.  Errors are the reader's
``FILE:LINE: FIELD: MESSAGE`` :class:`~client_sdk.core.errors.PolicyError`.
Only the operator's layer may carry ``decay``.  No I/O here: the reader hands
over the composed YAML node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, NoReturn, Protocol

from yaml.nodes import Node, ScalarNode, SequenceNode

from client_sdk.core.vocabulary import EVIDENCE_CLASSES, INNOCENT_EVIDENCE
from hub.policy.model import MAX_SCORE, SENSITIVE_MIN_EVIDENCE, DecayModel


class NodeReader(Protocol):
    """What this module uses of :class:`hub.policy.reader.NodeReader` (which imports it)."""

    def fail(self, node: Node | None, where: str, message: str) -> NoReturn: ...

    def mapping(
        self,
        node: Node,
        where: str,
        allowed: frozenset[str],
        required: frozenset[str] = ...,
    ) -> dict[str, tuple[Node, Node]]: ...

    def scalar(self, node: Node, where: str, tag: str, expected: str) -> Any: ...

    def string(self, node: Node, where: str, *, pattern: re.Pattern[str] | None = ...) -> str: ...

    def integer(
        self, node: Node, where: str, *, minimum: int, nullable: bool = ...
    ) -> int | None: ...

    def names(
        self, node: Node, where: str, *, pattern: re.Pattern[str] = ..., nonempty: bool = ...
    ) -> list[tuple[str, Node]]: ...


__all__ = [
    "SENSITIVE_MIN_EVIDENCE",
    "parse_decay",
    "read_evidence",
    "require_evidence_for_sensitive",
]

_MODEL_KEYS: Final[frozenset[str]] = frozenset(
    {"lifetime_days", "decay_speed", "threshold", "source"}
)
_FLOAT = "tag:yaml.org,2002:float"
_INT = "tag:yaml.org,2002:int"


def _number(reader: NodeReader, node: Node, where: str) -> float:
    if not isinstance(node, ScalarNode) or node.tag not in (_FLOAT, _INT):
        reader.fail(node, where, "expected a number")
    value = float(reader.scalar(node, where, node.tag, "a number"))
    if not value > 0:
        reader.fail(node, where, "must be greater than 0")
    return value


def _model(
    reader: NodeReader, node: Node, where: str, name: str, extra: frozenset[str]
) -> DecayModel:
    body = reader.mapping(node, where, _MODEL_KEYS | extra, _MODEL_KEYS)
    threshold = reader.integer(body["threshold"][1], f"{where}.threshold", minimum=0)
    assert threshold is not None
    if threshold > MAX_SCORE:
        reader.fail(body["threshold"][1], f"{where}.threshold", "must be at most 100")
    return DecayModel(
        name=name,
        lifetime_days=_number(reader, body["lifetime_days"][1], f"{where}.lifetime_days"),
        decay_speed=_number(reader, body["decay_speed"][1], f"{where}.decay_speed"),
        threshold=threshold,
        source=reader.string(body["source"][1], f"{where}.source"),
    )


def parse_decay(
    reader: NodeReader, node: Node, kinds: Mapping[str, str]
) -> tuple[dict[str, DecayModel], DecayModel | None]:
    """(kind -> model, default model) of a ``decay`` node; raises PolicyError."""
    top = reader.mapping(node, "decay", frozenset({"default", "models"}))
    default = None
    if "default" in top:
        default = _model(reader, top["default"][1], "decay.default", "default", frozenset())
    table: dict[str, DecayModel] = {}
    if "models" not in top:
        return table, default
    models = top["models"][1]
    if not isinstance(models, SequenceNode):
        reader.fail(models, "decay.models", "expected a list")
    names: set[str] = set()
    for i, item in enumerate(models.value):
        where = f"decay.models[{i}]"
        body = reader.mapping(
            item, where, _MODEL_KEYS | {"name", "kinds"}, frozenset({"name", "kinds"})
        )
        name = reader.string(body["name"][1], f"{where}.name")
        if name in names:
            reader.fail(body["name"][1], f"{where}.name", f"{name!r} is listed twice")
        names.add(name)
        model = _model(reader, item, where, name, frozenset({"name", "kinds"}))
        for j, (kind, kind_node) in enumerate(reader.names(body["kinds"][1], f"{where}.kinds")):
            path = f"{where}.kinds[{j}]"
            if kind not in kinds:
                reader.fail(kind_node, path, f"undeclared kind {kind!r}")
            if kinds[kind] == "prohibited":
                reader.fail(kind_node, path, "prohibited kinds are never stored, so never scored")
            if kind in table:
                reader.fail(kind_node, path, f"{kind} already decays by model {table[kind].name}")
            table[kind] = model
    return table, default


def read_evidence(reader: NodeReader, node: Node, where: str) -> str:
    word = reader.string(node, where)
    ladder = [c for c in EVIDENCE_CLASSES if c != INNOCENT_EVIDENCE]
    if word not in ladder:
        reader.fail(node, where, "expected one of " + ", ".join(ladder))
    return word


def require_evidence_for_sensitive(
    reader: NodeReader,
    body: dict[str, tuple[Node, Node]],
    where: str,
    rule_tiers: frozenset[str],
    rule_kinds: frozenset[str],
    tiers: dict[str, str],
) -> None:
    """Sensitive kinds are filed only on evidence stronger than ``suspected`` (issue 12)."""
    sensitive = "sensitive" in rule_tiers or any(tiers.get(k) == "sensitive" for k in rule_kinds)
    if not sensitive:
        return
    weakest = EVIDENCE_CLASSES[0]
    if "min_evidence" in body and reader.string(body["min_evidence"][1], where) == weakest:
        reader.fail(
            body["min_evidence"][1],
            f"{where}.min_evidence",
            f"sensitive kinds are never filed as {weakest}",
        )
