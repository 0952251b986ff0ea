"""What a run reports: no value of a patient's row leaves the database, the status is recorded where
it happens (never guessed from words), every failed run is counted, and the run's limits hold for
every statement, source checks included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect_email import EmailServerCredentials
from prefect_slack import SlackWebhook

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.paths import PROJECT_ROOT, PROJECT_SQL_DIR
from hospitaldb.record.monitoring import run_monitoring_query
from hospitaldb.settings import SQL_DIR
from hospitaldb_testing.db import checksums, execute, query, retries_at, scalar
from hospitaldb_testing.receivers import SmtpServer, WebhookServer, save_email_block
from hospitaldb_testing.runs import InBackground, TableLock, error_text, run_flow, task_runs

# --- No row value leaves the database -----------------------------------------------------

PATIENT_NAME = "Zelda Quixotepatient"
PATIENT_NOTE = "NOTE-SECRET-4242"
WARD_ID = 918273645
# What must appear nowhere a person or a log can read.
ROW_VALUES = ("Quixotepatient", "NOTE-SECRET", str(WARD_ID))

CLINIC = f"""
CREATE SCHEMA clinic_raw;
CREATE SCHEMA clinic_mart;
CREATE TABLE clinic_raw.patients (patient_id int NOT NULL, full_name text NOT NULL, note text, ward_id int);
INSERT INTO clinic_raw.patients VALUES (1, '{PATIENT_NAME}', '{PATIENT_NOTE}', {WARD_ID}),
                                       (2, '{PATIENT_NAME}', '{PATIENT_NOTE}', {WARD_ID});
CREATE MATERIALIZED VIEW clinic_mart.patient_list AS SELECT patient_id, full_name FROM clinic_raw.patients;
CREATE UNIQUE INDEX ON clinic_mart.patient_list (patient_id);
CREATE TABLE clinic_mart.ward_counts (ward_id int PRIMARY KEY, patients bigint NOT NULL);
CREATE TABLE clinic_mart.board (patients bigint NOT NULL);
INSERT INTO clinic_mart.board VALUES (0);
CREATE TABLE clinic_mart.names (full_name text UNIQUE);
CREATE TABLE clinic_mart.wards (patient_id int, full_name text, ward text NOT NULL CHECK (length(ward) < 3));
CREATE TABLE clinic_mart.ward (ward_id int PRIMARY KEY);
CREATE TABLE clinic_mart.stays (patient_id int, ward_id int REFERENCES clinic_mart.ward);
"""

CLINIC_STEPS = {
    "refresh_phase2_materialized_views": (
        "-- The clinic's patient list.\nREFRESH MATERIALIZED VIEW CONCURRENTLY clinic_mart.patient_list;\n"
    ),
    "refresh_phase3_reporting_tables": (
        "-- Patients per ward.\nINSERT INTO clinic_mart.ward_counts AS t\n"
        "SELECT ward_id, count(*) FROM clinic_raw.patients GROUP BY ward_id\n"
        "ON CONFLICT (ward_id) DO UPDATE SET patients = excluded.patients;\n"
    ),
    "refresh_dashboards": (
        "-- The board.\nUPDATE clinic_mart.board\nSET patients = (SELECT count(*) FROM clinic_raw.patients);\n"
    ),
}

# Each case: (SQLSTATE, the step that fails, its file, SQL run before the refresh).
STEP2 = "refresh_phase3_reporting_tables"
LEAKS = {
    "unique_violation": (
        "23505",
        STEP2,
        "-- Names.\nINSERT INTO clinic_mart.names\nSELECT full_name FROM clinic_raw.patients;\n",
        "",
    ),
    "bad_cast": (
        "22P02",
        STEP2,
        "-- Ward counts from notes.\nINSERT INTO clinic_mart.ward_counts\nSELECT note::int, 1 FROM clinic_raw.patients;\n",
        "",
    ),
    "not_null_violation": (
        "23502",
        STEP2,
        "-- Wards.\nINSERT INTO clinic_mart.wards\nSELECT patient_id, full_name, NULL FROM clinic_raw.patients;\n",
        "",
    ),
    "check_violation": (
        "23514",
        STEP2,
        "-- Wards.\nINSERT INTO clinic_mart.wards\nSELECT patient_id, full_name, note FROM clinic_raw.patients;\n",
        "",
    ),
    "foreign_key_violation": (
        "23503",
        STEP2,
        "-- Stays.\nINSERT INTO clinic_mart.stays\nSELECT patient_id, ward_id FROM clinic_raw.patients;\n",
        "",
    ),
    "bad_date": (
        "22007",
        STEP2,
        "-- Admission dates.\nINSERT INTO clinic_mart.ward_counts\n"
        "SELECT extract(year FROM (note || '-01-01')::date)::int, 1 FROM clinic_raw.patients;\n",
        "",
    ),
    "duplicate_rows_in_a_view": (
        "21000",
        "refresh_phase2_materialized_views",
        CLINIC_STEPS["refresh_phase2_materialized_views"],
        "UPDATE clinic_raw.patients SET patient_id = 1",
    ),
    # A row's value where PostgreSQL expects a name: the message quotes it, with no CONTEXT.
    "a_value_used_as_a_relation_name": (
        "42P01",
        STEP2,
        "-- Ward counts.\nINSERT INTO clinic_mart.ward_counts\n"
        "SELECT ward_id, count(quote_ident(split_part(full_name, ' ', 2))::regclass) FROM clinic_raw.patients\n"
        "GROUP BY ward_id;\n",
        "",
    ),
    "a_value_used_as_a_setting_name": (
        "42704",
        STEP2,
        "-- Ward counts.\nINSERT INTO clinic_mart.ward_counts\n"
        "SELECT ward_id, count(current_setting(split_part(full_name, ' ', 2))) FROM clinic_raw.patients\n"
        "GROUP BY ward_id;\n",
        "",
    ),
    "a_value_used_as_a_role_name": (
        "42704",
        STEP2,
        "-- Ward counts.\nINSERT INTO clinic_mart.ward_counts\n"
        "SELECT ward_id, count(quote_ident(split_part(full_name, ' ', 2))::regrole) FROM clinic_raw.patients\n"
        "GROUP BY ward_id;\n",
        "",
    ),
    # A value cast to a name that a name of ours holds as a part (an alias): only a whole
    # identifier of the statement proves a name.
    "a_value_inside_a_name_of_the_statement": (
        "42P01",
        STEP2,
        "-- Ward counts.\nINSERT INTO clinic_mart.ward_counts\n"
        "SELECT ward_id, count(quote_ident(split_part(full_name, ' ', 2))::regclass) AS quixotepatient_count\n"
        "FROM clinic_raw.patients GROUP BY ward_id;\n",
        "",
    ),
    # PostgreSQL prints this name bare, with no quotes to prove.
    "a_value_printed_as_a_dotted_name": (
        "42601",
        STEP2,
        "-- Ward counts.\nINSERT INTO clinic_mart.ward_counts\n"
        "SELECT ward_id, count((quote_ident(split_part(full_name, ' ', 2)) || '.a.b.c')::regclass)\n"
        "FROM clinic_raw.patients GROUP BY ward_id;\n",
        "",
    ),
    # A RAISE in a function of the team's (a step holds no DO block: engine.sql.allowed) that names a
    # "table" of its own choosing: no field of it is shown.
    "raise_naming_a_table_with_a_value": (
        "P0001",
        STEP2,
        "-- A guard the team installed.\nSELECT clinic_raw.guard();\n",
        "CREATE FUNCTION clinic_raw.guard() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n"
        "    RAISE EXCEPTION 'bad patient' USING TABLE = (SELECT full_name FROM clinic_raw.patients LIMIT 1);\n"
        "END\n$$",
    ),
    # A fixed-text SQLSTATE (a statement timeout's) with a function's own words.
    "a_timeout_sqlstate_raised_with_a_name": (
        "57014",
        STEP2,
        "-- A guard the team installed.\nSELECT clinic_raw.guard();\n",
        "CREATE FUNCTION clinic_raw.guard() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n"
        "    RAISE EXCEPTION USING ERRCODE = '57014',\n        MESSAGE = 'bad patient ' || (SELECT full_name FROM clinic_raw.patients LIMIT 1);\n"
        "END\n$$",
    ),
    "raise_in_a_function": (
        "P0001",
        STEP2,
        "-- A guard the team installed.\nSELECT clinic_raw.guard();\n",
        "CREATE FUNCTION clinic_raw.guard() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n"
        "    RAISE EXCEPTION 'bad patient %', (SELECT full_name FROM clinic_raw.patients LIMIT 1);\n"
        "END\n$$",
    ),
}


@pytest.fixture
def default_alert_blocks(
    prefect: str, smtp_server: SmtpServer, webhook_server: WebhookServer
) -> Iterator[None]:
    """The blocks a plain `python flows/refresh.py` alerts through, pointed at the loopback servers."""
    save_email_block("hospitaldb-email", smtp_server.port)
    SlackWebhook(url=webhook_server.url).save("hospitaldb-slack", overwrite=True)
    yield
    EmailServerCredentials.delete("hospitaldb-email")
    SlackWebhook.delete("hospitaldb-slack")


def everything_a_person_or_a_log_can_read(flow_run_id: str, url: str) -> dict[str, str]:
    """The run as the Prefect server stored it (logs, states, artifacts) and the audit trail."""
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        states = client.read_flow_run_states(flow_run_id)
        task_runs_ = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        task_states = [state for run in task_runs_ for state in client.read_task_run_states(run.id)]
    audit_tables = [
        row[0] for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'etl_audit'")
    ]
    audit = "\n".join(
        str(query(url, f"SELECT t::text FROM etl_audit.{table} AS t")) for table in audit_tables
    )
    return {
        "Prefect's stored logs": "\n".join(log.message for log in logs),
        "the flow run's states": "\n".join(f"{s.name}: {s.message}" for s in states),
        "the task runs' states": "\n".join(f"{s.name}: {s.message}" for s in task_states),
        "the artifacts": "\n".join(f"{a.description}\n{a.data}" for a in artifacts),
        "etl_audit": audit,
    }


@pytest.mark.parametrize("case", list(LEAKS))
def test_an_error_quoting_a_patients_row_reaches_no_one(
    case, new_database, default_alert_blocks, smtp_server, webhook_server, prefect, tmp_path
):
    sqlstate, failing_step, step_sql, before = LEAKS[case]
    execute(new_database, CLINIC)
    if before:
        execute(new_database, before)
    folder = tmp_path / "clinic_sql"
    folder.mkdir()
    for step, text in {**CLINIC_STEPS, failing_step: step_sql}.items():
        (folder / f"{step}.sql").write_text(text)
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect,
        SQL_DIR.name: str(folder),
        "HOSPITALDB_ALERT_EMAILS": "oncall@hospital.example",
    }

    console = subprocess.run(
        [sys.executable, "flows/refresh.py", "--database-url", new_database, "--retries", "0"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert console.returncode == 1, console.stdout + console.stderr
    (flow_run_id,) = query(new_database, "SELECT flow_run_id::text FROM etl_audit.refresh_runs")[0]
    readable = everything_a_person_or_a_log_can_read(flow_run_id, new_database)
    readable["the console"] = console.stdout + console.stderr
    (mail,) = smtp_server.received
    readable["the email"] = mail.message.as_string()
    readable["the Slack message"] = json.dumps([body for _, body in webhook_server.posts])
    for where, text in readable.items():
        for value in ROW_VALUES:
            assert value not in text, f"a row value ({value}) reached {where}:\n{text}"
    # What may be shown is shown: where it failed, the SQLSTATE, and where to see the rest.
    assert mail.message["Subject"] == f"[HospitalDB] Refresh FAILED at {failing_step}"
    for fact in (f"SQLSTATE {sqlstate}", f"{folder}/{failing_step}.sql:2", "withheld", "database's log"):
        assert fact in mail.text, mail.text
    assert f"SQLSTATE {sqlstate}" in readable["etl_audit"]


# --- Status is recorded where it happens, never guessed from words -------------------------


def latest_artifact(key: str, flow_run_id: str):
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    return json.loads(artifact.data) if key.endswith("steps") else artifact.data


def sql_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "sql"
    import shutil

    shutil.copytree(PROJECT_SQL_DIR, folder)
    monkeypatch.setenv(SQL_DIR.name, str(folder))
    return folder


CANCELLED_APPOINTMENTS = (
    "-- Days whose appointments were all cancelled show no revenue.\n"
    "DELETE FROM dashboards.daily_revenue\n"
    "WHERE revenue_date IN (SELECT appointment_date FROM staging.cancelled_appointments);\n\n"
)


def test_a_step_failing_on_a_relation_named_cancelled_is_failed_everywhere(
    demo_database, alert_blocks, smtp_server, tmp_path, monkeypatch
):
    step_file = sql_copy(tmp_path, monkeypatch) / "refresh_dashboards.sql"
    step_file.write_text(CANCELLED_APPOINTMENTS + step_file.read_text())

    state = run_flow(retries=0, **alert_blocks)

    assert state.is_failed()
    run = str(state.state_details.flow_run_id)
    assert 'relation "staging.cancelled_appointments" does not exist' in error_text(state)
    summary = latest_artifact("hospitaldb-refresh-summary", run)
    assert summary.startswith("# HospitalDB refresh failed"), summary
    steps = latest_artifact("hospitaldb-refresh-steps", run)
    assert [(row["step"], row["status"]) for row in steps][-1] == ("refresh_dashboards", "failed")
    assert query(
        demo_database,
        "SELECT status, outcome, failed_step FROM etl_audit.refresh_runs WHERE flow_run_id = %s",
        (run,),
    ) == [("failed", "failed", "refresh_dashboards")]
    (mail,) = smtp_server.received
    assert mail.message["Subject"] == "[HospitalDB] Refresh FAILED at refresh_dashboards"


# --- Monitoring counts every failed run ----------------------------------------------------


def test_every_kind_of_failed_run_is_in_the_monitoring_answer(demo_database, prefect, tmp_path, monkeypatch):
    monitor = target_from_url(demo_database, "test")
    assert run_flow().is_completed()
    folder = sql_copy(tmp_path, monkeypatch)
    originals = {path: path.read_text() for path in folder.rglob("*.sql")}
    step3 = folder / "refresh_dashboards.sql"

    def failed_run(change: Path, text: str, **parameters) -> str:
        change.write_text(text)
        try:
            state = run_flow(retries=0, **parameters)
        finally:
            for path, original in originals.items():
                path.write_text(original)
            for path in set(folder.rglob("*.sql")) - set(originals):
                path.unlink()
        assert state.is_failed()
        return str(state.state_details.flow_run_id)

    runs = {
        "syntax error": failed_run(
            step3, originals[step3].replace("SELECT branch_id,", "SELEC branch_id,", 1)
        ),
        "blocking statement": failed_run(step3, originals[step3] + "TRUNCATE dashboards.daily_revenue;\n"),
        "broken check": failed_run(
            folder / "checks" / "refresh_dashboards" / "broken.sql", "SELECT 1;\nSELECT 2;\n"
        ),
        "step error": failed_run(step3, CANCELLED_APPOINTMENTS + originals[step3]),
    }
    execute(
        demo_database,
        "UPDATE staging.payments SET amount = amount + 100000 WHERE payment_id = "
        "(SELECT min(payment_id) FROM staging.payments)",
    )
    state = run_flow(retries=0)
    assert state.is_failed()
    runs["failed check"] = str(state.state_details.flow_run_id)
    execute(demo_database, "UPDATE staging.visits SET visit_date = visit_date - 30")
    state = run_flow(retries=0)
    assert state.is_failed()
    runs["stale source"] = str(state.state_details.flow_run_id)

    answer = {row["flow_run_id"]: row for row in run_monitoring_query(monitor, "failed_runs")}

    expected = {
        "syntax error": ("refused", "before the first step"),
        "blocking statement": ("refused", "before the first step"),
        "broken check": ("refused", "before the first step"),
        "step error": ("failed", "refresh_dashboards"),
        "failed check": ("check_failed", "refresh_phase3_reporting_tables"),
        "stale source": ("sources_refused", "check_sources"),
    }
    assert {
        kind: (answer[run]["outcome"], answer[run]["failed_at"]) for kind, run in runs.items()
    } == expected
    assert "no_negative_outstanding" in answer[runs["failed check"]]["failed_checks"]
    assert "42P01" == answer[runs["step error"]]["sqlstate"]
    assert "refresh_dashboards.sql" in answer[runs["syntax error"]]["error"]
    assert len(answer) == len(runs), "completed runs are not listed"
    by_place = {
        row["step"]: row["failed_runs"] for row in run_monitoring_query(monitor, "retries_and_failures")
    }
    assert sum(by_place.values()) == len(runs), by_place
    assert by_place["before the first step"] == 3 and by_place["check_sources"] == 1


# --- The run's limits hold for every statement ---------------------------------------------


def test_a_lock_on_a_staging_table_fails_the_source_checks_at_the_runs_lock_timeout(demo_database, prefect):
    before = checksums(demo_database)
    blocker = TableLock(demo_database, "staging.visits", mode="ACCESS EXCLUSIVE")
    try:
        run = InBackground(lambda: run_flow(retries=0, lock_timeout_seconds=1))
        run.start()
        run.join(timeout=60)
        assert not run.is_alive(), "the source checks waited for the lock beyond the run's lock_timeout"
        retried = run_flow(retries=1, lock_timeout_seconds=1)
    finally:
        blocker.release()

    state = run.result
    assert state.is_failed()
    message = error_text(state)
    assert "check_sources" in message and "lock timeout" in message and "SQLSTATE 55P03" in message
    assert task_runs(retried)["check_sources"].run_count == 2, "a lock timeout is retried like a step's"
    # Every attempt on record, the retry among them: in etl_audit and in the monitoring answers.
    attempts = query(
        demo_database,
        "SELECT attempt, status, sqlstate FROM etl_audit.step_attempts WHERE flow_run_id = %s ORDER BY attempt",
        (str(retried.state_details.flow_run_id),),
    )
    assert attempts == [(1, "failed", "55P03"), (2, "failed", "55P03")]
    assert retries_at(demo_database, "check_sources") == (3, 1, 3, 2)
    assert checksums(demo_database) == before
    run_id = str(state.state_details.flow_run_id)
    assert (
        scalar(demo_database, "SELECT outcome FROM etl_audit.refresh_runs WHERE flow_run_id = %s", (run_id,))
        == "failed"
    )


def test_a_run_records_its_outcome_once_with_step_and_attempts(demo_database, prefect):
    blocker = TableLock(demo_database, "dashboards.daily_revenue")
    try:
        state = run_flow(retries=1, lock_timeout_seconds=0.3)
    finally:
        blocker.release()
    assert query(
        demo_database,
        "SELECT status, outcome, failed_step, attempts, sqlstate FROM etl_audit.refresh_runs "
        "WHERE flow_run_id = %s",
        (str(state.state_details.flow_run_id),),
    ) == [("failed", "failed", "refresh_dashboards", 2, "55P03")]


def test_runs_recorded_before_the_upgrade_get_their_outcome_from_their_record(demo_database, prefect):
    previous_main = Path(__file__).parent / "fixtures" / "etl_audit_previous_main.sql"
    execute(demo_database, "DROP SCHEMA etl_audit CASCADE")
    execute(demo_database, previous_main.read_text())
    runs = {kind: str(uuid.uuid4()) for kind in ("check", "sources", "statement", "before", "crash", "good")}
    for kind, run in runs.items():
        status = {"crash": "crashed", "good": "completed"}.get(kind, "failed")
        execute(
            demo_database,
            "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps, status, finished_at, error) "
            "VALUES (%s, %s, ARRAY['refresh_phase3_reporting_tables'], %s, now() - interval '1 hour', "
            "'cancelled words in an error never decide a status')",
            (run, f"old-{kind}", status),
        )
    for kind, status, sqlstate in (
        ("check", "failed", None),
        ("statement", "failed", "23514"),
        ("crash", "crashed", None),
    ):
        execute(
            demo_database,
            "INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt, status, sqlstate) "
            "VALUES (%s, 'refresh_phase3_reporting_tables', 2, %s, %s)",
            (runs[kind], status, sqlstate),
        )
    for kind, step in (("check", "refresh_phase3_reporting_tables"), ("sources", "check_sources")):
        execute(
            demo_database,
            "INSERT INTO etl_audit.check_results (flow_run_id, step, check_name, source_file, severity, outcome, "
            "violating_rows, duration_seconds) VALUES (%s, %s, 'a_check', 'sql/checks/x.sql', 'error', 'failed', 2, 0)",
            (runs[kind], step),
        )

    assert run_flow().is_completed()

    answer = {
        row["flow_run_name"]: (row["outcome"], row["failed_at"], row["attempts"], row["sqlstate"])
        for row in run_monitoring_query(target_from_url(demo_database, "test"), "failed_runs")
    }
    step = "refresh_phase3_reporting_tables"
    assert answer == {
        "old-check": ("check_failed", step, 2, None),
        "old-sources": ("sources_refused", "check_sources", None, None),
        "old-statement": ("failed", step, 2, "23514"),
        "old-before": ("failed", "before the first step", None, None),
        "old-crash": ("crashed", step, 2, None),
    }
