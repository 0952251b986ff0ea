"""What the run's SQL may hold: an allowlist of the statement kinds a step needs, and nothing else.

A step refreshes: REFRESH MATERIALIZED VIEW; SELECT; INSERT, UPDATE, DELETE, MERGE and
TRUNCATE of its own objects; temporary tables (CREATE TEMP TABLE [AS], an index on one, DROP
of one the file made); ANALYZE; LOCK TABLE; and SET/RESET of a planner or memory setting
(ALLOWED_SETTINGS), also through set_config(). A check (sql/checks/, volumes.sql and
sources.sql included) is one SELECT that writes nothing. Anything else is refused before
anything runs, opt-out or not: DO blocks and functions (their bodies are opaque to the
parser), SET of search_path or role, rules, triggers, policies, row-level security,
ownership, grants, DROP OWNED, CALL, COPY, and schema changes (an administrator's migration,
sql/migrations/). No statement may write, lock or call into the audit trail (etl_audit),
which records the refresh and is not the refresh's to rewrite.

Why an allowlist: a denylist misses what nobody thought of. Which of the allowed statements
would block dashboard readers is hospitaldb.engine.sql.analysis's lint, with its opt-out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast
from pglast.enums.parsenodes import ObjectType

from hospitaldb.engine.sql.analysis import DML, StepSql, relation_name, walk
from hospitaldb.engine.sql.script import SqlScriptError, Statement

AUDIT_SCHEMA = "etl_audit"
SYSTEM_SCHEMAS = frozenset({AUDIT_SCHEMA, "pg_catalog", "information_schema"})
# Settings a step may tune for its own transaction: memory and the planner's choices, never
# where names resolve (search_path), who it runs as (role), or what it may see.
ALLOWED_SETTINGS = frozenset(
    {
        "work_mem",
        "maintenance_work_mem",
        "temp_buffers",
        "hash_mem_multiplier",
        "max_parallel_workers_per_gather",
        "parallel_setup_cost",
        "parallel_tuple_cost",
        "random_page_cost",
        "seq_page_cost",
        "cpu_tuple_cost",
        "effective_cache_size",
        "effective_io_concurrency",
        "jit",
        "join_collapse_limit",
        "from_collapse_limit",
        "plan_cache_mode",
    }
)
STEP_KINDS = (
    "REFRESH MATERIALIZED VIEW, SELECT, INSERT/UPDATE/DELETE/MERGE/TRUNCATE of the step's objects, "
    "temporary tables (CREATE TEMP TABLE, an index on one, DROP of one), ANALYZE, LOCK TABLE, "
    "SET [LOCAL] of a planner or memory setting"
)
ELSEWHERE = (
    "schema changes, functions, grants and owners belong to an administrator's migration "
    "(sql/migrations/, hospitaldb roles), run once outside the refresh"
)


def refusal(statement: Statement, temp_tables: frozenset[str] = frozenset()) -> str | None:
    """Why a step may not run this statement, or None; temp_tables: those its file creates."""
    why = _kind_refused(statement.tree, temp_tables) or _reach_refused(statement.tree)
    return f"{statement.location}: {statement.summary}: {why}" if why else None


def check_refusal(statement: Statement) -> str | None:
    """Why a check may not run this statement, or None: a check is one SELECT that writes nothing."""
    tree = statement.tree
    if not isinstance(tree, ast.SelectStmt):
        why = "a check is one SELECT"
    elif any(True for _ in _written(tree)) or tree.intoClause is not None:
        why = "a check reads; it writes nothing (no data-modifying WITH, no SELECT INTO)"
    else:
        why = _reach_refused(tree)
    return f"{statement.location}: {statement.summary}: {why}" if why else None


def _kind_refused(tree: Any, temp_tables: frozenset[str]) -> str | None:
    allowed = (
        isinstance(
            tree, ast.RefreshMatViewStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt
        )
        or isinstance(tree, ast.TruncateStmt | ast.LockStmt)
        or (isinstance(tree, ast.SelectStmt) and (tree.intoClause is None or _temporary(tree.intoClause.rel)))
        or (isinstance(tree, ast.CreateStmt) and _temporary(tree.relation))
        or (isinstance(tree, ast.CreateTableAsStmt) and _temporary(tree.into.rel) and _table(tree))
        or (isinstance(tree, ast.IndexStmt) and _is_temp(tree.relation, temp_tables))
        or (isinstance(tree, ast.DropStmt) and _drops_only_temp_tables(tree, temp_tables))
        or (isinstance(tree, ast.VacuumStmt) and not tree.is_vacuumcmd)
        or (isinstance(tree, ast.VariableSetStmt) and _allowed_setting(tree))
    )
    if allowed:
        return None
    if isinstance(tree, ast.VariableSetStmt):
        return (
            f"SET of '{tree.name or 'ALL'}' is not a step's to change (it may tune only "
            f"{', '.join(sorted(ALLOWED_SETTINGS))}); where names resolve and who the step runs as stay as "
            "the run set them"
        )
    return f"not a statement a step runs. A step may hold only {STEP_KINDS}; {ELSEWHERE}"


def _reach_refused(tree: Any) -> str | None:
    """Writes to, locks of, or calls into etl_audit or the catalogs, and set_config() of a forbidden setting."""
    reached = sorted({name for name in _written(tree) if _schema(name) in SYSTEM_SCHEMAS})
    if reached:
        return (
            f"writes {', '.join(reached)}: the audit trail and the catalogs are not a step's to write "
            "(only the flow records the refresh)"
        )
    for node in walk(tree):
        if not isinstance(node, ast.FuncCall):
            continue
        names = [getattr(part, "sval", "") for part in node.funcname]
        if len(names) > 1 and names[0] == AUDIT_SCHEMA:
            return f"calls {'.'.join(names)}: the audit trail's functions are the flow's, never a step's"
        if names[-1] == "set_config" and not _allowed_set_config(node):
            return (
                "set_config() of a setting a step may not change (only a constant name among "
                f"{', '.join(sorted(ALLOWED_SETTINGS))})"
            )
    return None


def _written(tree: Any) -> Iterator[str]:
    """Every relation the statement writes or locks, temporary or not, in CTEs too."""
    for node in walk(tree):
        if isinstance(node, DML) and node.relation is not None:
            yield relation_name(node.relation)
        elif isinstance(node, ast.TruncateStmt | ast.LockStmt):
            yield from (relation_name(relation) for relation in node.relations)


def _schema(name: str) -> str:
    return name.split(".")[0] if "." in name else ""


def _temporary(relation: ast.RangeVar | None) -> bool:
    return relation is not None and (relation.relpersistence == "t" or relation.schemaname == "pg_temp")


def _table(tree: ast.CreateTableAsStmt) -> bool:
    return tree.objtype == ObjectType.OBJECT_TABLE


def _is_temp(relation: ast.RangeVar, temp_tables: frozenset[str]) -> bool:
    return relation.schemaname == "pg_temp" or relation_name(relation) in temp_tables


def _drops_only_temp_tables(tree: ast.DropStmt, temp_tables: frozenset[str]) -> bool:
    if tree.removeType != ObjectType.OBJECT_TABLE:
        return False
    names = [".".join(part.sval for part in name) for name in tree.objects]
    return all(name in temp_tables or name.startswith("pg_temp.") for name in names)


def _allowed_setting(tree: ast.VariableSetStmt) -> bool:
    return (tree.name or "").lower() in ALLOWED_SETTINGS


def _allowed_set_config(call: ast.FuncCall) -> bool:
    first = call.args[0] if call.args else None
    value = getattr(getattr(first, "val", None), "sval", None)
    return isinstance(value, str) and value.lower() in ALLOWED_SETTINGS


def checked_read(statement: Statement) -> Statement:
    """The statement, when a check may run it; RefusedSql saying why when not."""
    why = check_refusal(statement)
    if why:
        raise RefusedSql([why])
    return statement


class RefusedSql(SqlScriptError):
    """The run's SQL holds statements it may not run; nothing was run."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"{len(reasons)} statement(s) the refresh may not run: " + "; ".join(reasons))


def refused_in(step_sql: StepSql) -> list[str]:
    """Why each statement of a step that it may not run is refused; with the blocking lint's advice where it has some."""
    temp_tables = frozenset(step_sql.temp_tables)
    advice = {finding.location: finding for finding in step_sql.findings}
    reasons = []
    for statement in step_sql.statements:
        reason = refusal(statement, temp_tables)
        finding = advice.get(statement.location)
        if reason and finding:
            reason = (
                f"{reason}; it also takes {finding.lock} and blocks {finding.blocks} until the step commits, "
                f"opt-out or not. Instead: {finding.fix}"
            )
        if reason:
            reasons.append(reason)
    return reasons


def still_blocking(step_sql: StepSql, refused: list[str]) -> list[str]:
    """The blocking lint's findings for the statements the allowlist let through."""
    return [
        finding.describe()
        for finding in step_sql.blocking
        if not any(reason.startswith(f"{finding.location}: ") for reason in refused)
    ]
