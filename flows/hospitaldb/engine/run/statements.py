"""Statements of a step, run one by one on an open transaction, each logged; what they changed.

Statements go to the DBAPI cursor as they are, never through SQLAlchemy's text(), so a
` :name` inside a string literal stays a literal. A REFRESH of a view the run's role does not
own goes through its owner's function. Nothing here commits: engine.run.runner does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from pglast import ast
from psycopg2 import sql

from hospitaldb.engine.db.errors import as_step_error
from hospitaldb.engine.sql.analysis import relation_name
from hospitaldb.engine.sql.script import Statement


@dataclass(frozen=True)
class StatementResult:
    number: int
    location: str
    summary: str
    seconds: float
    rows: int | None


def execute_statements(
    connection: psycopg2.extensions.connection,
    statements: list[Statement],
    logger: logging.Logger | logging.LoggerAdapter,
    step: str,
    on_statement: Callable[[StatementResult], None] | None = None,
    total: int | None = None,
    after: int = 0,
) -> list[StatementResult]:
    """Execute statements on an open transaction, without committing it.

    after: statements the step ran before these (a full form after its incremental form), so
    that each statement of an attempt has its own number.
    """
    total = (total or len(statements)) + after
    results = []
    for statement in statements:
        started = time.perf_counter()
        with as_step_error(step, statement), connection.cursor() as cursor:
            cursor.execute(*_as_run(cursor, statement))
            rows = cursor.rowcount if cursor.rowcount >= 0 else None
        result = StatementResult(
            number=after + statement.number,
            location=statement.location,
            summary=statement.summary,
            seconds=round(time.perf_counter() - started, 3),
            rows=rows,
        )
        logger.info(
            "%s [%d/%d] %s: %.3f s, %s rows",
            step,
            result.number,
            total,
            statement.summary,
            result.seconds,
            "-" if rows is None else rows,
        )
        if on_statement:
            on_statement(result)
        results.append(result)
    return results


# A REFRESH of a view the run's role does not own, through its owner's function (sql/schema/05_etl_audit.sql).
REFRESH_BY_OWNER = """
SELECT NOT pg_has_role(c.relowner, 'USAGE') AND coalesce(has_function_privilege(
    to_regprocedure('etl_audit.refresh_materialized_view(regclass, boolean)'), 'EXECUTE'), false)
FROM pg_class AS c WHERE c.oid = to_regclass(%s) AND c.relkind = 'm'
"""


def _as_run(cursor: Any, statement: Statement) -> tuple[Any, ...]:
    """The statement as this session runs it: a REFRESH of a view it does not own, by its owner's function.

    The least-privilege refresher owns no materialized view (it could grant, alter or drop
    it): their NOLOGIN owner refreshes them for it (docs/security.md).
    """
    tree = statement.tree
    if not isinstance(tree, ast.RefreshMatViewStmt) or tree.skipData:
        return (statement.text,)
    view = relation_name(tree.relation)
    cursor.execute(REFRESH_BY_OWNER, (view,))
    found = cursor.fetchone()
    if not found or not found[0]:
        return (statement.text,)
    return (
        "SELECT etl_audit.refresh_materialized_view(to_regclass(%s), %s)",
        (view, bool(tree.concurrent)),
    )


def drop_temp_tables(connection: psycopg2.extensions.connection, step: str, names: list[str]) -> None:
    """The temporary tables a form made, gone: the next form (or step, in a dry run) makes its own."""
    with as_step_error(step), connection.cursor() as cursor:
        for name in names:
            cursor.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("pg_temp", name.split(".")[-1]))
            )


def table_changes(
    connection: psycopg2.extensions.connection, objects: list[str]
) -> dict[str, dict[str, int]]:
    """Rows inserted, updated and deleted in each object, by this backend, not yet flushed.

    PostgreSQL flushes these counters only between transactions, so the difference of two
    readings inside one transaction is exactly what that transaction did (REFRESH ...
    CONCURRENTLY shows as the inserts and deletes of its diff).
    """
    if not objects:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_del, 0) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS o (name, position) "
            "LEFT JOIN pg_stat_xact_user_tables AS s ON s.relid = to_regclass(name) ORDER BY position",
            (objects,),
        )
        return {
            name: {"inserted": inserted, "updated": updated, "deleted": deleted}
            for name, inserted, updated, deleted in cursor.fetchall()
        }
