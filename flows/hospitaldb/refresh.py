"""The flow hospitaldb-refresh: phase 2 views, then phase 3 reporting tables, then dashboards.

Each step is a Prefect task that runs one SQL file and then its data checks in
one transaction, and retries only on transient database errors. Before the first
step, the source checks make sure the staging data is whole and new. flows/refresh.py
is the entry point Prefect deploys and `python flows/refresh.py` runs (hospitaldb.cli).
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task, exponential_backoff
from psycopg2 import sql
from pydantic import Field

from hospitaldb.artifacts import checks_summary, publish_run_artifacts
from hospitaldb.audit import AuditLog, record_interruption
from hospitaldb.checks import CheckFailed, load_checks
from hospitaldb.database import DatabaseTarget, resolve_database
from hospitaldb.errors import StepError, as_step_error
from hospitaldb.notifications import (
    DEFAULT_EMAIL_BLOCK,
    DEFAULT_SLACK_BLOCK,
    send_failure_alert,
    send_recovery_notice,
)
from hospitaldb.refresh_lock import HeldLock, refresh_lock
from hospitaldb.source_checks import SOURCE_CHECKS, SourceCheckFailed, evaluate, read_sources
from hospitaldb.sql_analysis import BlockingSql, analyse_steps
from hospitaldb.sql_runner import StepGuard, run_sql_file, run_step_sql
from hospitaldb.sql_script import SqlScriptError
from hospitaldb.steps import STEPS, StepName, in_pipeline_order, sql_file
from hospitaldb.text import safe

DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY_SECONDS = 10.0


class RunCancelled(Exception):
    """The run was cancelled from Prefect while step was in progress (for the record, never raised)."""

    status = "cancelled"

    def __init__(self, step: str | None) -> None:
        self.step = step
        super().__init__(
            "cancelled from Prefect (UI, CLI or automation)"
            + (f" during {step}: it was rolled back" if step else "")
            + "; every table keeps its previous data"
        )


def _termination_intent() -> str | None:
    """'cancel' when the worker stopped this run because it was cancelled (Prefect 3.9's control channel)."""
    try:
        from prefect._internal.control_listener import get_intent
    except ImportError:  # another Prefect version: treat the signal as a crash, as before
        return None
    return get_intent()


def retry_on_transient_error(task: Task, task_run: Any, state: Any) -> bool:
    """Retry only what a retry can fix: lost connections, deadlocks, lock timeouts."""
    try:
        state.result()
    except StepError as error:
        return error.transient
    except Exception:
        return False
    return False


def run_step(
    step: StepName,
    target: DatabaseTarget,
    statement_timeout_seconds: float,
    lock_timeout_seconds: float,
    guard: StepGuard | None = None,
    lock: HeldLock | None = None,
) -> dict[str, Any]:
    """Run one step's SQL file and its checks in one transaction and return what it did.

    With the run's overlap lock, the step checks that it still holds it before it starts
    and again right before COMMIT.

    Each attempt, failed ones included, goes to the audit trail (etl_audit) on its own
    session, with its check results, so a rolled-back attempt is still on record. The
    target comes from the flow, resolved once per run; passing it is safe: Prefect
    records no task parameter values, and its repr never shows the password.
    """
    logger = get_run_logger()
    attempt = runtime.task_run.run_count or 1
    audit = AuditLog(target, logger)
    # Outside a flow run there is no run to file the attempt under; with no attempt_id the
    # audit methods below do nothing and no audit session is opened.
    attempt_id = audit.attempt_started(runtime.flow_run.id, step, attempt) if runtime.flow_run.id else None
    try:
        if lock:
            lock.verify(step)
        result = run_sql_file(
            target,
            sql_file(step),
            step=step,
            logger=logger,
            statement_timeout_seconds=statement_timeout_seconds,
            lock_timeout_seconds=lock_timeout_seconds,
            on_statement=lambda done: audit.statement_finished(attempt_id, done),
            guard=guard,
            before_commit=(lambda: lock.verify(step)) if lock else None,
        )
    except StepError as error:
        error.attempt = attempt
        if isinstance(error, CheckFailed):
            audit.checks_finished(runtime.flow_run.id, attempt_id, step, error.results)
        audit.attempt_finished(attempt_id, "failed", sqlstate=error.sqlstate, error=str(error))
        raise
    else:
        audit.checks_finished(runtime.flow_run.id, attempt_id, step, result.checks)
        audit.attempt_finished(attempt_id, "completed", statements=len(result.statements), rows=result.rows)
        audit.objects_refreshed(runtime.flow_run.id, result.row_counts, result.changes)
    finally:
        audit.close()
    summary = result.to_dict()
    logger.info(
        "%s committed: %d statements, %.2f s, %d rows; checks: %s",
        step,
        len(result.statements),
        result.seconds,
        result.rows,
        checks_summary(summary["checks"]),
    )
    return {**summary, "attempts": attempt}


def _step_task(step: StepName) -> Task:
    return task(
        name=step,
        retries=DEFAULT_RETRIES,
        retry_delay_seconds=exponential_backoff(backoff_factor=DEFAULT_RETRY_DELAY_SECONDS),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_on_transient_error,
        # A refresh must run every time: never answer it from a cache.
        cache_policy=NO_CACHE,
        log_prints=False,
    )(run_step)


STEP_TASKS: dict[StepName, Task] = {step: _step_task(step) for step in STEPS}


@task(
    name=SOURCE_CHECKS,
    retries=DEFAULT_RETRIES,
    retry_condition_fn=retry_on_transient_error,
    cache_policy=NO_CACHE,
)
def check_sources(
    target: DatabaseTarget, statement_timeout_seconds: float, enforce: bool = True, record: bool = True
) -> dict[str, Any]:
    """Read every source's row count and newest data; fail the run if one is stale or incomplete.

    The counts are recorded either way (not in a dry run): a completed run's counts are
    the next run's baseline. With enforce=False (skip_source_checks) problems are logged,
    not raised.
    """
    logger = get_run_logger()
    audit = AuditLog(target, logger)
    try:
        states, seconds = read_sources(target, statement_timeout_seconds)
        results, problems = evaluate(states, audit.last_successful_source_counts(), seconds, logger)
        if record:
            audit.sources_read(runtime.flow_run.id, states)
        if enforce and record:
            audit.checks_finished(runtime.flow_run.id, None, SOURCE_CHECKS, results)
        elif problems:
            logger.warning("source checks skipped (skip_source_checks): %s", "; ".join(problems))
    finally:
        audit.close()
    if enforce and problems:
        raise SourceCheckFailed(problems)
    return {"sources": len(states), "problems": problems, "enforced": enforce, "seconds": seconds}


@task(name="dry_run", cache_policy=NO_CACHE)
def dry_run_steps(
    target: DatabaseTarget,
    guards: dict[StepName, StepGuard],
    statement_timeout_seconds: float,
    lock_timeout_seconds: float,
) -> list[dict[str, Any]]:
    """Run the steps and their checks as a real run would, in one transaction, and roll back.

    One transaction for all steps, so that each step reads what the steps before it
    would have published; then ROLLBACK: nothing changes, and what each step would have
    changed is reported per object.
    """
    logger = get_run_logger()
    with as_step_error("dry_run"):
        connection = target.connect(
            statement_timeout_seconds=statement_timeout_seconds, lock_timeout_seconds=lock_timeout_seconds
        )
    results = []
    try:
        connection.set_session(isolation_level="REPEATABLE READ")
        for step, guard in guards.items():
            result = run_step_sql(connection, sql_file(step), step=step, logger=logger, guard=guard)
            with as_step_error(step), connection.cursor() as cursor:
                # Later steps create their own temporary tables, perhaps with the same names.
                for name in guard.temp_tables:
                    cursor.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(
                            sql.Identifier("pg_temp", name.split(".")[-1])
                        )
                    )
            for name, counts in result.changes.items():
                logger.info(
                    "dry run: %s would change %s: %d inserted, %d updated, %d deleted",
                    step,
                    name,
                    counts["inserted"],
                    counts["updated"],
                    counts["deleted"],
                )
            results.append({**result.to_dict(), "attempts": 1})
    finally:
        connection.rollback()
        connection.close()
    logger.info("dry run: rolled back, nothing changed")
    return results


def _prepare(
    selected: list[StepName], allow_shrink: bool, max_shrink_share: float, logger: Any
) -> dict[StepName, StepGuard]:
    """Parse and lint every selected step file and check file before anything is written.

    A syntax error in step 3, a broken check or a statement that would block readers
    fails the run here, with every table unchanged. Opted-out blocking statements are
    listed in the log.
    """
    try:
        parsed = analyse_steps(selected)
        blocking = [finding for step_sql in parsed.values() for finding in step_sql.blocking]
        if blocking:
            raise BlockingSql(blocking)
        for step_sql in parsed.values():
            for finding in step_sql.allowed:
                logger.warning("blocking statement allowed: %s", finding.describe())
        return {
            step: StepGuard(
                checks=load_checks(step),
                objects=step_sql.objects,
                allow_shrink=allow_shrink,
                max_shrink_share=max_shrink_share,
                temp_tables=step_sql.temp_tables,
            )
            for step, step_sql in parsed.items()
        }
    except SqlScriptError as error:
        raise SqlScriptError(f"{str(error).rstrip('.')}. Nothing was refreshed.") from None


@flow(
    name="hospitaldb-refresh",
    log_prints=False,
    # One alert per run: flow-level hooks only. A crash (SIGTERM, killed worker) does not
    # run on_failure, hence on_crashed too.
    on_failure=[send_failure_alert],
    # The alert goes first: a crash leaves 30 s before SIGKILL, and the audit update (whose
    # connection has its own 10 s deadline) must not be what delays or loses the alert.
    on_crashed=[send_failure_alert, record_interruption],
    # A cancel ends in Cancelled, not Failed: a notice and the audit trail say so too.
    on_cancellation=[send_failure_alert, record_interruption],
    on_completion=[send_recovery_notice],
)
def hospitaldb_refresh(
    steps: list[StepName] | None = None,
    database_block: str | None = None,
    statement_timeout_seconds: Annotated[float, Field(ge=0)] = 3600,
    lock_timeout_seconds: Annotated[float, Field(ge=0)] = 30,
    overlap_wait_seconds: Annotated[float, Field(ge=0)] = 0,
    retries: Annotated[int, Field(ge=0, le=10)] = DEFAULT_RETRIES,
    retry_delay_seconds: Annotated[float, Field(ge=0)] = DEFAULT_RETRY_DELAY_SECONDS,
    skip_source_checks: bool = False,
    allow_shrink: bool = False,
    max_shrink_share: Annotated[float, Field(gt=0, lt=1)] = 0.5,
    dry_run: bool = False,
    alert_emails: list[str] | None = None,
    email_block: str = DEFAULT_EMAIL_BLOCK,
    slack_block: str = DEFAULT_SLACK_BLOCK,
) -> list[dict[str, Any]]:
    """Refresh HospitalDB: analytics views, then reporting tables, then dashboards.

    Nothing is published that fails its checks: source checks run before the first
    write, and each step's checks run inside its transaction, before COMMIT.

    Args:
        steps: which steps to run (default all); always run in pipeline order.
        database_block: SqlAlchemyConnector block to use. Default: the environment
            variable HOSPITALDB_DATABASE_URL, else the block 'hospitaldb-postgres'.
        statement_timeout_seconds: PostgreSQL statement_timeout per statement (0 = none).
        lock_timeout_seconds: PostgreSQL lock_timeout: how long a statement may wait for a lock.
        overlap_wait_seconds: how long to wait for another refresh of the same database
            to finish before giving up (0 = fail at once).
        retries: retries per step, on transient database errors only.
        retry_delay_seconds: base of the exponential backoff between retries.
        skip_source_checks: do not enforce the source checks (sql/checks/sources.sql), for a
            deliberate reload that shrinks a source; counts are still recorded.
        allow_shrink: let a refreshed object lose more than max_shrink_share of its rows, or
            all of them (the shrink guard, sql/checks/all_steps/shrink_guard.sql).
        max_shrink_share: the largest share of its rows an object may lose in one refresh.
        dry_run: run every step and its checks in one transaction, report what each would
            change per object, and roll back: nothing changes, nothing is recorded.
        alert_emails: who gets failure alerts (default: HOSPITALDB_ALERT_EMAILS, comma-separated).
        email_block: EmailServerCredentials block for alerts.
        slack_block: SlackWebhook block for alerts (optional: skipped with a warning if missing).
    """
    logger = get_run_logger()
    selected = in_pipeline_order(steps)
    target = resolve_database(database_block)
    what = "Dry run (rolled back at the end)" if dry_run else "Refreshing"
    logger.info("%s %s: %s", what, target.describe(), ", ".join(selected))
    retry_delays = exponential_backoff(backoff_factor=retry_delay_seconds)(retries) if retries else []
    # A dry run leaves no trace in the audit trail: it publishes nothing.
    audit = AuditLog(target, logger, enabled=not dry_run)
    audit.run_started(runtime.flow_run.id, runtime.flow_run.name, runtime.deployment.name, selected)
    results: list[dict[str, Any]] = []
    sources: dict[str, Any] | None = None
    failure: Exception | None = None
    try:
        guards = _prepare(selected, allow_shrink, max_shrink_share, logger)
        audit.objects_planned(
            runtime.flow_run.id, {name: step for step, guard in guards.items() for name in guard.objects}
        )
        with refresh_lock(target, wait_seconds=overlap_wait_seconds, retry_delays=retry_delays) as lock:
            abandoned = audit.abandon_stale_runs(runtime.flow_run.id)
            if abandoned:
                logger.warning(
                    "%d earlier run(s) were still 'running' in etl_audit: their process died unrecorded "
                    "(killed, out of memory); marked abandoned",
                    abandoned,
                )
            sources = check_sources.with_options(retries=retries, retry_delay_seconds=retry_delays)(
                target, statement_timeout_seconds, enforce=not skip_source_checks, record=not dry_run
            )
            if dry_run:
                results = dry_run_steps(target, guards, statement_timeout_seconds, lock_timeout_seconds)
            for step in [] if dry_run else selected:
                step_task = STEP_TASKS[step].with_options(retries=retries, retry_delay_seconds=retry_delays)
                results.append(
                    step_task(
                        step, target, statement_timeout_seconds, lock_timeout_seconds, guards[step], lock
                    )
                )
    except Exception as error:
        failure = error
        raise
    except BaseException:  # TerminationSignal: cancelled, or the process is being stopped
        if _termination_intent() == "cancel":
            # The wait callback has already told the server to cancel the running statement.
            failure = RunCancelled(selected[len(results)] if len(results) < len(selected) else None)
            audit.run_interrupted(runtime.flow_run.id, "cancelled", str(failure))
        raise
    finally:
        error_text = safe(str(failure), 1000) if failure else None
        if not isinstance(failure, RunCancelled) and (failure or len(results) == len(selected)):
            # not on a crash (the crash hook records that) nor on a cancel (recorded above)
            audit.run_finished(runtime.flow_run.id, "failed" if failure else "completed", error_text)
        audit.close()
        publish_run_artifacts(
            results, selected, target.describe(), failure, error_text, logger, sources, dry_run=dry_run
        )
    return results
