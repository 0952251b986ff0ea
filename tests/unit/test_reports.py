"""What a run reports, rendered from its recorded outcome: titles, alerts, artifacts, the interruption text."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from hospitaldb.engine.checks.source import SourceProblem
from hospitaldb.engine.checks.step import CheckResult
from hospitaldb.record.outcome import PreviousRun, RunOutcome, SourcesOutcome, StepOutcome, interruption_text
from hospitaldb.report.artifacts import changes_summary, checks_summary, step_rows, summary_markdown
from hospitaldb.report.telling import describe_failure, describe_recovery
from hospitaldb.statuses import RunStatus, StepStatus

STEP1, STEP2, STEP3 = (
    "refresh_phase2_materialized_views",
    "refresh_phase3_reporting_tables",
    "refresh_dashboards",
)
FAILED_CHECK = CheckResult(
    "no_negative_outstanding", "sql/checks/x/no_negative_outstanding.sql", "error", 2, 0.1
)
WARNED_CHECK = CheckResult("unbilled_visits", "sql/checks/x/unbilled_visits.sql", "warn", 1, 0.1)
PASSED_CHECK = CheckResult("shrink_guard", "sql/checks/all_steps/shrink_guard.sql", "error", 0, 0.1)


def run(status: RunStatus, step: str | None = None, **fields) -> RunOutcome:
    steps = [
        StepOutcome(STEP1, StepStatus.COMPLETED, 1, 4, 0.5, 0, [PASSED_CHECK, WARNED_CHECK]),
        StepOutcome(
            STEP2, StepStatus.FAILED if step == STEP2 else StepStatus.NOT_RUN, 1 if step == STEP2 else 0
        ),
        StepOutcome(STEP3),
    ]
    return RunOutcome(
        "hospitaldb-refresh",
        "5f0c",
        "amber-slug",
        database="database 'h' on db:5432 (from block 'hospitaldb-postgres')",
        steps=steps,
        status=status,
        step=step,
        attempts=1 if step else None,
        error="the error as recorded",
        finished_at=datetime(2026, 11, 30, 2, 0, 7, tzinfo=UTC),
        **fields,
    )


@pytest.mark.parametrize(
    ("status", "step", "subject"),
    [
        (RunStatus.FAILED, STEP2, f"[HospitalDB] Refresh FAILED at {STEP2}"),
        (RunStatus.REFUSED, None, "[HospitalDB] Refresh REFUSED before the first step"),
        (RunStatus.CANCELLED, STEP2, f"[HospitalDB] Refresh CANCELLED at {STEP2}"),
        (RunStatus.CRASHED, STEP2, f"[HospitalDB] Refresh CRASHED at {STEP2}"),
        # The source checks failed (a lock timeout, retried and exhausted): not a step of the run.
        (RunStatus.FAILED, "check_sources", "[HospitalDB] Refresh FAILED at check_sources"),
        # A failed state the run could not record (its parameters refused by Prefect): still FAILED.
        (RunStatus.RUNNING, None, "[HospitalDB] Refresh FAILED before the first step"),
    ],
)
def test_the_alert_subject_says_what_ended_how_and_where(status, step, subject):
    assert describe_failure(run(status, step), "Failed", None).subject == subject


def test_a_refusal_by_a_check_names_the_check_in_the_subject_and_its_file_in_the_body():
    outcome = run(RunStatus.CHECK_FAILED, STEP2).with_step(STEP2, checks=[PASSED_CHECK, FAILED_CHECK])
    alert = describe_failure(outcome, "Failed", "http://prefect/runs/flow-run/5f0c")
    assert alert.subject == f"[HospitalDB] Refresh FAILED at {STEP2}: check no_negative_outstanding failed"
    for line in (
        f"Failed step: {STEP2}",
        "Attempts:    1",
        "When:        2026-11-30 02:00:07 UTC",
        "Checks:      no_negative_outstanding (sql/checks/x/no_negative_outstanding.sql)",
        "Run page:    http://prefect/runs/flow-run/5f0c",
        "Run the check's file",
    ):
        assert line in alert.body


def test_a_refusal_by_the_source_checks_names_the_table():
    problem = SourceProblem("staging.visits", "incomplete", "source incomplete: staging.visits has no rows")
    outcome = run(RunStatus.SOURCES_REFUSED, "check_sources", sources=SourcesOutcome(True, 6, [problem]))
    alert = describe_failure(outcome, "Failed", None)
    assert alert.subject == "[HospitalDB] Refresh FAILED at check_sources: source incomplete: staging.visits"
    assert "Nothing was refreshed" in alert.body


def test_a_cancel_or_a_crash_reads_the_same_whoever_records_it():
    assert interruption_text(RunStatus.CANCELLED, STEP2) == (
        f"cancelled from Prefect (UI, CLI or automation) during {STEP2}, which was rolled back; "
        "every table keeps its previous data"
    )
    assert interruption_text(RunStatus.CRASHED, None).startswith(
        "crashed: the process was stopped or killed;"
    )


def test_the_source_checks_are_a_task_of_the_run_with_their_own_ending():
    # What healing sets their task run from; they are not a step: where the run ended stays the same.
    running = run(RunStatus.RUNNING).with_step("check_sources", status=StepStatus.RUNNING, task_run_id="t0")
    assert [task.step for task in running.tasks] == ["check_sources", STEP1, STEP2, STEP3]
    assert [task.step for task in running.steps] == [STEP1, STEP2, STEP3]
    crashed = running.interrupted(RunStatus.CRASHED, datetime(2026, 11, 30, 2, 1, tzinfo=UTC))
    assert crashed.source_checks == StepOutcome("check_sources", StepStatus.CRASHED, task_run_id="t0")
    assert crashed.step is None and crashed.where == " before the first step"
    passed = running.with_step("check_sources", status=StepStatus.COMPLETED)
    assert (
        passed.interrupted(RunStatus.CANCELLED, datetime.now(UTC)).source_checks.status
        == StepStatus.COMPLETED
    )


def test_recovery_names_the_failed_run_it_follows():
    outcome = run(RunStatus.COMPLETED, previous=PreviousRun("old-run", RunStatus.CHECK_FAILED, None))
    alert = describe_recovery(outcome, None)
    assert alert.subject == "[HospitalDB] Refresh recovered"
    assert "Previous run: old-run ended check_failed" in alert.body


def test_the_steps_artifact_has_a_row_per_step_with_the_recorded_status():
    rows = step_rows(run(RunStatus.FAILED, STEP2))
    assert [(row["step"], row["status"], row["attempts"]) for row in rows] == [
        (STEP1, "completed", 1),
        (STEP2, "failed", 1),
        (STEP3, "not run", None),
    ]
    assert rows[0]["checks"] == "1 passed, 1 warned: unbilled_visits (1 row)"


def test_the_summary_title_comes_from_the_status_not_from_the_error():
    outcome = replace(
        run(RunStatus.FAILED, STEP3, sources=SourcesOutcome(True, 6)),
        error='relation "staging.cancelled_appointments" does not exist',
    )
    markdown = summary_markdown(outcome)
    assert markdown.startswith(f"# HospitalDB refresh failed at {STEP3}\n")
    assert "Source checks: 6 sources passed" in markdown


def test_checks_and_changes_in_a_few_words():
    assert (
        checks_summary([PASSED_CHECK, FAILED_CHECK]) == "1 passed, 1 failed: no_negative_outstanding (2 rows)"
    )
    assert checks_summary([]) == "none"
    changes = {
        "reporting.a": {"inserted": 1, "updated": 2, "deleted": 0},
        "reporting.b": dict.fromkeys(("inserted", "updated", "deleted"), 0),
    }
    assert changes_summary(changes) == "reporting.a +1 ~2 -0"


def test_what_counts_as_a_failure():
    failures = {status for status in RunStatus if status.is_failure}
    assert failures == {
        RunStatus.FAILED,
        RunStatus.CHECK_FAILED,
        RunStatus.SOURCES_REFUSED,
        RunStatus.REFUSED,
        RunStatus.CRASHED,
        RunStatus.ABANDONED,
    }
    assert {status.audit_status for status in failures - {RunStatus.CRASHED, RunStatus.ABANDONED}} == {
        "failed"
    }
