"""DKG and re-share as rounds of signed files (adapter for ``client_sdk.core.dkg``).

Each participant runs its own process against its own state dir (mode 0700;
its identity keys and secret polynomial live only there) and a shared
exchange directory that everybody may read.  Per round a participant reads
the other participants' files, calls the pure core, and writes exactly one
file of its own.  Every exchange file is signed with the writer's Ed25519
identity key and carries the session id, so no participant can be
impersonated or a file replayed into another session, and lists the files its
writer read, so no one can show two versions of its file to different
participants (``hub.keyholder.dkg_transcript``); shares are encrypted
to the recipient's ristretto255 envelope key (``client_sdk.core.envelope``).

The session id is SHA-256 over the parameters, the sorted roster of identity
files and (for a re-share) the old public key file; operators compare its
fingerprint out of band before the ``deal`` round (it is printed by every
round), which is what binds an identity file to a real holder.

Rounds, in order (:data:`ROUNDS`): ``deal`` (Pedersen commitments and
encrypted shares), ``complain``, ``answer``, ``commit`` (Feldman commitments
from QUAL), ``verify`` (provable Feldman complaints), ``reveal`` (shares of
dealers proven wrong, for their reconstruction), ``finish`` (writes
``share-<j>.json`` and ``public.json`` in the formats ``keys deal`` writes).

Errors: ConfigurationError for a missing file, a bad signature (naming the
file), a round run out of order or a session mismatch; DkgError naming every
disqualified participant when too few dealers remain.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from client_sdk.core import _sodium as sodium
from client_sdk.core import dkg
from client_sdk.core.envelope import EnvelopeError, open_envelope, seal_envelope
from client_sdk.core.errors import ConfigurationError
from client_sdk.core.pinned_keys import check_public_key
from client_sdk.core.threshold import KeyShare, PublicKeyInfo
from hub.keyholder import dkg_transcript as transcript
from hub.keyholder.keyfiles import PUBLIC_NAME, SHARE_NAME, load_public, write_private

__all__ = ["ROUNDS", "Identity", "init_participant", "run_round"]

ROUNDS = ("deal", "complain", "answer", "commit", "verify", "reveal", "finish")
STATE_NAME = "dkg-state.json"
FORMAT = "fraudhub-dkg-v1"


@dataclass(frozen=True)
class Identity:
    """A participant's public identity file: who it is in the old and new sharing."""

    name: str
    dealer: int | None  # index in the old sharing (re-share) or the new one (fresh key)
    recipient: int | None  # index in the new sharing; None for a holder that leaves
    signing_key: bytes
    envelope_key: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dealer": self.dealer,
            "recipient": self.recipient,
            "signing_key": self.signing_key.hex(),
            "envelope_key": self.envelope_key.hex(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> Identity:
        try:
            ident = cls(
                str(data["name"]),
                _opt_int(data["dealer"]),
                _opt_int(data["recipient"]),
                bytes.fromhex(data["signing_key"]),
                bytes.fromhex(data["envelope_key"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(f"{where}: not a DKG identity file") from None
        # A small-order signing key would let anyone sign as this participant.
        try:
            check_public_key(ident.signing_key)
        except ConfigurationError:
            raise ConfigurationError(f"{where}: identity keys are malformed or weak") from None
        if not sodium.is_valid_element(ident.envelope_key):
            raise ConfigurationError(f"{where}: identity keys are malformed or weak")
        return ident


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise TypeError
    return value


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(
            f"{path} is missing (has that participant run the round?)"
        ) from None
    except (OSError, json.JSONDecodeError):
        raise ConfigurationError(f"{path} is not readable JSON") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} is not a JSON object")
    return data


def _write_public(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)  # readers never see half a file


# --- state ------------------------------------------------------------------------


def _state_path(state_dir: Path) -> Path:
    return state_dir / STATE_NAME


def _load_state(state_dir: Path) -> dict[str, Any]:
    path = _state_path(state_dir)
    if not path.exists():
        raise ConfigurationError(f"{state_dir} has no DKG state; run 'keys dkg init' first")
    return _read_json(path)


def _save_state(state_dir: Path, state: Mapping[str, Any]) -> None:
    path = _state_path(state_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state, sort_keys=True))
    os.replace(tmp, path)


def init_participant(
    state_dir: Path,
    exchange: Path,
    name: str,
    *,
    index: int | None,
    old_share: KeyShare | None = None,
    old_public: PublicKeyInfo | None = None,
) -> Identity:
    """Create identity keys in ``state_dir`` and publish the identity file.

    ``index`` is the participant's index in the new sharing (None: it leaves);
    a re-share passes ``old_public`` and, for a current holder, its old share.
    """
    if not name.replace("-", "").isalnum():
        raise ConfigurationError("participant name must be letters, digits and '-'")
    if old_share is None and old_public is None and index is None:
        raise ConfigurationError("a fresh key needs --index")
    if old_share is not None and old_public is None:
        raise ConfigurationError("an old share needs the old public key file")
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    exchange.mkdir(parents=True, exist_ok=True)
    if _state_path(state_dir).exists():
        raise ConfigurationError(f"{state_dir} already has a DKG state; use a fresh state dir")
    signing = Ed25519PrivateKey.generate()
    envelope_secret = sodium.scalar_random()
    reshare = old_public is not None
    dealer = (old_share.index if old_share else None) if reshare else index
    identity = Identity(
        name,
        dealer,
        index,
        signing.public_key().public_bytes_raw(),
        sodium.scalarmult_base(envelope_secret),
    )
    _save_state(
        state_dir,
        {
            "format": FORMAT,
            "name": name,
            "signing_secret": signing.private_bytes_raw().hex(),
            "envelope_secret": envelope_secret.hex(),
            "old_share": old_share.to_json() if old_share else None,
            "old_public": old_public.to_json() if old_public else None,
            "done": [],
        },
    )
    _write_public(exchange / f"identity-{name}.json", identity.to_dict())
    return identity


# --- signed messages ---------------------------------------------------------------


@dataclass
class _Context:
    state_dir: Path
    exchange: Path
    state: dict[str, Any]
    session: dkg.Session
    session_id: bytes
    me: Identity
    roster: dict[str, Identity]
    by_dealer: dict[int, Identity]
    by_recipient: dict[int, Identity]

    def sign_and_write(self, round_name: str, payload: Mapping[str, Any]) -> None:
        # With the files it read (transcript.claims), so that every reader has one view.
        body: dict[str, Any] = {**payload, transcript.CLAIMS_KEY: transcript.claims(self.state)}
        body.update(session=self.session_id.hex(), round=round_name, **{"from": self.me.name})
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self.state["signing_secret"]))
        signed = {"body": body, "signature": key.sign(_canonical(body)).hex()}
        _write_public(self.exchange / f"{round_name}-{self.me.name}.json", signed)

    def read(self, round_name: str, sender: Identity) -> dict[str, Any]:
        """A verified message body; raises ConfigurationError naming the file."""
        path = self.exchange / f"{round_name}-{sender.name}.json"
        data = _read_json(path)
        body, signature = data.get("body"), data.get("signature")
        if not isinstance(body, dict) or not isinstance(signature, str):
            raise ConfigurationError(f"{path}: not a signed DKG message")
        try:
            Ed25519PublicKey.from_public_bytes(sender.signing_key).verify(
                bytes.fromhex(signature), _canonical(body)
            )
        except (InvalidSignature, ValueError):
            raise ConfigurationError(
                f"{path}: signature is not {sender.name}'s (impersonation or tampering)"
            ) from None
        if (body.get("session"), body.get("round"), body.get("from")) != (
            self.session_id.hex(),
            round_name,
            sender.name,
        ):
            raise ConfigurationError(f"{path}: belongs to another session, round or sender")
        transcript.note_read(self.state, path.name, sender.name, body)
        return body

    def aad(self, dealer: int, recipient: int) -> bytes:
        return self.session_id + dealer.to_bytes(2, "big") + recipient.to_bytes(2, "big")


def _roster(exchange: Path) -> dict[str, Identity]:
    roster = {}
    for path in sorted(exchange.glob("identity-*.json")):
        ident = Identity.from_dict(_read_json(path), str(path))
        roster[ident.name] = ident
    return roster


def _session_from_roster(
    roster: Mapping[str, Identity],
    threshold: int,
    holders: int,
    epoch: int,
    old: PublicKeyInfo | None,
) -> dkg.Session:
    recipients = sorted(i.recipient for i in roster.values() if i.recipient is not None)
    if recipients != list(range(1, holders + 1)):
        raise ConfigurationError(
            f"identity files name new indices {recipients}, expected 1..{holders}"
        )
    dealers = tuple(sorted(i.dealer for i in roster.values() if i.dealer is not None))
    return dkg.Session(threshold, holders, epoch, dealers, old)


def _session_id(
    params: Mapping[str, Any], roster: Mapping[str, Identity], old: str | None
) -> bytes:
    material = {
        "format": FORMAT,
        "params": params,
        "roster": [roster[n].to_dict() for n in sorted(roster)],
        "old_public": old,
    }
    return hashlib.sha256(_canonical(material)).digest()


def _context(state_dir: Path, exchange: Path) -> _Context:
    state = _load_state(state_dir)
    if "params" not in state:
        raise ConfigurationError("run the 'deal' round first")
    old = PublicKeyInfo.from_json(state["old_public"]) if state["old_public"] else None
    roster = {n: Identity.from_dict(d, "state") for n, d in state["roster"].items()}
    p = state["params"]
    session = _session_from_roster(roster, p["threshold"], p["holders"], p["epoch"], old)
    return _Context(
        state_dir,
        exchange,
        state,
        session,
        bytes.fromhex(state["session_id"]),
        roster[state["name"]],
        roster,
        {i.dealer: i for i in roster.values() if i.dealer is not None},
        {i.recipient: i for i in roster.values() if i.recipient is not None},
    )


def _pair(value: Any) -> tuple[bytes, bytes]:
    try:
        s, s_blind = (bytes.fromhex(v) for v in value)
    except (TypeError, ValueError):
        return (b"", b"")
    return s, s_blind


def _elements(value: Any) -> list[bytes] | None:
    try:
        return [bytes.fromhex(v) for v in value]
    except (TypeError, ValueError):
        return None


# --- rounds -------------------------------------------------------------------------


def _deal(state_dir: Path, exchange: Path, threshold: int, holders: int, epoch: int) -> _Context:
    state = _load_state(state_dir)
    if "params" in state:
        raise ConfigurationError("this participant has already dealt")
    roster = _roster(exchange)
    own = Identity.from_dict(_read_json(exchange / f"identity-{state['name']}.json"), "identity")
    signing = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(state["signing_secret"]))
    if roster.get(own.name) != own or own.signing_key != signing.public_key().public_bytes_raw():
        raise ConfigurationError("this participant's identity file in the exchange was replaced")
    old_text = state["old_public"]
    if old_text:
        epoch = PublicKeyInfo.from_json(old_text).epoch  # a re-share keeps the key, and its epoch
    params = {"threshold": threshold, "holders": holders, "epoch": epoch}
    state.update(
        params=params,
        roster={n: i.to_dict() for n, i in roster.items()},
        session_id=_session_id(params, roster, old_text).hex(),
    )
    _save_state(state_dir, state)
    ctx = _context(state_dir, exchange)
    if ctx.me.dealer is None:
        return ctx
    old_share = KeyShare.from_json(state["old_share"]) if state["old_share"] else None
    dealing = dkg.new_dealing(ctx.session, ctx.me.dealer, old_share)
    ctx.state["dealing"] = {
        "coefficients": [c.hex() for c in dealing.coefficients],
        "blinding": [b.hex() for b in dealing.blinding],
    }
    encrypted = {}
    for j, ident in ctx.by_recipient.items():
        s, s_blind = dealing.share_for(j)
        sealed = seal_envelope(ident.envelope_key, s + s_blind, ctx.aad(dealing.dealer, j))
        encrypted[str(j)] = sealed.hex()
    _save_state(state_dir, ctx.state)
    ctx.sign_and_write(
        "deal", {"pedersen": [c.hex() for c in dealing.pedersen_commitments()], "shares": encrypted}
    )
    return ctx


def _dealing(ctx: _Context) -> dkg.Dealing:
    d = ctx.state["dealing"]
    assert ctx.me.dealer is not None
    return dkg.Dealing(
        ctx.me.dealer,
        tuple(bytes.fromhex(c) for c in d["coefficients"]),
        tuple(bytes.fromhex(b) for b in d["blinding"]),
    )


def _pedersen(ctx: _Context) -> dict[int, list[bytes] | None]:
    return {
        i: _elements(ctx.read("deal", ident).get("pedersen")) for i, ident in ctx.by_dealer.items()
    }


def _complain(ctx: _Context) -> None:
    if ctx.me.recipient is None:
        return
    j = ctx.me.recipient
    envelope_secret = bytes.fromhex(ctx.state["envelope_secret"])
    received: dict[str, list[str]] = {}
    complaints = []
    for i, ident in sorted(ctx.by_dealer.items()):
        body = ctx.read("deal", ident)
        commitments = _elements(body.get("pedersen"))
        try:
            sealed = bytes.fromhex(body["shares"][str(j)])
            plain = open_envelope(envelope_secret, sealed, ctx.aad(i, j))
            pair = (plain[:32], plain[32:])
        except (KeyError, TypeError, ValueError, EnvelopeError):
            pair = (b"", b"")
        if commitments is None or not dkg.verify_pedersen(ctx.session, commitments, j, pair):
            complaints.append(i)
        else:
            received[str(i)] = [pair[0].hex(), pair[1].hex()]
    ctx.state["received"] = received
    _save_state(ctx.state_dir, ctx.state)
    ctx.sign_and_write("complain", {"complaints": complaints})


def _complaints(ctx: _Context) -> dict[int, frozenset[int]]:
    out = {}
    for j, ident in ctx.by_recipient.items():
        named = ctx.read("complain", ident).get("complaints")
        out[j] = (
            frozenset(i for i in named if type(i) is int)
            if isinstance(named, list)
            else frozenset()
        )
    return out


def _answer(ctx: _Context) -> None:
    if ctx.me.dealer is None:
        return
    dealing = _dealing(ctx)
    answers = {
        str(j): [v.hex() for v in dealing.share_for(j)]
        for j, named in _complaints(ctx).items()
        if dealing.dealer in named
    }
    ctx.sign_and_write("answer", {"answers": answers})


def _commit(ctx: _Context) -> dkg.Outcome:
    complaints = _complaints(ctx)
    answers: dict[int, dict[int, tuple[bytes, bytes]]] = {}
    for i, ident in ctx.by_dealer.items():
        if not any(i in named for named in complaints.values()):
            if (ctx.exchange / f"answer-{ident.name}.json").exists():
                ctx.read("answer", ident)  # checks the complaints it saw were these
        else:
            raw = ctx.read("answer", ident).get("answers")
            raw = raw if isinstance(raw, dict) else {}
            answers[i] = {int(j): _pair(v) for j, v in raw.items() if j.isdigit()}
    outcome = dkg.resolve_complaints(ctx.session, _pedersen(ctx), complaints, answers)
    ctx.state["qualified"] = list(outcome.qualified)
    ctx.state["disqualified"] = {str(i): why for i, why in outcome.disqualified.items()}
    if ctx.me.recipient is not None:
        j = ctx.me.recipient
        for i in outcome.qualified:
            if i in complaints[j]:
                ctx.state["received"][str(i)] = [v.hex() for v in answers[i][j]]
    _save_state(ctx.state_dir, ctx.state)
    if ctx.me.dealer in outcome.qualified:
        feldman = _dealing(ctx).feldman_commitments()
        ctx.sign_and_write("commit", {"feldman": [a.hex() for a in feldman]})
    return outcome


def _feldman(ctx: _Context) -> dict[int, list[bytes] | None]:
    return {
        i: _elements(ctx.read("commit", ctx.by_dealer[i]).get("feldman"))
        for i in ctx.state["qualified"]
    }


def _verify(ctx: _Context) -> None:
    if ctx.me.recipient is None:
        return
    j, received = ctx.me.recipient, ctx.state["received"]
    failed = {
        str(i): received[str(i)]
        for i, feldman in _feldman(ctx).items()
        if feldman is None
        or not dkg.verify_feldman(ctx.session, feldman, j, bytes.fromhex(received[str(i)][0]))
    }
    ctx.sign_and_write("verify", {"feldman_complaints": failed})


def _faulted(ctx: _Context) -> list[int]:
    """Dealers in QUAL proven to have published wrong Feldman commitments."""
    pedersen, feldman = _pedersen(ctx), _feldman(ctx)
    faulted = {i for i, f in feldman.items() if f is None}
    for j, ident in ctx.by_recipient.items():
        raw = ctx.read("verify", ident).get("feldman_complaints")
        for key, value in (raw if isinstance(raw, dict) else {}).items():
            i = int(key) if key.isdigit() else -1
            commitments, pair = pedersen.get(i), _pair(value)
            if i not in feldman or i in faulted or commitments is None:
                continue
            proven = dkg.verify_pedersen(ctx.session, commitments, j, pair)
            if proven and not dkg.verify_feldman(ctx.session, feldman[i] or [], j, pair[0]):
                faulted.add(i)
    return sorted(faulted)


def _reveal(ctx: _Context) -> None:
    faulted = _faulted(ctx)
    ctx.state["faulted"] = faulted
    _save_state(ctx.state_dir, ctx.state)
    if ctx.me.recipient is not None:
        shares = {str(i): ctx.state["received"][str(i)] for i in faulted}
        ctx.sign_and_write("reveal", {"shares": shares})


def _finish(ctx: _Context, out: Path) -> tuple[Path | None, Path | None]:
    pedersen, feldman = _pedersen(ctx), _feldman(ctx)
    evaluations = {}
    for i, commitments in feldman.items():
        if i in ctx.state["faulted"]:
            revealed = {}
            for j, ident in ctx.by_recipient.items():
                raw = ctx.read("reveal", ident).get("shares")
                if isinstance(raw, dict) and str(i) in raw:
                    revealed[j] = _pair(raw[str(i)])
            evaluations[i] = dkg.reconstruct_dealer(ctx.session, pedersen[i] or [], revealed)
        else:
            assert commitments is not None  # a None is always faulted
            evaluations[i] = dkg.feldman_evaluations(ctx.session, commitments)
    if ctx.me.recipient is None:
        return None, None
    shares = {int(i): bytes.fromhex(v[0]) for i, v in ctx.state["received"].items()}
    share, public = dkg.finish(
        ctx.session, ctx.state["qualified"], evaluations, ctx.me.recipient, shares
    )
    out.mkdir(parents=True, exist_ok=True)
    share_path = out / SHARE_NAME.format(index=share.index)
    write_private(share_path, share.to_json())
    public_path = out / PUBLIC_NAME
    public_path.write_text(public.to_json() + "\n")
    load_public(public_path)
    return share_path, public_path


@dataclass(frozen=True)
class RoundResult:
    """What a round did, for the operator: never a share."""

    round: str
    session_fingerprint: str
    disqualified: dict[int, str]
    share_file: Path | None = None
    public_file: Path | None = None


def run_round(
    round_name: str,
    state_dir: Path,
    exchange: Path,
    *,
    threshold: int = 0,
    holders: int = 0,
    epoch: int = 1,
    out: Path | None = None,
) -> RoundResult:
    """Run one round for the participant in ``state_dir``; rounds must go in order.

    ``threshold``/``holders``/``epoch`` are read by ``deal`` only (a re-share
    takes the epoch from the old public key); ``out`` (default ``state_dir``)
    receives the share and public files at ``finish``.
    """
    if round_name not in ROUNDS:
        raise ConfigurationError(f"unknown round {round_name!r}; rounds are {', '.join(ROUNDS)}")
    done = _load_state(state_dir)["done"]
    expected = ROUNDS[len(done)] if len(done) < len(ROUNDS) else None
    if round_name != expected:
        raise ConfigurationError(
            f"round {round_name!r} out of order: next is {expected or 'nothing (finished)'}"
        )
    paths: tuple[Path | None, Path | None] = (None, None)
    if round_name == "deal":
        ctx = _deal(state_dir, exchange, threshold, holders, epoch)
    else:
        ctx = _context(state_dir, exchange)
        if round_name == "complain":
            _complain(ctx)
        elif round_name == "answer":
            _answer(ctx)
        elif round_name == "commit":
            _commit(ctx)
        elif round_name == "verify":
            _verify(ctx)
        elif round_name == "reveal":
            _reveal(ctx)
        else:
            paths = _finish(ctx, out or state_dir)
            # The dealing polynomial and received shares are no longer needed.
            for secret in ("dealing", "received", "old_share"):
                ctx.state.pop(secret, None)
    ctx.state["done"] = [*done, round_name]
    _save_state(state_dir, ctx.state)
    return RoundResult(
        round_name,
        ctx.session_id.hex()[:16],
        {int(i): why for i, why in ctx.state.get("disqualified", {}).items()},
        *paths,
    )
