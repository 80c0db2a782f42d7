"""How ``golden_audit_events.json`` and ``golden_label_sealing.json`` were made.

Run once (``python tests/data/make_golden_vectors.py``) and committed; the
vectors are the formats' specification now, so they are never regenerated to
follow a code change: a format change is a new version with new vectors.

Nothing here imports the project.  The audit-event bytes are written out by
hand from the version-1 format in ``hub/audit/events.py``'s docstring and
hashed as RFC 9162 leaves (SHA-256 of 0x00 || bytes).  The token keys are
HKDF-SHA256 (RFC 5869, no salt, from the ``cryptography`` package) of a fixed
OPRF output, and the label is sealed with ChaCha20-Poly1305 (RFC 8439) under a
fixed nonce with the AAD ``token || kind || 0x00 || contributor``
(``client_sdk/core/tokens.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = Path(__file__).parent
DIGEST_A = hashlib.sha256(b"CASE-2026-0417").hexdigest()
DIGEST_R = hashlib.sha256(b"serialized request").hexdigest()

# (constructor arguments, the canonical bytes written out by hand)
EVENTS: list[tuple[dict[str, Any], str]] = [
    (
        {
            "time": "2026-03-01T12:00:00+02:00",
            "institution": "bank-a",
            "role": "bank",
            "action": "Exchange.Match",
            "purpose": "fraud_prevention",
            "legal_basis": "legitimate_interest",
            "case_ref_digest": DIGEST_A,
            "kinds": ["phone", "email", "phone"],
            "tiers": ["standard", "sensitive"],
            "item_count": 3,
            "match_count": 1,
            "outcome": "allowed",
            "reasons": ["ALLOW_RULE", "CAP_NO_ATTRIBUTION"],
            "policy_version": "default@3",
            "request_digest": DIGEST_R,
        },
        '{"action":"Exchange.Match","case_ref_digest":"' + DIGEST_A + '",'
        '"institution":"bank-a","item_count":3,"kinds":["email","phone"],'
        '"legal_basis":"legitimate_interest","match_count":1,"outcome":"allowed",'
        '"policy_version":"default@3","purpose":"fraud_prevention",'
        '"reasons":["ALLOW_RULE","CAP_NO_ATTRIBUTION"],"request_digest":"' + DIGEST_R + '",'
        '"role":"bank","tiers":["sensitive","standard"],'
        '"time":"2026-03-01T10:00:00.000000Z","v":1}',
    ),
    (
        {
            "time": "2026-12-31T23:59:59.123456+00:00",
            "institution": "carrier-c",
            "role": "carrier",
            "action": "Exchange.Contribute",
            "purpose": "",
            "legal_basis": "",
            "case_ref_digest": "",
            "kinds": [],
            "tiers": [],
            "item_count": 0,
            "match_count": 0,
            "outcome": "denied",
            "reasons": ["DENY_UNKNOWN_PURPOSE"],
            "policy_version": "",
            "request_digest": "",
        },
        '{"action":"Exchange.Contribute","case_ref_digest":"","institution":"carrier-c",'
        '"item_count":0,"kinds":[],"legal_basis":"","match_count":0,"outcome":"denied",'
        '"policy_version":"","purpose":"","reasons":["DENY_UNKNOWN_PURPOSE"],'
        '"request_digest":"","role":"carrier","tiers":[],'
        '"time":"2026-12-31T23:59:59.123456Z","v":1}',
    ),
    (
        {
            "time": "2027-01-01T00:00:00.000001-05:00",
            "institution": "reg-r",
            "role": "regulator",
            "action": "Audit.GetEvents",
            "purpose": "supervision",
            "legal_basis": "legal_obligation",
            "case_ref_digest": "",
            "kinds": ["audit"],
            "tiers": [],
            "item_count": 1000000,
            "match_count": 0,
            "outcome": "allowed",
            "reasons": ["ALLOW_RULE", "ALLOW_RULE"],
            "policy_version": "default@3+override@1",
            "request_digest": DIGEST_R,
        },
        '{"action":"Audit.GetEvents","case_ref_digest":"","institution":"reg-r",'
        '"item_count":1000000,"kinds":["audit"],"legal_basis":"legal_obligation",'
        '"match_count":0,"outcome":"allowed","policy_version":"default@3+override@1",'
        '"purpose":"supervision","reasons":["ALLOW_RULE","ALLOW_RULE"],'
        '"request_digest":"' + DIGEST_R + '","role":"regulator","tiers":[],'
        '"time":"2027-01-01T05:00:00.000001Z","v":1}',
    ),
]


def audit_events() -> dict[str, Any]:
    vectors = []
    for fields, text in EVENTS:
        encoding = text.encode("ascii")
        vectors.append(
            {
                "event": fields,
                "encoding": text,
                "leaf_hash": hashlib.sha256(b"\x00" + encoding).hexdigest(),
            }
        )
    return {
        "source": (
            "tests/data/make_golden_vectors.py: encodings written by hand from the "
            "version-1 format (hub/audit/events.py docstring); leaf_hash = "
            "SHA-256(0x00 || encoding), RFC 9162 section 2.1.1. Never regenerate."
        ),
        "vectors": vectors,
    }


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def label_sealing() -> dict[str, Any]:
    oprf_output = bytes(range(64))
    token = _hkdf(oprf_output, b"fraudhub/v1/match-token")
    label_key = _hkdf(oprf_output, b"fraudhub/v1/label-key")
    vectors = []
    for kind, contributor, label, nonce in [
        ("phone", "bank-a", "CASE-2026-0417; fraud desk +44 20 7946 0000", bytes(12)),
        ("email", "carrier-c", "", bytes(range(100, 112))),
        ("iban", "bank-b", "Überweisungsbetrug, Meldung 7", b"\xff" * 12),
    ]:
        aad = token + kind.encode() + b"\x00" + contributor.encode()
        sealed = nonce + ChaCha20Poly1305(label_key).encrypt(nonce, label.encode(), aad)
        vectors.append(
            {
                "kind": kind,
                "contributor": contributor,
                "label": label,
                "nonce": nonce.hex(),
                "aad": aad.hex(),
                "sealed": sealed.hex(),
            }
        )
    return {
        "source": (
            "tests/data/make_golden_vectors.py: match_token and label_key are "
            "HKDF-SHA256 (no salt, 32 bytes, infos fraudhub/v1/match-token and "
            "fraudhub/v1/label-key) of oprf_output, by the cryptography package; "
            "sealed = nonce || ChaCha20-Poly1305(label_key, nonce, label, aad) with "
            "aad = token || kind || 0x00 || contributor. Never regenerate."
        ),
        "oprf_output": oprf_output.hex(),
        "match_token": token.hex(),
        "label_key": label_key.hex(),
        "vectors": vectors,
    }


def main() -> None:
    for name, content in [
        ("golden_audit_events.json", audit_events()),
        ("golden_label_sealing.json", label_sealing()),
    ]:
        (HERE / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
