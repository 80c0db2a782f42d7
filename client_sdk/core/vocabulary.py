"""The one vocabulary of fraudhub: roles, kinds, tiers, categories, disclosure levels,
revocation reasons, and who is asking (:class:`Principal`).

SDK, hub and key holders all read these names from here, so a word means the same
everywhere and orderings (the disclosure ladder above all) are written once.  The
wire enums in ``protos/fraudhub/v1/common.proto`` carry the same numbers; a test
(``tests/test_vocabulary.py``) holds the two together.  Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from client_sdk.core.errors import InvalidRequest

__all__ = [
    "ALL_KINDS",
    "CATEGORIES",
    "DEFAULT_EVIDENCE",
    "DISCLOSURE_LEVELS",
    "EVIDENCE_CLASSES",
    "INNOCENT_EVIDENCE",
    "KINDS",
    "PROHIBITED_KINDS",
    "REVOKE_REASONS",
    "ROLES",
    "SIGHTING_TYPES",
    "TIERS",
    "UPHOLD_EVIDENCE",
    "Disclosure",
    "Principal",
    "evidence_rank",
]

#: Institution roles; servers check them per RPC (DESIGN.md "Parties").
ROLES: Final[tuple[str, ...]] = ("bank", "carrier", "regulator", "operator")

#: Indicator kinds the hub stores and matches (DESIGN.md indicator table).
KINDS: Final[tuple[str, ...]] = (
    "phone",
    "bank_card",
    "bank_account",
    "national_id",
    "device_id",
    "email",
    "ip",
    "url",
    "domain",
    "wallet",
    "social_account",
)
#: Kinds that exist only to be refused: private by consensus (tier "prohibited").
PROHIBITED_KINDS: Final[tuple[str, ...]] = (
    "genetic",
    "health",
    "criminal_record",
    "biometric",
    "religion",
)
ALL_KINDS: Final[tuple[str, ...]] = KINDS + PROHIBITED_KINDS

#: Privacy tiers, strictest first (DESIGN.md tier table).
TIERS: Final[tuple[str, ...]] = ("prohibited", "sensitive", "context_dependent", "public")

#: Fraud categories travelling in clear; same order as ``common.proto`` Category (from 1).
CATEGORIES: Final[tuple[str, ...]] = (
    "money_mule",
    "scam_phone",
    "card_seller",
    "phishing",
    "fake_investment",
    "romance_scam",
    "gambling",
    "identity_theft",
    "other",
)

#: Why a contributor withdraws indicators.  The hub audits the reason, so it is a
#: code from this list, never free text (free text could carry a value).
REVOKE_REASONS: Final[tuple[str, ...]] = (
    "false_positive",
    "court_order",
    "data_subject_request",
    "contributor_error",
    "duplicate",
    "case_closed",
    "other",
)

#: Evidence classes of a contribution, weakest first (issue 12; after Cifas's Standard of
#: Proof, DOMAIN.md).  A policy's ``min_evidence`` compares by this order.
#: ``impersonation_victim`` is not on the ladder: it records that a person's identity was
#: misused, so it never counts against that person (see :data:`INNOCENT_EVIDENCE`).
EVIDENCE_CLASSES: Final[tuple[str, ...]] = (
    "suspected",
    "internal_investigation",
    "victim_report",
    "police_case",
    "impersonation_victim",
)
#: The class that flags an innocent person: an indicator backed only by it is never
#: reported as a fraud match (matchers at ``summary`` and above see ``impersonated``).
INNOCENT_EVIDENCE: Final[str] = "impersonation_victim"
#: What an item without an evidence class (an SDK older than evidence classes) counts as.
#: Before evidence classes the contribute purposes were documented as filing fraud the
#: contributor had confirmed itself (policies/default.yaml, ``fraud_reporting``), which is
#: an internal investigation; ``suspected`` must be said explicitly.
DEFAULT_EVIDENCE: Final[str] = "internal_investigation"

#: MISP's three sighting types (DOMAIN.md): the filer saw the fraud too, the value is
#: innocent, or it no longer belongs to the fraudster (a recycled phone number).
SIGHTING_TYPES: Final[tuple[str, ...]] = ("confirmed", "false_positive", "expired")


def evidence_rank(evidence: str) -> int:
    """Position of ``evidence`` on the proof ladder (``suspected`` = 0).

    ``impersonation_victim`` ranks above every fraud class: a protective record
    is never refused for want of proof (it accuses nobody).  Raises InvalidRequest
    for an unknown class (the message does not echo it).
    """
    try:
        return EVIDENCE_CLASSES.index(evidence)
    except ValueError:
        raise InvalidRequest(
            "unknown evidence class (one of " + ", ".join(EVIDENCE_CLASSES) + ")"
        ) from None


#: The evidence a contributor may name to uphold a disputed indicator (issue 12: a
#: listing stands only on proof).  ``suspected`` is no proof, and an impersonation
#: victim's record must never count against them, so neither can uphold a dispute.
UPHOLD_EVIDENCE: Final[tuple[str, ...]] = (
    "police_case",
    "victim_report",
    "internal_investigation",
)


class Disclosure(IntEnum):
    """How much a match may reveal, ordered from least to most.

    ``match``: yes/no; ``count``: how many distinct contributors; ``summary``:
    count plus the clear metadata (categories, confidence, dates); ``labels``:
    summary plus the sealed labels (which only a holder of the raw value can open).
    The numbers are the wire enum ``fraudhub.v1.Disclosure``.
    """

    NONE = 0
    MATCH = 1
    COUNT = 2
    SUMMARY = 3
    LABELS = 4

    @property
    def word(self) -> str:
        """The YAML, JSON and CSV spelling (``"count"``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, word: str) -> Disclosure:
        """The level spelled ``word``; raises InvalidRequest for anything else.

        The message lists the levels and does not echo ``word`` (it may be
        anything a caller sent).
        """
        try:
            return cls[word.upper()]
        except KeyError:
            words = ", ".join(level.word for level in cls)
            raise InvalidRequest(f"unknown disclosure level (one of {words})") from None


#: Disclosure words, least to most.
DISCLOSURE_LEVELS: Final[tuple[str, ...]] = tuple(level.word for level in Disclosure)


@dataclass(frozen=True)
class Principal:
    """Who asks: an institution id and its role (one of :data:`ROLES`).

    Rules are written per role; the institution is carried so that quotas and
    audit events can be kept per institution, and is never used to decide.
    """

    institution: str
    role: str
