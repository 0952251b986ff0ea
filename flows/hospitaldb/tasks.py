"""The refresh flow's tasks: the source checks, each step (one transaction, retried only when a retry can help), the dry run.

Each step's task runs its parsed statements and then its data checks in one transaction, and
retries only on transient database errors. Every attempt, failed ones included, is on record
(hospitaldb.record.recorder). The flow that runs them is hospitaldb.refresh.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task, exponential_backoff

from hospitaldb.engine.checks.source import SOURCE_CHECKS, SourceCheckFailed, evaluate, read_sources
from hospitaldb.engine.db.errors import StepError
from hospitaldb.engine.run.context import RunContext
from hospitaldb.engine.run.dry_run import dry_run_steps
from hospitaldb.engine.run.lock import HeldLock
from hospitaldb.engine.run.parallel import refresh_views_in_parallel
from hospitaldb.engine.run.plans import StepPlan
from hospitaldb.engine.run.runner import run_step_transaction
from hospitaldb.engine.run.upkeep import run_upkeep
from hospitaldb.engine.steps import STEPS, StepName
from hospitaldb.record.audit_history import last_successful_source_counts
from hospitaldb.record.recorder import RunRecorder
from hospitaldb.report.artifacts import checks_summary

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
        "%s committed, %s: %d statements, %.2f s, %d rows; checks: %s",
        step,
        result.mode.describe() if result.mode else "",
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
