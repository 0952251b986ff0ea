"""What of a database error may be shown, which errors are worth a retry, and the error a step raises.

No value from a patient's row may leave the database. PostgreSQL puts row values
in the DETAIL of constraint violations, in the primary message of data exceptions
(`invalid input syntax for type integer: "..."`), in the CONTEXT of errors raised in
functions and in whatever a RAISE says. So what an error shows is decided by an
allowlist, never by looking for values:

- always: the SQLSTATE and its condition name, and where it failed (file:line of
  the statement, which is our SQL, not data);
- the primary message (and hint) only for classes whose messages name objects and
  settings, never values: connection, syntax and access rules, missing objects,
  locks, timeouts, deadlocks, resources, operator intervention; and not even those
  when raised inside a function (its SQL may be built from data), unless the
  message is fixed text;
- otherwise the names PostgreSQL reports on its own (schema, table, column,
  constraint), and a note that the message was withheld and where to read it:
  the database server's log, for those allowed to read it;
- never DETAIL or CONTEXT.

The original driver exception is never chained (`from None`): Prefect would print
it, DETAIL included, in the run's traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

import psycopg2
import psycopg2.errorcodes

from hospitaldb.text import safe


class Statement(Protocol):
    """Where a failing statement stands (engine.sql_script.Statement): its file:line and first line."""

    @property
    def location(self) -> str: ...

    @property
    def summary(self) -> str: ...


class RunStatus(StrEnum):
    """How a run ended (etl_audit.refresh_runs.outcome)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # a step (or connecting, or the overlap lock) failed
    CHECK_FAILED = "check_failed"  # refused by a step's data check; the step rolled back
    SOURCES_REFUSED = "sources_refused"  # refused by the source checks; nothing was written
    REFUSED = "refused"  # refused before start: SQL that does not parse or would block readers, bad settings
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    ABANDONED = "abandoned"  # still 'running' when a later run took the lock: its process died unrecorded

    @property
    def audit_status(self) -> str:
        """etl_audit.refresh_runs.status, whose values readers of earlier versions know."""
        return "failed" if self in _REFUSALS else self.value

    @property
    def ending(self) -> str:
        """The word for it in a title: a check's or the source checks' refusal is a failed refresh."""
        return "failed" if self in _REFUSALS and self != RunStatus.REFUSED else self.value

    @property
    def is_failure(self) -> bool:
        """Needs someone's attention: alerted, and followed by a 'recovered' notice."""
        return self in _REFUSALS or self in (RunStatus.FAILED, RunStatus.CRASHED, RunStatus.ABANDONED)


_REFUSALS = frozenset({RunStatus.CHECK_FAILED, RunStatus.SOURCES_REFUSED, RunStatus.REFUSED})


class RefreshError(Exception):
    """An error that ends a run; its message is safe to show anywhere (no secret, no row value).

    `status` is how the run ends because of it, decided by the code that raises it.
    """

    status: ClassVar[RunStatus] = RunStatus.FAILED
    sqlstate: str | None = None


# SQLSTATEs that describe the moment, not the SQL: connection exceptions (08…),
# serialization failure, deadlock, lock timeout, server shutting down or
# starting, too many connections.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})

# Connection failures without a SQLSTATE that a retry may well fix: the server or the
# network is down, restarting or busy for the moment. Anything else (a disabled login, a
# wrong password, "SSL required", a certificate, a pooler's "unsupported startup parameter")
# fails at once, with libpq's message: retrying it only delays the alert.
TRANSIENT_CONNECT_MESSAGES = (
    "connection refused",
    "connection reset",
    "connection timed out",
    "timeout expired",
    "server closed the connection unexpectedly",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many connections",
    "remaining connection slots are reserved",
    "could not receive data from server",
    "could not send data to server",
    "no route to host",
    "network is unreachable",
    "temporary failure in name resolution",
    "no such file or directory",  # a Unix socket that is gone while the server restarts
    "ssl syscall error: eof detected",
)

# Classes whose messages name objects and settings, never row values (PostgreSQL's
# appendix A): connection exception, feature not supported, invalid transaction state,
# invalid authorization, invalid catalog or schema name, transaction rollback, syntax error
# or access rule violation, insufficient resources, program limit exceeded, object not in
# prerequisite state, operator intervention, system error. Not 21, 22, 23 (they quote the
# row or the value), P0 (RAISE says anything), XX and the rest.
MESSAGE_SAFE_CLASSES = frozenset(
    {"08", "0A", "25", "28", "3D", "3F", "40", "42", "53", "54", "55", "57", "58"}
)
# Fixed texts, safe even when raised inside a function (timeouts, locks, deadlocks, shutdowns).
FIXED_MESSAGE_SQLSTATES = frozenset(
    {"57014", "55P03", "40001", "40P01", "57P01", "57P02", "57P03", "53300", "53200", "25P02"}
)
MESSAGE_LENGTH = 500
WITHHELD = (
    "PostgreSQL's message was withheld: it can hold values from a row. The database's log has it, "
    "for those allowed to read it"
)


@dataclass(frozen=True)
class ErrorReport:
    """What of a database error may be shown: safe in any log, alert, artifact or audit row."""

    text: str
    sqlstate: str | None = None


def report(error: BaseException) -> ErrorReport:
    """The allowlisted part of a database error (see the module's docstring)."""
    if not isinstance(error, psycopg2.Error):
        return ErrorReport(safe(f"{type(error).__name__}: {error}", MESSAGE_LENGTH))
    code = error.pgcode
    if code is None:
        # No SQLSTATE: libpq's own words about the connection, which hold no row data.
        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return ErrorReport(safe(str(error) or type(error).__name__, MESSAGE_LENGTH))
        return ErrorReport(f"{type(error).__name__} in the driver; its message was withheld")
    diag = error.diag
    if message_may_be_shown(code, raised_in_a_function=bool(diag.context)) and diag.message_primary:
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        return ErrorReport(safe(diag.message_primary + hint, MESSAGE_LENGTH), code)
    return ErrorReport(f"{_condition(code)}{names_of(diag)}. {WITHHELD}", code)


def message_may_be_shown(sqlstate: str, *, raised_in_a_function: bool) -> bool:
    """The allowlist: may PostgreSQL's message of an error with this SQLSTATE be shown?"""
    if sqlstate in FIXED_MESSAGE_SQLSTATES:
        return True
    return sqlstate[:2] in MESSAGE_SAFE_CLASSES and not raised_in_a_function


def names_of(diag: psycopg2.extensions.Diagnostics) -> str:
    """The names PostgreSQL reports beside the message: identifiers, never values."""
    table = ".".join(part for part in (diag.schema_name, diag.table_name) if part)
    where = f" on {table}" if table else ""
    if diag.column_name:
        where += f", column {diag.column_name}"
    if diag.constraint_name:
        where += f", constraint {diag.constraint_name}"
    return where


def shown(error: BaseException) -> ErrorReport:
    """Any error as it may be shown: ours as raised (safe by construction), others by the allowlist."""
    if isinstance(error, RefreshError):
        return ErrorReport(str(error), error.sqlstate)
    return report(error)


def _condition(code: str) -> str:
    try:
        return psycopg2.errorcodes.lookup(code).lower()
    except KeyError:
        return "error"


def is_transient(error: BaseException) -> bool:
    """True when a retry of the same SQL may well succeed."""
    if not isinstance(error, psycopg2.Error):
        return False
    code = error.pgcode
    if code:
        return code in TRANSIENT_SQLSTATES or code.startswith("08")
    # No SQLSTATE: the connection failed or dropped before the server could say why.
    if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        message = str(error).lower()
        return any(text in message for text in TRANSIENT_CONNECT_MESSAGES)
    return False


class DatabaseError(RefreshError):
    """A database error outside any step, as far as it may be shown (hospitaldb.engine.errors.report)."""

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
        statement: Statement | None = None,
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
        return f"{self.step} failed{where}: {self.message}{code}. Rolled back: {kept} ({kind})."

    def after(self, published: list[str]) -> StepError:
        """The same failure (same class, same status), saying which views had committed before it."""
        again = type(self).__new__(type(self))
        again.__dict__.update(self.__dict__)
        again.published = list(published)
        again.args = (again._text(),)
        return again

    @classmethod
    def from_database_error(cls, step: str, error: BaseException, statement: Statement | None) -> StepError:
        visible = report(error)
        return cls(
            step, visible.text, statement=statement, sqlstate=visible.sqlstate, transient=is_transient(error)
        )


@contextmanager
def as_step_error(step: str, statement: Statement | None = None) -> Iterator[None]:
    """Raise any database error inside the block as the StepError of step (at statement).

    `from None`: the driver's exception, with its DETAIL, must not ride along in the traceback.
    """
    try:
        yield
    except psycopg2.Error as error:
        raise StepError.from_database_error(step, error, statement) from None
