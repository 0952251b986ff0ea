"""What a step's SQL refreshes, and which of its statements would block dashboard readers.

Both are read from the step's file with PostgreSQL's own parser (pglast), so the
SQL is the one source of truth: the flow, the artifacts, the shrink guard, the
audit trail (etl_audit.run_objects) and, through it, monitoring and data_status
all use the objects found here. No list of objects is kept anywhere else.

A refreshed object is the target of REFRESH MATERIALIZED VIEW, INSERT, UPDATE,
DELETE or MERGE (in data-modifying CTEs too), unless it is a temporary table.
The body of a DO block is opaque to the parser: what it writes is not seen.

Blocking statements take locks that stop readers (ACCESS EXCLUSIVE) or writers
for the whole step. Each finding says where, which lock, what it blocks and the
non-blocking pattern to use instead. A team that accepts the cost opts out per
statement with a comment on it or right above it:

    -- allow-blocking: the nightly window has no readers at all
    TRUNCATE staging_copy.visits;

and the run lists every such statement in its log.
What the run's SQL may hold at all, opt-out or not, is hospitaldb.engine.sql.allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pglast import ast

from hospitaldb.engine.sql.script import SqlFiles, SqlScriptError, Statement
from hospitaldb.engine.steps import STEPS, StepName, sql_file
from hospitaldb.paths import display_path

ALLOW = re.compile(r"--\s*allow-blocking\s*:?(.*)$", re.IGNORECASE)
DML = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt, ast.RefreshMatViewStmt)
MERGE_PATTERN = (
    "compute, then merge: build the new rows in a temporary table, upsert the rows that changed "
    "and delete the rows that are gone (sql/refresh_phase3_reporting_tables.sql)"
)
SCHEMA_CHANGE = "change the schema once, in a migration outside the refresh (sql/schema/), not in a step"
CONCURRENT_REFRESH = (
    "REFRESH MATERIALIZED VIEW CONCURRENTLY, with a unique index on the view "
    "(sql/refresh_phase2_materialized_views.sql, sql/schema/02_analytics.sql)"
)
NO_EXPLICIT_LOCK = (
    "no explicit lock: the step's transaction already shows readers the previous data, "
    "and the refresh lock keeps refreshes apart"
)
LOCK_MODES = {
    1: "ACCESS SHARE",
    2: "ROW SHARE",
    3: "ROW EXCLUSIVE",
    4: "SHARE UPDATE EXCLUSIVE",
    5: "SHARE",
    6: "SHARE ROW EXCLUSIVE",
    7: "EXCLUSIVE",
    8: "ACCESS EXCLUSIVE",
}


@dataclass(frozen=True)
class Finding:
    """A statement that would block readers or writers for the rest of its step."""

    location: str
    summary: str
    lock: str
    blocks: str
    fix: str
    allowed_because: str | None = None

    def describe(self) -> str:
        text = f"{self.location}: {self.summary} takes {self.lock} and blocks {self.blocks} until the step commits"
        if self.allowed_because:
            return f"{text}; allowed: {self.allowed_because}"
        return (
            f"{text}. Instead: {self.fix}. (To accept the cost, add '-- allow-blocking: <reason>' above it.)"
        )


@dataclass(frozen=True)
class StepSql:
    """A step's file, parsed: its statements, what it refreshes, its temp tables, its findings."""

    step: StepName
    path: Path
    statements: list[Statement]
    objects: list[str]
    temp_tables: list[str]
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocking(self) -> list[Finding]:
        return [finding for finding in self.findings if not finding.allowed_because]

    @property
    def allowed(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.allowed_because]


class BlockingSql(SqlScriptError):
    """Step files hold statements that would block dashboard readers; nothing was run."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__(
            f"{len(findings)} statement(s) would block readers or writers: "
            + "; ".join(finding.describe() for finding in findings)
        )


def analyse_step(step: StepName, files: SqlFiles, path: Path | None = None) -> StepSql:
    """Parse and lint one step's file; SqlScriptError (file and line) if it does not parse."""
    path = path or sql_file(step)
    parsed = files.load(path, display_path(path))
    statements = list(parsed.statements)
    temp = temp_tables_of(statements)
    objects: list[str] = []
    for statement in statements:
        for name in targets_of(statement.tree):
            if name not in temp and name not in objects:
                objects.append(name)
    findings = [
        finding
        for statement in statements
        for finding in _findings(statement, set(objects), temp, parsed.text)
    ]
    return StepSql(step, path, statements, objects, sorted(temp), findings)


def analyse_steps(
    files: SqlFiles, steps: list[StepName] | tuple[StepName, ...] = STEPS
) -> dict[StepName, StepSql]:
    return {step: analyse_step(step, files) for step in steps}


def refreshed_objects(
    files: SqlFiles, steps: list[StepName] | tuple[StepName, ...] = STEPS
) -> dict[str, StepName]:
    """Every refreshed object and the step that refreshes it, in pipeline order."""
    return {name: step for step, parsed in analyse_steps(files, steps).items() for name in parsed.objects}


def relations_named(statements: list[Statement]) -> set[str]:
    """Every permanent relation the statements name, read or written, as they name it.

    Temporary tables and CTE names are left out. What a name resolves to (and a view's own
    dependencies) is the database's business: hospitaldb.tools.roles asks it.
    """
    temp = temp_tables_of(statements)
    names = set()
    for statement in statements:
        tree = statement.tree
        ctes = {node.ctename for node in walk(tree) if isinstance(node, ast.CommonTableExpr)}
        for node in walk(tree):
            if isinstance(node, ast.RangeVar) and node.relpersistence != "t":
                name = relation_name(node)
                if name not in temp and name not in ctes and node.schemaname != "pg_temp":
                    names.add(name)
    return names


# --- Reading the parse tree --------------------------------------------------------------


def walk(node: Any) -> Iterator[Any]:
    if isinstance(node, ast.Node):
        yield node
        for name in node.__slots__:
            yield from walk(getattr(node, name, None))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from walk(item)


def relation_name(relation: ast.RangeVar) -> str:
    return f"{relation.schemaname}.{relation.relname}" if relation.schemaname else relation.relname


def targets_of(tree: Any) -> Iterator[str]:
    for node in walk(tree):
        if isinstance(node, DML) and node.relation is not None:
            if node.relation.relpersistence != "t" and node.relation.schemaname != "pg_temp":
                yield relation_name(node.relation)


def temp_table_created(tree: Any) -> str | None:
    """The temporary table a statement creates (CREATE TEMP TABLE, with or without AS), if any."""
    relation = (
        tree.into.rel
        if isinstance(tree, ast.CreateTableAsStmt)
        else tree.relation
        if isinstance(tree, ast.CreateStmt)
        else None
    )
    return relation_name(relation) if relation is not None and relation.relpersistence == "t" else None


def temp_tables_of(statements: list[Statement]) -> set[str]:
    """Temporary tables the file creates: their names, as the file writes them."""
    return {name for statement in statements if (name := temp_table_created(statement.tree))}


def _allowed_because(statement: Statement, text: str) -> str | None:
    """The reason of an '-- allow-blocking: reason' comment in or right above the statement."""
    lines = text.splitlines()
    above = []
    number = statement.line - 2
    while number >= 0 and lines[number].strip().startswith("--"):
        above.append(lines[number])
        number -= 1
    for line in [*above, *statement.text.splitlines()]:
        match = ALLOW.search(line)
        if match:
            return match[1].strip() or None
    return None


def _findings(statement: Statement, refreshed: set[str], temp: set[str], text: str) -> list[Finding]:
    blocking = _blocking_lock(statement.tree, refreshed, temp)
    if blocking is None:
        return []
    lock, blocks, fix = blocking
    return [
        Finding(statement.location, statement.summary, lock, blocks, fix, _allowed_because(statement, text))
    ]


EVERYONE = "readers and writers"


def _blocking_lock(tree: Any, refreshed: set[str], temp: set[str]) -> tuple[str, str, str] | None:
    """(lock taken, who it blocks, what to write instead) for a statement that blocks, else None."""

    def permanent(relations: Any) -> bool:
        return any(
            isinstance(node, ast.RangeVar) and relation_name(node) not in temp and node.relpersistence != "t"
            for node in walk(relations)
        )

    options = {getattr(option, "defname", None) for option in (getattr(tree, "options", None) or ())}
    params = {getattr(param, "defname", None) for param in (getattr(tree, "params", None) or ())}
    if isinstance(tree, ast.TruncateStmt) and permanent(tree.relations):
        return "ACCESS EXCLUSIVE", EVERYONE, MERGE_PATTERN
    if isinstance(tree, ast.RefreshMatViewStmt) and not tree.concurrent:
        return "ACCESS EXCLUSIVE", EVERYONE, CONCURRENT_REFRESH
    if isinstance(tree, ast.LockStmt) and tree.mode >= 5 and permanent(tree.relations):
        return LOCK_MODES[tree.mode], EVERYONE if tree.mode == 8 else "writers", NO_EXPLICIT_LOCK
    if isinstance(tree, ast.AlterTableStmt) and relation_name(tree.relation) in refreshed:
        return "ACCESS EXCLUSIVE", EVERYONE, SCHEMA_CHANGE
    if isinstance(tree, ast.DropStmt):
        dropped = {".".join(part.sval for part in name) for name in tree.objects if isinstance(name, tuple)}
        if dropped & refreshed:
            return "ACCESS EXCLUSIVE", EVERYONE, f"refresh it in place: {MERGE_PATTERN}"
    if isinstance(tree, ast.IndexStmt) and not tree.concurrent and relation_name(tree.relation) in refreshed:
        return "SHARE", "writers", SCHEMA_CHANGE
    if isinstance(tree, ast.VacuumStmt) and "full" in options:
        return "ACCESS EXCLUSIVE", EVERYONE, "leave vacuuming to autovacuum"
    if isinstance(tree, ast.ClusterStmt):
        return (
            "ACCESS EXCLUSIVE",
            EVERYONE,
            "leave the physical order alone, or cluster in a maintenance window",
        )
    if isinstance(tree, ast.ReindexStmt) and "concurrently" not in params:
        return (
            "SHARE on the table and ACCESS EXCLUSIVE on its indexes",
            "writers, and readers that use the indexes",
            "REINDEX CONCURRENTLY, outside the refresh",
        )
    return None
