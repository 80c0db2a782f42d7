"""Findings of the second security review of the trust model (branch review-2).

Each test reproduces one way the promises of docs/TRUST.md still failed, and
failed before its fix:

- S1: a frozen view: the hub could keep serving one regulator an old, validly
  cosigned checkpoint and hide every later event from it, since cosignature
  timestamps were never checked and the hub never asked witnesses again for an
  unchanged head;
- S2: the default holder quota (5,000,000 elements per institution per holder
  per day, applied by ``import-proposal --yes`` to everything it admitted) let
  one admitted bank enumerate the CN mobile numbers (~1.8e9) in under a year;
  there was no cap over a longer window;
- S3: a :class:`Tokenizer` used on its own (not through ``HubClient.connect``)
  reached a holder without a pin of its own under the shared pin it was given
  (the hub's, in practice), so whoever held that certificate could pose as the
  holder and collect holder JWTs, each good for one evaluation at the real
  holder;
- S4: ``keys deal -t 1 -n 3`` (and a 1-of-n DKG) gave every holder the whole
  OPRF key ``k``: with a degree-0 polynomial each share equals ``k``, so any
  one holder alone could tokenize values of its choice.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _audit_hub import RunningHub
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fraudhub.v1 import audit_pb2, audit_pb2_grpc

from client_sdk.client.audit import AuditLogClient
from client_sdk.client.tokenizer import HolderEndpoint, Tokenizer
from client_sdk.core import dkg, threshold
from client_sdk.core.errors import CheckpointError, ConfigurationError, QuotaExhausted
from client_sdk.wire.auth import generate_key, public_key_bytes
from hub.audit.checkpoint import Checkpoint, LogSigner, LogVerifier
from hub.audit.cosignature import (
    DEFAULT_MAX_AGE,
    CosignatureVerifier,
    Cosigner,
    check_quorum,
    with_cosignatures,
)
from hub.audit.verify import verify_log
from hub.cli import main
from hub.cli.audit import load_verified_state
from hub.keyholder import dkg_cli
from hub.keyholder.admission import (
    DEFAULT_DAILY_QUOTA,
    DEFAULT_MONTHLY_QUOTA,
    QUOTA_WINDOW_DAYS,
    REGISTRY_FILENAME,
    HolderRegistry,
    admit,
    load_admissions,
)
from hub.keyholder.dkg_files import init_participant
from hub.keyholder.server import QuotaLedger
from hub.services.audit import Checkpointer, log_signer
from hub.services.witnesses import CosignatureCollector
from hub.storage import auditlog
from hub.storage.store import Store, alembic_config, sqlite_url
from hub.wire.auth import Institution, dump_registry

#: CN mobile numbers: 11 digits starting with 1 (about 1.8e9 in use).
CN_MOBILE_NUMBERS = 1.8e9
HOLDER = "holder-1.fraudhub.internal"

# --- S1 -------------------------------------------------------------------------

ORIGIN = "fraudhub.test/audit"
DAY = 86_400


def _cosigned(*stamps: tuple[int, int]) -> tuple[str, list[CosignatureVerifier]]:
    """A checkpoint cosigned by witness ``i`` at each ``(i, timestamp)``."""
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    note = signer.sign_checkpoint(Checkpoint(ORIGIN, 7, b"\x11" * 32))
    body = note.split("\n\n", 1)[0] + "\n"
    witnesses = {
        i: Cosigner(f"w{i}.test", Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32))
        for i in sorted({i for i, _ in stamps})
    }
    lines = [witnesses[i].cosign(body, at) for i, at in stamps]
    pinned = [CosignatureVerifier.from_verifier_key(w.verifier_key()) for w in witnesses.values()]
    return with_cosignatures(note, lines), pinned


def test_s1_a_stale_cosignature_does_not_count_and_is_named() -> None:
    now = 1_800_000_000
    note, pinned = _cosigned((1, now - 2 * DAY), (2, now - 60))
    # Without a max age (before the fix) both counted, however old.
    assert len(check_quorum(note, pinned, 2).cosigned) == 2
    with pytest.raises(CheckpointError) as info:
        check_quorum(note, pinned, 2, now=now, max_age=DAY)
    message = str(info.value)
    assert message.startswith("missing witness quorum: 1 of the required 2")
    assert f"witness {pinned[0].label()}: stale cosignature" in message
    assert f"{2 * DAY} s old; max age {DAY} s" in message
    assert pinned[1].label() not in message
    result = check_quorum(note, pinned, 1, now=now, max_age=DAY)
    assert result.cosigned == (pinned[1].label(),)
    assert "stale cosignature" in result.problems[0]


def test_s1_the_newest_valid_line_of_a_witness_counts() -> None:
    now = 1_800_000_000
    note, pinned = _cosigned((1, now - 3 * DAY), (1, now - 10))
    assert check_quorum(note, pinned, 1, now=now, max_age=DAY).cosigned == (pinned[0].label(),)


def _hub_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clock: Callable[[], float]
) -> RunningHub:
    return RunningHub(tmp_path, capsys, witnesses=2, witness_clock=clock)


@pytest.mark.e2e
def test_s1_a_stale_but_valid_cosigned_checkpoint_fails_verify_with_max_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The witnesses last cosigned two days ago (the hub froze this regulator's
    # view then): each cosignature is valid, but old.
    hub = _hub_at(tmp_path, capsys, lambda: time.time() - 2 * DAY)
    try:
        pins = [arg for key in hub.witness_keys for arg in ("--witness", key)]
        status, out = hub.verify(*pins)
        assert status == 1, out
        assert "missing witness quorum: 0 of the required 2" in out
        for key in hub.witness_keys:
            name, key_id, _ = key.split("+", 2)
            assert f"witness {name} ({key_id}): stale cosignature" in out
            assert f"max age {DEFAULT_MAX_AGE} s" in out
        assert load_verified_state(hub.state) is None  # nothing accepted
        # A regulator that accepts three days verifies; the state file keeps it.
        status, out = hub.verify(*pins, "--max-age", str(3 * DAY))
        assert status == 0, out
        assert f"none older than {3 * DAY} s" in out
        state = load_verified_state(hub.state)
        assert state is not None and state.max_age == 3 * DAY
        assert hub.verify()[0] == 0
        status, out = hub.verify("--max-age", str(DAY))
        assert status == 1 and "stale cosignature" in out
    finally:
        hub.stop()


@pytest.mark.e2e
def test_s1_the_hub_refreshes_cosignatures_of_an_unchanged_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.time()
    clock = [t0]
    hub = _hub_at(tmp_path, capsys, lambda: clock[0])
    collector = CosignatureCollector(
        hub.server.store,
        hub.config.witnesses,
        hub.config.witness_identity,  # type: ignore[arg-type]
        default_ca=None,
        clock=lambda: dt.datetime.fromtimestamp(clock[0], dt.UTC),
        refresh_after=DAY / 2,
    )
    # Never due for a new checkpoint: only the refresh of the current head runs.
    checkpointer = Checkpointer(
        hub.server.store,
        log_signer(hub.config.data_dir),
        every_events=10**9,
        every_seconds=10.0**9,
        clock=lambda: dt.datetime.fromtimestamp(clock[0], dt.UTC),
        collector=collector,
    )
    try:
        hub.traffic(2)
        with hub.channel("reg-1") as channel:
            audit_pb2_grpc.AuditStub(channel).GetCheckpoint(
                audit_pb2.GetCheckpointRequest(fresh=True), timeout=30
            )
        with hub.server.store.session() as session:
            latest = auditlog.latest_checkpoint(session)
            assert latest is not None
            note = latest.note
            assert set(auditlog.cosignature_times(session, note).values()) == {int(t0)}

        verifier = LogVerifier.from_verifier_key(hub.log_key)

        def verify_at(now: float) -> None:
            with hub.channel("reg-1") as channel:
                verify_log(
                    AuditLogClient(channel),
                    verifier,
                    None,
                    fresh=False,
                    witnesses=tuple(hub.witness_keys),
                    witness_quorum=2,
                    max_age=DAY,
                    now=int(now),
                )

        # Six hours on: still fresh, nobody is asked again.
        clock[0] = t0 + 6 * 3600
        assert checkpointer.run_once() is None
        with hub.server.store.session() as session:
            assert set(auditlog.cosignature_times(session, note).values()) == {int(t0)}
        # Without a refresh, a regulator a day and more later sees them stale.
        with pytest.raises(CheckpointError, match="stale cosignature"):
            verify_at(t0 + DAY + 3600)
        # Half a day on: the checkpoint thread asks both witnesses again for the
        # same head; the newer line replaces the stored one.
        clock[0] = t0 + DAY / 2 + 1
        assert checkpointer.run_once() is None
        with hub.server.store.session() as session:
            times = auditlog.cosignature_times(session, note)
            assert set(times.values()) == {int(t0 + DAY / 2 + 1)}
            assert len(times) == 2
        with hub.sql() as conn:
            (rows,) = conn.execute("SELECT COUNT(*) FROM audit_cosignature").fetchone()
            (bodies,) = conn.execute(
                "SELECT COUNT(DISTINCT checkpoint_digest) FROM audit_cosignature"
            ).fetchone()
        assert rows == 2 * bodies  # one line per checkpoint and witness
        verify_at(t0 + DAY + 3600)  # fresh again for that regulator
    finally:
        collector.close()
        hub.stop()


def test_s1_migration_0008_backfills_the_time_of_stored_lines(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command

    note, _ = _cosigned((1, 1_700_000_123))
    line = note.rstrip("\n").rsplit("\n", 1)[-1] + "\n"
    store = Store(sqlite_url(tmp_path))
    try:
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0005_watchlists")
            conn.execute(
                sa.text(
                    "INSERT INTO audit_cosignature (checkpoint_digest, witness, tree_size, line, "
                    "created_at) VALUES ('d', 'w1', 7, :line, '2026-12-01 00:00:00.000000')"
                ),
                {"line": line},
            )
        store.migrate()
        with store.engine.connect() as conn:
            value = conn.execute(sa.text("SELECT cosigned_at FROM audit_cosignature")).scalar()
        assert value == 1_700_000_123
    finally:
        store.dispose()


# --- S2 -------------------------------------------------------------------------


def _days_to_enumerate(daily: int, monthly: int, holders: int, needed: int) -> float:
    """Days one institution needs at a holder's caps (n/t of a holder's cap, TRUST.md)."""
    per_day = min(daily, monthly / QUOTA_WINDOW_DAYS) * holders / needed
    return CN_MOBILE_NUMBERS / per_day


def test_s2_one_admitted_institution_needs_decades_at_the_defaults() -> None:
    # Before: 5,000,000 a day and no longer window: 240 days at 2-of-3.
    days = _days_to_enumerate(DEFAULT_DAILY_QUOTA, DEFAULT_MONTHLY_QUOTA, 3, 2)
    assert days == pytest.approx(18_000)  # the figure docs/TRUST.md gives
    assert days / 365 > 40
    assert _days_to_enumerate(DEFAULT_DAILY_QUOTA, DEFAULT_MONTHLY_QUOTA, 3, 3) == (
        pytest.approx(27_000)
    )
    # Ten colluding admitted institutions still need years.
    assert days / 10 / 365 > 4
    assert DEFAULT_DAILY_QUOTA == 200_000  # docs/ONBOARDING.md's example


def _day(offset: int) -> str:
    return (dt.date(2026, 3, 1) + dt.timedelta(days=offset)).isoformat()


def test_s2_a_rolling_30_day_cap_applies_besides_the_daily_one(tmp_path: Path) -> None:
    path = tmp_path / "quota.sqlite3"
    today = [_day(0)]
    ledger = QuotaLedger(path, 100, monthly_quota=250, today=lambda: today[0])
    for offset in (0, 1):
        today[0] = _day(offset)
        ledger.charge("bank-a", 100)  # each day's quota, in full
    today[0] = _day(2)
    ledger.charge("bank-a", 50)
    with pytest.raises(QuotaExhausted, match=r"30-day evaluation quota spent \(250 of 250"):
        ledger.charge("bank-a", 1)
    ledger.charge("carrier-b", 100)  # another institution has its own window
    ledger.close()
    # Persisted: a restarted holder still counts the window.
    reopened = QuotaLedger(path, 100, monthly_quota=250, today=lambda: today[0])
    assert reopened.used_in_window("bank-a") == 250
    with pytest.raises(QuotaExhausted, match="30-day"):
        reopened.charge("bank-a", 1)
    # Day 30 is the first day outside the window of day 0: its 100 are free again.
    today[0] = _day(QUOTA_WINDOW_DAYS - 1)
    with pytest.raises(QuotaExhausted, match="30-day"):
        reopened.charge("bank-a", 1)
    today[0] = _day(QUOTA_WINDOW_DAYS)
    assert reopened.used_in_window("bank-a") == 150
    reopened.charge("bank-a", 100)
    with pytest.raises(QuotaExhausted, match="daily evaluation quota spent"):
        reopened.charge("bank-a", 1)
    reopened.close()


def test_s2_each_institution_gets_the_holders_own_30_day_cap(tmp_path: Path) -> None:
    bank = Institution("bank-a", "Bank A", "bank", public_key_bytes(generate_key()))
    admit(tmp_path, bank, daily_quota=10, monthly_quota=15)
    registry = HolderRegistry(tmp_path, HOLDER)
    today = [_day(0)]
    ledger = QuotaLedger(
        tmp_path / "quota.sqlite3", 10**9, limits=registry.quota_limits, today=lambda: today[0]
    )
    ledger.charge("bank-a", 10)
    today[0] = _day(1)
    with pytest.raises(QuotaExhausted, match=r"30-day evaluation quota spent \(10 of 15"):
        ledger.charge("bank-a", 6)
    ledger.charge("bank-a", 5)
    ledger.close()


def test_s2_a_registry_from_before_the_30_day_cap_gets_the_default_one(tmp_path: Path) -> None:
    bank = Institution("bank-a", "Bank A", "bank", public_key_bytes(generate_key()))
    admit(tmp_path, bank, daily_quota=5_000_000)
    path = tmp_path / REGISTRY_FILENAME
    data = json.loads(path.read_text())
    for entry in data["institutions"]:
        del entry["monthly_quota"]
    path.write_text(json.dumps(data))
    (admission,) = load_admissions(tmp_path)
    assert (admission.daily_quota, admission.monthly_quota) == (5_000_000, DEFAULT_MONTHLY_QUOTA)


def test_s2_add_and_import_proposal_take_explicit_quotas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "holder"
    export = tmp_path / "export.json"
    banks = [
        Institution(i, i, "bank", public_key_bytes(generate_key())) for i in ("bank-n", "bank-m")
    ]
    export.write_text(dump_registry(banks))
    command = ["keyholder", "institution", "import-proposal", "--state-dir", str(state)]
    quotas = ["--daily-quota", "1000", "--monthly-quota", "9000"]
    assert main([*command, str(export), *quotas]) == 0
    out = capsys.readouterr().out
    assert "would admit  bank-n (bank)" in out and "daily quota 1000, 30-day quota 9000" in out
    (line,) = [x for x in out.splitlines() if x.startswith("proposal fingerprint ")]
    reviewed = line.split()[-1]
    assert main([*command, str(export), "--yes", "--reviewed", reviewed, *quotas]) == 0
    assert {(a.daily_quota, a.monthly_quota) for a in load_admissions(state)} == {(1000, 9000)}
    # Without flags, the low defaults (not 5,000,000 a day).
    key = tmp_path / "bank-x.pem"
    assert main(["institution", "keygen", "--out", str(key)]) == 0
    add = ["keyholder", "institution", "add", "--state-dir", str(state), "--role", "bank"]
    assert main([*add, "--id", "bank-x", "--public-key-file", f"{key}.pub"]) == 0
    assert main([*add, "--id", "bank-y", "--public-key-file", f"{key}.pub", *quotas]) == 0
    limits = {a.institution.id: (a.daily_quota, a.monthly_quota) for a in load_admissions(state)}
    assert limits["bank-x"] == (200_000, 2_000_000)
    assert limits["bank-y"] == (1000, 9000)
    # `quota` changes one cap and keeps the other.
    quota = ["keyholder", "institution", "quota", "--state-dir", str(state), "--id", "bank-x"]
    assert main([*quota, "--monthly-quota", "500000"]) == 0
    assert main(quota) == 2
    (bank_x,) = [a for a in load_admissions(state) if a.institution.id == "bank-x"]
    assert (bank_x.daily_quota, bank_x.monthly_quota) == (200_000, 500_000)


# --- S3 -------------------------------------------------------------------------


def test_s3_a_tokenizer_has_no_shared_pin_to_fall_back_on() -> None:
    # Before: Tokenizer(holders, public, key, security) used ``security`` for
    # every holder whose endpoint had no pin of its own.
    assert "security" not in inspect.signature(Tokenizer).parameters


def test_s3_a_holder_endpoint_without_its_own_pin_cannot_be_made() -> None:
    with pytest.raises(TypeError, match="security"):
        HolderEndpoint(2, "127.0.0.1:7502")  # type: ignore[call-arg]
    # Untyped callers passing None get the reason, before any channel exists.
    with pytest.raises(ConfigurationError, match="key holder 2 has no TLS pin of its own"):
        HolderEndpoint(2, "127.0.0.1:7502", security=None)  # type: ignore[arg-type]


# --- S4 -------------------------------------------------------------------------


@pytest.mark.parametrize("holders", [2, 3, 255])
def test_s4_threshold_one_with_several_holders_is_refused(holders: int) -> None:
    with pytest.raises(ConfigurationError, match="gives every holder the whole key"):
        threshold.deal(1, holders)
    with pytest.raises(ConfigurationError, match="gives every holder the whole key"):
        dkg.Session(threshold=1, holders=holders, epoch=1, dealers=tuple(range(1, holders + 1)))
    # A single holder holding k is the plain (non-threshold) VOPRF: still allowed.
    shares, _ = threshold.deal(1, 1)
    assert len(shares) == 1


def test_s4_keys_deal_refuses_one_of_n_before_writing_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert main(["keys", "deal", "-t", "1", "-n", "3", "--out", str(out)]) == 2
    assert "threshold 1 of 3 holders gives every holder the whole key" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_s4_keys_dkg_refuses_one_of_n_at_the_deal_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    state = tmp_path / "holder-1"
    init_participant(state, exchange, "holder-1", index=1)
    argv = ["dkg", "round", "deal", "--state", str(state), "--exchange", str(exchange)]
    assert dkg_cli.main([*argv, "-t", "1", "-n", "2"]) == 2
    assert "threshold 1 of 2 holders gives every holder the whole key" in capsys.readouterr().err
