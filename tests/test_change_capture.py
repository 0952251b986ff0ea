"""Change capture (`hospitaldb changes install`): every change to the steps' sources logs its keys, on real PostgreSQL.

The first part of incremental refresh: what changed is captured without a change column, deletes
and key moves included, whoever loads and however (replica mode too); a step takes the keys in its
own transaction, so a step that rolls back leaves them. Nothing of the refresh reads them yet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from hospitaldb.engine.changes.capture import install, status
from hospitaldb.paths import PROJECT_ROOT, PROJECT_SQL_DIR
from hospitaldb.settings import ADMIN_DATABASE_URL, SQL_DIR
from hospitaldb_testing.db import execute, query, scalar

SOURCES = [
    "analytics.mv_branch_billing_summary",
    "analytics.mv_patient_summary",
    "analytics.mv_visit_summary",
    "reporting.branch_summary",
    "reporting.patient_summary",
    "reporting.revenue_summary",
    "staging.billing",
    "staging.branches",
    "staging.doctors",
    "staging.patients",
    "staging.payments",
    "staging.visits",
]


def installed(url: str) -> None:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        install(connection)
    finally:
        connection.close()


def logged(url: str, source: str) -> list[dict]:
    """Every key logged for source, once, as objects of its key columns."""
    rows = query(url, "SELECT etl_changes.logged_keys(%s)", (source,))
    unique = {tuple(sorted(row[0].items())) for row in rows}
    return [dict(items) for items in sorted(unique)]


def test_install_is_idempotent_and_says_what_waits(demo_database):
    command = [str(Path(sys.executable).with_name("hospitaldb")), "changes"]
    env = {**os.environ, ADMIN_DATABASE_URL.name: demo_database}
    before = subprocess.run([*command, "status"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert before.returncode == 1 and "not installed" in before.stdout
    for _ in range(2):
        done = subprocess.run(
            [*command, "install"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT
        )
        assert done.returncode == 0, done.stdout + done.stderr
    triggers = query(
        demo_database,
        "SELECT tgrelid::regclass::text, count(*), bool_and(tgenabled = 'A') FROM pg_trigger "
        "WHERE tgname LIKE 'hospitaldb_changes_%%' GROUP BY 1 ORDER BY 1",
    )
    assert triggers == [(source, 4, True) for source in SOURCES], "one per event, ENABLE ALWAYS"
    execute(demo_database, "UPDATE staging.branches SET city = city || ' ' WHERE branch_id = 1")
    shown = subprocess.run([*command, "status"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert "staging.branches: keys branch_id; 1 changed keys wait" in shown.stdout
    assert (
        "staging.visits: keys visit_id, patient_id, doctor_id, branch_id, visit_date; 0 changed keys wait"
        in (shown.stdout)
    )


def test_every_change_logs_the_old_and_new_keys_whoever_loads_and_however(demo_database):
    installed(demo_database)
    payment, billing = query(demo_database, "SELECT payment_id, billing_id FROM staging.payments LIMIT 1")[0]
    other_billing = scalar(
        demo_database, "SELECT min(billing_id) FROM staging.billing WHERE billing_id <> %s", (billing,)
    )
    # A loader that may write staging.payments and nothing else: no grant on the logs is needed.
    loader = f"hdb_loader_{uuid.uuid4().hex[:8]}"
    execute(
        demo_database,
        sql.SQL(
            "CREATE ROLE {0} LOGIN; GRANT USAGE ON SCHEMA staging TO {0}; "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON staging.payments TO {0}"
        ).format(sql.Identifier(loader)),
    )
    loader_url = demo_database.replace("://postgres", f"://{loader}", 1)
    try:
        # A refund moved to another bill: both bills' keys.
        execute(
            loader_url,
            "UPDATE staging.payments SET billing_id = %s WHERE payment_id = %s",
            (other_billing, payment),
        )
        assert logged(demo_database, "staging.payments") == sorted(
            [
                {"payment_id": payment, "billing_id": billing},
                {"payment_id": payment, "billing_id": other_billing},
            ],
            key=lambda keys: sorted(keys.items()),
        )
        execute(demo_database, "DELETE FROM etl_changes.staging__payments; DELETE FROM etl_changes.changes")
        # Replica mode (pg_restore, logical replication) fires ENABLE ALWAYS triggers too.
        execute(
            loader_url,
            "SET session_replication_role = replica; DELETE FROM staging.payments WHERE payment_id = %s",
            (payment,),
        )
    except psycopg2.errors.InsufficientPrivilege:  # session_replication_role needs a superuser before 15
        execute(
            demo_database,
            "SET session_replication_role = replica; DELETE FROM staging.payments WHERE payment_id = %s",
            (payment,),
        )
    finally:
        execute(demo_database, sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(loader)))
    assert logged(demo_database, "staging.payments") == [{"payment_id": payment, "billing_id": other_billing}]
    # A row changed twice, and one inserted then deleted, in one transaction: every key it had.
    execute(demo_database, "DELETE FROM etl_changes.staging__payments; DELETE FROM etl_changes.changes")
    execute(
        demo_database,
        "UPDATE staging.visits SET visit_date = visit_date + 1 WHERE visit_id = 1;"
        "UPDATE staging.visits SET patient_id = 2 WHERE visit_id = 1;"
        "INSERT INTO staging.branches VALUES (999, 'Pop-up', 'Nowhere', '2026-01-01');"
        "DELETE FROM staging.branches WHERE branch_id = 999",
    )
    assert {keys["branch_id"] for keys in logged(demo_database, "staging.branches")} == {999}
    assert len({(k["patient_id"], k["visit_date"]) for k in logged(demo_database, "staging.visits")}) == 3
    # A load that rolls back logs nothing.
    connection = psycopg2.connect(demo_database)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM staging.payments WHERE payment_id = (SELECT max(payment_id) FROM staging.payments)"
        )
    connection.rollback()
    connection.close()
    assert logged(demo_database, "staging.payments") == []


def test_a_truncate_says_the_next_run_must_be_full(demo_database):
    installed(demo_database)
    execute(demo_database, "TRUNCATE staging.payments")
    connection = psycopg2.connect(demo_database)
    try:
        by_source = {source.source: source for source in status(connection)}
    finally:
        connection.close()
    assert by_source["staging.payments"].truncated and not by_source["staging.visits"].truncated


def test_a_step_takes_keys_in_its_transaction_and_a_loader_committing_meanwhile_waits(demo_database):
    installed(demo_database)
    execute(demo_database, "UPDATE staging.branches SET city = city WHERE branch_id IN (1, 2)")
    step = psycopg2.connect(demo_database)
    take = "SELECT count(*) FROM etl_changes.take_changed_keys('refresh_dashboards', 'staging.branches')"
    with step.cursor() as cursor:
        cursor.execute(take)
        assert cursor.fetchone() == (2,)
    step.rollback()  # the step failed: the keys wait for the next run
    with step.cursor() as cursor:
        cursor.execute(take)
        assert cursor.fetchone() == (2,)
        # A loader commits while the step runs: not seen now, not lost.
        execute(demo_database, "UPDATE staging.branches SET city = city WHERE branch_id = 3")
    step.commit()
    with step.cursor() as cursor:
        cursor.execute(take)
        assert cursor.fetchone() == (1,), "only the loader's key: the two were taken"
    step.commit()
    step.close()
    # Every source read by both steps: a key waits for the other; trimmed once both took them.
    assert (
        scalar(
            demo_database,
            "SELECT count(*) FROM etl_changes.take_changed_keys('refresh_phase2_materialized_views', 'staging.branches')",
        )
        == 3
    )
    assert (
        scalar(
            demo_database,
            "SELECT etl_changes.trim_taken(array_agg(c.source), array_agg(s.step)) "
            "FROM etl_changes.captured AS c, "
            "unnest(ARRAY['refresh_dashboards', 'refresh_phase2_materialized_views']) AS s (step)",
        )
        == 3  # the install's (a full run must come first) and the two loads', each taken by both steps
    )
    assert (
        scalar(demo_database, "SELECT count(*) FROM etl_changes.changes WHERE source = 'staging.branches'")
        == 0
    )


def test_install_converges_on_capture_sql_and_refuses_a_wrong_one(demo_database, tmp_path, monkeypatch):
    installed(demo_database)
    folder = tmp_path / "sql"
    shutil.copytree(PROJECT_SQL_DIR, folder)
    monkeypatch.setenv(SQL_DIR.name, str(folder))
    capture = folder / "incremental" / "capture.sql"
    capture.write_text(
        "\n".join(line for line in capture.read_text().splitlines() if "payments" not in line) + "\n"
    )
    installed(demo_database)
    assert (
        scalar(
            demo_database,
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'staging.payments'::regclass "
            "AND tgname LIKE 'hospitaldb_changes_%%'",
        )
        == 0
    ), "a source no longer listed loses its triggers"
    # Other keys for a source: its log is made anew, and the next run must be full.
    capture.write_text(capture.read_text().replace("ARRAY['doctor_id', 'branch_id']", "ARRAY['doctor_id']"))
    installed(demo_database)
    connection = psycopg2.connect(demo_database)
    try:
        by_source = {source.source: source for source in status(connection)}
    finally:
        connection.close()
    assert by_source["staging.doctors"].keys == ("doctor_id",) and by_source["staging.doctors"].truncated
    capture.write_text(
        "-- a key that is not there\nSELECT 'staging.visits' AS source, ARRAY['visit_no'] AS keys\n"
    )
    connection = psycopg2.connect(demo_database)
    connection.autocommit = True
    try:
        with pytest.raises(Exception, match=r"capture.sql:2: staging.visits has no column visit_no"):
            install(connection)
    finally:
        connection.close()
    assert (
        scalar(demo_database, "SELECT count(*) FROM etl_changes.captured WHERE source = 'staging.visits'")
        == 1
    ), "nothing of the failed install was kept"


def test_a_source_whose_name_needs_quotes_keeps_its_triggers_when_installed_again(
    demo_database, tmp_path, monkeypatch
):
    execute(demo_database, 'CREATE TABLE staging."WardNotes" (note_id int PRIMARY KEY, ward text)')
    folder = tmp_path / "sql"
    shutil.copytree(PROJECT_SQL_DIR, folder)
    monkeypatch.setenv(SQL_DIR.name, str(folder))
    capture = folder / "incremental" / "capture.sql"
    capture.write_text(
        capture.read_text() + "UNION ALL SELECT 'staging.\"WardNotes\"', ARRAY['note_id'], '{}'\n"
    )
    installed(demo_database)
    connection = psycopg2.connect(demo_database)
    connection.autocommit = True
    try:
        again = install(connection)
    finally:
        connection.close()
    assert not [
        s for s in again if s.startswith("DROP TRIGGER ") and not s.startswith("DROP TRIGGER IF EXISTS")
    ], "nothing listed is taken down: only DROP TRIGGER IF EXISTS before each trigger is made again"
    execute(demo_database, "INSERT INTO staging.\"WardNotes\" VALUES (7, 'east')")
    assert logged(demo_database, 'staging."WardNotes"') == [{"note_id": 7}]


def test_a_summed_source_logs_each_rows_side_so_a_group_moves_by_its_delta(demo_database):
    # analytics.mv_visit_summary is summed (capture.sql's third column): a visit moved a day earlier
    # takes its amounts out of one (day, branch) group and into another, an UPDATE of nothing moves
    # nothing, a deleted visit leaves its group a row short. (Rows written here as step 1 would.)
    execute(
        demo_database,
        "INSERT INTO analytics.mv_visit_summary (visit_id, patient_id, doctor_id, branch_id, visit_date, "
        "visit_type, billing_lines, billed_amount, paid_amount, outstanding_amount) "
        "SELECT visit_id, patient_id, doctor_id, 1, DATE '2026-03-10', visit_type, 1, 100.50, 40, 60.50 "
        "FROM staging.visits ORDER BY visit_id LIMIT 3",
    )
    installed(demo_database)
    first, second, third = [
        row[0] for row in query(demo_database, "SELECT visit_id FROM analytics.mv_visit_summary")
    ]
    execute(
        demo_database,
        "UPDATE analytics.mv_visit_summary SET visit_date = visit_date - 1 WHERE visit_id = %s;"
        "UPDATE analytics.mv_visit_summary SET visit_type = visit_type WHERE visit_id = %s;"
        "DELETE FROM analytics.mv_visit_summary WHERE visit_id = %s",
        (first, second, third),
    )
    taken = {
        (row["visit_date"], row["branch_id"]): (row["row_change"], row["billed_amount"], row["paid_amount"])
        for (row,) in query(
            demo_database,
            "SELECT etl_changes.take_changed_keys('refresh_phase3_reporting_tables', 'analytics.mv_visit_summary')",
        )
    }
    assert {
        key: (rows, Decimal(str(billed)), Decimal(str(paid))) for key, (rows, billed, paid) in taken.items()
    } == {
        ("2026-03-10", 1): (-2, Decimal("-201.00"), Decimal("-80")),  # the first moved out, the third deleted
        ("2026-03-09", 1): (1, Decimal("100.50"), Decimal("40")),
    }
