"""Alert logic (hub.core.alerts, sans-IO) and its storage (hub.storage.alerts)
on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import postgres_schema_url
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.core.errors import InvalidRequest
from hub.core.alerts import (
    MAX_ALERT_DISCLOSURE,
    AlertEvent,
    AlertView,
    alert_disclosure,
    alert_event,
)
from hub.core.matching import Contribution, Sighting, aggregate
from hub.policy.model import Disclosure
from hub.storage import alerts as alert_store
from hub.storage import store
from hub.storage.alerts import WatchItem
from hub.storage.models import Institution

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LEVELS = [Disclosure.MATCH, Disclosure.COUNT, Disclosure.SUMMARY, Disclosure.LABELS]


def sighting(who: str, category: str = "money_mule", day: int = 1) -> Sighting:
    return Sighting(who, category, 70, NOW - timedelta(days=day), b"x" * 40)


sightings = st.lists(
    st.builds(
        sighting,
        st.sampled_from(["bank-a", "bank-b", "bank-c", "carrier-x"]),
        st.sampled_from(["money_mule", "scam_phone", "phishing"]),
        st.integers(1, 30),
    ),
    max_size=6,
)


# --- the pure logic -------------------------------------------------------------------


@settings(max_examples=200)
@given(sightings, st.sampled_from(LEVELS), st.integers(1, 3))
def test_a_view_never_exceeds_summary_nor_counts_the_watcher(
    seen: list[Sighting], level: Disclosure, k: int
) -> None:
    view = view_for("bank-a", seen, disclosure=level, min_contributors=k)
    others = {s.contributor for s in seen if s.contributor != "bank-a"}
    assert view.visible == (len(others) >= k)
    assert view.disclosure <= min(level, MAX_ALERT_DISCLOSURE)
    if view.visible and level >= Disclosure.COUNT:
        assert view.contributors == len(others)
    if level < Disclosure.COUNT:
        assert view.contributors == 0
    if level < Disclosure.SUMMARY:
        assert view.categories == () and view.first_seen is None


@settings(max_examples=200)
@given(sightings, sightings, st.sampled_from(LEVELS), st.integers(1, 2))
def test_alert_event_is_new_changed_withdrawn_or_nothing(
    before: list[Sighting], after: list[Sighting], level: Disclosure, k: int
) -> None:
    old = view_for("bank-a", before, disclosure=level, min_contributors=k)
    new = view_for("bank-a", after, disclosure=level, min_contributors=k)
    event = alert_event(old, new)
    assert alert_event(new, new) is None  # the same state never alerts twice
    if not old.visible and new.visible:
        assert event is AlertEvent.NEW
    elif old.visible and not new.visible:
        assert event is AlertEvent.WITHDRAWN
    elif old == new:
        assert event is None
    else:
        assert event is AlertEvent.CHANGED


def test_k_threshold_and_own_contribution() -> None:
    one = [sighting("bank-b")]
    two = [sighting("bank-b"), sighting("carrier-x")]
    hidden = view_for("bank-a", one, disclosure=Disclosure.COUNT, min_contributors=2)
    shown = view_for("bank-a", two, disclosure=Disclosure.COUNT, min_contributors=2)
    assert alert_event(AlertView(visible=False), hidden) is None
    assert alert_event(hidden, shown) is AlertEvent.NEW and shown.contributors == 2
    # The watcher contributing itself changes nothing it may see.
    mine = view_for(
        "bank-a", [*two, sighting("bank-a")], disclosure=Disclosure.COUNT, min_contributors=2
    )
    assert alert_event(shown, mine) is None
    # MATCH only: a new contributor is not a visible change.
    m1 = view_for("bank-a", two, disclosure=Disclosure.MATCH, min_contributors=1)
    m2 = view_for(
        "bank-a", [*two, sighting("bank-c")], disclosure=Disclosure.MATCH, min_contributors=1
    )
    assert alert_event(m1, m2) is None


# --- storage ----------------------------------------------------------------------------


def token(n: int) -> bytes:
    return n.to_bytes(32, "big")


@pytest.fixture
def hub_store(database_url: str) -> Iterator[store.Store]:
    s = store.Store(database_url)
    s.migrate()
    with s.session() as session:
        for who, role in (("bank-a", "bank"), ("bank-b", "bank"), ("carrier-x", "carrier")):
            session.add(Institution(id=who, role=role, public_key=b"k" * 32))
        session.commit()
    yield s
    s.dispose()


def watch(s: store.Store, who: str, numbers: range, days: int = 30) -> alert_store.WatchCounts:
    items = [WatchItem("phone", token(n), 1, NOW + timedelta(days=days)) for n in numbers]
    with s.session() as session:
        counts = alert_store.upsert_watches(session, who, "customer_monitoring", items, NOW)
        session.commit()
    return counts


def view_for(
    watcher: str, seen: Sequence[Sighting], *, disclosure: Disclosure, min_contributors: int
) -> AlertView:
    """An alert's view as the hub computes it: the match aggregate at the capped level
    (the hub adds the lifecycle facts through MatchFacts.summary, tested end to end)."""
    level = alert_disclosure(disclosure)
    return AlertView.of(
        aggregate(watcher, seen, disclosure=level, min_contributors=min_contributors)
    )


def judge(
    watcher: str, _role: str, _purpose: str, key: alert_store.Key, seen: Sequence[Sighting]
) -> AlertView | None:
    if key[0] != "phone":
        return None
    return view_for(watcher, seen, disclosure=Disclosure.SUMMARY, min_contributors=1)


def contribute(s: store.Store, who: str, numbers: list[int]) -> alert_store.RecordedAlerts:
    items = [
        Contribution(
            token(n),
            "phone",
            1,
            "scam_phone",
            60,
            NOW - timedelta(days=1),
            NOW + timedelta(days=30),
        )
        for n in numbers
    ]
    with s.session() as session:
        change = alert_store.begin_change(
            session, [(c.kind, c.token, 1) for c in items], NOW, exclude=who
        )
        store.upsert_contributions(session, who, items, NOW)
        recorded = alert_store.finish_change(session, change, NOW, judge, "v1")
        session.commit()
    return recorded


def test_watches_are_idempotent_counted_and_removed(hub_store: store.Store) -> None:
    assert watch(hub_store, "bank-a", range(10)) == alert_store.WatchCounts(10, 0)
    assert watch(hub_store, "bank-a", range(5, 15)) == alert_store.WatchCounts(5, 5)
    with hub_store.session() as session:
        assert alert_store.watch_counts(session, "bank-a", NOW) == [
            ("phone", "customer_monitoring", 15)
        ]
        keys = [("phone", token(n), 1) for n in (0, 1, 99)]
        assert alert_store.remove_watches(session, "bank-a", keys) == 2
        session.commit()
        # Expired watches neither count nor match, and the sweep deletes them.
        later = NOW + timedelta(days=31)
        assert alert_store.watch_counts(session, "bank-a", later) == []
        assert alert_store.watchers_of(session, [("phone", token(5), 1)], later) == {}
        assert alert_store.delete_expired_watches(session, later) == 13


def test_one_watch_lookup_per_batch_and_gapless_sequences(hub_store: store.Store) -> None:
    watch(hub_store, "bank-a", range(0, 3000))
    watch(hub_store, "carrier-x", range(2000, 2500))
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM watch" in statement:
            statements.append(statement)

    sa.event.listen(hub_store.engine, "before_cursor_execute", count)
    try:
        recorded = contribute(hub_store, "bank-b", [*range(1990, 2010), 9999])
    finally:
        sa.event.remove(hub_store.engine, "before_cursor_execute", count)
    assert len(statements) == 1  # one indexed lookup for the whole batch
    assert {(g.watcher, g.count) for g in recorded.groups} == {("bank-a", 20), ("carrier-x", 10)}
    contribute(hub_store, "carrier-x", [5, 6])  # carrier-x's own contribution: bank-a only
    with hub_store.session() as session:
        rows = alert_store.alerts_after(session, "bank-a", 0, 1000)
        assert [r.sequence for r in rows] == list(range(1, 23))
        assert {r.event for r in rows} == {"new"}
        assert alert_store.alerts_after(session, "carrier-x", 0, 1000)[-1].sequence == 10
        assert alert_store.cursor_of(session, "bank-a") == (22, 0)
        assert alert_store.ack(session, "bank-a", 7) == 7
        assert alert_store.ack(session, "bank-a", 3) == 7  # never back
        with pytest.raises(InvalidRequest):
            alert_store.ack(session, "bank-a", 23)
        session.commit()
        assert [r.sequence for r in alert_store.alerts_after(session, "bank-a", 7, 5)] == [
            8,
            9,
            10,
            11,
            12,
        ]


def test_concurrent_recordings_keep_sequences_gapless(hub_store: store.Store) -> None:
    watch(hub_store, "bank-a", range(0, 40))
    errors: list[BaseException] = []

    def run(numbers: list[int]) -> None:
        try:
            contribute(hub_store, "bank-b", numbers)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=([n, n + 20],)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with hub_store.session() as session:
        rows = alert_store.alerts_after(session, "bank-a", 0, 1000)
    assert [r.sequence for r in rows] == list(range(1, 41))


def _captured_watch_queries(s: store.Store) -> list[tuple[str, Any]]:
    """The SELECT and DELETE statements (with parameters) the watch functions run."""
    captured: list[tuple[str, Any]] = []

    def capture(_c: object, _cur: object, statement: str, params: Any, *_a: object) -> None:
        if "watch" in statement and statement.lstrip().upper().startswith(("SELECT", "DELETE")):
            captured.append((statement, params))

    sa.event.listen(s.engine, "before_cursor_execute", capture)
    try:
        watch(s, "bank-a", range(40, 60))
        with s.session() as session:
            alert_store.watchers_of(session, [("phone", token(n), 1) for n in range(30)], NOW)
            alert_store.remove_watches(session, "bank-a", [("phone", token(1), 1)])
            session.rollback()
    finally:
        sa.event.remove(s.engine, "before_cursor_execute", capture)
    assert len(captured) >= 3
    return captured


def test_watch_queries_are_index_searches_on_sqlite(tmp_path: Path) -> None:
    """Every watch query SEARCHes an index: none scans a watcher's (10M) rows."""
    s = store.Store(store.sqlite_url(tmp_path))
    s.migrate()
    watch(s, "bank-a", range(50))
    captured = _captured_watch_queries(s)
    with s.engine.connect() as conn:
        for statement, params in captured:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            details = [row[3] for row in plan]
            assert not any(d.startswith("SCAN watch") for d in details), (statement, details)
            # A search on the watcher alone walks all its rows: the token must be a key.
            assert all("token=?" in d for d in details if "watch" in d), (statement, details)
    s.dispose()


@pytest.mark.postgres
def test_watch_queries_key_on_the_token_on_postgresql_with_stale_statistics() -> None:
    """Never analysed (as during a bulk load), no watch query is planned through the
    watcher's key with the token as a filter, nor ANDed with the expiry index."""
    with postgres_schema_url("alerts_plan") as url:
        s = store.Store(url)
        s.migrate()
        watch(s, "bank-a", range(2000))
        captured = _captured_watch_queries(s)
        with s.engine.connect() as conn:
            for statement, params in captured:
                plan = "\n".join(
                    row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params)
                )
                # (A table this small may be read whole; a big one must not be read
                # through the watcher's key or the expiry index.)
                assert "ix_watch_expires_at" not in plan, (statement, plan)
                assert not ("watch_pkey" in plan and "Filter: (token" in plan), (statement, plan)
        s.dispose()
