"""``fraudhub demo``: the whole exchange on one machine, in about ten seconds.

Starts a hub (SQLite) and three key holders (2-of-3) on loopback, each with
its own directory and TLS identity; the holders generate the OPRF key by a
dealerless DKG (ADR 0009), each holder's rounds in processes of its own, so
no process ever holds the key.  It then onboards two banks, a carrier and a
regulator as the three parties do (registered at the hub, admitted by each
holder's operator), shows that an institution registered only at the hub is
refused by every holder, has the banks contribute
``examples/bank_a.csv`` and ``examples/bank_b.csv``, has the carrier screen
``examples/carrier_subscribers.csv`` and prints what the policy disclosed,
revokes one indicator and shows it no longer matches, has the regulator
verify the audit log (signed checkpoint, every event's inclusion proof, and
the cosignatures of all three key holders witnessing the log, ADR 0010) over
the Audit service, has bank-a watch its customers
(``examples/bank_a_customers.csv``) and shows the alert a carrier's later
report raises, then shuts everything down.

Every step checks its outcome; the exit status is 1 if one fails.  The data
directory receives only the servers' state and logs: ``hub/`` for the hub and
``holders/`` for the key holders (``hub.devtools.deployment``);
institution keys live in a temporary directory deleted at the end.  The
printed table shows subscriber references and kinds, never the raw values.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client_sdk.client.alerts import RefMap
from client_sdk.client.audit import AuditLogClient
from client_sdk.client.hub import HubClient
from client_sdk.client.results import Indicator, ItemFailure, MatchResult
from client_sdk.core.errors import FraudhubError, PermissionDenied
from client_sdk.core.indicators import canonicalize
from client_sdk.wire.auth import HUB_AUDIENCE, BearerAuth
from client_sdk.wire.channels import open_channel
from hub.audit.checkpoint import LogVerifier
from hub.audit.verify import verify_log
from hub.devtools.deployment import LOG_FILENAME, LocalDeployment
from hub.infra.resources import shipped
from hub.keyholder.dkg_files import ROUNDS
from hub.services.audit import log_signer

__all__ = ["register", "run_demo"]

SCREENING_PURPOSE = "sim_activation_screening"
REPORTING_PURPOSE = "fraud_reporting"
WATCH_PURPOSE = "customer_monitoring"


class DemoFailure(Exception):
    """A demo step did not produce what it must."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)
    _say(f"  ok: {what}")


def _read_subscribers(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _screen(
    carrier: HubClient, subscribers: Sequence[dict[str, str]]
) -> list[MatchResult | ItemFailure]:
    return carrier.match(
        [(row["kind"], row["value"]) for row in subscribers], purpose=SCREENING_PURPOSE
    )


def _table(
    subscribers: Sequence[dict[str, str]], results: Sequence[MatchResult | ItemFailure]
) -> None:
    header = (
        f"  {'subscriber':<11} {'kind':<12} {'match':<6} {'disclosed':<9} {'banks':<6}"
        f" {'policy rule':<26} detail"
    )
    _say(header)
    _say("  " + "-" * (len(header) + 18))
    for row, result in zip(subscribers, results, strict=True):
        ref, kind = row.get("subscriber", ""), row["kind"]
        if isinstance(result, ItemFailure):
            _say(f"  {ref:<11} {kind:<12} {'error':<6} {'':<9} {'':<6} {'':<26} {result.error}")
            continue
        banks = str(result.contributors) if result.contributors else ""
        detail: list[str] = []
        if result.categories:
            detail.append(",".join(result.categories))
        if result.max_confidence:
            detail.append(f"confidence<={result.max_confidence}")
        if result.last_seen:
            detail.append(f"last {result.last_seen:%Y-%m-%d}")
        detail.extend(f'{label.contributor}: "{label.text}"' for label in result.labels)
        match = "YES" if result.matched else "no"
        rule = ",".join(r.partition(":")[2] for r in result.reasons if r.startswith("ALLOW_RULE:"))
        _say(
            f"  {ref:<11} {kind:<12} {match:<6} {result.disclosure:<9} {banks:<6} {rule:<26}"
            f" {'; '.join(detail)}"
        )


def _canonical_pairs(path: Path) -> set[tuple[str, str]]:
    """The (kind, canonical value) pairs of a CSV: what its institution holds."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {(r["kind"], canonicalize(r["kind"], r["value"])) for r in csv.DictReader(handle)}


def _matched(result: MatchResult | ItemFailure) -> bool:
    return isinstance(result, MatchResult) and result.matched


def _onboard(world: LocalDeployment) -> None:
    """Step 1: the hub registers and every key holder admits; a hub-only one is refused."""
    _say("\n1. Registering institutions (hub registers, each key holder admits)")
    for institution, role in (
        ("bank-a", "bank"),
        ("bank-b", "bank"),
        ("carrier-x", "carrier"),
        ("regulator-r", "regulator"),
    ):
        world.register(institution, role)
        _say(f"  {institution:<12} {role:<10} registered at the hub, admitted by 3 holders")
    # The hub's operator alone cannot make an institution that tokenizes.
    world.register("shadow-bank", "bank", admitted_by=())
    try:
        world.client("shadow-bank").match([("phone", "+8613900000000")], purpose=SCREENING_PURPOSE)
        refused = False
    except PermissionDenied:
        refused = True
    _check(refused, "shadow-bank, registered only at the hub, is refused by the holders")


def _dkg_report(world: LocalDeployment) -> None:
    """Print the DKG's session fingerprint and each holder's CPU and wall time."""
    stats = world.dkg_stats
    _check(stats is not None, "the key was generated by DKG among the holders")
    assert stats is not None
    _say(f"  session fingerprint {stats.session_fingerprint} (each holder's operator compares it)")
    for name, cpu in sorted(stats.cpu_seconds.items()):
        _say(f"  {name}: {cpu:.2f} s CPU in its own processes")
    _say(f"  wall time {stats.wall_seconds:.2f} s for init and {len(ROUNDS)} rounds")
    _check(
        len(world.shares) == len(world.holder_dirs),
        "each holder's share is in its own directory; no process held the key k",
    )


def run_demo(data_dir: Path, examples: Path | None = None) -> None:
    """Run every step; raises DemoFailure or a FraudhubError if one fails.

    ``examples`` defaults to the shipped ``examples/`` directory.
    """
    examples = examples if examples is not None else shipped("examples")
    with tempfile.TemporaryDirectory(prefix="fraudhub-demo-clients-") as client_dir:
        _say(f"Starting a hub and 3 key holders (2-of-3) on loopback; state in {data_dir}")
        hub_dir = data_dir / "hub"
        _say("\n0. The key holders generate the key by DKG (no dealer; ADR 0009)")
        with LocalDeployment(
            hub_dir, Path(client_dir), holders_dir=data_dir / "holders", key="dkg"
        ) as world:
            _dkg_report(world)
            world.start()
            ports = ", ".join(str(p) for p in world.holder_ports.values())
            _say(f"  hub on port {world.hub.port}, key holders on ports {ports} (TLS)")

            _onboard(world)

            _say("\n2. Banks contribute their indicators (tokens only leave the bank)")
            for bank, name in (("bank-a", "bank_a.csv"), ("bank-b", "bank_b.csv")):
                summary = world.client(bank).contribute_csv(
                    examples / name, purpose=REPORTING_PURPOSE, progress=False
                )
                _say(f"  {bank}: {summary.stored} of {summary.rows} rows stored from {name}")
                _check(summary.stored == summary.rows, f"{bank} stored every row")

            _say(f"\n3. carrier-x screens its subscribers ({SCREENING_PURPOSE})")
            subscribers = _read_subscribers(examples / "carrier_subscribers.csv")
            carrier = world.client("carrier-x")
            before = _screen(carrier, subscribers)
            _table(subscribers, before)
            _check(
                any(isinstance(r, MatchResult) and r.contributors >= 2 for r in before),
                "a value reported by both banks matches across institutions",
            )
            _check(
                any(isinstance(r, MatchResult) and not r.matched for r in before),
                "values nobody reported do not match",
            )
            _say(
                "  (national_id discloses only yes/no and needs 2 reporting banks: the policy's\n"
                "   k-threshold; a value one bank reported is shown as no match)"
            )

            _say("\n4. bank-a revokes one indicator (false positive)")
            mine = _canonical_pairs(examples / "bank_a.csv")
            candidates = [
                row
                for row, r in zip(subscribers, before, strict=True)
                if isinstance(r, MatchResult)
                and r.matched
                and r.contributors == 1
                and (row["kind"], canonicalize(row["kind"], row["value"])) in mine
            ]
            _check(bool(candidates), "a value reported by bank-a alone matched")
            target = candidates[0]
            result = world.client("bank-a").revoke(
                [(target["kind"], target["value"])], reason="false_positive"
            )
            _say(f"  {target['subscriber']}'s {target['kind']}: revoked {result.revoked}")
            _check(result.revoked == 1, "the contributor revoked its indicator")
            after = _screen(carrier, [target])
            _table([target], after)
            _check(not _matched(after[0]), f"{target.get('subscriber')} no longer matches")

            _say("\n5. regulator-r verifies the audit log over the Audit service")
            # The regulator pins the hub's log key (the hub logs it at start).
            verifier = LogVerifier.from_verifier_key(log_signer(hub_dir).verifier_key())
            channel = open_channel(
                world.hub_address,
                world.security,
                BearerAuth(world.keys["regulator-r"], HUB_AUDIENCE),
            )
            try:
                verified = verify_log(
                    AuditLogClient(channel),
                    verifier,
                    None,
                    deep=True,
                    witnesses=tuple(world.witness_keys),
                    witness_quorum=len(world.witness_keys),
                )
            finally:
                channel.close()
            _check(
                verified.state.size > 0,
                f"signed checkpoint of {verified.state.size} events verified, every event's "
                f"inclusion proof checked (root {verified.state.root_hash.hex()[:16]}...)",
            )
            cosigned = verified.witnesses.cosigned if verified.witnesses else ()
            _check(
                len(cosigned) == len(world.witness_keys),
                f"cosigned by {len(cosigned)} key holder witnesses: {', '.join(cosigned)}",
            )
            _watch_step(world, examples, Path(client_dir))
            _say(f"\nServers' log: {hub_dir / 'logs' / LOG_FILENAME}")
        _say("Stopped the hub and the key holders.")


def _watch_step(world: LocalDeployment, examples: Path, client_dir: Path) -> None:
    """bank-a watches its customers; carrier-x reports one; bank-a gets the alert."""
    _say(f"\n6. bank-a watches its customers ({WATCH_PURPOSE}); carrier-x reports one of them")
    bank = world.client("bank-a")
    refs = RefMap(client_dir / "bank-a.watch-refs.sqlite3")
    try:
        summary, watched = bank.alerts.watch_csv(
            examples / "bank_a_customers.csv",
            purpose=WATCH_PURPOSE,
            ref_map=refs,
            progress=False,
        )
        _say(f"  bank-a: {watched.added} watches added (tokens only; refs stay at bank-a)")
        _check(not summary.failures and watched.added == summary.rows, "every customer watched")
        world.client("carrier-x").contribute(
            [Indicator("phone", "+86 137 0000 4321", "scam_phone", 85)],
            purpose=REPORTING_PURPOSE,
        )
        _say("  carrier-x reports +86 137 **** 4321 as a scam phone")
        stream = bank.alerts.follow(start="ack", timeout=10, ref_map=refs)
        alert = next(stream, None)
        stream.close()
        if alert is None:
            raise DemoFailure("bank-a's subscriber received no alert")
        bank.alerts.ack(alert.sequence)
        _say(
            f"  alert #{alert.sequence} for bank-a: {alert.event} {alert.kind} {alert.ref} "
            f"({alert.disclosure}: {', '.join(alert.categories)}, "
            f"{alert.contributors} contributor)"
        )
        _check(alert.ref == "CUST-0003", "the alert maps back to bank-a's own reference")
    finally:
        refs.close()


def _cmd_demo(args: argparse.Namespace) -> int:
    data_dir: Path | None = args.data_dir
    if data_dir is None:
        holder = tempfile.TemporaryDirectory(prefix="fraudhub-demo-")
        data_dir = Path(holder.name)
    else:
        holder = None
        if data_dir.exists() and any(data_dir.iterdir()):
            print(f"fraudhub demo: {data_dir} is not empty; give a new directory", file=sys.stderr)
            return 2
    try:
        run_demo(data_dir)
    except DemoFailure as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    except FraudhubError as exc:
        print(f"\nDEMO FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if holder is not None:
            holder.cleanup()
    print("\nDemo finished: every step checked.")
    return 0


def register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="run a hub, 3 key holders and 4 institutions on loopback, end to end"
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        help="new directory for the servers' state and logs (default: a temporary one)",
    )
    demo.set_defaults(func=_cmd_demo)
