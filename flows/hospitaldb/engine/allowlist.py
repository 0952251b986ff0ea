"""What of a database error may be shown: decided by an allowlist, never by looking for values.

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

from dataclasses import dataclass

import psycopg2
import psycopg2.errorcodes

from hospitaldb.text import safe

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


def _condition(code: str) -> str:
    try:
        return psycopg2.errorcodes.lookup(code).lower()
    except KeyError:
        return "error"
