"""Run a SQL file as one transaction, statement by statement, logging each one.

Statements go to the DBAPI cursor as they are, never through SQLAlchemy's
text(), so a ` :name` inside a string literal stays a literal. The transaction
is REPEATABLE READ: every statement of a step reads the same snapshot of the
source, so the tables a step writes agree with each other even while the
source is being loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from hospitaldb.database import DatabaseTarget
from hospitaldb.errors import StepError
from hospitaldb.sql_script import SqlScriptError, Statement, load_statements
from hospitaldb.steps import display_path


@dataclass(frozen=True)
class StatementResult:
    number: int
    location: str
    summary: str
    seconds: float
    rows: int | None


@dataclass
class StepResult:
    step: str
    seconds: float = 0.0
    statements: list[StatementResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(result.rows or 0 for result in self.statements)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows}


def execute_statements(
    connection: psycopg2.extensions.connection,
    statements: list[Statement],
    logger: logging.Logger | logging.LoggerAdapter,
    step: str,
    on_statement: Callable[[StatementResult], None] | None = None,
) -> list[StatementResult]:
    """Execute statements on an open transaction, without committing it."""
    results = []
    for statement in statements:
        started = time.perf_counter()
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement.text)
                rows = cursor.rowcount if cursor.rowcount >= 0 else None
        except psycopg2.Error as error:
            raise StepError.from_database_error(step, error, statement) from error
        result = StatementResult(
            number=statement.number,
            location=statement.location,
            summary=statement.summary,
            seconds=round(time.perf_counter() - started, 3),
            rows=rows,
        )
        logger.info(
            "%s [%d/%d] %s: %.3f s, %s rows",
            step,
            statement.number,
            len(statements),
            statement.summary,
            result.seconds,
            "-" if rows is None else rows,
        )
        if on_statement:
            on_statement(result)
        results.append(result)
    return results


def run_sql_file(
    target: DatabaseTarget,
    sql_file: Path,
    *,
    step: str,
    logger: logging.Logger | logging.LoggerAdapter,
    statement_timeout_seconds: float,
    lock_timeout_seconds: float,
    on_statement: Callable[[StatementResult], None] | None = None,
) -> StepResult:
    """Run every statement of sql_file in one transaction: all of it commits, or none."""
    try:
        statements = load_statements(sql_file, source=display_path(sql_file))
    except SqlScriptError as error:
        raise StepError(step, str(error)) from error
    started = time.perf_counter()
    try:
        connection = target.connect(
            statement_timeout_seconds=statement_timeout_seconds,
            lock_timeout_seconds=lock_timeout_seconds,
        )
    except psycopg2.Error as error:
        raise StepError.from_database_error(step, error, None) from error
    try:
        connection.set_session(isolation_level="REPEATABLE READ")
        results = execute_statements(connection, statements, logger, step, on_statement)
        try:
            connection.commit()
        except psycopg2.Error as error:
            raise StepError.from_database_error(step, error, None) from error
    finally:
        # Closing without commit rolls back: a failed step leaves the previous data.
        connection.close()
    return StepResult(step=step, seconds=round(time.perf_counter() - started, 3), statements=results)
