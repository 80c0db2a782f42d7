"""Request envelopes and policy quotas shared by the Exchange and Feedback services.

``check_envelope`` bounds a request before any item is looked at;
``count_quota`` tallies, per decision, the daily quota bucket the policy names;
``consume_quotas`` charges the tally in the request's own transaction (ADR 0007),
so refused work spends nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlmodel import Session

from client_sdk.core.errors import InvalidRequest
from client_sdk.core.vocabulary import Principal
from hub.policy.model import Decision
from hub.storage.store import consume_quota

__all__ = [
    "MAX_CASE_REFERENCE",
    "MAX_ITEMS",
    "PURPOSE_CODE",
    "check_envelope",
    "consume_quotas",
    "count_quota",
]

#: Items per request message (exchange.proto allows up to 10000).
MAX_ITEMS = 10_000
#: A case reference is audited only as a digest; this bounds what is hashed.
MAX_CASE_REFERENCE = 256
#: How a purpose code is spelled (the policy says which ones exist).
PURPOSE_CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def check_envelope(purpose: str, case_reference: str, count: int) -> None:
    """Request-level bounds; raises InvalidRequest."""
    if not 1 <= count <= MAX_ITEMS:
        raise InvalidRequest(f"a request holds 1 to {MAX_ITEMS} items")
    if not PURPOSE_CODE.fullmatch(purpose):
        raise InvalidRequest("purpose must be a purpose code of the policy")
    if len(case_reference) > MAX_CASE_REFERENCE:
        raise InvalidRequest(f"case_reference is longer than {MAX_CASE_REFERENCE} characters")


def count_quota(quota: dict[tuple[str, int], int], decision: Decision) -> None:
    limit = decision.obligations.daily_quota
    if limit is None:
        return
    # The policy names the bucket (ACTION/PURPOSE/TIER); a rule id stands in otherwise.
    bucket = decision.obligations.quota_bucket or "/".join(decision.rules[:1])
    key = (bucket, limit)
    quota[key] = quota.get(key, 0) + 1


def consume_quotas(
    session: Session,
    principal: Principal,
    quota: dict[tuple[str, int], int],
    now: datetime,
    action: str,
) -> None:
    day = now.astimezone(UTC).date().isoformat()
    for (bucket, limit), amount in sorted(quota.items()):
        consume_quota(session, principal.institution, bucket or action, day, amount, limit)
