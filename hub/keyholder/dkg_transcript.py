"""One view of the DKG exchange for everybody: no signed round file may change once read.

GJKR assumes a broadcast channel: every participant sees the same messages.
A shared directory is not one, because a participant can re-sign and replace
its own file after some participants have read it (a late complaint against
an honest dealer that already answered the complaints it saw would get that
dealer disqualified and named as the cheat, and participants reading at other
times would end with different qualified sets).  This module makes the
directory behave as a broadcast for the file transport (``hub.keyholder.dkg_files``):

- :func:`note_read` records the digest of every verified message body a
  participant reads (in its own state, so across rounds and restarts) and
  refuses a file whose content differs from the one it read before;
- :func:`claims` is what a participant signs into each of its own messages:
  the digests of every file it has read so far;
- :func:`note_read` also compares the claims of the message just read with the
  participant's own record, so two participants that read different versions
  of a file find out at the next message of the other they read.

Every mismatch raises ConfigurationError naming the file and who saw what; the
session cannot continue and must be run again without the participant that
signed two versions.  Pure: works on the state dict and message bodies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from client_sdk.core.errors import ConfigurationError

__all__ = ["CLAIMS_KEY", "claims", "note_read"]

#: The field of every signed message that lists the files its writer had read.
CLAIMS_KEY = "seen"
_STATE_KEY = "seen_files"


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def claims(state: Mapping[str, Any]) -> dict[str, str]:
    """File name -> digest of every message this participant has read itself."""
    seen: Mapping[str, list[str]] = state.get(_STATE_KEY, {})
    return {name: digest for name, (digest, source) in seen.items() if source == "read"}


def note_read(state: dict[str, Any], name: str, sender: str, body: Mapping[str, Any]) -> None:
    """Record that ``body`` (a verified message by ``sender``) was read as file ``name``.

    Raises ConfigurationError if this participant read another version of the
    file before, or if the message reports a version of some file that differs
    from the one this participant read (or was told of by another message).
    """
    seen: dict[str, list[str]] = state.setdefault(_STATE_KEY, {})
    digest = _digest(body)
    before = seen.get(name)
    if before is not None and before[0] != digest:
        told = "this participant read" if before[1] == "read" else f"{before[1]} reported"
        raise ConfigurationError(
            f"{name}: {sender} signed two versions of this file ({told} another one): "
            "a round file must never change once written; the session cannot continue, "
            f"run it again without {sender}"
        )
    seen[name] = [digest, "read"]
    reported = body.get(CLAIMS_KEY)
    for other, other_digest in (reported if isinstance(reported, dict) else {}).items():
        if not isinstance(other, str) or not isinstance(other_digest, str):
            continue
        mine = seen.get(other)
        if mine is None:
            seen[other] = [other_digest, sender]
        elif mine[0] != other_digest:
            whose = "this participant" if mine[1] == "read" else mine[1]
            raise ConfigurationError(
                f"{other}: {sender} read another version of this file than {whose}: its "
                "signer showed two versions (or one of them misreports); the session cannot "
                "continue, run it again without the participant that equivocated"
            )
