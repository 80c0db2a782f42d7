"""The audit event of one Exchange request message, drafted as the work proceeds.

An :class:`AuditDraft` collects what the servicer learns while it handles a
message (kinds and their tiers, the rules the decisions relied on, reason
codes, counts) and turns it into the :class:`~hub.audit.events.AuditEvent`
of the outcome.  Guarantees: the purpose is written as given only if the
policy declares it (otherwise :data:`UNDECLARED_PURPOSE`: the log is
permanent and a caller may put anything there); the case reference is only
ever a digest; no token, label or raw value reaches the draft.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from google.protobuf.message import Message
from sqlmodel import Session

from client_sdk.core.errors import FraudhubError, PolicyDenied
from client_sdk.core.vocabulary import Principal
from hub.audit.events import AuditEvent, case_ref_digest, request_digest
from hub.policy.engine import Policy
from hub.policy.model import Decision
from hub.services.audited import audit_outcome, run_audited
from hub.storage.store import Store
from hub.wire.auth import current_principal_still_valid

__all__ = ["UNDECLARED_PURPOSE", "AuditDraft", "begin_draft", "legal_basis", "run_drafted"]

_T = TypeVar("_T")

#: What the audit log records for a purpose the policy does not declare.
UNDECLARED_PURPOSE = "undeclared"


@dataclass
class AuditDraft:
    """The audit event of one request message, filled in as the work proceeds."""

    action: str
    purpose: str = ""
    case_reference: str | None = None
    request_digest: str = ""
    kinds: set[str] = field(default_factory=set)
    tiers: set[str] = field(default_factory=set)
    rules: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    item_count: int = 0
    match_count: int = 0
    policy_version: str = ""
    # The policy's purposes: only these are written to the log as given.
    declared_purposes: frozenset[str] = frozenset()

    def note(self, decision: Decision) -> None:
        self.policy_version = decision.version
        if decision.tier:
            self.tiers.add(decision.tier)
        for rule in decision.rules:
            if decision.allow and rule not in self.rules:
                self.rules.append(rule)
        for reason in decision.reasons:
            if reason not in self.reasons:
                self.reasons.append(reason)

    def event(self, principal: Principal, outcome: str, now: datetime) -> AuditEvent:
        return AuditEvent.of(
            time=now,
            institution=principal.institution,
            role=principal.role,
            action=self.action,
            outcome=outcome,
            purpose=self._audited_purpose(),
            legal_basis=legal_basis(self.rules),
            case_ref_digest=case_ref_digest(self.case_reference),
            kinds=tuple(self.kinds),
            tiers=tuple(self.tiers),
            item_count=self.item_count,
            match_count=self.match_count,
            reasons=tuple(self.reasons),
            policy_version=self.policy_version,
            request_digest=self.request_digest,
        )

    def failed(self, principal: Principal, exc: FraudhubError, now: datetime) -> AuditEvent:
        """The event of this message failing with ``exc`` (a policy refusal adds its reasons)."""
        if isinstance(exc, PolicyDenied):
            self.reasons.extend(r for r in exc.reasons if r not in self.reasons)
        return self.event(principal, audit_outcome(exc), now)

    def _audited_purpose(self) -> str:
        # A purpose the policy does not declare is refused; its text is not
        # logged, since the log is permanent and a caller may put anything
        # there, a phone number included.
        if not self.purpose or self.purpose in self.declared_purposes:
            return self.purpose
        return UNDECLARED_PURPOSE


def legal_basis(rules: Iterable[str]) -> str:
    """The ids of the policy rules the decision relied on, as one audit code.

    The legal basis text lives in those rules of the recorded policy version.
    """
    basis = ""
    for rule in rules:
        candidate = f"{basis}+{rule}" if basis else f"policy:{rule}"
        if len(candidate) > 128:
            break
        basis = candidate
    return basis


def begin_draft(action: str, request: Message, policy: Policy) -> tuple[Principal, AuditDraft]:
    """Who asks and the audit draft of ``request`` under ``policy``.

    The caller is re-checked (hub.wire.auth): on every message of a stream, an
    expired token or a disabled institution ends the stream.
    """
    who = current_principal_still_valid()
    draft = AuditDraft(
        action=action,
        request_digest=request_digest(request.SerializeToString(deterministic=True)),
        policy_version=policy.version,
        declared_purposes=policy.purposes,
    )
    return Principal(who.institution, who.role), draft


def run_drafted(
    store: Store,
    principal: Principal,
    draft: AuditDraft,
    now: datetime,
    work: Callable[[Session, datetime], _T],
) -> _T:
    """Run ``work`` and append the draft's event in one transaction (ADR 0007).

    On failure the work is rolled back, the failure is audited on its own and
    the original error is re-raised (database errors as StorageError).
    """
    return run_audited(
        store,
        lambda session: work(session, now),
        lambda _result: draft.event(principal, "ok", now),
        lambda exc: draft.failed(principal, exc, now),
    )
