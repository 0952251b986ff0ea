"""The flow hospitaldb-refresh: phase 2 views, then phase 3 reporting tables, then dashboards.

Each step is a Prefect task that runs its parsed statements and then its data checks
in one transaction, and retries only on transient database errors. Before the first
step, the source checks make sure the staging data is whole and new. What happens is
recorded once, as it happens (hospitaldb.record.recorder), and every report reads that
record, handed over as a value when the run ends. flows/refresh.py is the entry point Prefect deploys and `python
flows/refresh.py` runs (hospitaldb.local.cli).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task, exponential_backoff
from pydantic import Field

from hospitaldb.engine.checks.source import SOURCE_CHECKS, SourceCheckFailed, evaluate, read_sources
from hospitaldb.engine.db.database import resolve_database
from hospitaldb.engine.db.deadline import Limits, RunDeadline
from hospitaldb.engine.db.errors import StepError
from hospitaldb.engine.run.context import RunContext
from hospitaldb.engine.run.dry_run import dry_run_steps
from hospitaldb.engine.run.lock import HeldLock, refresh_lock
from hospitaldb.engine.run.parallel import refresh_views_in_parallel
from hospitaldb.engine.run.plans import StepPlan, plan_steps
from hospitaldb.engine.run.runner import run_step_transaction
from hospitaldb.engine.run.upkeep import run_upkeep
from hospitaldb.engine.run.view_groups import with_parallel_views
from hospitaldb.engine.sql.lineage import views_in_database
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.engine.steps import STEPS, StepName, in_pipeline_order
from hospitaldb.record.audit_history import last_successful_source_counts
from hospitaldb.record.handover import ReturnedSteps
from hospitaldb.record.outcome import REFRESH_FLOW
from hospitaldb.record.recorder import RunRecorder
from hospitaldb.report.artifacts import checks_summary
from hospitaldb.report.healing import heal_earlier_runs, report_when_back
from hospitaldb.report.hooks import report_failure, report_interruption, report_recovery
from hospitaldb.report.lost_logs import keeping_logs
from hospitaldb.report.notifications import DEFAULT_EMAIL_BLOCK, DEFAULT_SLACK_BLOCK
from hospitaldb.report.telling import Teller
from hospitaldb.run_context import audit_required, recorder_for_this_run, stopped_as

DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY_SECONDS = 10.0


def retry_on_transient_error(task: Task, task_run: Any, state: Any) -> bool:
    """Retry only what a retry can fix: lost connections, deadlocks, lock timeouts."""
    try:
        state.result()
    except StepError as error:
        return error.transient
    except Exception:
        return False
    return False


def this_attempt() -> tuple[int, str | None]:
    """Which attempt of its task this is, and the task run's id (for healing its state in Prefect)."""
    run_id = runtime.task_run.id
    return runtime.task_run.run_count or 1, str(run_id) if run_id else None


def run_step(
    step: StepName, context: RunContext, recorder: RunRecorder, plan: StepPlan, lock: HeldLock
) -> dict[str, Any]:
    """Run one step's statements and its checks in one transaction, and return what it did.

    The step checks that the run still holds the overlap lock before it starts and again
    right before COMMIT. Each attempt, failed ones included, is on record (etl_audit),
    with its statements and check results, so a rolled-back attempt is not lost.
    """
    logger = get_run_logger()
    with recorder.step_attempt(step, *this_attempt()) as attempt:
        if lock.verify(step, retake=True):  # lost with a failed-over primary: taken again on the new one
            logger.warning("the overlap lock's session had ended (a restart, a failover); lock taken again")
        recorder.verify_audit(step)
        refresh = run_step_transaction
        if plan.groups:  # each group of views commits on its own, once its checks pass
            refresh = partial(refresh_views_in_parallel, on_group_committed=attempt.views_committed)
        result = refresh(
            context.target,
            plan,
            context.limits,
            logger=logger,
            on_statement=attempt.statement_finished,
            before_commit=lambda: (lock.verify(step), recorder.verify_audit(step)),
        )
        attempt.completed(result)
    if plan.upkeep:
        recorder.kept_up(
            step, run_upkeep(context.target, context.limits, result.changes, result.row_counts, logger)
        )
    logger.info(
        "%s committed: %d statements, %.2f s, %d rows; checks: %s",
        step,
        len(result.statements),
        result.seconds,
        result.rows,
        checks_summary(result.checks),
    )
    return recorder.outcome.step_outcome(step).to_dict()


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
    retry_jitter_factor=0.5,  # as the steps': runs retried together do not retry in step
    retry_condition_fn=retry_on_transient_error,
    cache_policy=NO_CACHE,
)
def check_sources(context: RunContext, recorder: RunRecorder, enforce: bool = True) -> None:
    """Read every source's row count and newest data; fail the run if one is stale or incomplete.

    The counts are recorded either way (not in a dry run): a completed run's counts are
    the next run's baseline. With enforce=False (skip_source_checks) problems are logged,
    not raised. A lock timeout on a staging table is transient: retried like a step's, and
    each attempt is on record like a step's (etl_audit.step_attempts, step 'check_sources').
    """
    logger = get_run_logger()
    with recorder.step_attempt(SOURCE_CHECKS, *this_attempt()) as attempt:
        previous = last_successful_source_counts(recorder.audit) if recorder.audit else {}
        states, volumes, seconds = read_sources(context.target, context.limits, context.files, previous)
        results, problems = evaluate(states, previous, seconds, logger, volumes)
        recorder.sources_read(enforce, states, problems, seconds)
        if problems and enforce:
            raise SourceCheckFailed(problems, results)
        attempt.checked(results if enforce else [], seconds)
    if problems:
        logger.warning("source checks skipped (skip_source_checks): %s", "; ".join(p.text for p in problems))


@task(name="dry_run", cache_policy=NO_CACHE)
def dry_run_task(context: RunContext, recorder: RunRecorder, plans: dict[StepName, StepPlan]) -> None:
    """Run the steps and their checks as a real run would, in one transaction, and roll back."""
    dry_run_steps(
        context.target, plans, context.limits, logger=get_run_logger(), on_step=recorder.step_dry_run
    )


@flow(
    name=REFRESH_FLOW,
    log_prints=False,
    # One message per run: flow-level hooks only. A crash (SIGTERM, killed worker) does not
    # run on_failure, hence on_crashed too; a cancel ends Cancelled, with its own notice.
    on_failure=[report_failure],
    on_crashed=[report_interruption],
    on_cancellation=[report_interruption],
    on_completion=[report_recovery],
)
def hospitaldb_refresh(
    steps: list[StepName] | None = None,
    database_block: str | None = None,
    statement_timeout_seconds: Annotated[float, Field(ge=0)] = 3600,
    lock_timeout_seconds: Annotated[float, Field(ge=0)] = 30,
    run_timeout_seconds: Annotated[float, Field(ge=0)] = 0,
    overlap_wait_seconds: Annotated[float, Field(ge=0)] = 0,
    retries: Annotated[int, Field(ge=0, le=10)] = DEFAULT_RETRIES,
    retry_delay_seconds: Annotated[float, Field(ge=0)] = DEFAULT_RETRY_DELAY_SECONDS,
    skip_source_checks: bool = False,
    allow_shrink: bool = False,
    max_shrink_share: Annotated[float, Field(gt=0, lt=1)] = 0.5,
    dry_run: bool = False,
    upkeep: bool = True,
    parallel_views: Annotated[int, Field(ge=1, le=16)] = 1,
    parallel_workers_per_query: Annotated[int | None, Field(ge=0, le=64)] = None,
    alert_emails: list[str] | None = None,
    alert_blocks: list[str] | None = None,
    email_block: str = DEFAULT_EMAIL_BLOCK,
    slack_block: str = DEFAULT_SLACK_BLOCK,
) -> ReturnedSteps:
    """Refresh HospitalDB: analytics views, then reporting tables, then dashboards.

    Nothing is published that fails its checks: source checks run before the first
    write, and each step's checks run inside its transaction, before COMMIT.

    Args:
        steps: which steps to run (default all); always run in pipeline order.
        database_block: SqlAlchemyConnector block to use. Default: the environment
            variable HOSPITALDB_DATABASE_URL, else the block 'hospitaldb-postgres'.
        statement_timeout_seconds: PostgreSQL statement_timeout of every statement the run
            sends, source checks included (0 = none).
        lock_timeout_seconds: PostgreSQL lock_timeout: how long any statement of the run may
            wait for a lock (source checks included); a lock timeout is retried.
        run_timeout_seconds: the whole run's time limit, from the start of its flow run (0 =
            none; Airflow's dagrun_timeout). The statement running at the limit is cancelled
            and its step rolled back, nothing after it starts, and the run ends Failed and
            alerted. Waiting for another refresh (overlap_wait_seconds) counts.
        overlap_wait_seconds: how long to wait for another refresh of the same database
            to finish before giving up (0 = fail at once).
        retries: retries per step (and of the source checks), on transient database errors only.
        retry_delay_seconds: base of the exponential backoff between retries.
        skip_source_checks: do not enforce the source checks (sql/checks/sources.sql), for a
            deliberate reload that shrinks a source; counts are still recorded.
        allow_shrink: let a refreshed object lose more than max_shrink_share of its rows, or
            all of them (the shrink guard, sql/checks/all_steps/shrink_guard.sql).
        max_shrink_share: the largest share of its rows an object may lose in one refresh.
        dry_run: run every step and its checks in one transaction, report what each would
            change per object, and roll back: nothing changes, nothing is recorded.
        upkeep: after each step commits, ANALYZE what it changed, and VACUUM what it left with
            many dead rows (never blocking readers; skipped where the run's role does not own
            the object, or autovacuum holds it).
        parallel_views: sessions that refresh a step of materialized views side by side
            (1 = serially, in one transaction: the default). Above 1 a view starts once the
            views it reads have committed, and commits on its own once its checks pass: each
            view is atomic and checked, the step is not. If one view fails, the views that
            committed before it keep their new data and the rest their previous data
            (docs: performance, "Parallel views"). Dry runs stay serial.
        parallel_workers_per_query: PostgreSQL max_parallel_workers_per_gather for the run's
            sessions (default: the server's, usually 2). 0 leaves the other cores to dashboard
            queries: measured to help where the data fits in memory; where the refresh reads
            from disk it slowed it and did not help readers (docs: performance, "From 1M to 10M visits").
        alert_emails: who gets email alerts (default: HOSPITALDB_ALERT_EMAILS, comma-separated).
        alert_blocks: where alerts and notices go: Prefect blocks as 'block-type-slug/block-name',
            each an EmailServerCredentials or any notification block (Slack, Microsoft Teams,
            PagerDuty, Opsgenie, custom webhook...). Default: HOSPITALDB_ALERT_BLOCKS, else
            email_block and slack_block.
        email_block: EmailServerCredentials block, when alert_blocks is not given.
        slack_block: SlackWebhook block, when alert_blocks is not given (skipped with a
            warning if missing).
    """
    logger = get_run_logger()
    deadline = RunDeadline.starting_now(run_timeout_seconds)
    recorder = recorder_for_this_run(dry_run=dry_run)
    retry_delays = exponential_backoff(backoff_factor=retry_delay_seconds)(retries) if retries else []
    # Where its alert goes, loaded now: the run tells its own failure, even with the Prefect API down.
    teller = Teller.for_this_run(logger)
    with (
        keeping_logs() as kept,  # what an outage of the Prefect API loses, sent when it is back
        recorder.recording(publish=partial(report_when_back, kept=kept), stopped_as=stopped_as, tell=teller),
    ):
        context = recorder.use_database(
            RunContext(
                resolve_database(database_block),
                Limits(statement_timeout_seconds, lock_timeout_seconds, parallel_workers_per_query, deadline),
                SqlFiles(),  # each SQL file of the run read and parsed once
            )
        )
        target = context.target
        recorder.audit_required = audit_required(logger)
        selected = recorder.start(in_pipeline_order(steps))
        what = "Dry run (rolled back at the end)" if dry_run else "Refreshing"
        logger.info("%s %s: %s", what, target.describe(), ", ".join(selected))
        plans, lineage = plan_steps(
            selected,
            allow_shrink,
            max_shrink_share,
            logger,
            context.files,
            views_in_database(target, context.limits),
            upkeep=upkeep,
        )
        run_plans = with_parallel_views(plans, lineage, parallel_views, logger)
        recorder.planned(lineage)
        overlap_wait = (
            min(overlap_wait_seconds, max(deadline.left(), 0)) if deadline else overlap_wait_seconds
        )
        with refresh_lock(
            target, overlap_wait, retry_delays, statement_timeout_seconds, recorder.lock_attempt
        ) as lock:
            if lock.outsider:
                logger.warning(
                    "the refresh lock's advisory key is held by %s, a role that may not refresh: "
                    "not waited for",
                    lock.outsider,
                )
            recorder.abandon_stale_runs()
            if recorder.audit and not dry_run:  # runs Prefect never heard end: set from etl_audit
                heal_earlier_runs(recorder.audit, logger, recorder.outcome.flow_run_id)
            check_sources.with_options(retries=retries, retry_delay_seconds=retry_delays)(
                context, recorder, enforce=not skip_source_checks
            )
            if dry_run:  # serial, whatever parallel_views says
                dry_run_task(context, recorder, plans)
            for step in [] if dry_run else selected:
                step_task = STEP_TASKS[step].with_options(retries=retries, retry_delay_seconds=retry_delays)
                step_task(step, context, recorder, run_plans[step], lock)
    return ReturnedSteps(recorder.outcome)
