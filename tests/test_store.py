"""The hub store (hub.storage.store) on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel, select

import hub.storage.auditlog
from client_sdk.core.errors import (
    AlreadyExists,
    AuthenticationError,
    NotFound,
    QuotaExhausted,
    Unavailable,
)
from hub.core.matching import Contribution
from hub.storage import store
from hub.storage.models import Indicator, Institution, SeenToken

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
assert hub.storage.auditlog  # its tables are part of the migrated schema


def token(n: int) -> bytes:
    return n.to_bytes(32, "big")


def contribution(n: int, *, kind: str = "phone", days: int = 30, **changes: object) -> Contribution:
    fields: dict[str, object] = {
        "token": token(n),
        "kind": kind,
        "key_epoch": 1,
        "category": "scam_phone",
        "confidence": 60,
        "observed_at": NOW - timedelta(days=1),
        "expires_at": NOW + timedelta(days=days),
        "sealed_label": None,
    }
    fields.update(changes)
    return Contribution(**fields)  # type: ignore[arg-type]


@pytest.fixture
def hub_store(database_url: str) -> Iterator[store.Store]:
    s = store.Store(database_url)
    s.migrate()
    yield s
    s.dispose()


def contribute(s: store.Store, who: str, items: list[Contribution]) -> store.ContributionCounts:
    with s.session() as session:
        counts = store.upsert_contributions(session, who, items, NOW)
        session.commit()
    return counts


def test_migrated_schema_equals_the_models(hub_store: store.Store) -> None:
    with hub_store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    s = store.Store(store.sqlite_url(tmp_path))  # type: ignore[arg-type]
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    s.dispose()


def test_retried_batch_does_not_duplicate(hub_store: store.Store) -> None:
    batch = [contribution(1), contribution(2), contribution(2, kind="bank_card")]
    assert contribute(hub_store, "bank-a", batch) == store.ContributionCounts(3, 0)
    assert contribute(hub_store, "bank-a", batch) == store.ContributionCounts(0, 3)
    # The same token from another institution is its own contribution.
    assert contribute(hub_store, "bank-b", batch[:1]) == store.ContributionCounts(1, 0)
    # Repeats inside one batch count once.
    assert contribute(hub_store, "bank-b", [contribution(9)] * 3) == store.ContributionCounts(1, 2)
    with hub_store.session() as session:
        assert len(session.exec(select(Indicator)).all()) == 5


def test_recontribution_refreshes_metadata(hub_store: store.Store) -> None:
    contribute(hub_store, "bank-a", [contribution(1, confidence=10)])
    contribute(hub_store, "bank-a", [contribution(1, confidence=99, category="money_mule")])
    with hub_store.session() as session:
        found = store.find_active(session, [("phone", token(1), 1)], NOW)
    [sighting] = found[("phone", token(1), 1)]
    assert (sighting.confidence, sighting.category) == (99, "money_mule")


def test_find_active_skips_revoked_expired_and_other_keys(hub_store: store.Store) -> None:
    contribute(hub_store, "bank-a", [contribution(1), contribution(2), contribution(3, days=1)])
    contribute(hub_store, "bank-b", [contribution(1)])
    with hub_store.session() as session:
        assert store.revoke(session, "bank-a", [("phone", token(2), 1)], "false_positive", NOW) == 1
        session.commit()
    later = NOW + timedelta(days=2)
    queries = [
        ("phone", token(1), 1),
        ("phone", token(2), 1),  # revoked
        ("phone", token(3), 1),  # expired at `later`
        ("bank_card", token(1), 1),  # same token, other kind
        ("phone", token(1), 2),  # other key epoch
    ]
    with hub_store.session() as session:
        found = store.find_active(session, queries, later)
    assert set(found) == {("phone", token(1), 1)}
    assert sorted(s.contributor for s in found[("phone", token(1), 1)]) == ["bank-a", "bank-b"]


def test_revoke_touches_only_the_contributors_rows(hub_store: store.Store) -> None:
    contribute(hub_store, "bank-a", [contribution(1)])
    contribute(hub_store, "bank-b", [contribution(1)])
    key = ("phone", token(1), 1)
    with hub_store.session() as session:
        assert store.revoke(session, "bank-c", [key], "false_positive", NOW) == 0
        assert store.revoke(session, "bank-a", [key], "false_positive", NOW) == 1
        # Revoking again finds nothing active.
        assert store.revoke(session, "bank-a", [key], "false_positive", NOW) == 0
        session.commit()
    with hub_store.session() as session:
        rows = session.exec(select(Indicator).order_by(Indicator.contributor)).all()
        assert [(r.contributor, r.revoke_reason) for r in rows] == [
            ("bank-a", "false_positive"),
            ("bank-b", None),
        ]
        assert rows[0].revoked_at == NOW


def test_quota_counts_in_the_callers_transaction(hub_store: store.Store) -> None:
    with hub_store.session() as session:
        assert store.consume_quota(session, "bank-a", "match:x", "2026-11-24", 6, 10) == 6
        session.commit()
    with hub_store.session() as session, pytest.raises(QuotaExhausted):
        store.consume_quota(session, "bank-a", "match:x", "2026-11-24", 5, 10)
    # The refused increment rolled back with its transaction.
    with hub_store.session() as session:
        assert store.consume_quota(session, "bank-a", "match:x", "2026-11-24", 4, 10) == 10
        assert store.consume_quota(session, "bank-a", "match:x", "2026-11-25", 4, 10) == 4
        assert store.consume_quota(session, "bank-b", "match:x", "2026-11-24", 4, 10) == 4
        session.commit()


def test_institution_registry(hub_store: store.Store) -> None:
    with hub_store.session() as session:
        store.add_institution(
            session, Institution(id="bank-a", role="bank", public_key=bytes(32), created_at=NOW)
        )
        store.add_institution(
            session, Institution(id="carrier-x", role="carrier", public_key=bytes(32))
        )
        session.commit()
    with hub_store.session() as session, pytest.raises(AlreadyExists):
        store.add_institution(session, Institution(id="bank-a", role="bank", public_key=b""))
    with hub_store.session() as session:
        store.disable_institution(session, "carrier-x", NOW)
        session.commit()
        with pytest.raises(NotFound):
            store.disable_institution(session, "nobody", NOW)
    with hub_store.session() as session:
        assert [i.id for i in store.list_institutions(session)] == ["bank-a"]
        everyone = store.list_institutions(session, include_disabled=True)
        assert [(i.id, i.enabled) for i in everyone] == [("bank-a", True), ("carrier-x", False)]
        assert store.get_institution(session, "bank-a").created_at == NOW


def test_timestamps_are_utc_and_naive_ones_are_refused(hub_store: store.Store) -> None:
    contribute(hub_store, "bank-a", [contribution(1)])
    with hub_store.session() as session:
        row = session.exec(select(Indicator)).one()
        assert row.expires_at.tzinfo is UTC
        assert row.expires_at == NOW + timedelta(days=30)
    naive = contribution(2, expires_at=datetime(2030, 1, 1))
    # Refused by the column type; like every database error it leaves the
    # store as StorageError (no sqlalchemy.exc.* escapes).
    with pytest.raises(store.StorageError, match="database failed"):
        contribute(hub_store, "bank-a", [naive])


def test_migrations_downgrade_to_nothing_and_back(hub_store: store.Store) -> None:
    from alembic import command

    with hub_store.engine.begin() as conn:
        command.downgrade(store.alembic_config(conn), "base")
    with hub_store.engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    hub_store.migrate()
    with hub_store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_delete_expired_removes_only_expired_rows(hub_store: store.Store) -> None:
    contribute(hub_store, "bank-a", [contribution(1, days=1), contribution(2, days=10)])
    with hub_store.session() as session:
        assert store.delete_expired(session, NOW + timedelta(days=2)) == 1
        session.commit()
    with hub_store.session() as session:
        assert [bytes(r.token) for r in session.exec(select(Indicator)).all()] == [token(2)]


def test_replicas_migrating_together_both_succeed(database_url: str) -> None:
    import threading

    stores = [store.Store(database_url) for _ in range(2)]
    errors: list[BaseException] = []

    def migrate(s: store.Store) -> None:
        try:
            s.migrate()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with stores[0].engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    for s in stores:
        s.dispose()


# --- token ids (replay protection shared by replicas) ---------------------------------------


def test_token_ids_are_remembered_once_until_they_expire(hub_store: store.Store) -> None:
    jti, later = "j" * 16, NOW + timedelta(minutes=5)
    with hub_store.session() as session:
        assert store.remember_token(session, "bank-a", jti, later, NOW)
        assert not store.remember_token(session, "bank-a", jti, later, NOW)
        assert store.remember_token(session, "bank-b", jti, later, NOW)  # per issuer
        session.commit()
    after = later + timedelta(seconds=1)
    with hub_store.session() as session:
        # Past its forget_after a record counts as forgotten, swept or not.
        assert store.remember_token(session, "bank-a", jti, after + timedelta(minutes=5), after)
        assert not store.remember_token(session, "bank-a", jti, after + timedelta(minutes=5), after)
        assert store.forget_expired_tokens(session, after) == 1  # bank-b's
        session.commit()


def test_replay_guard_is_shared_by_replicas_and_restarts(hub_store: store.Store) -> None:
    from hub.storage.registry import DatabaseReplayGuard

    now = [NOW.timestamp()]
    first, second = (DatabaseReplayGuard(hub_store, clock=lambda: now[0]) for _ in range(2))
    first.check_and_store("bank-a", "a" * 20, now[0] + 300)
    with pytest.raises(AuthenticationError, match="replayed"):
        second.check_and_store("bank-a", "a" * 20, now[0] + 300)  # another replica
    restarted = DatabaseReplayGuard(hub_store, clock=lambda: now[0])
    with pytest.raises(AuthenticationError, match="replayed"):
        restarted.check_and_store("bank-a", "a" * 20, now[0] + 300)
    # Once the token has expired (plus leeway) its id is swept on the next sweep.
    now[0] += 400
    DatabaseReplayGuard(hub_store, clock=lambda: now[0]).check_and_store(
        "bank-a", "b" * 20, now[0] + 300
    )
    with hub_store.session() as session:
        left = session.exec(select(SeenToken.jti)).all()
    assert left == ["b" * 20]


def test_replay_guard_refuses_when_the_database_fails(tmp_path: Path) -> None:
    from hub.storage.registry import DatabaseReplayGuard

    unmigrated = store.Store(store.sqlite_url(tmp_path))  # no seen_token table
    with pytest.raises(Unavailable, match="retry"):
        DatabaseReplayGuard(unmigrated).check_and_store("bank-a", "c" * 20, NOW.timestamp())
    unmigrated.dispose()
