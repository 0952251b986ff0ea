"""Incremental equals full, row for row: a property test over random nights of changes (Hypothesis).

Each example starts from a tiny HospitalDB with change capture installed and one full refresh
done, then lives through a few random nights: a loader's batch over all six staging tables
(inserts, visits moved to another patient, branch or date, a patient's latest or only visit
deleted, refunds, payments moved between bills, a row changed twice or inserted and deleted in
one batch, branch renames, doctors and patients moving, TRUNCATE), then the steps in mode
incremental, all of them or some (skipped steps). A check may refuse a night (a refund larger
than what was paid): nothing is published, and the keys wait. After every night where all steps
committed, each of the ten objects equals tests/hospitaldb_testing/expected.py row for row, and
the full form, run after the incremental one in a transaction rolled back, changes nothing
(no drift).

The engine runs without Prefect here (hospitaldb.engine.run), so a hundred nights take seconds;
the flow's own path through modes is tests/test_incremental.py's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from psycopg2 import sql

from hospitaldb.engine.changes.capture import install
from hospitaldb.engine.changes.modes import IncrementalRefused, ModeRequest
from hospitaldb.engine.checks.step import CheckFailed
from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.errors import StepError
from hospitaldb.engine.run.plans import plan_steps
from hospitaldb.engine.run.runner import run_step_sql, run_step_transaction
from hospitaldb.engine.run.statements import drop_temp_tables
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.engine.steps import STEPS
from hospitaldb.local.demo import build_demo_database
from hospitaldb.settings import SQL_DIR
from hospitaldb_testing.db import execute_outside_transaction, url_of_database
from hospitaldb_testing.expected import EXPECTATIONS, differences
from hospitaldb_testing.nights import (
    NIGHTS,
    Night,
    apply_changes,
    ignoring_refunds,
    with_a_wrong_delta,
    without_recency_rule,
)

LOGGER = logging.getLogger("hospitaldb.test.incremental")
LIMITS = Limits(statement_timeout_seconds=120, lock_timeout_seconds=30)


def refresh(url: str, steps: tuple[str, ...], mode: str) -> bool:
    """The steps, in order, each in its own transaction as the flow runs them; False at the first that fails.

    A step that cannot run incrementally (its source was truncated) runs full, as its refusal says.
    """
    target = target_from_url(url, "test")
    plans, _ = plan_steps(list(steps), False, 0.5, LOGGER, SqlFiles(), mode=ModeRequest(mode))
    for step in steps:
        try:
            try:
                run_step_transaction(target, plans[step], LIMITS, logger=LOGGER)
            except IncrementalRefused as refused:
                if "truncated" not in str(refused):
                    raise  # any other reason is a step that never runs incrementally: a finding
                full, _ = plan_steps([step], False, 0.5, LOGGER, SqlFiles(), mode=ModeRequest("full"))
                run_step_transaction(target, full[step], LIMITS, logger=LOGGER)
        except StepError:  # a check refused the night: nothing published, the keys wait
            return False
    return True


def drift_of_a_full_run(url: str, steps: tuple[str, ...] = STEPS) -> dict[str, dict[str, dict[str, int]]]:
    """Each step in mode full after its incremental form, in one transaction rolled back: what full still changes.

    A check that refuses the full run raises its StepError.
    """
    target = target_from_url(url, "test")
    plans, _ = plan_steps(list(steps), False, 0.5, LOGGER, SqlFiles(), mode=ModeRequest("full"))
    connection = target.connect(LIMITS)
    try:
        connection.set_session(isolation_level="REPEATABLE READ")
        drift = {}
        for step in steps:
            result = run_step_sql(connection, plans[step], logger=LOGGER)
            drift[step] = result.drift
            drop_temp_tables(connection, step, plans[step].every_temp_table)  # the next step makes its own
        return {step: objects for step, objects in drift.items() if objects}
    finally:
        connection.rollback()
        connection.close()


def refused_in_full_too(url: str, steps: tuple[str, ...]) -> bool:
    """A night refused incrementally must be refused by the full form too: the data's fault, not the delta's."""
    try:
        drift_of_a_full_run(url, steps)
    except StepError:
        return True
    return False


@pytest.fixture(scope="module")
def tiny_template(postgres_admin_url: str) -> Iterator[str]:
    """A tiny HospitalDB (200 visits) with capture installed and a full refresh done: each example's start."""
    name = f"hospitaldb_tiny_{uuid.uuid4().hex[:8]}"
    url = url_of_database(postgres_admin_url, name)
    build_demo_database(url, visits=200, seed=11)
    target = target_from_url(url, "test")
    connection = target.connect(LIMITS)
    connection.autocommit = True
    try:
        install(connection)
    finally:
        connection.close()
    assert refresh(url, STEPS, "full")
    yield name
    execute_outside_transaction(
        postgres_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


class Copies:
    def __init__(self, admin_url: str, template: str) -> None:
        self.admin_url, self.template = admin_url, template

    def __enter__(self) -> str:
        self.name = f"hospitaldb_night_{uuid.uuid4().hex[:8]}"
        execute_outside_transaction(
            self.admin_url,
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(self.name), sql.Identifier(self.template)
            ),
        )
        return url_of_database(self.admin_url, self.name)

    def __exit__(self, *_: object) -> None:
        execute_outside_transaction(
            self.admin_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)),
        )


def live_through(url: str, nights: list[Night]) -> None:
    for number, night in enumerate(nights, 1):
        apply_changes(url, night.changes)
        if not refresh(url, night.steps, "incremental"):
            assert refused_in_full_too(url, night.steps), f"night {number}: refused only incrementally"
            continue  # refused by a check: nothing published, the keys wait for the next night
        if len(night.steps) < len(STEPS):
            continue  # a partial night: the skipped steps' objects wait for the next one
        wrong = {name: count for name in EXPECTATIONS if (count := differences(url, name))}
        assert not wrong, f"night {number}: rows that differ from the independent calculation: {wrong}"
        assert drift_of_a_full_run(url) == {}, f"night {number}: a full run would change rows"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nights=NIGHTS)
def test_incremental_equals_full_and_the_source_after_every_night(postgres_admin_url, tiny_template, nights):
    with Copies(postgres_admin_url, tiny_template) as url:
        live_through(url, nights)
        refresh(url, STEPS, "incremental")  # a last night with no change: everything published now
        if refresh(url, STEPS, "incremental"):
            wrong = {name: count for name in EXPECTATIONS if (count := differences(url, name))}
            assert not wrong, f"after the last night: {wrong}"


def test_a_broken_delta_is_caught_by_the_property_and_by_the_drift_check(
    postgres_admin_url, tiny_template, tmp_path, monkeypatch
):
    # (A broken daily revenue delta, a deleted day kept, is refused by the dashboards' own check
    # daily_revenue_reconciles_with_reporting before it is published, and the property names it.)
    monkeypatch.setenv(SQL_DIR.name, str(without_recency_rule(tmp_path / "sql")))
    # A visit three days after the newest: every other patient is three days further from it.
    night = Night([("new_visit", 0, 0, 3, [25.0], True)], STEPS)
    with Copies(postgres_admin_url, tiny_template) as url:
        with pytest.raises(AssertionError, match=r"dashboards\.patient_activity"):
            live_through(url, [night])
        drift = drift_of_a_full_run(url)
        assert list(drift) == ["refresh_dashboards"]
        assert list(drift["refresh_dashboards"]) == ["dashboards.patient_activity"]
        assert drift["refresh_dashboards"]["dashboards.patient_activity"]["updated"] > 1


def test_an_ignored_refund_is_refused_by_step_1s_control_total_and_named_by_the_property(
    postgres_admin_url, tiny_template, tmp_path, monkeypatch
):
    # Step 1's incremental form without the billing lines whose payments changed: the refund never
    # reaches analytics. Its check analytics_reconciles_with_staging (paid in analytics = paid in
    # staging) refuses the night before anything is published, and the property names the form
    # ("refused only incrementally"). The keys wait; the periodic full run's drift check (the
    # incremental form, then the full form) finds the billing line and what it feeds.
    monkeypatch.setenv(SQL_DIR.name, str(ignoring_refunds(tmp_path / "sql")))
    night = Night([("refund", 0, 5.0)], STEPS)
    with Copies(postgres_admin_url, tiny_template) as url:
        with pytest.raises(AssertionError, match="night 1: refused only incrementally"):
            live_through(url, [night])
        drift = drift_of_a_full_run(url)
        assert list(drift) == ["refresh_phase2_materialized_views"]
        assert drift["refresh_phase2_materialized_views"]["analytics.mv_billing_summary"]["updated"] == 1


def test_an_incremental_night_checks_what_changed_through_the_checks_stand_in(
    postgres_admin_url, tiny_template, tmp_path, monkeypatch
):
    # On an incremental night analytics_reconciles_with_staging runs as its stand-in
    # (incremental/checks/<step>/): per billing line and visit that capture's keys touch, not over
    # the whole tables. It reads capture's keys, not the form's: the refund the broken form skipped
    # is still among them, and the night is refused with the check's own name and severity.
    phase2 = "refresh_phase2_materialized_views"
    stand_in = f"incremental/checks/{phase2}/analytics_reconciles_with_staging.sql"

    def night(url: str) -> list:
        plans, _ = plan_steps([phase2], False, 0.5, LOGGER, SqlFiles(), mode=ModeRequest("incremental"))
        return run_step_transaction(target_from_url(url, "test"), plans[phase2], LIMITS, logger=LOGGER).checks

    with Copies(postgres_admin_url, tiny_template) as url:
        apply_changes(url, Night([("refund", 0, 5.0)], STEPS).changes)
        checks = {result.name: result for result in night(url)}
        assert checks["analytics_reconciles_with_staging"].source.endswith(stand_in)
        assert checks["analytics_reconciles_with_staging"].outcome == "passed"
        # A check without a stand-in runs whole, as on a full night.
        assert checks["unbilled_visits"].source.endswith(f"checks/{phase2}/unbilled_visits.sql")

    monkeypatch.setenv(SQL_DIR.name, str(ignoring_refunds(tmp_path / "sql")))
    with Copies(postgres_admin_url, tiny_template) as url:
        apply_changes(url, Night([("refund", 0, 5.0)], STEPS).changes)
        with pytest.raises(CheckFailed) as refused:
            night(url)
        failed = [result for result in refused.value.results if result.outcome == "failed"]
        assert [(result.name, result.severity) for result in failed] == [
            ("analytics_reconciles_with_staging", "error")
        ]
        assert failed[0].source.endswith(stand_in)
        assert failed[0].violating_rows == 2  # the billing line and its visit


def test_a_wrong_revenue_delta_is_refused_by_the_reporting_steps_control_total(
    postgres_admin_url, tiny_template, tmp_path, monkeypatch
):
    # The reporting step's form with a broken delta: paid amounts never move. Its check
    # revenue_reconciles_with_analytics runs as its stand-in, a control total (what analytics
    # gained per day and branch, as capture logged it, against what revenue_summary gained, as
    # capture logged that): a refund's day differs, and the night is refused before publishing.
    phase3 = "refresh_phase3_reporting_tables"
    monkeypatch.setenv(
        SQL_DIR.name,
        str(
            with_a_wrong_delta(
                tmp_path / "sql",
                f"{phase3}.sql",
                "coalesce(r.paid_amount, 0) + d.paid_amount_change ",
                "coalesce(r.paid_amount, 0)                        ",
            )
        ),
    )
    with Copies(postgres_admin_url, tiny_template) as url:
        apply_changes(url, Night([("refund", 0, 5.0)], STEPS).changes)
        target = target_from_url(url, "test")
        plans, _ = plan_steps(list(STEPS), False, 0.5, LOGGER, SqlFiles(), mode=ModeRequest("incremental"))
        run_step_transaction(target, plans[STEPS[0]], LIMITS, logger=LOGGER)
        with pytest.raises(CheckFailed) as refused:
            run_step_transaction(target, plans[phase3], LIMITS, logger=LOGGER)
        # (branch_and_patient_totals_reconcile, within reporting, sees the branch's paid differ too.)
        failed = {result.name: result for result in refused.value.results if result.outcome == "failed"}
        control_total = failed["revenue_reconciles_with_analytics"]
        assert control_total.source.endswith(
            f"incremental/checks/{phase3}/revenue_reconciles_with_analytics.sql"
        )
        assert control_total.violating_rows == 1  # the refund's day at its branch


def test_a_patient_left_behind_by_a_moved_visit_is_refused_by_the_per_patient_count(
    postgres_admin_url, tiny_template, tmp_path, monkeypatch
):
    # Step 1's form recomputing only the patients its visits now belong to: a visit moved to
    # another patient leaves the old one counting it. patient_summary_counts_every_visit's stand-in
    # counts the visits of every patient capture's keys name, old and new, and refuses the night.
    phase2 = "refresh_phase2_materialized_views"
    monkeypatch.setenv(
        SQL_DIR.name,
        str(
            with_a_wrong_delta(
                tmp_path / "sql",
                f"{phase2}.sql",
                "UNION SELECT patient_id FROM pg_temp.changed_visits\nUNION SELECT patient_id FROM old_visit_summary\n",
                "",
            )
        ),
    )
    with Copies(postgres_admin_url, tiny_template) as url:
        apply_changes(url, Night([("move_visit", 3, 7, 1, 0)], STEPS).changes)
        plans, _ = plan_steps([phase2], False, 0.5, LOGGER, SqlFiles(), mode=ModeRequest("incremental"))
        with pytest.raises(CheckFailed) as refused:
            run_step_transaction(target_from_url(url, "test"), plans[phase2], LIMITS, logger=LOGGER)
        failed = {result.name: result for result in refused.value.results if result.outcome == "failed"}
        per_patient = failed["patient_summary_counts_every_visit"]
        assert per_patient.source.endswith(
            f"incremental/checks/{phase2}/patient_summary_counts_every_visit.sql"
        )
        assert per_patient.violating_rows == 1  # the patient the visit left
