"""The errors that end a run.

Our errors (RefreshError) are safe by construction: their code decides their text
(names, counts, file:line, allowlisted messages: engine.db.allowlist) and how the run
ends because of them (their RunStatus). Any other error is shown through the
allowlist. The record makes either a Failure once, where it happened
(hospitaldb.record.outcome.failure_of), and every reporter reads that value.

The original driver exception is never chained (`from None`): Prefect would print
it, DETAIL included, in the run's traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Protocol

import psycopg2

from hospitaldb.engine.db.allowlist import report
from hospitaldb.engine.db.transient import is_transient
from hospitaldb.statuses import RunStatus


class FailedStatement(Protocol):
    """What an error may show of the statement it failed at (an engine.sql.script.Statement, which
    reports its own errors through this module): its text, its file:line and its first line."""

    @property
    def text(self) -> str: ...

    @property
    def location(self) -> str: ...

    @property
    def summary(self) -> str: ...


# What to do, where a SQLSTATE says it: our words, never the server's.
HINTS = {
    # wrong_object_type: e.g. "cannot change materialized view" after an upgrade whose SQL maintains a table
    "42809": (
        " The step's SQL and the database disagree on what an object is (a table written where the "
        "database still holds a materialized view): apply the migration of the version installed "
        "(CHANGELOG.md, its upgrade steps), then run again."
    ),
}


class RefreshError(Exception):
    """An error that ends a run; its message is safe to show anywhere (no secret, no row value).

    `status` is how the run ends because of it, and `step` where, decided by the code that raises it.
    """

    status: ClassVar[RunStatus] = RunStatus.FAILED
    sqlstate: str | None = None
    step: str | None = None


class DatabaseError(RefreshError):
    """A database error outside any step, as far as it may be shown (hospitaldb.engine.db.allowlist)."""

    def __init__(self, error: BaseException) -> None:
        visible = report(error)
        self.sqlstate = visible.sqlstate
        super().__init__(visible.text + (f" [SQLSTATE {visible.sqlstate}]" if visible.sqlstate else ""))


class StepError(RefreshError):
    """A refresh step failed; its transaction was rolled back, the previous data stands."""

    def __init__(
        self,
        step: str,
        message: str,
        *,
        statement: FailedStatement | None = None,
        sqlstate: str | None = None,
        transient: bool = False,
        published: list[str] | None = None,
    ) -> None:
        self.step, self.message, self.statement = step, message, statement
        self.sqlstate = sqlstate
        self.transient = transient
        self.published = published or []  # views that committed before the failure (parallel_views)
        super().__init__(self._text())

    def _text(self) -> str:
        where = f" at {self.statement.location} ({self.statement.summary})" if self.statement else ""
        code = f" [SQLSTATE {self.sqlstate}]" if self.sqlstate else ""
        kind = "transient error, will retry if attempts remain" if self.transient else "not retried"
        kept = "every table keeps its previous data"
        if self.published:
            kept = (
                "what had not committed keeps its previous data; committed before the failure, "
                f"each after its own checks: {', '.join(self.published)}"
            )
        hint = HINTS.get(self.sqlstate or "", "")
        return f"{self.step} failed{where}: {self.message}{code}. Rolled back: {kept} ({kind}).{hint}"

    def after(self, published: list[str]) -> StepError:
        """The same failure (same class, same status), saying which views had committed before it."""
        again = type(self).__new__(type(self))
        again.__dict__.update(self.__dict__)
        again.published = list(published)
        again.args = (again._text(),)
        return again

    def at(self, step: str, statement: FailedStatement | None) -> StepError:
        """The same failure, raised where no step was known, now naming its step and statement."""
        again = type(self).__new__(type(self))
        again.__dict__.update(self.__dict__)
        again.step, again.statement = step, statement or self.statement
        again.args = (again._text(),)
        return again

    @classmethod
    def from_database_error(
        cls, step: str, error: BaseException, statement: FailedStatement | None
    ) -> StepError:
        visible = report(error, statement.text if statement else None)
        return cls(
            step, visible.text, statement=statement, sqlstate=visible.sqlstate, transient=is_transient(error)
        )


@contextmanager
def as_step_error(step: str, statement: FailedStatement | None = None) -> Iterator[None]:
    """Raise any database error inside the block as the StepError of step (at statement).

    `from None`: the driver's exception, with its DETAIL, must not ride along in the traceback.
    A StepError raised where no step was known (the run's time limit) gets its step here.
    """
    try:
        yield
    except psycopg2.Error as error:
        raise StepError.from_database_error(step, error, statement) from None
    except StepError as error:
        if error.step:
            raise
        raise error.at(step, statement) from None
