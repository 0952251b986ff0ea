"""Upkeep after publish on real PostgreSQL: what a step changed is analysed, what it left with many
dead rows vacuumed, outside the step's transaction; readers are never blocked; an object autovacuum
holds is skipped at the lock timeout; a role that does not own a table leaves it to autovacuum."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from psycopg2 import sql

from hospitaldb_testing.db import REFRESHED_OBJECTS, query
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.runs import TableLock, error_text, run_flow

# One billing line in each of 200 (visit date, branch) pairs: 200 of reporting.revenue_summary's
# 2,664 rows change (7.5%, over the 5% that calls for a vacuum); 200 of mv_billing_summary's 5,997
# (3.3%: analysed only).
REPRICE = (
    "UPDATE staging.billing SET amount = amount + 1 WHERE billing_id IN ("
    "  SELECT billing_id FROM (SELECT DISTINCT ON (v.visit_date, v.branch_id) b.billing_id"
    "                          FROM staging.billing AS b JOIN staging.visits AS v USING (visit_id)"
    "                          ORDER BY v.visit_date, v.branch_id, b.billing_id) AS one LIMIT 200)"
)


def maintenance_counts(url: str) -> dict[str, tuple[int, int]]:
    rows = query(
        url,
        "SELECT schemaname || '.' || relname, vacuum_count, analyze_count FROM pg_stat_user_tables "
        "WHERE schemaname || '.' || relname = ANY(%s)",
        (list(REFRESHED_OBJECTS),),
    )
    return {name: (vacuums, analyzes) for name, vacuums, analyzes in rows}


def upkeep_of(url: str, state) -> dict[str, str | None]:
    return dict(
        query(
            url,
            "SELECT object_name, upkeep FROM etl_audit.run_objects WHERE flow_run_id = %s",
            (str(state.state_details.flow_run_id),),
        )
    )


class Reader(threading.Thread):
    """Reads every refreshed object every 20 ms with a 200 ms lock_timeout; keeps any failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.failures, self.reads, self.stop = url, [], 0, threading.Event()

    def run(self) -> None:
        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '200ms'")
                while not self.stop.is_set():
                    for name in REFRESHED_OBJECTS:
                        try:
                            cursor.execute(
                                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*name.split(".")))
                            )
                            self.reads += 1
                        except psycopg2.Error as error:
                            self.failures.append(f"{name}: {error.pgerror}")
                    time.sleep(0.02)
        finally:
            connection.close()


def test_what_a_step_changed_is_analysed_and_vacuumed_where_dead_rows_call_for_it(demo_database, prefect):
    assert run_flow().is_completed()
    query(demo_database, REPRICE + " RETURNING 1")
    before = maintenance_counts(demo_database)
    reader = Reader(demo_database)
    reader.start()
    try:
        state = run_flow()
    finally:
        reader.stop.set()
        reader.join()

    assert state.is_completed(), error_text(state)
    assert_matches_source(demo_database)
    upkeep = upkeep_of(demo_database, state)
    assert upkeep["reporting.revenue_summary"] == "vacuumed"
    assert upkeep["analytics.mv_billing_summary"] == "analyzed"
    assert upkeep["reporting.patient_summary"] in ("analyzed", "vacuumed")
    after = maintenance_counts(demo_database)
    for name, done in upkeep.items():
        if done == "vacuumed":
            assert after[name][0] > before[name][0], name
        if done in ("analyzed", "vacuumed"):
            assert after[name][1] > before[name][1], name
        if done is None:
            assert after[name] == before[name], f"{name}: unchanged, left alone"
    assert reader.failures == [] and reader.reads > 0, reader.failures[:3]


def test_upkeep_false_leaves_maintenance_to_autovacuum(demo_database, prefect):
    assert run_flow().is_completed()
    query(demo_database, REPRICE + " RETURNING 1")
    before = maintenance_counts(demo_database)

    state = run_flow(upkeep=False)

    assert state.is_completed()
    assert set(upkeep_of(demo_database, state).values()) == {None}
    assert maintenance_counts(demo_database) == before


def test_an_object_autovacuum_holds_is_skipped_at_the_lock_timeout_and_readers_still_pass(
    demo_database, prefect
):
    assert run_flow().is_completed()
    query(demo_database, REPRICE + " RETURNING 1")
    # What autovacuum (or a manual VACUUM) holds: SHARE UPDATE EXCLUSIVE.
    vacuuming = TableLock(demo_database, "reporting.revenue_summary", "SHARE UPDATE EXCLUSIVE")
    reader = Reader(demo_database)
    reader.start()
    try:
        state = run_flow(lock_timeout_seconds=1)
    finally:
        reader.stop.set()
        reader.join()
        vacuuming.release()

    assert state.is_completed(), "upkeep never fails the run"
    assert upkeep_of(demo_database, state)["reporting.revenue_summary"] == (
        "skipped: canceling statement due to lock timeout"
    )
    assert reader.failures == []


@pytest.mark.usefixtures("prefect")
def test_a_least_privilege_refresher_keeps_up_only_what_it_owns(demo_database, least_privilege, monkeypatch):
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", least_privilege.refresher_url)
    assert run_flow().is_completed()
    query(demo_database, REPRICE + " RETURNING 1")

    state = run_flow()

    assert state.is_completed(), error_text(state)
    upkeep = upkeep_of(demo_database, state)
    assert upkeep["reporting.revenue_summary"] == "skipped: not its owner: left to autovacuum"
    assert upkeep["analytics.mv_billing_summary"] == "skipped: not its owner: left to autovacuum", (
        "the views belong to the owner, which refreshes them for it (1.3.0)"
    )
