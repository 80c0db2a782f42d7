"""Known-answer vectors for formats that must never change silently.

- The version-1 audit-event encoding (:mod:`hub.audit.events`): each event
  encodes to exactly the bytes in ``tests/data/golden_audit_events.json``,
  hashes to the recorded RFC 9162 leaf, and those bytes decode to it again.
  Every stored log and every regulator's verified state depends on these bytes.
- Label sealing (:mod:`client_sdk.core.tokens`): a fixed OPRF output gives the
  recorded match token and label key; the recorded sealed labels (made with
  fixed nonces, outside the project) open to their labels; the AAD layout is
  pinned, for the labels the SDK seals now as for the recorded ones.

How the vectors were made: ``tests/data/make_golden_vectors.py`` (independent
of the project's code).  A failure here means a format changed: that needs a
new version and new vectors, not an edit of these.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from client_sdk.core.errors import LabelError
from client_sdk.core.tokens import NONCE_BYTES, derive_token_keys, open_label, seal_label
from hub.audit import merkle
from hub.audit.events import AuditEvent, decode

DATA = Path(__file__).parent / "data"
AUDIT = json.loads((DATA / "golden_audit_events.json").read_text())
SEALING = json.loads((DATA / "golden_label_sealing.json").read_text())
TOKEN = bytes.fromhex(SEALING["match_token"])
LABEL_KEY = bytes.fromhex(SEALING["label_key"])


def _event(fields: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        **{
            **fields,
            "time": datetime.fromisoformat(fields["time"]),
            "kinds": tuple(fields["kinds"]),
            "tiers": tuple(fields["tiers"]),
            "reasons": tuple(fields["reasons"]),
        }
    )


@pytest.mark.parametrize("vector", AUDIT["vectors"], ids=lambda v: v["event"]["action"])
def test_audit_event_encodes_to_the_recorded_bytes_and_leaf(vector: dict[str, Any]) -> None:
    event = _event(vector["event"])
    encoding = vector["encoding"].encode("ascii")
    assert event.encode() == encoding
    assert merkle.leaf_hash(event.encode()).hex() == vector["leaf_hash"]
    assert decode(encoding) == event


def test_oprf_output_gives_the_recorded_token_and_label_key() -> None:
    keys = derive_token_keys(bytes.fromhex(SEALING["oprf_output"]))
    assert keys.match_token == TOKEN
    assert keys.label_key == LABEL_KEY


@pytest.mark.parametrize("vector", SEALING["vectors"], ids=lambda v: v["kind"])
def test_recorded_sealed_label_opens_and_its_aad_is_pinned(vector: dict[str, Any]) -> None:
    sealed = bytes.fromhex(vector["sealed"])
    kind, contributor = vector["kind"], vector["contributor"]
    label = vector["label"].encode()
    assert sealed[:NONCE_BYTES].hex() == vector["nonce"]
    assert open_label(LABEL_KEY, TOKEN, kind, contributor, sealed) == label
    # The AAD is token || kind || 0x00 || contributor: the label is bound to both.
    aad = bytes.fromhex(vector["aad"])
    assert aad == TOKEN + kind.encode() + b"\x00" + contributor.encode()
    assert ChaCha20Poly1305(LABEL_KEY).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad) == (
        label
    )
    with pytest.raises(LabelError):
        open_label(LABEL_KEY, TOKEN, kind, contributor + "x", sealed)


@pytest.mark.parametrize("vector", SEALING["vectors"], ids=lambda v: v["kind"])
def test_labels_sealed_now_use_the_recorded_layout(vector: dict[str, Any]) -> None:
    label = vector["label"].encode()
    sealed = seal_label(LABEL_KEY, TOKEN, vector["kind"], vector["contributor"], label)
    aad = bytes.fromhex(vector["aad"])
    assert len(sealed) == len(bytes.fromhex(vector["sealed"]))
    assert ChaCha20Poly1305(LABEL_KEY).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad) == (
        label
    )
