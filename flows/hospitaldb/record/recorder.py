"""The record of one run, kept as it happens: one object owns its outcome, audit trail and artifacts.

The flow opens a RunRecorder at its start; the tasks report each attempt to it; on
the way out it records how the run ended in etl_audit and publishes the two
artifacts. The state hooks find it by run id: in the run's own process they get
the same object, in a worker's process (after the run's process is gone) the
record read back from etl_audit. A cancel or a crash goes through one path,
`interrupted`, whoever notes it first (the flow or a hook), with the same text.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg2

from hospitaldb.engine.checks import CheckFailed, CheckResult
from hospitaldb.engine.database import NO_LIMITS, DatabaseTarget, Limits
from hospitaldb.engine.errors import DatabaseError, RefreshError, RunStatus, StepError, shown
from hospitaldb.engine.source_checks import SOURCE_CHECKS, SourceProblem
from hospitaldb.record.artifacts import publish_run_artifacts
from hospitaldb.record.audit import AuditLog
from hospitaldb.record.audit_history import previous_finished_run
from hospitaldb.record.outcome import RunOutcome, SourcesOutcome, StepOutcome, StepStatus, interruption_text

if TYPE_CHECKING:
    from hospitaldb.engine.lineage import Lineage
    from hospitaldb.engine.source_checks import SourceState
    from hospitaldb.engine.sql_runner import StatementResult, StepResult
    from hospitaldb.engine.upkeep import Upkeep

KEPT_RUNS = 32  # a process that runs many flows (tests, a benchmark) keeps only the latest records


class RunRecorder:
    """What one run did, recorded once: in memory for this process, in etl_audit for everyone."""

    _by_run: ClassVar[OrderedDict[str, RunRecorder]] = OrderedDict()

    def __init__(self, outcome: RunOutcome, logger: logging.Logger | logging.LoggerAdapter) -> None:
        self.outcome = outcome
        self.logger = logger
        self.target: DatabaseTarget | None = None
        self.limits: Limits = NO_LIMITS
        self.audit: AuditLog | None = None
        self._attempts: dict[str, int] = {}
        if outcome.flow_run_id:
            self._by_run[outcome.flow_run_id] = self
            while len(self._by_run) > KEPT_RUNS:
                self._by_run.popitem(last=False)

    # --- Finding the record -----------------------------------------------------------------

    @classmethod
    def for_this_run(cls, *, dry_run: bool = False) -> RunRecorder:
        """The recorder of the flow run in progress (inside a flow)."""
        from prefect import get_run_logger, runtime

        run_id = runtime.flow_run.id
        outcome = RunOutcome(
            flow_name=runtime.flow_run.flow_name,
            flow_run_id=str(run_id) if run_id else None,
            flow_run_name=runtime.flow_run.name,
            deployment=runtime.deployment.name,
            dry_run=dry_run,
        )
        return cls(outcome, get_run_logger())

    @classmethod
    def of_run_id(cls, flow_run_id: Any) -> RunRecorder | None:
        """The record this process kept of a run, if it ran here."""
        return cls._by_run.get(str(flow_run_id))

    # --- The run, as it happens --------------------------------------------------------------

    def use_database(self, target: DatabaseTarget, limits: Limits) -> DatabaseTarget:
        """The run's database, resolved once, and the limits every session of the run keeps to."""
        self.target, self.limits = target, limits
        self.outcome.database = target.describe()
        self.audit = AuditLog(target, self.logger, limits, writes=not self.outcome.dry_run)
        return target

    def start(self, selected: list[str]) -> list[str]:
        self.outcome.steps = [StepOutcome(step) for step in selected]
        if self.audit:
            self.audit.run_started(self.outcome)
        return selected

    def planned(self, lineage: Lineage) -> None:
        """What the selected steps refresh and read: what a failure would hold back."""
        self.outcome.lineage = lineage
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
        self.outcome.sources = SourcesOutcome(enforced, len(states), problems, seconds)
        if self.audit:
            self.audit.sources_read(self.outcome.flow_run_id, states)
            if enforced:
                self.audit.checks_finished(self.outcome.flow_run_id, None, SOURCE_CHECKS, results)

    @contextmanager
    def step_attempt(self, step: str, number: int) -> Iterator[StepAttempt]:
        """One attempt of a step, on record even when it fails and rolls back."""
        self._attempts[step] = number
        outcome = self.outcome.step_outcome(step)
        outcome.status, outcome.attempts = StepStatus.RUNNING, number
        attempt_id = (
            self.audit.attempt_started(self.outcome.flow_run_id, step, number) if self.audit else None
        )
        attempt = StepAttempt(self, outcome, attempt_id)
        try:
            yield attempt
        except Exception as error:
            outcome.status = StepStatus.FAILED
            if isinstance(error, CheckFailed):
                outcome.checks = error.results
                if self.audit:
                    self.audit.checks_finished(self.outcome.flow_run_id, attempt_id, step, error.results)
            if self.audit:
                failure = shown(error)
                self.audit.attempt_finished(
                    attempt_id, StepStatus.FAILED, sqlstate=failure.sqlstate, error=failure.text
                )
            raise
        # A BaseException (cancel, SIGTERM) leaves the attempt 'running': `interrupted` records it.

    def kept_up(self, step: str, upkeep: list[Upkeep]) -> None:
        """What upkeep did after the step committed: on the step's record and each object's."""
        self.outcome.step_outcome(step).upkeep = upkeep
        if self.audit:
            self.audit.objects_kept_up(self.outcome.flow_run_id, upkeep)

    def step_dry_run(self, result: StepResult) -> None:
        """A step of a dry run: what it would have done (nothing is recorded in etl_audit)."""
        StepAttempt(self, self.outcome.step_outcome(result.step), None).completed(result)

    # --- How it ended ------------------------------------------------------------------------

    def finish(self, error: BaseException | None = None) -> None:
        """Completed, or ended by error: the status its raiser gave it, where, after how many attempts."""
        outcome = self.outcome
        if error is None:
            outcome.status = RunStatus.COMPLETED
            if self.audit and not outcome.dry_run:  # for the "recovered" notice; a dry run recovers nothing
                outcome.previous = previous_finished_run(self.audit, outcome.flow_run_id)
        else:
            outcome.status = error.status if isinstance(error, RefreshError) else RunStatus.FAILED
            outcome.step = error.step if isinstance(error, StepError) else None
            outcome.attempts = self._attempts.get(outcome.step) if outcome.step else None
            failure = shown(error)
            outcome.error, outcome.sqlstate = failure.text, failure.sqlstate
        outcome.finished_at = datetime.now(UTC)
        if self.audit:
            self.audit.run_finished(outcome)

    def interrupted(self, status: RunStatus, *, write: bool = True) -> None:
        """Cancelled or crashed, at the step in progress; written once, whoever comes first."""
        outcome = self.outcome
        if outcome.status not in (RunStatus.CANCELLED, RunStatus.CRASHED):
            step = outcome.step_in_progress
            outcome.status, outcome.step = status, step
            outcome.attempts = outcome.step_outcome(step).attempts if step else None
            outcome.error = interruption_text(
                status, step, outcome.step_outcome(step).published if step else None
            )
            outcome.finished_at = datetime.now(UTC)
            if step:
                outcome.step_outcome(step).status = StepStatus(status.value)
        if write and self.audit:
            self.audit.run_interrupted(outcome)

    @contextmanager
    def recording(self, artifacts: bool = True) -> Iterator[RunRecorder]:
        """Around the flow's body: record how it ends, publish the artifacts, close the audit session.

        A crash is only noted here: its hook alerts first, then writes it (a crash leaves
        30 s before SIGKILL; the alert must not wait for the database). A cancel is
        written at once, for the worker's hook, which reads it from etl_audit.
        """
        try:
            yield self
        except psycopg2.Error as error:  # outside any step (a bug if it happens): never with its DETAIL
            self.finish(error)
            raise DatabaseError(error) from None
        except Exception as error:
            self.finish(error)
            raise
        except BaseException:  # TerminationSignal: cancelled, or the process is being stopped
            cancelled = _termination_intent() == "cancel"
            self.interrupted(RunStatus.CANCELLED if cancelled else RunStatus.CRASHED, write=cancelled)
            raise
        else:
            self.finish()
        finally:
            if artifacts:
                publish_run_artifacts(self.outcome, self.logger)
            if self.audit:
                self.audit.close()

    def close(self) -> None:
        if self.audit:
            self.audit.close()


class StepAttempt:
    """An attempt in progress: its statements as they finish, then its result."""

    def __init__(self, recorder: RunRecorder, outcome: StepOutcome, attempt_id: int | None) -> None:
        self._recorder = recorder
        self._outcome = outcome
        self._attempt_id = attempt_id
        self._committed: set[str] = set()

    def views_committed(self, result: StepResult) -> None:
        """A group of a step's views refreshed in its own session (parallel_views) committed: published now."""
        self._published(result.row_counts, result.changes)

    def statement_finished(self, result: StatementResult) -> None:
        if self._recorder.audit:
            self._recorder.audit.statement_finished(self._attempt_id, result)

    def completed(self, result: StepResult) -> None:
        outcome = self._outcome
        outcome.status = StepStatus.COMPLETED
        outcome.attempts = outcome.attempts or 1
        outcome.statements, outcome.seconds, outcome.rows = (
            len(result.statements),
            result.seconds,
            result.rows,
        )
        outcome.checks, outcome.changes = result.checks, result.changes
        outcome.row_count_seconds = result.row_count_seconds
        audit, run_id = self._recorder.audit, self._recorder.outcome.flow_run_id
        if audit:
            audit.checks_finished(run_id, self._attempt_id, outcome.step, result.checks)
            audit.attempt_finished(
                self._attempt_id, StepStatus.COMPLETED, statements=outcome.statements, rows=outcome.rows
            )
        self._published(result.row_counts, result.changes)

    def _published(self, row_counts: dict[str, int], changes: dict[str, dict[str, int]]) -> None:
        """Objects this attempt committed, on record once each (a view in parallel_views, as it commits)."""
        if self._recorder.outcome.dry_run:
            return  # rolled back at the end: nothing was published
        new = {name: counts for name, counts in changes.items() if name not in self._committed}
        self._committed.update(new)
        self._outcome.published.extend(name for name in new if name not in self._outcome.published)
        audit, run_id = self._recorder.audit, self._recorder.outcome.flow_run_id
        if audit and new:
            audit.objects_refreshed(run_id, self._attempt_id, row_counts, new)


def _termination_intent() -> str | None:
    """'cancel' when the worker stopped this run because it was cancelled (Prefect 3.9's control channel)."""
    try:
        from prefect._internal.control_listener import get_intent
    except ImportError:  # another Prefect version: treat the signal as a crash
        return None
    return get_intent()
