"""``fraudhub audit ...``: the regulator's tools over the hub's Audit service.

- ``verify``: asks the hub to sign a checkpoint of its current tree (``--no-fresh``:
  take the latest one it signed on its own schedule), checks it against the
  pinned log key and the last verified checkpoint kept in a local state file,
  then every new event (:mod:`hub.audit.verify`); ``--full`` re-checks from event
  0, ``--deep`` also checks every fetched event's inclusion proof.  Exit 0 and
  the state file advances when the log verifies; exit 1 with one line naming
  what is wrong otherwise (edited, deleted or reordered event, truncated,
  forked or rewritten log, bad signature, unknown key, missing witness quorum
  naming each missing or bad cosignature); the state file is then left as it
  was.  ``--witness VKEY`` (repeatable) and ``--witness-quorum N`` pin the
  witnesses that must cosign (ADR 0010); ``--max-age SECONDS`` (default one
  day) is how old a counted cosignature may be, so a hub serving this
  regulator an old cosigned checkpoint (a frozen view) fails, naming each
  stale witness; all three are kept in the state file.
  Other failures (hub unreachable, PERMISSION_DENIED) exit 2.
- ``report --from --to [--format table|csv|json]``: per-institution requests,
  items, matches, match rate, refusals by reason, requests by tier and purpose.
- ``policy VERSION``: the text of the policy version an event names, checked
  against its SHA-256 (the version), so a regulator reads the rules and legal
  bases that decided.
- ``log-key --data-dir DIR``: run by the hub's OPERATOR on the hub's machine;
  prints the verifier key of the hub's log key (the hub makes it on first
  start), to hand to regulators out of band for ``verify --log-key``.
- ``anomalies [--from --to]``: volume spikes, match-rate outliers, sensitive
  queries clustering on few case references, quota exhaustion
  (:mod:`hub.audit.anomalies`); exit 1 if anything is flagged, so it can gate a job.

By default ``report`` and ``anomalies`` read the hub's indexed copies of the
event fields (fast; the hub filters).  An operator could edit those copies
without touching the signed log, so ``--verified`` computes from the events
of the last checkpoint ``verify`` accepted instead: every event from 0 is
fetched, decoded from the log's own bodies, filtered here and re-checked
against the verified root before anything is printed (exit 1 or 2 on a
mismatch).  It costs one full read of the log.

Every command reaches the hub as an institution with the regulator role, named
by ``--config`` (its client configuration JSON; ``hub.cli.options``): an
Ed25519 key signs a short-lived JWT per call, over TLS unless ``--insecure``;
the calls go through the SDK's :class:`client_sdk.client.audit.AuditLogClient`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from fraudhub.v1 import audit_pb2

from client_sdk.client.audit import AuditLogClient
from client_sdk.core.errors import AuditLogError, ConfigurationError
from client_sdk.wire.codecs import optional_datetime, timestamp, to_datetime
from hub.audit.anomalies import Thresholds, detect
from hub.audit.checkpoint import LogVerifier
from hub.audit.cosignature import DEFAULT_MAX_AGE, CosignatureVerifier
from hub.audit.dispute_report import DisputeLedger, DisputeReport, render_disputes
from hub.audit.events import AuditEvent, decode
from hub.audit.report import FORMATS, InstitutionReport, aggregate, render
from hub.audit.verify import VerifiedState, verified_events, verify_log
from hub.cli.options import add_hub_connection, hub_channel
from hub.infra.argtypes import positive_float, positive_int
from hub.infra.privatefiles import write_private_atomically
from hub.services.audit import LOG_KEY_FILENAME, log_signer

__all__ = ["load_verified_state", "register", "save_verified_state"]

DEFAULT_STATE = Path("~/.fraudhub/audit-state.json")


def load_verified_state(path: Path) -> VerifiedState | None:
    """The regulator's state in ``path``, or None if the file does not exist.

    Raises ConfigurationError naming ``path`` if the file is not a state file.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return VerifiedState.from_json(text, str(path))


def save_verified_state(state: VerifiedState, path: Path) -> None:
    """Replace the state in ``path`` atomically (mode 0600)."""
    write_private_atomically(path, state.to_json())


def _when(text: str) -> datetime:
    """An ISO date or date-time; naive values are UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return hub_channel(args)


def _read_log_key(value: str) -> str:
    """A verifier key string, or ``@path`` of a file holding one."""
    if value.startswith("@"):
        try:
            return Path(value[1:]).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read log key file {value[1:]}") from exc
    return value.strip()


def _cmd_verify(args: argparse.Namespace) -> int:
    state_path = Path(args.state).expanduser()
    previous = load_verified_state(state_path)
    if args.log_key:
        vkey = _read_log_key(args.log_key)
        if previous is not None and previous.verifier_key != vkey:
            raise ConfigurationError(
                f"{state_path} was verified under another log key; pin the same key "
                "or start a new state file"
            )
    elif previous is not None:
        vkey = previous.verifier_key
    else:
        raise ConfigurationError("the first verification needs --log-key (the hub's log key)")
    verifier = LogVerifier.from_verifier_key(vkey)
    witnesses, quorum = _witness_policy(args, previous)
    if args.max_age is not None:
        max_age = int(args.max_age)
    else:
        max_age = previous.max_age if previous is not None else DEFAULT_MAX_AGE
    with _channel(args) as channel:
        try:
            result = verify_log(
                AuditLogClient(channel),
                verifier,
                previous,
                origin=args.origin,
                fresh=not args.no_fresh,
                full=args.full,
                deep=args.deep,
                witnesses=witnesses,
                witness_quorum=quorum,
                max_age=max_age,
            )
        except AuditLogError as exc:
            print(f"fraudhub audit verify: FAILED: {exc}", file=sys.stderr)
            return 1
    save_verified_state(result.state, state_path)
    since = f"size {result.previous_size}" if previous else "the empty log"
    print(
        f"audit log verified: checkpoint of size {result.state.size} from {since}, "
        f"{result.new_events} new event(s) rebuilt the signed root; state saved to {state_path}"
    )
    if result.witnesses is not None:
        cosigned = result.witnesses
        print(
            f"cosigned by {len(cosigned.cosigned)} of {len(witnesses)} pinned witness(es) "
            f"(quorum {quorum}), none older than {max_age} s: "
            f"{', '.join(cosigned.cosigned) or 'none'}"
        )
        for problem in cosigned.problems:
            print(f"warning: {problem}", file=sys.stderr)
    return 0


def _witness_policy(
    args: argparse.Namespace, previous: VerifiedState | None
) -> tuple[tuple[str, ...], int]:
    """The pinned witness keys and quorum: from the flags, else the state file's.

    ``--witness`` replaces the pinned set; the quorum defaults to all of them.
    """
    if args.witness:
        witnesses = tuple(_read_log_key(w) for w in args.witness)
        for vkey in witnesses:  # malformed or weak keys are refused before any connection
            CosignatureVerifier.from_verifier_key(vkey)
    else:
        witnesses = previous.witnesses if previous else ()
    if args.witness_quorum is not None:
        quorum = int(args.witness_quorum)
    elif args.witness or previous is None:
        quorum = len(witnesses)
    else:
        quorum = previous.witness_quorum
    if quorum > len(witnesses):
        raise ConfigurationError(
            f"--witness-quorum {quorum} needs at least {quorum} --witness key(s), "
            f"{len(witnesses)} pinned"
        )
    return witnesses, quorum


def _cmd_policy(args: argparse.Namespace) -> int:
    with _channel(args) as channel:
        text = AuditLogClient(channel).policy(args.version)
    digest = hashlib.sha256(text.canonical_text.encode("utf-8")).hexdigest()
    if not hmac.compare_digest(digest, args.version) or text.version != args.version:
        print(
            f"fraudhub audit policy: FAILED: the text served hashes to {digest}, "
            f"not {args.version}",
            file=sys.stderr,
        )
        return 1
    first_used = to_datetime(text.first_used, "first_used").isoformat()
    if args.out is not None:
        args.out.write_text(text.canonical_text, encoding="utf-8")  # the exact hashed text
        print(f"policy {args.version} (first used {first_used}) written to {args.out}")
    else:
        print(f"# policy {args.version}, first used {first_used}; its SHA-256 checks out")
        print(json.dumps(json.loads(text.canonical_text), indent=2, ensure_ascii=False))
    return 0


def _cmd_log_key(args: argparse.Namespace) -> int:
    # Never create a key here: a mistyped --data-dir would hand regulators a key
    # that signs nothing.  The hub creates its key when it first starts.
    key_file = Path(args.data_dir) / LOG_KEY_FILENAME
    if not key_file.exists():
        raise ConfigurationError(
            f"no hub log key at {key_file}: check --data-dir (the hub creates it on first start)"
        )
    print(log_signer(args.data_dir).verifier_key())
    return 0


def _report_from_message(message: audit_pb2.InstitutionReport) -> InstitutionReport:
    return InstitutionReport(
        institution=message.institution,
        requests=message.requests,
        items=message.items,
        matches=message.matches,
        refusals=message.refusals,
        refusals_by_reason=Counter(dict(message.refusals_by_reason)),
        requests_by_tier=Counter(dict(message.requests_by_tier)),
        requests_by_purpose=Counter(dict(message.requests_by_purpose)),
        contributed=message.contributed,
        revoked=message.revoked,
        disputes_opened=message.disputes_opened,
        disputes_upheld=message.disputes_upheld,
        disputes_withdrawn=message.disputes_withdrawn,
        disputes_lapsed=message.disputes_lapsed,
        refused_items=message.refused_items,
        malformed_items=message.malformed_items,
        evidence=Counter(dict(message.evidence)),
        sightings_filed=Counter(dict(message.sightings_filed)),
        sightings_received=Counter(dict(message.sightings_received)),
    )


def _dispute_from_message(message: audit_pb2.DisputeReport) -> DisputeReport:
    return DisputeReport(
        id=message.id,
        opened_by=message.opened_by,
        kind=message.kind,
        opened_at=to_datetime(message.opened_at, "opened_at"),
        suspended=message.suspended,
        upheld=message.upheld,
        withdrawn=message.withdrawn,
        lapsed=message.lapsed,
        outcome=message.outcome,
        resolved_at=optional_datetime(message, "resolved_at"),
    )


def _verified_window(
    client: AuditLogClient, state_file: str, since: datetime | None, until: datetime | None
) -> Iterator[AuditEvent]:
    """The events of the last verified checkpoint in ``[since, until)``, re-checked."""
    path = Path(state_file).expanduser()
    state = load_verified_state(path)
    if state is None:
        raise ConfigurationError(f"{path}: no verified checkpoint; run `fraudhub audit verify`")
    print(
        f"from the {state.size} events of the checkpoint verified in {path}, "
        "re-checked against its root",
        file=sys.stderr,
    )
    for event in verified_events(client, state):
        if (since is None or event.time >= since) and (until is None or event.time < until):
            yield event


def _cmd_report(args: argparse.Namespace) -> int:
    with _channel(args) as channel:
        client = AuditLogClient(channel)
        if args.verified:
            ledger = DisputeLedger()
            try:
                # aggregate() reads every event, so the root check has run before rendering.
                window = _verified_window(client, args.state, args.since, args.until)
                reports = aggregate(ledger.watch(window))
            except AuditLogError as exc:
                print(f"fraudhub audit report: FAILED: {exc}", file=sys.stderr)
                return 1
            disputes = ledger.reports()
        else:
            reply = client.report(args.since, args.until)
            reports = [_report_from_message(m) for m in reply.institutions]
            disputes = [_dispute_from_message(d) for d in reply.disputes]
    if args.disputes:
        sys.stdout.write(render_disputes(disputes, args.format))
    else:
        sys.stdout.write(render(reports, args.format))
    return 0


def _window_events(
    client: AuditLogClient, since: datetime | None, until: datetime | None
) -> Iterator[AuditEvent]:
    request = audit_pb2.ListEventsRequest()
    if since is not None:
        request.filter.since.CopyFrom(timestamp(since))
    if until is not None:
        request.filter.until.CopyFrom(timestamp(until))
    for _, body in client.list_events(request):
        yield decode(body)


def _cmd_anomalies(args: argparse.Namespace) -> int:
    thresholds = Thresholds(
        spike_factor=args.spike_factor,
        match_rate_z=args.match_rate_z,
        queries_per_case_reference=args.queries_per_case_reference,
    )
    since = args.since or datetime.now(UTC) - timedelta(days=args.days)
    with _channel(args) as channel:
        client = AuditLogClient(channel)
        if args.verified:
            events = _verified_window(client, args.state, since, args.until)
        else:
            events = _window_events(client, since, args.until)
        try:
            # detect() reads every event before it judges any.
            flags = detect(events, thresholds)
        except AuditLogError as exc:
            print(f"fraudhub audit anomalies: FAILED: {exc}", file=sys.stderr)
            return 2
    for flag in flags:
        print(flag)
    if not flags:
        print("no anomalies")
    return 1 if flags else 0


def _connection_args(parser: argparse.ArgumentParser) -> None:
    add_hub_connection(parser, "your regulator")


def _verified_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verified",
        action="store_true",
        help="compute from the events of the last checkpoint `audit verify` accepted "
        "(--state), re-checked against its root, not from the hub's indexes",
    )
    parser.add_argument(
        "--state",
        default=str(DEFAULT_STATE),
        help=f"state file of `audit verify` (default {DEFAULT_STATE})",
    )


def register(sub: Any) -> None:
    """Add the ``audit`` command group (verify, policy, log-key, report, anomalies)."""
    group = sub.add_parser("audit", help="verify and analyse the hub's audit log (regulators)")
    actions = group.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify", help="check the signed checkpoint, consistency and every new event"
    )
    _connection_args(verify)
    verify.add_argument(
        "--log-key",
        help="the hub's log verifier key name+keyid+base64 (or @FILE); "
        "needed on the first run, then kept in the state file",
    )
    verify.add_argument(
        "--state",
        default=str(DEFAULT_STATE),
        help=f"last verified checkpoint (default {DEFAULT_STATE})",
    )
    verify.add_argument("--origin", help="expected log origin (default: the state file's)")
    verify.add_argument(
        "--full",
        action="store_true",
        help="rebuild the root from event 0, re-checking already verified events",
    )
    verify.add_argument(
        "--deep",
        action="store_true",
        help="also check the inclusion proof of every fetched event (one request each)",
    )
    verify.add_argument(
        "--no-fresh",
        action="store_true",
        help="verify the hub's latest scheduled checkpoint; do not ask it to sign one now",
    )
    verify.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's verifier key (or @FILE), repeatable; replaces the pinned set "
        "kept in the state file",
    )
    verify.add_argument(
        "--witness-quorum",
        type=int,
        metavar="N",
        help="cosignatures by pinned witnesses the checkpoint needs "
        "(default: all --witness keys, else the state file's)",
    )
    verify.add_argument(
        "--max-age",
        type=positive_int(),
        metavar="SECONDS",
        help="count a witness only if its cosignature is at most this old "
        f"(default: the state file's, else {DEFAULT_MAX_AGE}, one day)",
    )
    verify.set_defaults(func=_cmd_verify)

    log_key = actions.add_parser(
        "log-key", help="print the hub's log verifier key (operator, on the hub's machine)"
    )
    log_key.add_argument(
        "--data-dir", type=Path, required=True, help="the hub's data directory (log-key.pem)"
    )
    log_key.set_defaults(func=_cmd_log_key)

    policy = actions.add_parser(
        "policy", help="the text of a policy version named by audit events (hash-checked)"
    )
    _connection_args(policy)
    policy.add_argument("version", help="policy version: 64 hex digits, as in an event")
    policy.add_argument("--out", type=Path, help="write the exact hashed text to this file")
    policy.set_defaults(func=_cmd_policy)

    report = actions.add_parser("report", help="per-institution aggregates over a time window")
    _connection_args(report)
    report.add_argument("--from", dest="since", type=_when, help="start (ISO, inclusive, UTC)")
    report.add_argument("--to", dest="until", type=_when, help="end (ISO, exclusive, UTC)")
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument(
        "--disputes",
        action="store_true",
        help="list every dispute opened in the window, its outcome and time to resolution",
    )
    _verified_args(report)
    report.set_defaults(func=_cmd_report)

    anomalies = actions.add_parser("anomalies", help="flag unusual access patterns")
    _connection_args(anomalies)
    anomalies.add_argument("--from", dest="since", type=_when, help="start (default --days ago)")
    anomalies.add_argument("--to", dest="until", type=_when, help="end (ISO, exclusive, UTC)")
    _verified_args(anomalies)
    anomalies.add_argument(
        "--days", type=positive_int(), default=30, help="window when --from is absent"
    )
    defaults = Thresholds()
    anomalies.add_argument("--spike-factor", type=positive_float, default=defaults.spike_factor)
    anomalies.add_argument("--match-rate-z", type=positive_float, default=defaults.match_rate_z)
    anomalies.add_argument(
        "--queries-per-case-reference",
        type=positive_float,
        default=defaults.queries_per_case_reference,
    )
    anomalies.set_defaults(func=_cmd_anomalies)
