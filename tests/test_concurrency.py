"""Never block a dashboard, never run two refreshes at once."""

from __future__ import annotations

import logging
import threading
import time

import psycopg2
import pytest
from prefect.client.orchestration import get_client
from psycopg2 import sql
from sqlalchemy.engine import make_url

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.run.lock import refresh_lock
from hospitaldb.engine.run.statements import execute_statements
from hospitaldb.engine.sql.script import load_statements
from hospitaldb.engine.steps import STEPS, sql_file
from hospitaldb_testing.db import REFRESHED_OBJECTS, add_source_rows, execute, query, snapshot
from hospitaldb_testing.runs import (
    InBackground,
    TableLock,
    error_text,
    run_flow,
    run_logs,
    task_runs,
    wait_for_blocked_refresh,
)


def read_everything(connection) -> dict[str, int]:
    """What a dashboard does: read every refreshed object (count and one aggregate)."""
    counts = {}
    with connection.cursor() as cursor:
        for name in REFRESHED_OBJECTS:
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*name.split("."))))
            counts[name] = cursor.fetchone()[0]
    connection.rollback()
    return counts


def impatient_reader(url: str) -> psycopg2.extensions.connection:
    """A reader that gives up after 200 ms of waiting for any lock."""
    connection = psycopg2.connect(url, options="-c lock_timeout=200 -c statement_timeout=5000")
    return connection


@pytest.mark.parametrize("step", STEPS)
def test_reader_is_not_blocked_and_sees_previous_complete_data_mid_refresh(demo_database, prefect, step):
    assert run_flow().is_completed()
    add_source_rows(demo_database)
    earlier_steps = list(STEPS[: STEPS.index(step)])
    if earlier_steps:
        assert run_flow(steps=earlier_steps).is_completed()
    reader = impatient_reader(demo_database)
    before = read_everything(reader)
    assert all(before.values())

    refresher = target_from_url(demo_database, "test").connect()
    refresher.set_session(isolation_level="REPEATABLE READ")
    execute_statements(refresher, load_statements(sql_file(step)), logging.getLogger("test"), step)
    try:
        # The refresh has done all its work and holds its locks, uncommitted.
        assert read_everything(reader) == before
    finally:
        refresher.commit()
        refresher.close()
    after = read_everything(reader)
    reader.close()
    assert after != before, "the committed refresh is visible at once"


def test_reader_polling_during_a_real_run_is_never_blocked_and_never_sees_empty_tables(
    demo_database, prefect
):
    assert run_flow().is_completed()
    add_source_rows(demo_database)
    failures: list[str] = []
    reads = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal reads
        reader = impatient_reader(demo_database)
        try:
            while not done.is_set():
                try:
                    counts = read_everything(reader)
                except psycopg2.Error as error:
                    failures.append(str(error))
                    reader.rollback()
                    continue
                failures.extend(f"{name} was empty" for name, count in counts.items() if not count)
                reads += 1
                time.sleep(0.02)
        finally:
            reader.close()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    state = run_flow()
    done.set()
    poller.join(timeout=30)
    assert state.is_completed()
    assert reads > 0
    assert failures == []


def test_second_run_is_refused_while_the_refresh_lock_is_held(demo_database, prefect):
    add_source_rows(demo_database)
    before = snapshot(demo_database)
    with refresh_lock(target_from_url(demo_database, "test")):
        state = run_flow()
    assert state.is_failed()
    message = error_text(state)
    assert "Another HospitalDB refresh is running" in message
    assert "hospitaldb-refresh-lock" in message, "the message names who holds the lock"
    assert task_runs(state) == {}
    assert snapshot(demo_database) == before


def test_a_role_that_may_only_read_cannot_stop_the_refreshes(
    demo_database, least_privilege, prefect, monkeypatch
):
    reader = make_url(least_privilege.reader_url).username
    squatter = psycopg2.connect(least_privilege.reader_url)
    try:
        squatter.autocommit = True
        with squatter.cursor() as cursor:
            # What stopped every refresh before: any role may take any advisory key.
            cursor.execute("SELECT pg_advisory_lock(hashtextextended('hospitaldb-refresh', 0))")
            # The lock a refresh holds now is one it may not take.
            cursor.execute("BEGIN")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cursor.execute("LOCK TABLE etl_audit.refresh_lock IN SHARE ROW EXCLUSIVE MODE NOWAIT")
            cursor.execute("ROLLBACK")
        monkeypatch.setenv("HOSPITALDB_DATABASE_URL", least_privilege.refresher_url)
        first, second = run_flow(), run_flow()
    finally:
        squatter.close()
    assert first.is_completed() and second.is_completed(), error_text(first)
    logs = run_logs(first)
    assert "held by PostgreSQL pid" in logs and f"role '{reader}'" in logs and "not waited for" in logs


def test_two_real_runs_at_once_only_one_refreshes(demo_database, prefect):
    blocker = TableLock(demo_database, "reporting.patient_summary")
    first = InBackground(lambda: run_flow())
    first.start()
    try:
        wait_for_blocked_refresh(demo_database)
        second = run_flow()
    finally:
        blocker.release()
    first.join(timeout=120)
    assert second.is_failed()
    assert "Another HospitalDB refresh is running" in error_text(second)
    assert task_runs(second) == {}
    assert first.result.is_completed()


def test_second_run_waits_for_the_first_when_asked_to(demo_database, prefect):
    holder = refresh_lock(target_from_url(demo_database, "test"))
    holder.__enter__()
    timer = threading.Timer(1.0, holder.__exit__, (None, None, None))
    timer.start()
    state = run_flow(overlap_wait_seconds=60)
    timer.join()
    assert state.is_completed()
    assert set(task_runs(state)) == {"check_sources", *STEPS}, (
        "the source checks and the three steps ran once"
    )


class EndingRun:
    """A run's lock session as it ends: the table lock goes, the advisory key a moment later.

    PostgreSQL ends a session by releasing its transaction's locks and then its session's; this
    holds that moment open so that the next run meets it every time.
    """

    def __init__(self, url: str) -> None:
        self.connection = psycopg2.connect(url)
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(hashtextextended('hospitaldb-refresh', 0))")
            cursor.execute("LOCK TABLE etl_audit.refresh_lock IN SHARE ROW EXCLUSIVE MODE")

    def end(self, key_held_for: float) -> None:
        self.connection.commit()  # the table is free
        time.sleep(key_held_for)
        self.connection.close()  # and now the key


@pytest.mark.parametrize("wait_seconds", [0, 30])
def test_a_run_that_meets_the_previous_one_ending_takes_the_lock(demo_database, wait_seconds):
    ending = EndingRun(demo_database)
    target = target_from_url(demo_database, "test")
    if wait_seconds:  # the next run waits for the table, and gets it as the previous run ends
        taken: list = []

        def take() -> None:
            with refresh_lock(target, wait_seconds=wait_seconds) as lock:
                taken.append(lock.kind)

        waiter = InBackground(take)
        waiter.start()
        wait_for_blocked_refresh(demo_database, application="hospitaldb-refresh-lock")
        ending.end(key_held_for=0.5)
        waiter.join(timeout=60)
        assert waiter.error is None, waiter.error
        assert taken == ["table"]
    else:  # the next run starts between the two releases
        ending.connection.commit()
        key_released = threading.Timer(0.5, ending.connection.close)
        key_released.start()
        with refresh_lock(target) as lock:
            assert lock.kind == "table" and lock.outsider is None
        key_released.join()


def test_waiting_has_a_limit(demo_database, prefect):
    with refresh_lock(target_from_url(demo_database, "test")):
        state = run_flow(overlap_wait_seconds=0.5)
    assert "waited 0.5 s" in error_text(state)


NEGATIVE_PAYMENT = "INSERT INTO staging.payments VALUES (999999991, 90000011, -1000000, '2026-07-09', 'cash')"


def test_a_run_that_waited_for_the_lock_lets_the_run_before_it_record_its_own_end(
    demo_database, prefect, alert_blocks, webhook_server
):
    # The first run fails its step 2 checks and tells it (its Slack alert is held) after its
    # lock is released, then records its end. A run waiting for the lock (the nightly behind an
    # on-demand one) takes it in that moment: the first run is alive, not abandoned.
    webhook_server.answer = threading.Event()
    add_source_rows(demo_database)
    execute(demo_database, NEGATIVE_PAYMENT)
    first = InBackground(lambda: run_flow(retries=0, **alert_blocks))
    first.start()
    try:
        deadline = time.monotonic() + 180
        while not webhook_server.posts:
            assert time.monotonic() < deadline, "the first run never told its failure"
            time.sleep(0.2)
        second = run_flow(steps=["refresh_dashboards"], overlap_wait_seconds=60)
    finally:
        webhook_server.answer.set()
    first.join(timeout=180)
    assert second.is_completed()
    assert "marked abandoned" not in run_logs(second), "the second run took the first for dead"
    assert first.result.is_failed()
    with get_client(sync_client=True) as client:
        in_prefect = client.read_flow_run(first.result.state_details.flow_run_id).state
    assert in_prefect.is_failed(), f"Prefect shows {in_prefect.name}: {in_prefect.message}"
    outcomes = dict(query(demo_database, "SELECT outcome, count(*) FROM etl_audit.refresh_runs GROUP BY 1"))
    assert outcomes == {"failed": 1, "completed": 1}, "the first run was marked abandoned while it ended"
