"""Lineage from the SQL: what each refreshed object reads, down to the source tables.

Read with PostgreSQL's own parser from the step files, in order: a temporary table
stands for what its query read, a CTE for what its body reads, so an object that is
merged from `new_patient_summary` reads what `new_patient_summary` was built from. A
materialized view's step only says REFRESH: what it reads comes from its
`CREATE MATERIALIZED VIEW` in the SQL files under the step folder (sql/schema/ here),
else from the database's own definition (`pg_get_viewdef`) when the run has one.

One structure serves the run (what a failure holds back: everything downstream of it),
the artifact, and `python tools/validate.py --lineage` (text and Mermaid). A warehouse
that is not the reference HospitalDB gets its own lineage from its own SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from pglast import ast
from pglast.enums import ObjectType

from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.sql.analysis import DML, StepSql, relation_name, targets_of, temp_table_created, walk
from hospitaldb.engine.sql.script import SqlFiles, SqlScriptError, Statement, parse

ViewDefinitions = Callable[[list[str]], Mapping[str, str]]  # view names -> their SELECT, where known
# Only a file that says MATERIALIZED can define a materialized view (a keyword is never split by a
# comment): the others are not parsed for the lineage.
MAY_DEFINE_VIEWS = re.compile(r"\bmaterialized\b", re.IGNORECASE)


@dataclass(frozen=True)
class Lineage:
    """Each refreshed object: its step, and the relations it reads directly (temp tables resolved)."""

    steps: dict[str, str]  # object -> step, in pipeline order
    reads: dict[str, frozenset[str]]
    unknown: frozenset[str] = field(default_factory=frozenset)  # views whose definition was not found

    @property
    def sources(self) -> list[str]:
        """What the refresh reads and never writes: the source tables."""
        return sorted({name for read in self.reads.values() for name in read} - set(self.steps))

    def upstream(self, name: str) -> set[str]:
        """Everything name reads, directly or through other refreshed objects."""
        seen: set[str] = set()
        pending = list(self.reads.get(name, ()))
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(self.reads.get(current, ()))
        return seen

    def downstream(self, names: Iterable[str]) -> list[str]:
        """Every refreshed object that reads any of names, directly or not, in pipeline order."""
        names = set(names)
        return [name for name in self.steps if name not in names and self.upstream(name) & names]

    def as_text(self) -> str:
        lines = []
        for step in dict.fromkeys(self.steps.values()):
            lines.append(f"{step}:")
            for name in (name for name, of in self.steps.items() if of == step):
                reads = ", ".join(sorted(self.reads.get(name, ()))) or "nothing found"
                if name in self.unknown:
                    reads = "unknown: its definition is in no SQL file (ask the database: the run does)"
                lines.append(f"  {name} <- {reads}")
        lines.append(f"sources: {', '.join(self.sources)}")
        return "\n".join(lines)

    def as_mermaid(self) -> str:
        """A Mermaid flowchart: sources on the left, one box per step."""
        ids = {name: f"n{number}" for number, name in enumerate([*self.sources, *self.steps])}
        lines = ["flowchart LR", "  subgraph sources"]
        lines += [f'    {ids[name]}["{name}"]' for name in self.sources]
        lines.append("  end")
        for step in dict.fromkeys(self.steps.values()):
            lines.append(f"  subgraph {step}")
            lines += [f'    {ids[name]}["{name}"]' for name, of in self.steps.items() if of == step]
            lines.append("  end")
        lines += [
            f"  {ids[read]} --> {ids[name]}"
            for name in self.steps
            for read in sorted(self.reads.get(name, ()))
        ]
        return "\n".join(lines)


def lineage_of(
    parsed: Mapping[str, StepSql],
    files: SqlFiles,
    view_definitions: ViewDefinitions | None = None,
) -> Lineage:
    """The lineage of the steps' SQL; view_definitions supplies views defined in no SQL file.

    files: the run's SQL files, so that a file the plan parsed already is not parsed again.
    """
    steps: dict[str, str] = {}
    reads: dict[str, set[str]] = {}
    refreshed_views: list[str] = []
    for step, step_sql in parsed.items():
        temp: dict[str, set[str]] = {}  # a temp table stands for what it was built from
        for statement in step_sql.statements:
            tree = statement.tree
            written = set(targets_of(tree)) | set(_temp_targets(tree))
            targets = written - set(temp)
            created = temp_table_created(tree)
            read = _resolved(_reads(tree) - targets - ({created} if created else set()), temp)
            if created:
                temp[created] = read
            for name in written & set(temp):
                temp[name] = temp[name] | read
            for name in targets:
                steps.setdefault(name, step)
                reads.setdefault(name, set()).update(read)
                if isinstance(tree, ast.RefreshMatViewStmt):
                    refreshed_views.append(name)
    found = _views_in_files(parsed, refreshed_views, files)
    missing = [name for name in refreshed_views if name not in found]
    if missing and view_definitions is not None:
        found.update({name: _reads_of_query(query) for name, query in view_definitions(missing).items()})
    for name, read in found.items():
        reads[name].update(read)
    unknown = frozenset(name for name in refreshed_views if name not in found)
    return Lineage(steps, {name: frozenset(read) for name, read in reads.items()}, unknown)


def statement_reads(statement: Statement) -> set[str]:
    """Every relation one statement (a step's, a check's) names, CTE names left out."""
    return _reads(statement.tree)


def views_in_database(target: DatabaseTarget, limits: Limits) -> ViewDefinitions:
    """View definitions as the database has them, for views defined in no SQL file.

    Lineage is for reporting: if the database cannot say, those views' reads stay unknown
    and the run goes on (it will meet the same database at its first step anyway).
    """

    def read(names: list[str]) -> dict[str, str]:
        try:
            connection = target.connect(limits, purpose="lineage", autocommit=True)
        except psycopg2.Error:
            return {}
        try:
            with connection.cursor() as cursor:
                found = {}
                for name in names:
                    cursor.execute("SELECT pg_get_viewdef(to_regclass(%s))", (name,))
                    (definition,) = cursor.fetchone()
                    if definition:
                        found[name] = definition
                return found
        except psycopg2.Error:
            return {}
        finally:
            connection.close()

    return read


# --- Reading the parse tree --------------------------------------------------------------


def _reads(tree: ast.Node) -> set[str]:
    """Every permanent or temporary relation a statement names, CTE names left out."""
    ctes = {node.ctename for node in walk(tree) if isinstance(node, ast.CommonTableExpr)}
    return {
        relation_name(node)
        for node in walk(tree)
        if isinstance(node, ast.RangeVar) and relation_name(node) not in ctes
    }


def _resolved(names: set[str], temp: Mapping[str, set[str]]) -> set[str]:
    return {resolved for name in names for resolved in temp.get(name, {name})}


def _temp_targets(tree: ast.Node) -> list[str]:
    return [
        relation_name(node.relation)
        for node in walk(tree)
        if isinstance(node, DML) and node.relation is not None and node.relation.relpersistence == "t"
    ]


def _reads_of_query(query: str) -> set[str]:
    (raw,) = parse(query, "the database's view definition")
    return _reads(raw.stmt)


def _views_in_files(parsed: Mapping[str, StepSql], views: list[str], files: SqlFiles) -> dict[str, set[str]]:
    """What the views read, from their CREATE MATERIALIZED VIEW in the SQL files beside the steps."""
    wanted, found = set(views), {}
    folders = {step_sql.path.parent for step_sql in parsed.values()}
    for path in sorted({path for folder in folders for path in Path(folder).rglob("*.sql")}):
        try:
            if not wanted or not MAY_DEFINE_VIEWS.search(files.text(path)):
                continue
            statements = files.load(path).statements
        except (SqlScriptError, UnicodeDecodeError):
            continue  # not ours to judge here: validate.py reports files that do not parse
        for statement in statements:
            tree = statement.tree
            if isinstance(tree, ast.CreateTableAsStmt) and tree.objtype == ObjectType.OBJECT_MATVIEW:
                name = relation_name(tree.into.rel)
                if name in wanted:
                    found[name] = _reads(tree.query)
    return found
