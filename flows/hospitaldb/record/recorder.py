"""The record of one run, kept as it happens: each event makes a new outcome and is written to etl_audit.

The flow opens a RunRecorder at its start and hands it to its tasks; each attempt, check
and object is an update of the run's outcome (an immutable value: hospitaldb.record.outcome)
and a write to etl_audit. An error becomes a Failure once, where it happened: at the step
that failed, else as the run ends. When the body ends, `recording` hands the final outcome
over with the flow's return value or error, for the state hooks and the command line.
A cancel or a crash goes through one path, `interrupted`, whoever notes it first (the
flow or a hook), with the same text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg2

from hospitaldb.engine.checks import CheckFailed, CheckResult
from hospitaldb.engine.database import NO_LIMITS, DatabaseTarget, Limits
from hospitaldb.engine.errors import DatabaseError, Failure, StepError, failure_of
from hospitaldb.engine.source_checks import SOURCE_CHECKS, SourceProblem
from hospitaldb.record.audit import AuditLog
from hospitaldb.record.audit_history import previous_finished_run
from hospitaldb.record.outcome import RunOutcome, SourcesOutcome, StepOutcome, handed_over, interruption_text
from hospitaldb.statuses import RunStatus, StepStatus

if TYPE_CHECKING:
    from hospitaldb.engine.lineage import Lineage
    from hospitaldb.engine.source_checks import SourceState
    from hospitaldb.engine.sql_runner import StatementResult, StepResult
    from hospitaldb.engine.upkeep import Upkeep

Logger = logging.Logger | logging.LoggerAdapter
PublishArtifacts = Callable[[RunOutcome, Logger], None]  # hospitaldb.report.artifacts.publish_run_artifacts
StoppedAs = Callable[[], RunStatus]  # cancelled or crashed, when a signal stops the run


class RunRecorder:
    """What one run did, recorded once: the outcome so far, and the writer of its etl_audit rows."""

    def __init__(
        self,
        outcome: RunOutcome,
        logger: Logger,
        audit: AuditLog | None = None,
    ) -> None:
        self.outcome = outcome
        self.logger = logger
        self.audit = audit
        self.target: DatabaseTarget | None = None
        self.limits: Limits = NO_LIMITS
        self._attempts: dict[str, int] = {}

    # --- The run, as it happens --------------------------------------------------------------

    def use_database(self, target: DatabaseTarget, limits: Limits) -> DatabaseTarget:
        """The run's database, resolved once, and the limits every session of the run keeps to."""
        self.target, self.limits = target, limits
        self.outcome = replace(self.outcome, database=target.describe())
        self.audit = AuditLog(target, self.logger, limits, writes=not self.outcome.dry_run)
        return target

    def start(self, selected: list[str]) -> list[str]:
        self.outcome = replace(self.outcome, steps=[StepOutcome(step) for step in selected])
        if self.audit:
            self.audit.run_started(self.outcome)
        return selected

    def planned(self, lineage: Lineage) -> None:
        """What the selected steps refresh and read: what a failure would hold back."""
        self.outcome = replace(self.outcome, lineage=lineage)
        if self.audit:
            self.audit.objects_planned(self.outcome.flow_run_id, lineage)

    def abandon_stale_runs(self) -> None:
        abandoned = self.audit.abandon_stale_runs(self.outcome.flow_run_id) if self.audit else 0
        if abandoned:
            self.logger.warning(
                "%d earlier run(s) were still 'running' in etl_audit: their process died unrecorded "
                "(killed, out of memory); marked abandoned",
                abandoned,
            )

    def sources_attempt(self, number: int) -> None:
        self._attempts[SOURCE_CHECKS] = number

    def sources_checked(
        self,
        enforced: bool,
        states: list[SourceState],
        results: list[CheckResult],
        problems: list[SourceProblem],
        seconds: float,
    ) -> None:
        """The source checks' counts (the next run's baseline) and results, on record."""
        self.outcome = replace(self.outcome, sources=SourcesOutcome(enforced, len(states), problems, seconds))
        if self.audit:
            self.audit.sources_read(self.outcome.flow_run_id, states)
            if enforced:
                self.audit.checks_finished(self.outcome.flow_run_id, None, SOURCE_CHECKS, results)

    @contextmanager
    def step_attempt(self, step: str, number: int) -> Iterator[StepAttempt]:
        """One attempt of a step, on record even when it fails and rolls back.

        Its error becomes the step's Failure here, once: the audit row, the run's ending and
        every report read that value.
        """
        self._attempts[step] = number
        self.outcome = self.outcome.with_step(step, status=StepStatus.RUNNING, attempts=number, failure=None)
        attempt_id = (
            self.audit.attempt_started(self.outcome.flow_run_id, step, number) if self.audit else None
        )
        attempt = StepAttempt(self, step, attempt_id)
        try:
            yield attempt
        except Exception as error:
            failure = failure_of(error)
            checks = (
                error.results if isinstance(error, CheckFailed) else self.outcome.step_outcome(step).checks
            )
            self.outcome = self.outcome.with_step(
                step, status=StepStatus.FAILED, checks=checks, failure=failure
            )
            if self.audit:
                if isinstance(error, CheckFailed):
                    self.audit.checks_finished(self.outcome.flow_run_id, attempt_id, step, error.results)
                self.audit.attempt_finished(
                    attempt_id, StepStatus.FAILED, sqlstate=failure.sqlstate, error=failure.text
                )
            raise
        # A BaseException (cancel, SIGTERM) leaves the attempt 'running': `interrupted` records it.

    def kept_up(self, step: str, upkeep: list[Upkeep]) -> None:
        """What upkeep did after the step committed: on the step's record and each object's."""
        self.outcome = self.outcome.with_step(step, upkeep=upkeep)
        if self.audit:
            self.audit.objects_kept_up(self.outcome.flow_run_id, upkeep)

    def step_dry_run(self, result: StepResult) -> None:
        """A step of a dry run: what it would have done (nothing is recorded in etl_audit)."""
        StepAttempt(self, result.step, None).completed(result)

    # --- How it ended ------------------------------------------------------------------------

    def finish(self, error: BaseException | None = None) -> None:
        """Completed, or ended by error: where, after how many attempts, and why.

        A step's error was made a Failure as its attempt ended: the run ends with that value.
        """
        outcome, now = self.outcome, datetime.now(UTC)
        if error is None:
            previous = None
            if self.audit and not outcome.dry_run:  # for the "recovered" notice; a dry run recovers nothing
                previous = previous_finished_run(self.audit, outcome.flow_run_id)
            self.outcome = replace(outcome, status=RunStatus.COMPLETED, previous=previous, finished_at=now)
        else:
            failure = self._step_failure(error) or failure_of(error)
            attempts = self._attempts.get(failure.step) if failure.step else None
            self.outcome = outcome.ended(failure, attempts, now)
        if self.audit:
            self.audit.run_finished(self.outcome)

    def _step_failure(self, error: BaseException) -> Failure | None:
        """The Failure recorded when the step that raised error failed, if it did."""
        if not isinstance(error, StepError) or error.step not in {s.step for s in self.outcome.steps}:
            return None
        return self.outcome.step_outcome(error.step).failure

    def interrupted(self, status: RunStatus, *, write: bool = True) -> None:
        """Cancelled or crashed, at the step in progress; written once, whoever comes first."""
        outcome = self.outcome
        if not outcome.status.is_interruption:
            step = outcome.step_in_progress
            published = outcome.step_outcome(step).published if step else None
            outcome = replace(
                outcome,
                status=status,
                step=step,
                attempts=outcome.step_outcome(step).attempts if step else None,
                error=interruption_text(status, step, published),
                finished_at=datetime.now(UTC),
            )
            if step:
                outcome = outcome.with_step(step, status=StepStatus(status.value))
            self.outcome = outcome
        if write and self.audit:
            self.audit.run_interrupted(self.outcome)

    @contextmanager
    def recording(
        self, publish: PublishArtifacts | None = None, stopped_as: StoppedAs = lambda: RunStatus.CRASHED
    ) -> Iterator[RunRecorder]:
        """Around the flow's body: record how it ends, publish, close the audit session, hand the outcome over.

        A crash is only noted here: its hook alerts first, then writes it (a crash leaves
        30 s before SIGKILL; the alert must not wait for the database). A cancel is
        written at once, for the worker's hook, which reads it from etl_audit. stopped_as
        tells a cancel from a crash (hospitaldb.run_context asks Prefect).
        """
        try:
            yield self
        except psycopg2.Error as error:  # outside any step (a bug if it happens): never with its DETAIL
            self.finish(error)
            raise handed_over(DatabaseError(error), self.outcome) from None
        except Exception as error:
            self.finish(error)
            handed_over(error, self.outcome)
            raise
        except BaseException as error:  # TerminationSignal: cancelled, or the process is being stopped
            status = stopped_as()
            self.interrupted(status, write=status == RunStatus.CANCELLED)
            handed_over(error, self.outcome)
            raise
        else:
            self.finish()
        finally:
            if publish:
                publish(self.outcome, self.logger)
            self.close()

    def close(self) -> None:
        if self.audit:
            self.audit.close()


class StepAttempt:
    """An attempt in progress: its statements as they finish, then its result."""

    def __init__(self, recorder: RunRecorder, step: str, attempt_id: int | None) -> None:
        self._recorder = recorder
        self._step = step
        self._attempt_id = attempt_id
        self._committed: set[str] = set()

    def views_committed(self, result: StepResult) -> None:
        """A group of a step's views refreshed in its own session (parallel_views) committed: published now."""
        self._published(result.row_counts, result.changes)

    def statement_finished(self, result: StatementResult) -> None:
        if self._recorder.audit:
            self._recorder.audit.statement_finished(self._attempt_id, result)

    def completed(self, result: StepResult) -> None:
        recorder = self._recorder
        recorder.outcome = recorder.outcome.with_step(
            self._step,
            status=StepStatus.COMPLETED,
            attempts=recorder.outcome.step_outcome(self._step).attempts or 1,
            statements=len(result.statements),
            seconds=result.seconds,
            rows=result.rows,
            checks=result.checks,
            changes=result.changes,
            row_count_seconds=result.row_count_seconds,
        )
        audit, run_id = recorder.audit, recorder.outcome.flow_run_id
        if audit:
            audit.checks_finished(run_id, self._attempt_id, self._step, result.checks)
            audit.attempt_finished(
                self._attempt_id, StepStatus.COMPLETED, statements=len(result.statements), rows=result.rows
            )
        self._published(result.row_counts, result.changes)

    def _published(self, row_counts: dict[str, int], changes: dict[str, dict[str, int]]) -> None:
        """Objects this attempt committed, on record once each (a view in parallel_views, as it commits)."""
        recorder = self._recorder
        if recorder.outcome.dry_run:
            return  # rolled back at the end: nothing was published
        new = {name: counts for name, counts in changes.items() if name not in self._committed}
        self._committed.update(new)
        published = recorder.outcome.step_outcome(self._step).published
        recorder.outcome = recorder.outcome.with_step(
            self._step, published=[*published, *(name for name in new if name not in published)]
        )
        if recorder.audit and new:
            recorder.audit.objects_refreshed(recorder.outcome.flow_run_id, self._attempt_id, row_counts, new)
