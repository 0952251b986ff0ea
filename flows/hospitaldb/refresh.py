"""The flow hospitaldb-refresh: phase 2 views, then phase 3 reporting tables, then dashboards.

Each step is a Prefect task (hospitaldb.tasks) that runs its parsed statements and then its
data checks in one transaction. Before the first step, the source checks make sure the
staging data is whole and new. What happens is
recorded once, as it happens (hospitaldb.record.recorder), and every report reads that
record, handed over as a value when the run ends. flows/refresh.py is the entry point Prefect deploys and `python
flows/refresh.py` runs (hospitaldb.local.cli).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.tasks import exponential_backoff
from pydantic import Field

from hospitaldb.engine.changes.modes import DriftFound, ModeRequest, RunMode
from hospitaldb.engine.db.database import resolve_database
from hospitaldb.engine.db.deadline import Limits, RunDeadline
from hospitaldb.engine.run.context import RunContext
from hospitaldb.engine.run.lock import refresh_lock
from hospitaldb.engine.run.plans import plan_steps
from hospitaldb.engine.run.view_groups import with_parallel_views
from hospitaldb.engine.sql.lineage import views_in_database
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.engine.steps import StepName, in_pipeline_order
from hospitaldb.record.handover import ReturnedSteps
from hospitaldb.record.outcome import REFRESH_FLOW
from hospitaldb.report.healing import heal_earlier_runs, report_when_back
from hospitaldb.report.hooks import report_failure, report_interruption, report_recovery
from hospitaldb.report.lost_logs import keeping_logs
from hospitaldb.report.notifications import DEFAULT_EMAIL_BLOCK, DEFAULT_SLACK_BLOCK
from hospitaldb.report.telling import Teller
from hospitaldb.run_context import audit_required, recorder_for_this_run, stopped_as
from hospitaldb.tasks import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_DELAY_SECONDS,
    STEP_TASKS,
    check_sources,
    dry_run_task,
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
    mode: RunMode = "auto",
    full_every_days: Annotated[float, Field(gt=0)] = 7,
    max_changed_share: Annotated[float, Field(gt=0, le=1)] = 0.15,
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
        mode: auto (default), full or incremental. A step with an incremental form
            (incremental/<step>.sql) recomputes only what changed since it last ran, from the
            keys change capture logged (hospitaldb changes install). auto runs it incrementally
            where it can, and full when capture is not installed (or not as capture.sql now
            asks), a source was truncated or newly captured, the last full run is older than
            full_every_days, or its changed keys exceed max_changed_share of its sources' rows. incremental refuses a step that
            cannot; full always recomputes all. A full run that could have been incremental
            runs the incremental form first and reports any row it still changes as drift.
        full_every_days: with mode auto, run each step full again once its last full run is
            this many days old: the periodic run that looks for drift.
        max_changed_share: with mode auto, run a step full when its changed keys exceed this
            share of its sources' rows (0.15: where full became cheaper, measured; docs:
            performance, "Incremental refresh").
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
            mode=ModeRequest(mode, full_every_days, max_changed_share),
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
            drift = {
                step: objects for step in selected if (objects := recorder.outcome.step_outcome(step).drift)
            }
            if drift and dry_run:
                logger.warning("dry run: %s (rolled back: nothing repaired)", DriftFound(drift))
            elif drift:  # every step committed, repaired: the incremental path failed
                raise DriftFound(drift)
    return ReturnedSteps(recorder.outcome)
