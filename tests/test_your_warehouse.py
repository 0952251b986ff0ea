"""Your warehouse: the engine reads what to refresh from the SQL, refuses SQL that blocks readers,
parses everything before writing anything, and can dry-run new SQL against real data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.sql.analysis import refreshed_objects
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.engine.steps import STEPS
from hospitaldb.paths import PROJECT_ROOT, PROJECT_SQL_DIR
from hospitaldb.record.monitoring import run_monitoring_query
from hospitaldb.settings import SQL_DIR
from hospitaldb.tools.validation import check_sql_files
from hospitaldb_testing.db import REFRESHED_OBJECTS, add_source_rows, checksums, execute, query, scalar
from hospitaldb_testing.runs import error_text, run_flow, run_logs

CLINIC_SCHEMA = """
CREATE SCHEMA clinic_raw;
CREATE SCHEMA clinic_mart;
CREATE SCHEMA clinic_board;
CREATE TABLE clinic_raw.admissions (admission_id int PRIMARY KEY, ward text NOT NULL,
                                    admitted_on date NOT NULL, charge numeric(10,2) NOT NULL);
INSERT INTO clinic_raw.admissions
SELECT g, (ARRAY['north', 'south', 'east'])[1 + g % 3], current_date - g % 30, 100 + g
FROM generate_series(1, 300) AS g;
CREATE MATERIALIZED VIEW clinic_mart.admissions_by_ward AS
SELECT ward, admitted_on, count(*) AS admissions, sum(charge) AS charges
FROM clinic_raw.admissions GROUP BY ward, admitted_on;
CREATE UNIQUE INDEX ON clinic_mart.admissions_by_ward (ward, admitted_on);
CREATE TABLE clinic_mart.ward_totals (ward text PRIMARY KEY, admissions bigint NOT NULL, charges numeric NOT NULL);
CREATE TABLE clinic_board.daily_admissions (admitted_on date PRIMARY KEY, admissions bigint NOT NULL);
"""

CLINIC_STEPS = {
    "refresh_phase2_materialized_views": """
-- The clinic's one view.
REFRESH MATERIALIZED VIEW CONCURRENTLY clinic_mart.admissions_by_ward;
""",
    "refresh_phase3_reporting_tables": """
-- Ward totals: compute, then merge.
CREATE TEMP TABLE new_ward_totals ON COMMIT DROP AS
SELECT ward, sum(admissions) AS admissions, sum(charges) AS charges
FROM clinic_mart.admissions_by_ward GROUP BY ward;
INSERT INTO clinic_mart.ward_totals AS t SELECT * FROM new_ward_totals
ON CONFLICT (ward) DO UPDATE SET admissions = excluded.admissions, charges = excluded.charges
WHERE (t.admissions, t.charges) IS DISTINCT FROM (excluded.admissions, excluded.charges);
DELETE FROM clinic_mart.ward_totals AS t WHERE NOT EXISTS (SELECT FROM new_ward_totals AS n WHERE n.ward = t.ward);
""",
    "refresh_dashboards": """
-- Admissions per day.
CREATE TEMP TABLE new_daily ON COMMIT DROP AS
SELECT admitted_on, sum(admissions) AS admissions FROM clinic_mart.admissions_by_ward GROUP BY admitted_on;
WITH gone AS (
    DELETE FROM clinic_board.daily_admissions AS t
    WHERE NOT EXISTS (SELECT FROM new_daily AS n WHERE n.admitted_on = t.admitted_on)
)
INSERT INTO clinic_board.daily_admissions AS t SELECT * FROM new_daily
ON CONFLICT (admitted_on) DO UPDATE SET admissions = excluded.admissions
WHERE t.admissions IS DISTINCT FROM excluded.admissions;
""",
}
CLINIC_OBJECTS = {
    "clinic_mart.admissions_by_ward": "refresh_phase2_materialized_views",
    "clinic_mart.ward_totals": "refresh_phase3_reporting_tables",
    "clinic_board.daily_admissions": "refresh_dashboards",
}


def write_steps(folder: Path, steps: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for step, text in steps.items():
        (folder / f"{step}.sql").write_text(text)
    return folder


def sql_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the reference SQL that the flow is pointed at."""
    folder = tmp_path / "sql"
    shutil.copytree(PROJECT_SQL_DIR, folder)
    monkeypatch.setenv(SQL_DIR.name, str(folder))
    return folder


def test_what_each_step_refreshes_is_read_from_its_sql():
    assert tuple(refreshed_objects(SqlFiles())) == REFRESHED_OBJECTS
    assert set(refreshed_objects(SqlFiles()).values()) == set(STEPS)


def test_a_second_warehouse_runs_with_only_its_sql_files(new_database, prefect, tmp_path, monkeypatch):
    execute(new_database, CLINIC_SCHEMA)
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", new_database)
    monkeypatch.setenv(SQL_DIR.name, str(write_steps(tmp_path / "clinic_sql", CLINIC_STEPS)))

    state = run_flow()

    assert state.is_completed(), error_text(state)
    assert refreshed_objects(SqlFiles()) == CLINIC_OBJECTS
    assert query(new_database, "SELECT ward, admissions FROM clinic_mart.ward_totals ORDER BY 1") == [
        ("east", 100),
        ("north", 100),
        ("south", 100),
    ]
    assert scalar(new_database, "SELECT sum(admissions) FROM clinic_board.daily_admissions") == 300
    target = target_from_url(new_database, "test")
    freshness = run_monitoring_query(target, "freshness")
    assert {row["object_name"]: row["step"] for row in freshness} == CLINIC_OBJECTS
    assert all(row["refreshed_at"] for row in freshness)
    # The view was created with its data, so its refresh changed nothing; the tables were filled.
    assert [row["object_name"] for row in freshness if row["last_row_change"]] == [
        "clinic_board.daily_admissions",
        "clinic_mart.ward_totals",
    ]
    assert {row["object_name"] for row in run_monitoring_query(target, "object_sizes")} == set(CLINIC_OBJECTS)
    status = query(new_database, "SELECT object_name, last_run_checks, is_stale FROM etl_audit.data_status")
    assert sorted(status) == sorted((name, "passed", False) for name in CLINIC_OBJECTS)
    package = PROJECT_ROOT / "flows" / "hospitaldb"
    assert not [path for path in package.rglob("*.py") if "clinic_" in path.read_text()], (
        "no Python names them"
    )


BLOCKING = [
    ("TRUNCATE dashboards.daily_revenue;", "ACCESS EXCLUSIVE", "readers and writers", "compute, then merge"),
    (
        "REFRESH MATERIALIZED VIEW analytics.mv_visit_summary;",
        "ACCESS EXCLUSIVE",
        "readers and writers",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY",
    ),
    ("LOCK TABLE dashboards.daily_revenue IN SHARE MODE;", "SHARE", "writers", "no explicit lock"),
    ("LOCK TABLE dashboards.daily_revenue;", "ACCESS EXCLUSIVE", "readers and writers", "no explicit lock"),
    (
        "ALTER TABLE dashboards.daily_revenue ADD COLUMN note text;",
        "ACCESS EXCLUSIVE",
        "readers and writers",
        "migration outside the refresh",
    ),
    (
        "DROP TABLE dashboards.daily_revenue;",
        "ACCESS EXCLUSIVE",
        "readers and writers",
        "refresh it in place",
    ),
    ("CREATE INDEX ON dashboards.daily_revenue (paid_amount);", "SHARE", "writers", "migration outside"),
    ("VACUUM (FULL) dashboards.daily_revenue;", "ACCESS EXCLUSIVE", "readers and writers", "autovacuum"),
    (
        "CLUSTER dashboards.daily_revenue USING daily_revenue_pkey;",
        "ACCESS EXCLUSIVE",
        "readers",
        "maintenance",
    ),
    (
        "REINDEX TABLE dashboards.daily_revenue;",
        "SHARE on the table and ACCESS EXCLUSIVE on its indexes",
        "writers",
        "REINDEX CONCURRENTLY",
    ),
]


@pytest.mark.parametrize(
    ("statement", "lock", "blocks", "fix"), BLOCKING, ids=[b[0].split(" d")[0] for b in BLOCKING]
)
def test_a_statement_that_blocks_readers_fails_validation_and_the_run_before_any_write(
    demo_database, prefect, tmp_path, monkeypatch, statement, lock, blocks, fix
):
    folder = sql_copy(tmp_path, monkeypatch)
    step_file = folder / "refresh_dashboards.sql"
    line = len(step_file.read_text().splitlines()) + 1
    step_file.write_text(step_file.read_text() + statement + "\n")

    (problem,) = check_sql_files(tmp_path)
    assert problem.startswith(f"{step_file}:{line}: ")
    assert f"takes {lock}" in problem and blocks in problem and "Instead: " in problem and fix in problem

    before = checksums(demo_database)
    state = run_flow()
    assert state.is_failed()
    assert f"{step_file}:{line}" in error_text(state) and "Nothing was refreshed" in error_text(state)
    assert checksums(demo_database) == before
    assert scalar(demo_database, "SELECT count(*) FROM etl_audit.step_attempts") == 0


NOT_A_STEP = "not a statement a step runs"
FORBIDDEN = [
    ("GRANT SELECT ON dashboards.patient_activity TO PUBLIC;", NOT_A_STEP),
    ("REVOKE SELECT ON dashboards.patient_activity FROM PUBLIC;", NOT_A_STEP),
    ("ALTER TABLE dashboards.patient_activity OWNER TO CURRENT_USER;", NOT_A_STEP),
    ("ALTER MATERIALIZED VIEW analytics.mv_patient_summary OWNER TO CURRENT_USER;", NOT_A_STEP),
    ("CREATE POLICY everyone ON dashboards.patient_activity USING (true);", NOT_A_STEP),
    ("DELETE FROM etl_audit.refresh_runs;", "writes etl_audit.refresh_runs"),
    ("UPDATE etl_audit.step_attempts SET status = 'completed';", "writes etl_audit.step_attempts"),
    # Round three's attacks: each passed `validate` and the run before the allowlist.
    ("DO $$ BEGIN DELETE FROM etl_audit.run_notices; END $$;", NOT_A_STEP),
    ("SET search_path = etl_audit, public;", "SET of 'search_path'"),
    ("SET LOCAL ROLE hospitaldb_owner;", "SET of 'role'"),
    ("SELECT set_config('search_path', 'etl_audit', true);", "set_config()"),
    ("TRUNCATE etl_audit.freshness_alerts;", "writes etl_audit.freshness_alerts"),
    ("ALTER TABLE dashboards.patient_activity DISABLE TRIGGER ALL;", NOT_A_STEP),
    ("ALTER TABLE dashboards.patient_activity DISABLE ROW LEVEL SECURITY;", NOT_A_STEP),
    ("CREATE RULE hide AS ON INSERT TO dashboards.patient_activity DO INSTEAD NOTHING;", NOT_A_STEP),
    ("DROP POLICY IF EXISTS everyone ON dashboards.patient_activity;", NOT_A_STEP),
    ("DROP OWNED BY CURRENT_USER;", NOT_A_STEP),
    ("CREATE TABLE public.kept_forever AS SELECT 1 AS one;", NOT_A_STEP),
    (
        "SELECT etl_audit.refresh_materialized_view('analytics.mv_patient_summary', false);",
        "calls etl_audit.",
    ),
    (
        "WITH gone AS (DELETE FROM etl_audit.held_back RETURNING 1) SELECT count(*) FROM gone;",
        "writes etl_audit.",
    ),
]


@pytest.mark.parametrize(("statement", "why"), FORBIDDEN, ids=[f[0][:40] for f in FORBIDDEN])
def test_a_step_that_grants_changes_an_owner_or_writes_the_audit_is_refused_even_when_allowed(
    demo_database, prefect, tmp_path, monkeypatch, statement, why
):
    folder = sql_copy(tmp_path, monkeypatch)
    step_file = folder / "refresh_dashboards.sql"
    line = len(step_file.read_text().splitlines()) + 2
    step_file.write_text(
        step_file.read_text() + "-- allow-blocking: no opt-out holds here\n" + statement + "\n"
    )

    (problem,) = check_sql_files(tmp_path)
    assert problem.startswith(f"{step_file}:{line}: ") and why in problem

    before = checksums(demo_database)
    state = run_flow()
    assert state.is_failed()
    assert why in error_text(state) and "the refresh may not run" in error_text(state)
    assert checksums(demo_database) == before


CHECK_ATTACKS = [
    # volumes.sql runs in every step's transaction: before, it was never linted.
    (
        "volumes.sql",
        "-- volume rules\nWITH gone AS (DELETE FROM etl_audit.source_counts RETURNING source)\n"
        "SELECT source AS object_name FROM gone",
        "writes nothing",
    ),
    (
        "sources.sql",
        "-- sources\nSELECT set_config('role', 'hospitaldb_owner', true) AS source",
        "set_config()",
    ),
    (
        "all_steps/shrink_guard.sql",
        "-- a check\nSELECT etl_audit.refresh_materialized_view('analytics.mv_patient_summary', true)",
        "calls etl_audit.",
    ),
]


@pytest.mark.parametrize(("check_file", "text", "why"), CHECK_ATTACKS, ids=[c[0] for c in CHECK_ATTACKS])
def test_a_check_that_writes_or_reaches_the_audit_is_refused_before_anything_runs(
    demo_database, prefect, tmp_path, monkeypatch, check_file, text, why
):
    folder = sql_copy(tmp_path, monkeypatch)
    (folder / "checks" / check_file).write_text(text + "\n")

    (problem,) = check_sql_files(tmp_path)
    assert why in problem and check_file in problem

    before = checksums(demo_database)
    state = run_flow()
    assert state.is_failed()
    assert why in error_text(state)
    assert checksums(demo_database) == before
    assert scalar(demo_database, "SELECT count(*) FROM etl_audit.step_attempts") == 0


def test_an_opted_out_blocking_statement_runs_and_is_listed_in_the_log(
    demo_database, prefect, tmp_path, monkeypatch
):
    folder = sql_copy(tmp_path, monkeypatch)
    step_file = folder / "refresh_dashboards.sql"
    text = step_file.read_text()
    step_file.write_text(
        text.replace(
            "CREATE TEMP TABLE new_daily_revenue",
            "-- allow-blocking: the board is only read in office hours\nTRUNCATE dashboards.daily_revenue;\n\n"
            "CREATE TEMP TABLE new_daily_revenue",
            1,
        )
    )
    assert check_sql_files(tmp_path) == []

    state = run_flow()

    assert state.is_completed()
    assert "blocking statement allowed:" in run_logs(state)
    assert "TRUNCATE dashboards.daily_revenue takes ACCESS EXCLUSIVE" in run_logs(state)
    assert "allowed: the board is only read in office hours" in run_logs(state)
    assert scalar(demo_database, "SELECT count(*) FROM dashboards.daily_revenue") > 0


def test_a_syntax_error_in_step_3_fails_a_full_run_with_nothing_changed(
    demo_database, prefect, tmp_path, monkeypatch
):
    assert run_flow().is_completed()
    folder = sql_copy(tmp_path, monkeypatch)
    step_file = folder / "refresh_dashboards.sql"
    step_file.write_text(step_file.read_text().replace("SELECT branch_id,", "SELEC branch_id,", 1))
    add_source_rows(demo_database)
    before = checksums(demo_database)

    state = run_flow()

    assert state.is_failed()
    assert f"{step_file}:" in error_text(state) and 'syntax error at or near "SELEC"' in error_text(state)
    assert checksums(demo_database) == before, "steps 1 and 2 did not run either"


def test_dry_run_reports_what_a_real_run_then_writes_and_changes_nothing(demo_database, prefect):
    assert run_flow().is_completed()
    add_source_rows(demo_database)
    before = checksums(demo_database)
    attempts = scalar(demo_database, "SELECT count(*) FROM etl_audit.step_attempts")

    dry = run_flow(dry_run=True)

    assert dry.is_completed()
    assert checksums(demo_database) == before, "a dry run changes nothing"
    assert scalar(demo_database, "SELECT count(*) FROM etl_audit.step_attempts") == attempts, (
        "and records nothing"
    )
    would = {name: counts for result in dry.result() for name, counts in result["changes"].items()}
    assert set(would) == set(REFRESHED_OBJECTS)
    assert would["reporting.patient_summary"]["inserted"] == 1, "the new patient"

    real = run_flow()

    assert real.is_completed()
    wrote = {
        name: {"inserted": ins, "updated": upd, "deleted": dele}
        for name, ins, upd, dele in query(
            demo_database,
            "SELECT object_name, inserted, updated, deleted FROM etl_audit.run_objects WHERE flow_run_id = %s",
            (str(real.state_details.flow_run_id),),
        )
    }
    assert wrote == would


def test_dry_run_from_the_command_line(demo_database, prefect):
    add_source_rows(demo_database)
    before = checksums(demo_database)
    done = subprocess.run(
        [sys.executable, "flows/refresh.py", "--dry-run", "--database-url", demo_database],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PREFECT_API_URL": prefect},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "HospitalDB dry run: rolled back, nothing changed" in done.stdout
    assert "reporting.patient_summary" in done.stdout.split("would change")[1]
    assert checksums(demo_database) == before
