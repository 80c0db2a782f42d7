"""The regulator's verification of the hub's audit log (``fraudhub audit verify``).

:func:`verify_log` trusts nothing the hub says until it checks it:

1. the checkpoint's signature against the PINNED log key (unknown key, bad
   signature and wrong origin are refused), and, when the regulator pinned
   witness keys, a quorum of their cosignatures (C2SP tlog-cosignature,
   ADR 0010): every missing or bad one is named.  Witnesses refuse to cosign
   a history inconsistent with one they cosigned, so a log rewritten after a
   checkpoint was served lacks the quorum even where this regulator saw none
   of it (a split view).  A cosignature counts only if it is at most
   ``max_age`` seconds old (default one day, kept in the state file): an old
   but validly cosigned checkpoint served to hide later events (a frozen view)
   fails, naming each stale witness;
2. against the last checkpoint this regulator verified (:class:`VerifiedState`):
   a smaller tree is a truncated log, the same size with another root is a
   fork, a larger tree must come with a valid RFC 9162 consistency proof;
3. every new event: leaf indices must be contiguous (a gap is a deleted
   event), each must be a canonical event encoding, and appending their leaf
   hashes to the stored compact range must rebuild the signed root.  When it
   does not, a binary search with consistency proofs finds the first event
   that differs from what the log committed to, and inclusion proofs tell an
   edited event from two swapped ones.

Failures raise :class:`~client_sdk.core.errors.AuditLogError` (or a subclass) whose
message names what is wrong; the state is only replaced after success.  The
hub is reached through the small :class:`LogClient` protocol, so this module
imports no gRPC.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from client_sdk.core.errors import (
    AuditLogError,
    ConfigurationError,
    ConsistencyProofError,
    InclusionProofError,
    InvalidRequest,
)
from hub.audit import merkle
from hub.audit.checkpoint import Checkpoint, LogVerifier, open_checkpoint
from hub.audit.cosignature import (
    DEFAULT_MAX_AGE,
    CosignatureVerifier,
    QuorumResult,
    check_quorum,
)
from hub.audit.events import AuditEvent, decode

__all__ = ["LogClient", "VerifiedState", "VerifyResult", "verified_events", "verify_log"]

STATE_VERSION = 1
# How far after a mismatching event to look for where it was moved to.
_REORDER_WINDOW = 64


class LogClient(Protocol):
    """What verification needs from the hub's Audit service."""

    def get_checkpoint(self, fresh: bool) -> str: ...

    def events(self, start: int, end: int) -> Iterator[tuple[int, bytes]]: ...

    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...


@dataclass(frozen=True)
class VerifiedState:
    """The last verified checkpoint, with the compact range of its tree.

    Kept in a local JSON file by the regulator; the compact range (at most
    log2(size)+1 hashes) lets the next run append only the new events.
    """

    verifier_key: str
    origin: str
    size: int
    root_hash: bytes
    compact_range: tuple[bytes, ...]
    note: str
    # The pinned witness keys and how many must cosign (ADR 0010).
    witnesses: tuple[str, ...] = ()
    witness_quorum: int = 0
    # How old (seconds) a counted cosignature may be (review-2, S1).
    max_age: int = DEFAULT_MAX_AGE

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": STATE_VERSION,
                "verifier_key": self.verifier_key,
                "origin": self.origin,
                "size": self.size,
                "root_hash": base64.b64encode(self.root_hash).decode(),
                "compact_range": [base64.b64encode(h).decode() for h in self.compact_range],
                "note": self.note,
                "witnesses": list(self.witnesses),
                "witness_quorum": self.witness_quorum,
                "max_age": self.max_age,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> VerifiedState:
        """Parse a state file; raises ConfigurationError naming ``source``."""
        try:
            obj = json.loads(text)
            if obj["v"] != STATE_VERSION:
                raise ConfigurationError(f"{source}: unsupported state version {obj['v']!r}")
            state = cls(
                verifier_key=str(obj["verifier_key"]),
                origin=str(obj["origin"]),
                size=int(obj["size"]),
                root_hash=base64.b64decode(obj["root_hash"], validate=True),
                compact_range=tuple(
                    base64.b64decode(h, validate=True) for h in obj["compact_range"]
                ),
                note=str(obj["note"]),
                witnesses=tuple(str(w) for w in obj.get("witnesses", [])),
                witness_quorum=int(obj.get("witness_quorum", 0)),
                # State files from before the freshness check get the default.
                max_age=int(obj.get("max_age", DEFAULT_MAX_AGE)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{source}: not a fraudhub audit state file") from exc
        try:
            compact = merkle.CompactRange(state.size, state.compact_range)
        except InvalidRequest as exc:
            raise ConfigurationError(f"{source}: {exc}") from exc
        if compact.root() != state.root_hash:
            raise ConfigurationError(f"{source}: the compact range does not match its root")
        if not 0 <= state.witness_quorum <= len(state.witnesses):
            raise ConfigurationError(f"{source}: the witness quorum exceeds the pinned witnesses")
        if state.max_age < 1:
            raise ConfigurationError(f"{source}: the cosignature max age must be >= 1 second")
        return state


@dataclass(frozen=True)
class VerifyResult:
    state: VerifiedState
    previous_size: int
    new_events: int
    witnesses: QuorumResult | None = None


def _root(compact: merkle.CompactRange, leaves: list[bytes], count: int) -> bytes:
    """Root of the compact range extended by the first ``count`` of ``leaves``."""
    extended = merkle.CompactRange(compact.size, compact.hashes)
    for leaf in leaves[:count]:
        extended.append(leaf)
    return extended.root()


def _first_divergence(
    client: LogClient, base: merkle.CompactRange, leaves: list[bytes], checkpoint: Checkpoint
) -> int:
    """Leaf index of the first fetched event the signed tree does not contain.

    "Prefix of size k matches the signed tree" is monotone in k, so a binary
    search with consistency proofs (k -> checkpoint size) finds it.
    """

    def prefix_ok(count: int) -> bool:
        size = base.size + count
        try:
            merkle.verify_consistency(
                size,
                checkpoint.size,
                _root(base, leaves, count),
                checkpoint.root_hash,
                client.consistency_proof(size, checkpoint.size),
            )
        except ConsistencyProofError:
            return False
        return True

    good, bad = 0, len(leaves)  # prefix_ok(good) holds; prefix_ok(bad) fails
    while bad - good > 1:
        middle = (good + bad) // 2
        if prefix_ok(middle):
            good = middle
        else:
            bad = middle
    return base.size + good


def _explain_mismatch(
    client: LogClient, base: merkle.CompactRange, leaves: list[bytes], checkpoint: Checkpoint
) -> AuditLogError:
    index = _first_divergence(client, base, leaves, checkpoint)
    leaf = leaves[index - base.size]
    last = min(base.size + len(leaves), index + 1 + _REORDER_WINDOW)
    for other in range(index + 1, last):
        try:
            merkle.verify_inclusion(
                leaf,
                other,
                checkpoint.size,
                client.inclusion_proof(other, checkpoint.size),
                checkpoint.root_hash,
            )
        except InclusionProofError:
            continue
        return AuditLogError(
            f"reordered events: the event served at position {index} was logged at position {other}"
        )
    return AuditLogError(
        f"edited event: event {index} does not match the hash the signed checkpoint "
        f"of size {checkpoint.size} committed to"
    )


def verify_log(  # noqa: PLR0912 - the numbered checks of the module docstring, in order, in one place
    client: LogClient,
    verifier: LogVerifier,
    previous: VerifiedState | None,
    *,
    origin: str | None = None,
    fresh: bool = True,
    full: bool = False,
    deep: bool = False,
    witnesses: tuple[str, ...] = (),
    witness_quorum: int = 0,
    max_age: int = DEFAULT_MAX_AGE,
    now: int | None = None,
) -> VerifyResult:
    """Verify the hub's latest checkpoint and events against ``previous``.

    ``fresh`` asks the hub to sign a checkpoint of its current tree first
    (otherwise the latest one it made on its own schedule is checked).
    ``full`` rebuilds the root from event 0 instead of from the stored compact
    range (detects edits of already verified events too).  ``deep`` also checks
    the inclusion proof of every fetched event, which exercises every stored
    node hash of the hub (one request per event: for investigations, not for
    routine runs).  ``witnesses`` (verifier keys) and ``witness_quorum``: at
    least that many of them must have cosigned the checkpoint, each at most
    ``max_age`` seconds before ``now`` (POSIX seconds; default: the clock).  Raises
    AuditLogError (CheckpointError, ConsistencyProofError) naming what is
    wrong, ConfigurationError for a malformed witness key or quorum.
    """
    pinned = [CosignatureVerifier.from_verifier_key(w) for w in witnesses]
    note = client.get_checkpoint(fresh)
    expected_origin = origin or (previous.origin if previous else None)
    checkpoint = open_checkpoint(note, verifier, origin=expected_origin)
    quorum = None
    if pinned or witness_quorum:
        current = int(time.time()) if now is None else now
        quorum = check_quorum(note, pinned, witness_quorum, now=current, max_age=max_age)
    old_size = previous.size if previous else 0
    if previous is not None:
        if checkpoint.size < previous.size:
            raise ConsistencyProofError(
                f"truncated log: the hub's checkpoint has {checkpoint.size} events, fewer "
                f"than the {previous.size} already verified"
            )
        if checkpoint.size == previous.size:
            if checkpoint.root_hash != previous.root_hash:
                raise ConsistencyProofError(
                    f"forked log: the hub signed two different roots for size {checkpoint.size} "
                    f"({base64.b64encode(previous.root_hash).decode()} verified before, "
                    f"{base64.b64encode(checkpoint.root_hash).decode()} now)"
                )
        else:
            try:
                merkle.verify_consistency(
                    previous.size,
                    checkpoint.size,
                    previous.root_hash,
                    checkpoint.root_hash,
                    client.consistency_proof(previous.size, checkpoint.size),
                )
            except ConsistencyProofError as exc:
                raise ConsistencyProofError(
                    f"rewritten log: the checkpoint of size {checkpoint.size} is not consistent "
                    f"with the verified checkpoint of size {previous.size} ({exc})"
                ) from exc
    if previous is None or full:
        base = merkle.CompactRange()
    else:
        base = merkle.CompactRange(previous.size, previous.compact_range)
    leaves = _fetch_leaves(client, base.size, checkpoint.size)
    compact = merkle.CompactRange(base.size, base.hashes)
    for leaf in leaves:
        compact.append(leaf)
    if compact.root() != checkpoint.root_hash:
        raise _explain_mismatch(client, base, leaves, checkpoint)
    if deep:
        for offset, leaf in enumerate(leaves):
            index = base.size + offset
            try:
                merkle.verify_inclusion(
                    leaf,
                    index,
                    checkpoint.size,
                    client.inclusion_proof(index, checkpoint.size),
                    checkpoint.root_hash,
                )
            except InclusionProofError as exc:
                raise InclusionProofError(
                    f"bad stored hash: the hub's inclusion proof for event {index} does not "
                    f"verify against the signed checkpoint of size {checkpoint.size} ({exc})"
                ) from exc
    state = VerifiedState(
        verifier_key=verifier.verifier_key(),
        origin=checkpoint.origin,
        size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        compact_range=tuple(compact.hashes),
        note=note,
        witnesses=tuple(witnesses),
        witness_quorum=witness_quorum,
        max_age=max_age,
    )
    return VerifyResult(state, old_size, checkpoint.size - old_size, quorum)


def _checked_events(
    client: LogClient, start: int, end: int
) -> Iterator[tuple[int, bytes, AuditEvent]]:
    """Events ``[start, end)`` as served, with their index and body; raises
    AuditLogError for gaps, reordering or a body that is not a canonical event."""
    expected = start
    for index, body in client.events(start, end):
        if index > expected:
            missing = f"{expected}" if index == expected + 1 else f"{expected} to {index - 1}"
            raise AuditLogError(f"deleted event: event {missing} is missing from the log")
        if index < expected:
            raise AuditLogError(f"reordered events: event {index} was served after {expected - 1}")
        try:
            event = decode(body)
        except InvalidRequest as exc:
            raise AuditLogError(
                f"edited event: event {index} is not a canonical event ({exc})"
            ) from exc
        yield index, body, event
        expected += 1
    if expected < end:
        missing = f"{expected}" if end == expected + 1 else f"{expected} to {end - 1}"
        raise AuditLogError(
            f"deleted event: event {missing} is missing, but the checkpoint covers {end} events"
        )


def _fetch_leaves(client: LogClient, start: int, end: int) -> list[bytes]:
    """Leaf hashes of events ``[start, end)``; raises AuditLogError for gaps or bad events."""
    return [merkle.leaf_hash(body) for _, body, _ in _checked_events(client, start, end)]


def verified_events(client: LogClient, state: VerifiedState) -> Iterator[AuditEvent]:
    """Every event of the tree ``state`` verified, in order, checked against its root.

    For reports a regulator can rely on: the events are the log's own bodies,
    not the hub's indexed copies of their fields, and none may be left out.
    The root is only known once the last event has been read, so the check
    comes when the iteration ends: it raises AuditLogError then if the served
    events do not rebuild ``state.root_hash``.  A caller must consume the
    iterator fully before it uses what it computed.
    """
    compact = merkle.CompactRange()
    for _, body, event in _checked_events(client, 0, state.size):
        compact.append(merkle.leaf_hash(body))
        yield event
    if not hmac.compare_digest(compact.root(), state.root_hash):
        raise AuditLogError(
            f"edited event: the {state.size} events served do not rebuild the verified root "
            "of that size; run `fraudhub audit verify --full` to find which"
        )
