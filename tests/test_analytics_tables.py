"""The upgrade from the analytics materialized views (1.0.0 to 1.8.0) to the tables of 1.9.0, in place.

sql/migrations/2026-12-07_analytics_views_become_tables.sql, run once by an administrator, on a
database as 1.8.0 left it (tests/fixtures/analytics_views_1_8_0.sql, the views' schema unchanged
since 1.0.0, refreshed by 1.8.0's step 1): the same names, columns, types and rows, the readers'
grants kept, and the next runs maintain the tables. Before the migration, 1.9.0's step fails,
changes nothing and says what to do.
"""

from __future__ import annotations

import uuid

import psycopg2
import pytest
from psycopg2 import sql

from hospitaldb.engine.changes.capture import CaptureNotInstallable, install
from hospitaldb.paths import PROJECT_SQL_DIR
from hospitaldb.settings import SQL_DIR
from hospitaldb_testing.db import (
    STEP1_VIEWS,
    add_source_rows,
    as_views_warehouse,
    execute,
    query,
    snapshot,
)
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.runs import error_text, run_flow

MIGRATION = PROJECT_SQL_DIR / "migrations" / "2026-12-07_analytics_views_become_tables.sql"
SHAPE = """
SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod), a.attnum
FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.relnamespace = 'analytics'::regnamespace AND c.relkind IN ('r', 'm')
ORDER BY 1, 5
"""
INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'analytics' ORDER BY 1"


def migrate(url: str) -> None:
    """The migration as `psql --single-transaction -v ON_ERROR_STOP=1 -f` runs it: one transaction."""
    connection = psycopg2.connect(url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(MIGRATION.read_text())
    finally:
        connection.close()


def test_the_views_of_1_8_0_become_tables_in_place_and_the_refresh_maintains_them(
    demo_database, other_demo_database, prefect, tmp_path, monkeypatch
):
    # As 1.8.0 left it: step 1 refreshed its views, a reader of the hospital's reads one of them.
    monkeypatch.setenv(SQL_DIR.name, str(as_views_warehouse(demo_database, tmp_path / "sql_1_8_0")))
    assert run_flow().is_completed()
    reader = f"bi_{uuid.uuid4().hex[:8]}"
    execute(demo_database, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(reader)))
    execute(
        demo_database,
        sql.SQL(
            "GRANT USAGE ON SCHEMA analytics TO {0}; GRANT SELECT ON analytics.mv_visit_summary TO {0}"
        ).format(sql.Identifier(reader)),
    )
    monkeypatch.delenv(SQL_DIR.name)
    before = snapshot(demo_database)

    # 1.9.0 installed, the migration not yet run: the step fails, nothing changes, it says what to do.
    refused = run_flow()
    assert refused.is_failed()
    assert 'cannot change materialized view "mv_billing_summary"' in error_text(refused)
    assert "apply the migration of the version installed (CHANGELOG.md" in error_text(refused)
    assert snapshot(demo_database) == before
    # Nor can change capture be installed on the views: it says why, and installs nothing.
    connection = psycopg2.connect(demo_database)
    try:
        with pytest.raises(CaptureNotInstallable, match="mv_patient_summary is a materialized view here"):
            install(connection)
    finally:
        connection.close()
    assert query(demo_database, "SELECT to_regnamespace('etl_changes')") == [(None,)]

    migrate(demo_database)
    connection = psycopg2.connect(demo_database)
    try:
        connection.autocommit = True
        install(connection)  # and after the migration, it is
    finally:
        connection.close()

    # What 1.9.0 creates in a new database, with the views' rows.
    assert query(demo_database, SHAPE) == query(other_demo_database, SHAPE)
    assert {kind for _, kind, *_ in query(demo_database, SHAPE)} == {"r"}
    assert query(demo_database, INDEXES) == query(other_demo_database, INDEXES)
    assert snapshot(demo_database) == before
    assert query(
        demo_database,
        "SELECT has_table_privilege(%s, 'analytics.mv_visit_summary', 'SELECT'), "
        "has_table_privilege(%s, 'analytics.mv_patient_summary', 'SELECT')",
        (reader, reader),
    ) == [(True, False)]

    # The next runs maintain the tables.
    add_source_rows(demo_database)
    after = run_flow()
    assert after.is_completed(), error_text(after)
    assert_matches_source(demo_database)
    assert snapshot(demo_database, STEP1_VIEWS) != {name: before[name] for name in STEP1_VIEWS}
    execute(demo_database, sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(reader)))
