"""A session's limits (Limits), and the run's time limit (the flow parameter run_timeout_seconds, Airflow's dagrun_timeout).

Prefect's own flow timeout cannot stop a statement blocked in libpq, and it races the
run's recording of its end. This limit is PostgreSQL's instead: every session of the
run opens with statement_timeout and lock_timeout no longer than the time left, and
every statement sent on one of its cursors lowers them again to the time left. A
statement still running at the limit is cancelled by the server, its transaction rolls
back, and the step fails as any failed step does: told, on record, nothing of it
published, the steps after it never started. A session the run would open past the
limit is refused before it connects.

The run's own bookkeeping (the audit trail, the overlap lock's session, upkeep of
a step already committed) is not bound by it: recording and telling a timeout must
not time out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from hospitaldb.engine.db.errors import FailedStatement, StepError

RUN_TIMEOUT_PARAMETER = "run_timeout_seconds"


@dataclass(frozen=True)
class RunDeadline:
    """When the run must be over: seconds after it started, as time.monotonic() reads it."""

    seconds: float
    at: float

    @classmethod
    def starting_now(cls, seconds: float) -> RunDeadline | None:
        """The deadline of a run that starts now (None: no limit, seconds == 0)."""
        return cls(seconds, time.monotonic() + seconds) if seconds else None

    def left(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0

    def cap(self, seconds: float) -> float:
        """A timeout (0: none) no longer than the time left; at least 1 ms, since 0 would mean none."""
        left = max(self.left(), 0.001)
        return min(seconds, left) if seconds else left

    def refuse_if_passed(self) -> None:
        if self.passed():
            raise RunTimeLimitReached(self.seconds)


class RunTimeLimitReached(StepError):
    """The run's time limit ended it; what was running rolled back, nothing after it ran.

    Raised without a step where it happens (a cursor, a session being opened); the step's
    error boundary (engine.errors.as_step_error) names the step and the statement.
    """

    def __init__(
        self, limit_seconds: float, step: str | None = None, statement: FailedStatement | None = None
    ):
        self.limit_seconds = limit_seconds
        super().__init__(
            step or "",
            f"the run's time limit was reached ({RUN_TIMEOUT_PARAMETER}={limit_seconds:g})",
            statement=statement,
        )

    def _text(self) -> str:
        if self.step:
            return super()._text()
        return (
            f"The run's time limit was reached ({RUN_TIMEOUT_PARAMETER}={self.limit_seconds:g}) "
            "before its first step: nothing was refreshed."
        )


def _milliseconds(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


class DeadlineCursor(psycopg2.extensions.cursor):
    """A cursor that gives each statement no more than the run's time left.

    Its connection carries the deadline and the run's own limits (DatabaseTarget.connect).
    """

    def execute(self, query: Any, vars: Any = None) -> None:
        connection = self.connection
        deadline: RunDeadline = connection.deadline
        deadline.refuse_if_passed()
        super().execute(
            "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
            (
                _milliseconds(deadline.cap(connection.statement_timeout_seconds)),
                _milliseconds(deadline.cap(connection.lock_timeout_seconds)),
            ),
        )
        try:
            super().execute(query, vars)
        except psycopg2.errors.QueryCanceled:
            if deadline.passed():
                raise RunTimeLimitReached(deadline.seconds) from None
            raise


class DeadlineConnection(psycopg2.extensions.connection):
    """A session of a run with a time limit: its cursors are DeadlineCursors."""

    deadline: RunDeadline
    statement_timeout_seconds: float = 0
    lock_timeout_seconds: float = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_factory = DeadlineCursor


@dataclass(frozen=True)
class Limits:
    """A session's statement_timeout and lock_timeout, in seconds (0 means none), the
    parallel workers one of its queries may use (None: the server's max_parallel_workers_per_gather),
    and the run's time limit (engine.db.deadline), which lowers both timeouts as it nears."""

    statement_timeout_seconds: float = 0
    lock_timeout_seconds: float = 0
    parallel_workers: int | None = None
    deadline: RunDeadline | None = None

    def at_most(self, seconds: float) -> Limits:
        """The same limits, no timeout longer than seconds, and no run deadline: for bookkeeping
        that must never stall a run, and must record and tell a run that reached its time limit."""
        return replace(
            self,
            statement_timeout_seconds=min(self.statement_timeout_seconds or seconds, seconds),
            lock_timeout_seconds=min(self.lock_timeout_seconds or seconds, seconds),
            deadline=None,
        )

    def now(self) -> Limits:
        """The limits of a session opened now: timeouts no longer than the run's time left.

        Raises RunTimeLimitReached once the run's time is up: no new session starts past it.
        """
        if self.deadline is None:
            return self
        self.deadline.refuse_if_passed()
        return replace(
            self,
            statement_timeout_seconds=self.deadline.cap(self.statement_timeout_seconds),
            lock_timeout_seconds=self.deadline.cap(self.lock_timeout_seconds),
        )


NO_LIMITS = Limits()
