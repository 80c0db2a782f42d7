"""Audit events and their canonical, versioned encoding.

An :class:`AuditEvent` records one RPC, allowed or refused: who (institution,
role), what (action, kinds and their policy tiers, counts), why (purpose, legal
basis, a digest of the case reference), the decision (outcome, reason codes,
policy version) and a digest of the request.  It never holds a raw indicator
value, a token or a label: only enumerations, counts and SHA-256 digests.  The
constructor enforces the shapes (identifiers, hex digests, non-negative counts,
UTC time) so free text cannot slip in.

Encoding, version 1 (the Merkle leaf data, RFC 9162 ``leaf_hash(encode())``)::

    JSON object, keys sorted, no whitespace (separators "," and ":"),
    ASCII only (json ensure_ascii), UTF-8 bytes; fields:
    "v": 1, "time": "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always 6 fraction digits),
    "institution", "role", "action", "purpose", "legal_basis": strings,
    "case_ref_digest", "request_digest": lower-case hex SHA-256 ("" if none),
    "kinds", "tiers", "reasons": arrays of strings (kinds and tiers sorted, unique),
    "item_count", "match_count": integers >= 0,
    "outcome", "policy_version": strings.

:func:`decode` accepts only bytes that re-encode to themselves, so one event has
exactly one encoding.  A later version bumps ``"v"``; decoders reject versions
they do not know.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from client_sdk.core.errors import InvalidRequest

__all__ = [
    "ENCODING_VERSION",
    "AuditEvent",
    "case_ref_digest",
    "decode",
    "request_digest",
]

ENCODING_VERSION = 1

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Identifiers: RPC names ("Exchange.Match"), roles, kinds, tiers, purposes,
# outcomes, reason codes, institution ids.  No spaces, so no free text.
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_FIELDS = (
    "action",
    "case_ref_digest",
    "institution",
    "item_count",
    "kinds",
    "legal_basis",
    "match_count",
    "outcome",
    "policy_version",
    "purpose",
    "reasons",
    "request_digest",
    "role",
    "tiers",
    "time",
    "v",
)


def case_ref_digest(case_reference: str | None) -> str:
    """Hex SHA-256 of a case reference (UTF-8), or "" when there is none."""
    if not case_reference:
        return ""
    return hashlib.sha256(case_reference.encode("utf-8")).hexdigest()


def request_digest(serialized_request: bytes) -> str:
    """Hex SHA-256 of the serialized request message."""
    return hashlib.sha256(serialized_request).hexdigest()


def _ident(name: str, value: str, *, empty_ok: bool = False) -> None:
    if value == "" and empty_ok:
        return
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise InvalidRequest(f"audit event field {name} is not an identifier")


def _digest(name: str, value: str) -> None:
    if value != "" and not _DIGEST.fullmatch(value):
        raise InvalidRequest(f"audit event field {name} is not a lower-case hex SHA-256")


@dataclass(frozen=True)
class AuditEvent:
    """One audited RPC.  Raises InvalidRequest on construction if a field is malformed.

    ``kinds`` and ``tiers`` are stored sorted and unique; ``tiers`` are the policy
    tiers of the kinds at decision time (tiers change with policy versions, so
    the event records them rather than the reader re-deriving them).
    """

    time: datetime
    institution: str
    role: str
    action: str
    purpose: str
    legal_basis: str
    case_ref_digest: str
    kinds: tuple[str, ...]
    item_count: int
    match_count: int
    outcome: str
    reasons: tuple[str, ...]
    policy_version: str
    request_digest: str
    tiers: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise InvalidRequest("audit event time must be a timezone-aware datetime")
        object.__setattr__(self, "time", self.time.astimezone(UTC))
        _ident("institution", self.institution)
        _ident("role", self.role)
        _ident("action", self.action)
        _ident("purpose", self.purpose, empty_ok=True)
        _ident("legal_basis", self.legal_basis, empty_ok=True)
        _ident("outcome", self.outcome)
        _ident("policy_version", self.policy_version, empty_ok=True)
        _digest("case_ref_digest", self.case_ref_digest)
        _digest("request_digest", self.request_digest)
        for name in ("kinds", "tiers", "reasons"):
            values = getattr(self, name)
            if isinstance(values, str):
                raise InvalidRequest(f"audit event field {name} must be a sequence of codes")
            for v in values:
                _ident(name, v)
        object.__setattr__(self, "kinds", tuple(sorted(set(self.kinds))))
        object.__setattr__(self, "tiers", tuple(sorted(set(self.tiers))))
        object.__setattr__(self, "reasons", tuple(self.reasons))
        for name in ("item_count", "match_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequest(f"audit event field {name} must be an integer >= 0")

    # --- constructors: one per kind of event, the empty fields filled once ----

    @classmethod
    def of(
        cls,
        *,
        time: datetime,
        institution: str,
        role: str,
        action: str,
        outcome: str,
        purpose: str = "",
        legal_basis: str = "",
        case_ref_digest: str = "",
        kinds: tuple[str, ...] = (),
        tiers: tuple[str, ...] = (),
        item_count: int = 0,
        match_count: int = 0,
        reasons: tuple[str, ...] = (),
        policy_version: str = "",
        request_digest: str = "",
    ) -> AuditEvent:
        """An event with the fields a caller does not name left empty (or 0).

        Raises InvalidRequest as the constructor does.
        """
        return cls(
            time=time,
            institution=institution,
            role=role,
            action=action,
            purpose=purpose,
            legal_basis=legal_basis,
            case_ref_digest=case_ref_digest,
            kinds=kinds,
            item_count=item_count,
            match_count=match_count,
            outcome=outcome,
            reasons=reasons,
            policy_version=policy_version,
            request_digest=request_digest,
            tiers=tiers,
        )

    @classmethod
    def administration(
        cls,
        *,
        time: datetime,
        institution: str,
        action: str,
        outcome: str,
        reasons: tuple[str, ...],
        policy_version: str = "",
        request_digest: str = "",
    ) -> AuditEvent:
        """A change to (or a read of) the registry or the policy by an operator.

        Purpose ``administration``, one item; ``reasons`` name the target
        (``TARGET:<id>``), never a key.
        """
        return cls.of(
            time=time,
            institution=institution,
            role="operator",
            action=action,
            outcome=outcome,
            purpose="administration",
            item_count=1,
            reasons=reasons,
            policy_version=policy_version,
            request_digest=request_digest,
        )

    @classmethod
    def log_read(
        cls,
        *,
        time: datetime,
        institution: str,
        role: str,
        action: str,
        outcome: str,
        item_count: int,
        policy_version: str,
        request_digest: str,
    ) -> AuditEvent:
        """A read of the audit log itself (purpose ``audit``): reading leaves a trace."""
        return cls.of(
            time=time,
            institution=institution,
            role=role,
            action=action,
            outcome=outcome,
            purpose="audit",
            item_count=item_count,
            policy_version=policy_version,
            request_digest=request_digest,
        )

    @classmethod
    def refusal(
        cls,
        *,
        time: datetime,
        institution: str,
        role: str,
        action: str,
        outcome: str,
        error: str,
        policy_version: str,
    ) -> AuditEvent:
        """A call refused before any servicer ran (authentication, role); ``error``
        is the refusal's class name."""
        return cls.of(
            time=time,
            institution=institution,
            role=role,
            action=action,
            outcome=outcome,
            reasons=(error,),
            policy_version=policy_version,
        )

    @classmethod
    def housekeeping(
        cls,
        *,
        time: datetime,
        institution: str,
        action: str,
        item_count: int,
        reasons: tuple[str, ...],
        policy_version: str,
    ) -> AuditEvent:
        """Work the hub did on its own (expiry sweeps), done as operator."""
        return cls.of(
            time=time,
            institution=institution,
            role="operator",
            action=action,
            outcome="ok",
            item_count=item_count,
            reasons=reasons,
            policy_version=policy_version,
        )

    def to_json_obj(self) -> dict[str, Any]:
        """The version-1 JSON object (see the module docstring)."""
        return {
            "v": ENCODING_VERSION,
            "time": self.time.strftime(_TIME_FORMAT),
            "institution": self.institution,
            "role": self.role,
            "action": self.action,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "case_ref_digest": self.case_ref_digest,
            "kinds": list(self.kinds),
            "tiers": list(self.tiers),
            "item_count": self.item_count,
            "match_count": self.match_count,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "policy_version": self.policy_version,
            "request_digest": self.request_digest,
        }

    def encode(self) -> bytes:
        """The canonical version-1 encoding: the Merkle leaf data of this event."""
        return json.dumps(
            self.to_json_obj(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")


def decode(data: bytes) -> AuditEvent:
    """Parse a canonical encoding back into an event.

    Raises InvalidRequest if the bytes are not JSON, name an unknown version,
    miss or add a field, or are not in canonical form.
    """
    try:
        obj = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("audit event is not canonical JSON") from exc
    if not isinstance(obj, dict):
        raise InvalidRequest("audit event is not a JSON object")
    if obj.get("v") != ENCODING_VERSION:
        raise InvalidRequest(f"audit event encoding version {obj.get('v')!r} is not supported")
    if tuple(sorted(obj)) != _FIELDS:
        raise InvalidRequest("audit event has missing or unknown fields")
    try:
        time = datetime.strptime(obj["time"], _TIME_FORMAT).replace(tzinfo=UTC)
        event = AuditEvent(
            time=time,
            institution=obj["institution"],
            role=obj["role"],
            action=obj["action"],
            purpose=obj["purpose"],
            legal_basis=obj["legal_basis"],
            case_ref_digest=obj["case_ref_digest"],
            kinds=tuple(obj["kinds"]),
            tiers=tuple(obj["tiers"]),
            item_count=obj["item_count"],
            match_count=obj["match_count"],
            outcome=obj["outcome"],
            reasons=tuple(obj["reasons"]),
            policy_version=obj["policy_version"],
            request_digest=obj["request_digest"],
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("audit event has a malformed field") from exc
    if event.encode() != data:
        raise InvalidRequest("audit event is not in canonical form")
    return event
