"""A failover mid-run: the primary is lost during step 2, its streaming standby is promoted, and the
refresh completes on the new primary, with the retry on record.

A real primary and standby on loopback (tests/hospitaldb_testing/local_postgres.py); the run's URL names both
hosts, libpq's way (`postgresql://u@h1:p1,h2:p2/db?target_session_attrs=read-write`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg2 import sql

from hospitaldb.engine.db.database import DATABASE_URL_ENV
from hospitaldb.local.demo import build_demo_database
from hospitaldb_testing.db import execute_outside_transaction, private_temp_dir, query, retries_at
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.local_postgres import ReplicatedPair
from hospitaldb_testing.runs import InBackground, TableLock, run_flow, task_runs, wait_for_blocked_refresh

# Its own two servers, whatever PostgreSQL the rest of the suite uses.
STEP2 = "refresh_phase3_reporting_tables"


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    servers = ReplicatedPair(private_temp_dir("hospitaldb-failover-") / "servers")
    try:
        yield servers.start()
    finally:
        servers.stop()


def test_a_failover_mid_run_completes_on_the_new_primary_with_the_retry_on_record(pair, prefect, monkeypatch):
    execute_outside_transaction(pair.url(pair.primary_port), sql.SQL("CREATE DATABASE hospitaldb"))
    primary = pair.url(pair.primary_port, "hospitaldb")
    build_demo_database(primary, visits=3000, seed=7)
    monkeypatch.setenv(DATABASE_URL_ENV, pair.failover_url("hospitaldb"))

    blocker = TableLock(primary, "reporting.patient_summary")
    run = InBackground(lambda: run_flow(retries=5, retry_delay_seconds=1))
    run.start()
    try:
        wait_for_blocked_refresh(primary, timeout=120)  # step 2 has started, on the primary
        pair.wait_until_replayed()  # what step 1 committed is on the standby (asynchronous replication)
        pair.stop_primary()
        pair.promote_standby()
    finally:
        try:
            blocker.release()
        except Exception:  # its session went with the primary
            pass
    run.join(timeout=300)

    state = run.result
    assert state is not None and state.is_completed(), state
    new_primary = pair.url(pair.standby_port, "hospitaldb")
    assert_matches_source(new_primary)
    attempts = query(
        new_primary,
        "SELECT attempt, status FROM etl_audit.step_attempts WHERE step = %s ORDER BY attempt",
        (STEP2,),
    )
    assert attempts[0] == (1, "failed") and attempts[-1][1] == "completed", attempts
    assert task_runs(state)[STEP2].run_count == len(attempts) >= 2
    _, retries, _, failed_runs = retries_at(new_primary, STEP2)
    assert retries >= 1 and failed_runs == 0
