"""Run a step as one transaction: its full or incremental form (engine.run.statements), then its checks.

The transaction is REPEATABLE READ: every statement of a step reads the same snapshot of the
source, so the tables a step writes agree with each other even while the
source is being loaded. The step's data checks (hospitaldb.engine.checks.step) run last, in
the same transaction, before COMMIT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import psycopg2
import psycopg2.extensions

from hospitaldb.engine.changes.modes import (
    ChosenMode,
    choose_mode,
    forget_taken,
    take_all_changes,
    take_changed_keys,
)
from hospitaldb.engine.checks.shrink import finish_row_counts, start_row_counts
from hospitaldb.engine.checks.step import CheckResult, checks_for, run_checks
from hospitaldb.engine.checks.volume import OBJECT_HISTORY, judge_volumes, measured, read_volume_rules
from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.errors import as_step_error
from hospitaldb.engine.run.plans import StepPlan
from hospitaldb.engine.run.statements import (
    StatementResult,
    drop_temp_tables,
    execute_statements,
    table_changes,
)


@dataclass
class StepResult:
    step: str
    seconds: float = 0.0
    statements: list[StatementResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    row_counts: dict[str, int | None] = field(default_factory=dict)  # None: not counted (shrink.py)
    row_count_seconds: float = 0.0  # the shrink guard's counting, before and after the statements
    changes: dict[str, dict[str, int]] = field(default_factory=dict)  # object -> inserted/updated/deleted
    mode: ChosenMode | None = None  # full or incremental, why, and how many changed keys it took
    drift: dict[str, dict[str, int]] = field(default_factory=dict)  # what full changed after incremental

    @property
    def drift_rows(self) -> int:
        return sum(sum(counts.values()) for counts in self.drift.values())

    @property
    def rows(self) -> int:
        return sum(result.rows or 0 for result in self.statements)


def run_step_sql(
    connection: psycopg2.extensions.connection,
    plan: StepPlan,
    *,
    logger: logging.Logger | logging.LoggerAdapter,
    on_statement: Callable[[StatementResult], None] | None = None,
) -> StepResult:
    """Run every statement of the plan, then its checks, on the open transaction.

    Nothing is committed here. What the step changed in each of its objects (rows
    inserted, updated, deleted) is read from PostgreSQL's counters for this transaction.
    """
    step = plan.step
    started = time.perf_counter()
    counting = time.perf_counter()
    with as_step_error(step):
        changes_before = table_changes(connection, plan.objects)
        start_row_counts(
            connection,
            plan.objects,
            allow_shrink=plan.allow_shrink,
            max_shrink_share=plan.max_shrink_share,
            truncates=plan.truncates,
        )
    row_count_seconds = time.perf_counter() - counting
    chosen, results, after_incremental = run_forms(connection, plan, logger, on_statement, changes_before)
    with as_step_error(step):
        changes_after = table_changes(connection, plan.objects)
    changes = _difference(changes_after, changes_before)
    # An incremental night counts only the tables it shrank: the guard cannot refuse the others.
    incremental = chosen.mode == "incremental" and plan.incremental is not None
    counting = time.perf_counter()
    with as_step_error(step):
        row_counts = finish_row_counts(connection, changes, incremental=incremental)
    row_count_seconds += time.perf_counter() - counting
    drift = {
        name: counts
        for name, counts in _difference(changes_after, after_incremental).items()
        if chosen.verify and any(counts.values())
    }
    with as_step_error(step, plan.volume_rules), connection.cursor() as cursor:
        rules = [rule for rule in read_volume_rules(cursor, plan.volume_rules) if rule.object_name in changes]
        volumes = judge_volumes(cursor, rules, lambda rule: measured(rule, changes), OBJECT_HISTORY)
    # An incremental night checks what changed where a check has a stand-in (engine.checks.step).
    tonight = checks_for(plan.checks, plan.incremental.checks) if incremental else plan.checks
    checks = run_checks(connection, tonight, step, logger, judged=volumes)
    return StepResult(
        step=step,
        seconds=round(time.perf_counter() - started, 3),
        statements=results,
        checks=checks,
        row_counts=row_counts,
        row_count_seconds=round(row_count_seconds, 3),
        changes=changes,
        mode=chosen,
        drift=drift,
    )


def _difference(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {
        name: {kind: count - before.get(name, {}).get(kind, 0) for kind, count in counts.items()}
        for name, counts in after.items()
    }


def run_forms(
    connection: psycopg2.extensions.connection,
    plan: StepPlan,
    logger: logging.Logger | logging.LoggerAdapter,
    on_statement: Callable[[StatementResult], None] | None,
    changes_before: dict[str, dict[str, int]],
) -> tuple[ChosenMode, list[StatementResult], dict[str, dict[str, int]]]:
    """The step's incremental form, or its full form, or (looking for drift) one then the other.

    Which, and its changed keys, decided and taken in this transaction (engine.changes.modes).
    Returns the mode, the statements' results, and the objects' change counters once the
    incremental form was done (what full changes after them is drift).
    """
    step = plan.step
    with as_step_error(step), connection.cursor() as cursor:
        chosen, pending = choose_mode(cursor, step, plan.incremental, plan.mode)
    results: list[StatementResult] = []
    after_incremental = changes_before
    incremental = chosen.mode == "incremental" or chosen.verify
    if incremental:
        with as_step_error(step), connection.cursor() as cursor:
            chosen = replace(chosen, changed_keys=take_changed_keys(cursor, step, pending))
    logger.info("%s: %s", step, chosen.describe())
    if incremental:
        results += execute_statements(connection, plan.incremental.statements, logger, step, on_statement)
        if chosen.verify:  # the full form next, in the same transaction: what it still changes is drift
            drop_temp_tables(connection, step, plan.incremental.temp_tables)
            after_incremental = table_changes(connection, plan.objects)
    if chosen.mode == "full":
        results += execute_statements(
            connection, plan.statements, logger, step, on_statement, plan.statement_total, len(results)
        )
    if plan.incremental:  # only a step that reads changes takes them (a view group never does)
        with as_step_error(step), connection.cursor() as cursor:
            # Taken after its statements: its own writes, logged since it took its keys, are changes
            # of what it does not read (the steps after it take them), so none waits a night for it.
            take_all_changes(cursor, step, is_full=chosen.mode == "full")
            forget_taken(cursor, plan.readers)
    return chosen, results, after_incremental


def run_step_transaction(
    target: DatabaseTarget,
    plan: StepPlan,
    limits: Limits,
    *,
    logger: logging.Logger | logging.LoggerAdapter,
    on_statement: Callable[[StatementResult], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    on_connection: Callable[[psycopg2.extensions.connection], None] | None = None,
) -> StepResult:
    """Run the plan's statements, then its checks, in one REPEATABLE READ transaction, and commit.

    All of it commits, or none: a failing statement or error check (CheckFailed) rolls
    the whole step back. on_connection gets the session first, for whoever may have to
    cancel it from another thread (engine.run.parallel).
    """
    with as_step_error(plan.step):
        connection = target.connect(limits)
    try:
        if on_connection:
            on_connection(connection)
        connection.set_session(isolation_level="REPEATABLE READ")
        result = run_step_sql(connection, plan, logger=logger, on_statement=on_statement)
        if before_commit:
            before_commit()
        with as_step_error(plan.step):
            connection.commit()
    finally:
        # Closing without commit rolls back: a failed step leaves the previous data.
        connection.close()
    return result
