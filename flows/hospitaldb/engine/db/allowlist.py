"""What of a database error may be shown: decided by an allowlist, never by looking for values.

No value from a patient's row may leave the database. PostgreSQL puts row values
in the DETAIL of constraint violations, in the primary message of data exceptions
(`invalid input syntax for type integer: "..."`), in the CONTEXT of errors raised in
functions and in whatever a RAISE says. So what an error shows is decided by an
allowlist, never by looking for values:

- always: the SQLSTATE and its condition name, and where it failed (file:line of
  the statement, which is our SQL, not data);
- PostgreSQL's own fixed texts, which hold nothing from a row (`division by zero`,
  `canceling statement due to statement timeout`), in any class, wherever raised;
- otherwise the primary message (and hint) only for classes whose messages name
  objects and settings, never values: connection, syntax and access rules, missing
  objects, locks, timeouts, deadlocks, resources, operator intervention; not when
  raised inside a function (its SQL may be built from data, and a RAISE can give any
  SQLSTATE its own words); and only when every name it quotes is a whole identifier
  (or token) of the statement, by PostgreSQL's lexer, and it quotes no name bare with a
  dot nor holds an unmatched quote: SQL that casts a row's value to a name (`full_name::regclass`,
  `current_setting(full_name)`) gets that value quoted back as a "name";
- otherwise the names PostgreSQL reports on its own (schema, table, column,
  constraint; none for an error raised in a function, whose RAISE sets them), and a note that the message was withheld and where to read it:
  the database server's log, for those allowed to read it;
- never DETAIL or CONTEXT.

The original driver exception is never chained (`from None`): Prefect would print
it, DETAIL included, in the run's traceback.
"""

from __future__ import annotations

import re
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
# SQLSTATEs whose messages are PostgreSQL's fixed texts (timeouts, locks, deadlocks, shutdowns)...
FIXED_MESSAGE_SQLSTATES = frozenset(
    {"57014", "55P03", "40001", "40P01", "57P01", "57P02", "57P03", "53300", "53200", "25P02"}
)
# ...and the texts themselves (PostgreSQL 13 to 18), with the few fixed texts of other classes that
# hold no value. Only these words are shown for these SQLSTATEs inside a function: a RAISE can
# give any SQLSTATE a message of its own.
FIXED_TEXTS: dict[str, frozenset[str]] = {
    "57014": frozenset(
        {"canceling statement due to statement timeout", "canceling statement due to user request"}
    ),
    "55P03": frozenset({"canceling statement due to lock timeout"}),
    "40001": frozenset(
        {
            "could not serialize access due to concurrent update",
            "could not serialize access due to concurrent delete",
            "could not serialize access due to read/write dependencies among transactions",
        }
    ),
    "40P01": frozenset({"deadlock detected"}),
    "57P01": frozenset({"terminating connection due to administrator command"}),
    "57P02": frozenset({"terminating connection due to crash of another server process"}),
    "57P03": frozenset(
        {
            "the database system is starting up",
            "the database system is shutting down",
            "the database system is in recovery mode",
            "the database system is not yet accepting connections",
            "the database system is not accepting connections",
        }
    ),
    "53300": frozenset(
        {
            "sorry, too many clients already",
            "remaining connection slots are reserved for non-replication superuser connections",
            "remaining connection slots are reserved for roles with the SUPERUSER attribute",
        }
    ),
    "53200": frozenset({"out of memory"}),
    "25P02": frozenset({"current transaction is aborted, commands ignored until end of transaction block"}),
    "22012": frozenset({"division by zero"}),
    "22003": frozenset(
        {
            "integer out of range",
            "smallint out of range",
            "bigint out of range",
            "numeric field overflow",
            "value out of range: overflow",
            "value out of range: underflow",
        }
    ),
    "21000": frozenset({"more than one row returned by a subquery used as an expression"}),
}
# PostgreSQL quotes a name in a message as "name", without doubling quotes inside it: a name
# holding a quote is not proven, and withheld.
QUOTED_NAME = re.compile(r'"([^"]*)"')
UNQUOTED_DOTTED_NAME = re.compile(r"[\w$]\.[\w$]")
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


def report(error: BaseException, statement: str | None = None) -> ErrorReport:
    """The allowlisted part of a database error (see the module's docstring).

    statement: the text of the SQL that failed, to prove the names its message quotes; None
    for SQL the code writes itself around a step (row counts, COMMIT) and for connecting,
    whose names come from the plan and the configuration, never from a row.
    """
    if not isinstance(error, psycopg2.Error):
        return ErrorReport(safe(f"{type(error).__name__}: {error}", MESSAGE_LENGTH))
    code = error.pgcode
    if code is None:
        # No SQLSTATE: libpq's own words about the connection, which hold no row data.
        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return ErrorReport(safe(str(error) or type(error).__name__, MESSAGE_LENGTH))
        return ErrorReport(f"{type(error).__name__} in the driver; its message was withheld")
    diag = error.diag
    message, in_function = diag.message_primary, bool(diag.context)
    if message and may_show(code, message, raised_in_a_function=in_function, statement=statement):
        hint = diag.message_hint
        shown_hint = hint and not in_function and names_proven(hint, statement)
        return ErrorReport(safe(message + (f" ({hint})" if shown_hint else ""), MESSAGE_LENGTH), code)
    return ErrorReport(f"{_condition(code)}{names_of(diag)}. {WITHHELD}", code)


def may_show(sqlstate: str, message: str, *, raised_in_a_function: bool, statement: str | None) -> bool:
    """The allowlist, words included: may this message be shown?"""
    if message in FIXED_TEXTS.get(sqlstate, ()):
        return True  # PostgreSQL's own words, which hold no value
    return (
        not raised_in_a_function
        and message_may_be_shown(sqlstate, raised_in_a_function=False)
        and names_proven(message, statement)
    )


def names_proven(text: str, statement: str | None) -> bool:
    """Every name text quotes is a whole identifier (or token) of the statement, our SQL: no row's value.

    Whole tokens, by PostgreSQL's own lexer, not substrings: a patient "Mary" is not proven by
    `summary`. A qualified name proves each of its parts. Withheld: an unmatched quote (a name
    that holds one: PostgreSQL does not double it), and an unquoted dotted name (PostgreSQL prints
    some names bare: `improper relation name (too many dotted names): a.b.c.d`).
    """
    if statement is None:
        return True
    if text.count('"') % 2 or UNQUOTED_DOTTED_NAME.search(QUOTED_NAME.sub("", text)):
        return False
    tokens = statement_tokens(statement)
    return all(
        name.lower() in tokens or all(part.lower() in tokens for part in name.split("."))
        for name in QUOTED_NAME.findall(text)
    )


def statement_tokens(statement: str) -> frozenset[str]:
    """The statement's tokens as PostgreSQL's lexer reads them, lowercased; identifiers also unquoted."""
    from pglast.parser import ParseError, scan

    try:
        tokens = scan(statement)
    except ParseError:  # our SQL that does not even lex: prove nothing by it
        return frozenset()
    texts = set()
    for token in tokens:
        text = statement[token.start : token.end + 1]
        texts.add(text.lower())
        if token.name == "IDENT" and text.startswith('"'):
            texts.add(text[1:-1].replace('""', '"').lower())
    return frozenset(texts)


def message_may_be_shown(sqlstate: str, *, raised_in_a_function: bool) -> bool:
    """The allowlist's first gate, by SQLSTATE alone: may a message of this SQLSTATE be shown at all?

    A fixed-text SQLSTATE passes it even inside a function; `may_show` then asks for the fixed words.
    """
    if sqlstate in FIXED_MESSAGE_SQLSTATES:
        return True
    return sqlstate[:2] in MESSAGE_SAFE_CLASSES and not raised_in_a_function


def names_of(diag: psycopg2.extensions.Diagnostics) -> str:
    """The names PostgreSQL reports beside the message: identifiers, never values.

    None for an error raised in a function: a RAISE sets these fields (`USING TABLE = ...`) to anything.
    """
    if getattr(diag, "context", None):
        return ""
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
