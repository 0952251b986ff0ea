"""Which database errors are worth a retry, and the error a failed step raises.

Retrying a syntax error or a missing table only delays the alert; retrying a
dropped connection, a deadlock or a lock timeout usually succeeds. PostgreSQL's
SQLSTATE tells them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

from hospitaldb.sql_script import Statement
from hospitaldb.text import safe

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

MESSAGE_LENGTH = 500
ROW_DETAIL_PREFIXES = ("Failing row contains", "Key (")


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


def postgres_message(error: BaseException) -> str:
    """The server's message for a psycopg2 error, on one line, cut to a readable length."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    detail = getattr(diag, "message_detail", None)
    text = primary or str(error) or type(error).__name__
    # Row-level details ("Failing row contains (...)", "Key (...)=(...)") can carry patient
    # data; they stay in the database log and never reach Prefect logs or alerts.
    if detail and not detail.startswith(ROW_DETAIL_PREFIXES):
        text = f"{text} ({detail})"
    return safe(text, MESSAGE_LENGTH)


class StepError(RuntimeError):
    """A refresh step failed; its transaction was rolled back, the previous data stands."""

    def __init__(
        self,
        step: str,
        message: str,
        *,
        statement: Statement | None = None,
        sqlstate: str | None = None,
        transient: bool = False,
    ) -> None:
        self.step = step
        self.attempt: int | None = None  # set by the task: which attempt failed
        self.statement = statement
        self.sqlstate = sqlstate
        self.transient = transient
        self.postgres_message = message
        where = f" at {statement.location} ({statement.summary})" if statement else ""
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        kind = "transient error, will retry if attempts remain" if transient else "not retried"
        super().__init__(
            f"{step} failed{where}: {message}{code}. Rolled back: every table keeps its previous "
            f"data ({kind})."
        )

    @classmethod
    def from_database_error(cls, step: str, error: psycopg2.Error, statement: Statement | None) -> StepError:
        return cls(
            step,
            postgres_message(error),
            statement=statement,
            sqlstate=error.pgcode,
            transient=is_transient(error),
        )


@contextmanager
def as_step_error(step: str, statement: Statement | None = None) -> Iterator[None]:
    """Raise any database error inside the block as the StepError of step (at statement)."""
    try:
        yield
    except psycopg2.Error as error:
        raise StepError.from_database_error(step, error, statement) from error
