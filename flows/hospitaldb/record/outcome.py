"""What a run did, as one typed value: how it ended, where, after how many attempts, and why.

The recorder (hospitaldb.record.recorder) makes a new RunOutcome as each thing happens and
writes it to etl_audit; an error becomes a Failure here, once (`failure_of`). When the run
ends, the outcome leaves the flow with its final state (hospitaldb.record.handover): the hooks
and the command line read it there, or, in another process, from etl_audit by run id. The alert, both artifacts and the local
summary are functions of it. No reporter decides a status from an error's words or a
task's name.

Everything here is safe to show: object, step and check names, counts, SQLSTATEs,
file:line, and error texts that passed hospitaldb.engine.db.allowlist. Never a value
from a patient's row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from hospitaldb.engine.checks.source import SOURCE_CHECKS, SourceProblem
from hospitaldb.engine.checks.step import CheckResult
from hospitaldb.engine.db.allowlist import report
from hospitaldb.engine.db.errors import RefreshError
from hospitaldb.engine.run.upkeep import Upkeep
from hospitaldb.engine.sql.lineage import Lineage
from hospitaldb.statuses import RunStatus, StepStatus

REFRESH_FLOW = "hospitaldb-refresh"


@dataclass(frozen=True)
class Failure:
    """How something ended badly, as it may be shown in any log, alert, artifact or audit row."""

    status: RunStatus
    text: str
    sqlstate: str | None = None
    step: str | None = None  # a step, check_sources, or None: before the first step


def failure_of(error: BaseException) -> Failure:
    """Any error, once, where it happened: ours as raised (safe by construction), others through the allowlist."""
    if isinstance(error, RefreshError):
        return Failure(error.status, str(error), error.sqlstate, error.step)
    visible = report(error)
    return Failure(RunStatus.FAILED, visible.text, visible.sqlstate)


@dataclass(frozen=True)
class SourcesOutcome:
    enforced: bool
    sources: int = 0
    problems: list[SourceProblem] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class StepOutcome:
    step: str
    status: StepStatus = StepStatus.NOT_RUN
    attempts: int = 0
    statements: int | None = None
    seconds: float | None = None
    rows: int | None = None
    checks: list[CheckResult] = field(default_factory=list)
    changes: dict[str, dict[str, int]] = field(default_factory=dict)  # object -> inserted/updated/deleted
    row_count_seconds: float | None = None  # the shrink guard's counting, part of what the checks cost
    upkeep: list[Upkeep] = field(default_factory=list)  # what was analysed or vacuumed after it committed
    published: list[str] = field(default_factory=list)  # objects committed: all, or (parallel_views) some
    failure: Failure | None = None  # why its last attempt failed, decided once, as that attempt ended
    task_run_id: str | None = None  # its last attempt's Prefect task run (hospitaldb.report.healing)
    mode: str | None = None  # full or incremental (hospitaldb.engine.changes.modes)
    mode_reason: str | None = None
    changed_keys: int | None = None  # keys an incremental form recomputed
    drift_checked: bool = False  # a full run that ran the incremental form first, to look for drift
    drift: dict[str, dict[str, int]] = field(default_factory=dict)  # what full changed after incremental

    def to_dict(self) -> dict[str, Any]:
        """The step as the flow returns it."""
        return {
            "step": self.step,
            "status": self.status.value,
            "attempts": self.attempts,
            "statements": self.statements,
            "seconds": self.seconds,
            "rows": self.rows,
            "checks": [{**asdict(check), "outcome": check.outcome} for check in self.checks],
            "changes": self.changes,
            "row_count_seconds": self.row_count_seconds,
            "upkeep": [asdict(item) for item in self.upkeep],
            "published": self.published,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "changed_keys": self.changed_keys,
            "drift_checked": self.drift_checked,
            "drift": self.drift,
        }


@dataclass(frozen=True)
class PreviousRun:
    """The run of the same database that finished last before this one, as etl_audit has it."""

    name: str
    status: RunStatus
    finished_at: datetime | None


@dataclass(frozen=True)
class HeldBack:
    """An object that keeps its previous data because the run did not publish it, and why."""

    object_name: str
    step: str
    reason: str
    upstream: str | None = None  # the held-back object it reads, when that is why


@dataclass(frozen=True)
class Notice:
    """The alert or recovery notice a run's end was told with, and which channels took it (maybe none)."""

    kind: str  # 'alert' (failed, refused, cancelled, crashed) or 'recovery'
    channels: tuple[str, ...]  # where it arrived; () when every channel failed
    sent_by: str = "run"  # 'run': its own process, as it ended; 'hook': a state hook, after it


@dataclass(frozen=True)
class RunOutcome:
    """One run of a flow: made anew as things happen, persisted in etl_audit, read by every reporter."""

    flow_name: str
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    deployment: str | None = None
    database: str | None = None  # DatabaseTarget.describe(): never a password
    dry_run: bool = False
    steps: list[StepOutcome] = field(default_factory=list)
    status: RunStatus = RunStatus.RUNNING
    step: str | None = None  # where it ended, when not completed: a step, check_sources, or None (before)
    attempts: int | None = None
    error: str | None = None
    sqlstate: str | None = None
    sources: SourcesOutcome | None = None
    finished_at: datetime | None = None
    previous: PreviousRun | None = None  # read when a run completes: did it recover from a failure?
    lineage: Lineage | None = None  # what the selected steps refresh and read, from their SQL
    notice: Notice | None = None  # told, once: by the run, else by a hook
    source_checks: StepOutcome | None = None  # their last attempt, as a step's: its status and task run

    def step_outcome(self, step: str) -> StepOutcome:
        return next(outcome for outcome in self.steps if outcome.step == step)

    @property
    def tasks(self) -> list[StepOutcome]:
        """Each task of the run as its last attempt ended: the source checks (if they ran), then the steps."""
        return [*([self.source_checks] if self.source_checks else []), *self.steps]

    def with_step(self, step: str, **changes: Any) -> RunOutcome:
        """The same run, with one step's outcome (or the source checks') changed."""
        if step == SOURCE_CHECKS:
            return replace(self, source_checks=replace(self.source_checks or StepOutcome(step), **changes))
        steps = [replace(outcome, **changes) if outcome.step == step else outcome for outcome in self.steps]
        return replace(self, steps=steps)

    def ended(self, failure: Failure, attempts: int | None, finished_at: datetime) -> RunOutcome:
        """The run, ended by failure: its status, where, after how many attempts, and why."""
        return replace(
            self,
            status=failure.status,
            step=failure.step,
            attempts=attempts,
            error=failure.text,
            sqlstate=failure.sqlstate,
            finished_at=finished_at,
        )

    def interrupted(self, status: RunStatus, finished_at: datetime) -> RunOutcome:
        """The run, cancelled or crashed at the step in progress (rolled back but for what it committed)."""
        step = self.step_in_progress
        outcome = replace(
            self,
            status=status,
            step=step,
            attempts=self.step_outcome(step).attempts if step else None,
            error=interruption_text(status, step, self.step_outcome(step).published if step else None),
            finished_at=finished_at,
        )
        if self.source_checks and self.source_checks.status == StepStatus.RUNNING:
            outcome = outcome.with_step(SOURCE_CHECKS, status=StepStatus(status.value))
        return outcome.with_step(step, status=StepStatus(status.value)) if step else outcome

    @property
    def what(self) -> str:
        """What ran, for a title: 'Refresh', or another flow's name."""
        return "Refresh" if self.flow_name == REFRESH_FLOW else self.flow_name

    @property
    def step_in_progress(self) -> str | None:
        running = [outcome.step for outcome in self.steps if outcome.status == StepStatus.RUNNING]
        return running[0] if running else None

    @property
    def failed_checks(self) -> list[CheckResult]:
        if self.status == RunStatus.SOURCES_REFUSED or self.step not in {s.step for s in self.steps}:
            return []  # the source checks' own, or before the first step
        return [check for check in self.step_outcome(self.step).checks if check.outcome == "failed"]

    @property
    def where(self) -> str:
        """' at STEP', or ' before the first step' for a refresh that ended before one; else ''."""
        if self.step:
            return f" at {self.step}"
        ended_early = self.steps and self.status not in (RunStatus.RUNNING, RunStatus.COMPLETED)
        return " before the first step" if ended_early else ""

    def title(self, what: str, *, shout: bool = False) -> str:
        """'Refresh FAILED at refresh_dashboards: check x failed': what ended how, where, and why in brief."""
        ending = self.status.ending.upper() if shout else self.status.ending
        return f"{what} {ending}{self.where}" + (f": {self.headline}" if self.headline else "")

    @property
    def headline(self) -> str | None:
        """What failed, in a few words, for an alert's subject on a phone's lock screen."""
        if self.status == RunStatus.CHECK_FAILED and self.failed_checks:
            failed = self.failed_checks
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            return f"check {failed[0].name} failed{more}"
        if self.status == RunStatus.SOURCES_REFUSED and self.sources and self.sources.problems:
            return self.sources.problems[0].headline
        return None

    @property
    def cause(self) -> str:
        """How the run ended, as a reason: 'the run failed at STEP: check x failed'."""
        return f"the run {self.title('').strip()}"

    @property
    def held_back(self) -> list[HeldBack]:
        """Every object of the selected steps that keeps its previous data because of how the run ended.

        The objects of the step where it ended and of every step after it, in pipeline order:
        each step is one transaction, so none of them published, except the views that a step
        run with parallel_views committed before it failed. An object that reads another
        held-back object says so; one in a later step that does not is held back only because
        its step did not run.
        """
        if self.dry_run or self.lineage is None or self.status in (RunStatus.RUNNING, RunStatus.COMPLETED):
            return []
        completed = {outcome.step for outcome in self.steps if outcome.status == StepStatus.COMPLETED}
        published = {name for outcome in self.steps for name in outcome.published}
        held: list[HeldBack] = []
        names: set[str] = set()
        for name, step in self.lineage.steps.items():
            if step in completed or name in published:
                continue
            upstream = next(
                (read for read in sorted(self.lineage.reads.get(name, ())) if read in names), None
            )
            if step == self.step or self.step not in self.lineage.steps.values():
                reason = self.cause
            elif upstream:
                reason = f"reads {upstream}, held back"
            else:
                reason = f"{step} did not run: {self.cause}"
            held.append(HeldBack(name, step, reason, upstream))
            names.add(name)
        return held


def interruption_text(status: RunStatus, step: str | None, published: list[str] | None = None) -> str:
    """What a cancelled or crashed run says, whoever records it first: the flow or a hook."""
    how = (
        "cancelled from Prefect (UI, CLI or automation)"
        if status == RunStatus.CANCELLED
        else "crashed: the process was stopped or killed"
    )
    during = f" during {step}, which was rolled back" if step else ""
    if published:
        return (
            f"{how}{during} but for what it had committed ({', '.join(published)}); "
            "every other table keeps its previous data"
        )
    return f"{how}{during}; every table keeps its previous data"
