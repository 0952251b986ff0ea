"""A step's view groups (engine.run.view_groups) refreshed in several sessions: the flow's parallel_views.

Groups run side by side, in up to parallel_views sessions; each starts once every view
its views read has committed, and commits on its own once its checks pass. Each group
is atomic and checked before it publishes; the step as a whole is not: when one group
fails, the groups that committed before keep their new data, the rest (and every step
after) keep their previous data, and the failure says which.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import psycopg2
import psycopg2.extensions

from hospitaldb.engine.checks.step import CheckFailed, CheckResult
from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.errors import StepError
from hospitaldb.engine.run.plans import StepPlan, ViewGroup
from hospitaldb.engine.run.runner import StepResult, run_step_transaction
from hospitaldb.engine.run.statements import StatementResult

GroupCommitted = Callable[[StepResult], None]


def refresh_views_in_parallel(
    target: DatabaseTarget,
    plan: StepPlan,
    limits: Limits,
    *,
    logger: logging.Logger | logging.LoggerAdapter,
    on_statement: Callable[[StatementResult], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    on_group_committed: GroupCommitted | None = None,
) -> StepResult:
    """Refresh the plan's view groups (with_parallel_views) in its sessions, each committing on its own.

    The first failure stops the rest: no group starts after it, and groups still running
    are cancelled (they roll back). It is raised as the step's error, naming the views
    that committed before it; a failed check comes with every check result so far.
    Callbacks are called one at a time.
    """
    run = _ParallelRun(target, limits, logger, on_statement, before_commit, on_group_committed)
    started = time.perf_counter()
    pending = list(plan.groups)
    running: dict[concurrent.futures.Future, ViewGroup] = {}
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=plan.sessions, thread_name_prefix="views")
    try:
        while pending or running:
            for group in run.ready(pending)[: plan.sessions - len(running)]:
                pending.remove(group)
                running[executor.submit(run.refresh, group)] = group
            if not running:
                if run.failure is None:  # cannot happen: groups wait only for groups before them
                    raise RuntimeError(f"view groups that can never start: {[g.name for g in pending]}")
                break  # the failure left groups that can no longer start
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                future.result()  # refresh() keeps a group's failure; anything else is a bug to raise
    except BaseException:
        run.stop()  # cancelled or stopped: no session may go on refreshing without the run
        raise
    finally:
        executor.shutdown(wait=True)
    if run.failure is not None:
        raise run.failure_for(plan.step)
    results = [run.committed[group.name] for group in plan.groups]
    return StepResult(
        step=plan.step,
        seconds=round(time.perf_counter() - started, 3),
        statements=sorted(
            (statement for result in results for statement in result.statements), key=lambda s: s.number
        ),
        checks=_distinct_checks(results),
        row_counts={name: rows for result in results for name, rows in result.row_counts.items()},
        row_count_seconds=round(sum(result.row_count_seconds for result in results), 3),
        changes={name: counts for result in results for name, counts in result.changes.items()},
    )


class _ParallelRun:
    """What the sessions share: what committed, the first failure, the open connections."""

    def __init__(
        self,
        target: DatabaseTarget,
        limits: Limits,
        logger: logging.Logger | logging.LoggerAdapter,
        on_statement: Callable[[StatementResult], None] | None,
        before_commit: Callable[[], None] | None,
        on_group_committed: GroupCommitted | None,
    ) -> None:
        self.target, self.limits, self.logger = target, limits, logger
        self._on_statement = on_statement
        self._before_commit = before_commit
        self._on_group_committed = on_group_committed
        self.committed: dict[str, StepResult] = {}  # group name -> what it did
        self._views_committed: set[str] = set()
        self.failure: BaseException | None = None
        self._failed: str | None = None
        self._connections: dict[str, psycopg2.extensions.connection] = {}
        # One at a time: callbacks (the recorder, the lock's session are shared) and the state here.
        self._lock = threading.RLock()

    def refresh(self, group: ViewGroup) -> None:
        try:
            result = run_step_transaction(
                self.target,
                group.plan,
                self.limits,
                logger=self.logger,
                on_statement=self._serialized(self._on_statement),
                before_commit=lambda: self._verify_before_commit(group.plan.step),
                on_connection=lambda connection: self._opened(group.name, connection),
            )
        except BaseException as error:
            with self._lock:
                if self.failure is None:
                    self.failure, self._failed = error, group.name
                    self.logger.error("%s failed: the view groups not yet committed stop", group.name)
                    self._cancel_others(group.name)
            return
        finally:
            with self._lock:
                self._connections.pop(group.name, None)
        with self._lock:
            self.committed[group.name] = result
            self._views_committed.update(group.views)
            if self._on_group_committed:
                self._on_group_committed(result)

    def ready(self, pending: list[ViewGroup]) -> list[ViewGroup]:
        """The pending groups whose every upstream view committed, in file order; none after a failure."""
        with self._lock:
            if self.failure is not None:
                return []
            return [group for group in pending if group.waits_for <= self._views_committed]

    def stop(self) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = RuntimeError("stopped")
            self._cancel_others(None)

    def failure_for(self, step: str) -> BaseException:
        """The first failure, as the step's error, naming the views that committed before it.

        A failed check comes with every check result of the step so far.
        """
        failure = self.failure
        published = sorted(self._views_committed)
        if isinstance(failure, CheckFailed):
            failure = CheckFailed(step, _distinct_checks([*self.committed.values(), failure.results]))
        if isinstance(failure, StepError):
            return failure.after(published) if published else failure
        if isinstance(failure, Exception):
            return StepError(step, f"{self._failed} failed: {type(failure).__name__}", published=published)
        return failure

    def _verify_before_commit(self, step: str) -> None:
        with self._lock:
            if self.failure is not None:
                raise StepError(step, "stopped: another view group of the step failed")
            if self._before_commit:
                self._before_commit()

    def _opened(self, name: str, connection: psycopg2.extensions.connection) -> None:
        with self._lock:
            self._connections[name] = connection

    def _cancel_others(self, failed: str | None) -> None:
        for name, connection in self._connections.items():
            if name != failed:
                try:
                    connection.cancel()
                except psycopg2.Error:
                    pass  # its session is gone already: nothing left to stop

    def _serialized(self, callback: Callable[[StatementResult], None] | None) -> Callable | None:
        if callback is None:
            return None

        def call(result: StatementResult) -> None:
            with self._lock:
                callback(result)

        return call


def _distinct_checks(results: Iterable[StepResult | list[CheckResult]]) -> list[CheckResult]:
    """Each check once: one that every session runs (the shrink guard) sums its violations."""
    merged: dict[tuple[str, str], CheckResult] = {}
    for result in results:
        for check in result.checks if isinstance(result, StepResult) else result:
            key = (check.name, check.source)
            if key in merged:
                check = replace(
                    check,
                    violating_rows=merged[key].violating_rows + check.violating_rows,
                    seconds=round(merged[key].seconds + check.seconds, 3),
                )
            merged[key] = check
    return list(merged.values())
