"""Run a step's statements as one transaction, one by one, logging each, then its checks.

Statements go to the DBAPI cursor as they are, never through SQLAlchemy's
text(), so a ` :name` inside a string literal stays a literal. The transaction
is REPEATABLE READ: every statement of a step reads the same snapshot of the
source, so the tables a step writes agree with each other even while the
source is being loaded. The step's data checks (hospitaldb.engine.checks.step) run last, in
the same transaction, before COMMIT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg2
import psycopg2.extensions
from pglast import ast

from hospitaldb.engine.changes.modes import (
    ChosenMode,
    choose_mode,
    drop_temp_tables,
    forget_taken,
    take_all_changes,
    take_changed_keys,
)
from hospitaldb.engine.checks.shrink import finish_row_counts, start_row_counts
from hospitaldb.engine.checks.step import CheckResult, run_checks
from hospitaldb.engine.checks.volume import OBJECT_HISTORY, judge_volumes, measured, read_volume_rules
from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.errors import as_step_error
from hospitaldb.engine.run.plans import StepPlan
from hospitaldb.engine.sql.analysis import relation_name
from hospitaldb.engine.sql.script import Statement


@dataclass(frozen=True)
class StatementResult:
    number: int
    location: str
    summary: str
    seconds: float
    rows: int | None


@dataclass
class StepResult:
    step: str
    seconds: float = 0.0
    statements: list[StatementResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
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


def execute_statements(
    connection: psycopg2.extensions.connection,
    statements: list[Statement],
    logger: logging.Logger | logging.LoggerAdapter,
    step: str,
    on_statement: Callable[[StatementResult], None] | None = None,
    total: int | None = None,
    after: int = 0,
) -> list[StatementResult]:
    """Execute statements on an open transaction, without committing it.

    after: statements the step ran before these (a full form after its incremental form), so
    that each statement of an attempt has its own number.
    """
    total = (total or len(statements)) + after
    results = []
    for statement in statements:
        started = time.perf_counter()
        with as_step_error(step, statement), connection.cursor() as cursor:
            cursor.execute(*_as_run(cursor, statement))
            rows = cursor.rowcount if cursor.rowcount >= 0 else None
        result = StatementResult(
            number=after + statement.number,
            location=statement.location,
            summary=statement.summary,
            seconds=round(time.perf_counter() - started, 3),
            rows=rows,
        )
        logger.info(
            "%s [%d/%d] %s: %.3f s, %s rows",
            step,
            result.number,
            total,
            statement.summary,
            result.seconds,
            "-" if rows is None else rows,
        )
        if on_statement:
            on_statement(result)
        results.append(result)
    return results


# A REFRESH of a view the run's role does not own, through its owner's function (sql/schema/05_etl_audit.sql).
REFRESH_BY_OWNER = """
SELECT NOT pg_has_role(c.relowner, 'USAGE') AND coalesce(has_function_privilege(
    to_regprocedure('etl_audit.refresh_materialized_view(regclass, boolean)'), 'EXECUTE'), false)
FROM pg_class AS c WHERE c.oid = to_regclass(%s) AND c.relkind = 'm'
"""


def _as_run(cursor: Any, statement: Statement) -> tuple[Any, ...]:
    """The statement as this session runs it: a REFRESH of a view it does not own, by its owner's function.

    The least-privilege refresher owns no materialized view (it could grant, alter or drop
    it): their NOLOGIN owner refreshes them for it (docs/security.md).
    """
    tree = statement.tree
    if not isinstance(tree, ast.RefreshMatViewStmt) or tree.skipData:
        return (statement.text,)
    view = relation_name(tree.relation)
    cursor.execute(REFRESH_BY_OWNER, (view,))
    found = cursor.fetchone()
    if not found or not found[0]:
        return (statement.text,)
    return (
        "SELECT etl_audit.refresh_materialized_view(to_regclass(%s), %s)",
        (view, bool(tree.concurrent)),
    )


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
            connection, plan.objects, allow_shrink=plan.allow_shrink, max_shrink_share=plan.max_shrink_share
        )
    row_count_seconds = time.perf_counter() - counting
    chosen, results, after_incremental = run_forms(connection, plan, logger, on_statement, changes_before)
    counting = time.perf_counter()
    with as_step_error(step):
        row_counts = finish_row_counts(connection)
    row_count_seconds += time.perf_counter() - counting
    with as_step_error(step):
        changes_after = table_changes(connection, plan.objects)
    changes = _difference(changes_after, changes_before)
    drift = {
        name: counts
        for name, counts in _difference(changes_after, after_incremental).items()
        if chosen.verify and any(counts.values())
    }
    with as_step_error(step, plan.volume_rules), connection.cursor() as cursor:
        rules = [rule for rule in read_volume_rules(cursor, plan.volume_rules) if rule.object_name in changes]
        volumes = judge_volumes(cursor, rules, lambda rule: measured(rule, changes), OBJECT_HISTORY)
    checks = run_checks(connection, plan.checks, step, logger, judged=volumes)
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
    if chosen.mode == "incremental" or chosen.verify:
        with as_step_error(step), connection.cursor() as cursor:
            chosen = replace(chosen, changed_keys=take_changed_keys(cursor, step, pending))
        logger.info("%s: %s", step, chosen.describe())
        results += execute_statements(connection, plan.incremental.statements, logger, step, on_statement)
        if chosen.verify:  # the full form next, in the same transaction: what it still changes is drift
            with as_step_error(step), connection.cursor() as cursor:
                drop_temp_tables(cursor, plan.incremental.temp_tables)
            after_incremental = table_changes(connection, plan.objects)
    else:
        logger.info("%s: %s", step, chosen.describe())
    if chosen.mode == "full":
        results += execute_statements(
            connection, plan.statements, logger, step, on_statement, plan.statement_total, len(results)
        )
    if plan.incremental:  # only a step that reads changes takes them (a view group never does)
        with as_step_error(step), connection.cursor() as cursor:
            if chosen.mode == "full":
                take_all_changes(cursor, step)
            forget_taken(cursor, list(plan.consumers))
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


def table_changes(
    connection: psycopg2.extensions.connection, objects: list[str]
) -> dict[str, dict[str, int]]:
    """Rows inserted, updated and deleted in each object, by this backend, not yet flushed.

    PostgreSQL flushes these counters only between transactions, so the difference of two
    readings inside one transaction is exactly what that transaction did (REFRESH ...
    CONCURRENTLY shows as the inserts and deletes of its diff).
    """
    if not objects:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_del, 0) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS o (name, position) "
            "LEFT JOIN pg_stat_xact_user_tables AS s ON s.relid = to_regclass(name) ORDER BY position",
            (objects,),
        )
        return {
            name: {"inserted": inserted, "updated": updated, "deleted": deleted}
            for name, inserted, updated, deleted in cursor.fetchall()
        }
