"""What a run will do, decided before it writes anything: each step's statements, objects and checks.

Every selected step file and check file is parsed and linted first, so a syntax
error in step 3, a broken check or a statement that would block readers refuses
the run with every table unchanged. The plans carry the parsed statements on to
the runner: what was checked is exactly what runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pglast import ast

from hospitaldb.engine.changes.capture import capture_file
from hospitaldb.engine.changes.modes import IncrementalForm, ModeRequest, incremental_file
from hospitaldb.engine.checks.source import load_source_statement
from hospitaldb.engine.checks.step import Check, load_checks, load_incremental_checks
from hospitaldb.engine.checks.volume import load_volume_statement
from hospitaldb.engine.sql.allowed import RefusedSql, checked_read, refused_in
from hospitaldb.engine.sql.analysis import BlockingSql, StepSql, analyse_step, analyse_steps
from hospitaldb.engine.sql.lineage import Lineage, ViewDefinitions, lineage_of
from hospitaldb.engine.sql.script import SqlFiles, SqlScriptError, Statement
from hospitaldb.engine.steps import STEPS, StepName
from hospitaldb.paths import display_path


@dataclass(frozen=True)
class StepPlan:
    """One step, parsed and linted: the statements it runs, what it refreshes, what it must pass."""

    step: str
    statements: list[Statement]
    objects: list[str]
    temp_tables: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    allow_shrink: bool = False
    max_shrink_share: float = 0.5
    volume_rules: Statement | None = None  # sql/checks/volumes.sql, for the objects it names
    upkeep: bool = True  # ANALYZE / VACUUM what the step changed, once it committed (engine.run.upkeep)
    statement_total: int = 0  # a view group's plan: how many statements its step has, for the log
    # Views refreshed side by side (parallel_views, engine.run.view_groups): each group in its
    # own session and transaction, up to `sessions` at once. No groups: the step runs serially.
    groups: tuple[ViewGroup, ...] = ()
    sessions: int = 1
    # Its incremental form (incremental/<step>.sql), if it has one, and which form the run asked for.
    incremental: IncrementalForm | None = None
    mode: ModeRequest = field(default_factory=ModeRequest)
    # (source, step) for every step with an incremental form and each table it reads: a change of
    # a source is forgotten once every step that reads it has taken it.
    readers: tuple[tuple[str, str], ...] = ()

    @property
    def truncates(self) -> bool:
        """Whether either form may TRUNCATE: PostgreSQL's row counters miss what that removes."""
        statements = [*self.statements, *(self.incremental.statements if self.incremental else [])]
        return any(isinstance(statement.tree, ast.TruncateStmt) for statement in statements)

    @property
    def every_temp_table(self) -> list[str]:
        """The temporary tables either form makes (one transaction may run both, or a dry run every step)."""
        return self.temp_tables + (self.incremental.temp_tables if self.incremental else [])


@dataclass(frozen=True)
class ViewGroup:
    """Views refreshed in one session and transaction: their statements and every check that reads them."""

    views: tuple[str, ...]
    plan: StepPlan
    waits_for: frozenset[str]  # views of other groups that these read

    @property
    def name(self) -> str:
        return " + ".join(self.views)


def plan_steps(
    selected: list[StepName],
    allow_shrink: bool,
    max_shrink_share: float,
    logger: logging.Logger | logging.LoggerAdapter,
    files: SqlFiles,
    view_definitions: ViewDefinitions | None = None,
    upkeep: bool = True,
    mode: ModeRequest | None = None,
) -> tuple[dict[StepName, StepPlan], Lineage]:
    """Parse and lint every selected step and its checks; SqlScriptError (file and line) if one is unfit.

    Also what each refreshed object reads (engine.sql.lineage), for what a failure holds back.
    Opted-out blocking statements are listed in the log. files: the run's SQL files, each
    read and parsed once (a check of every step is one file).
    """
    try:
        parsed = analyse_steps(files, selected)
        incremental = {
            step: analyse_step(step, files, incremental_file(step))
            for step in selected
            if incremental_file(step).exists()
        }
        forms = [*parsed.values(), *incremental.values()]
        refused = [reason for step_sql in forms for reason in refused_in(step_sql)]
        if refused:
            raise RefusedSql(refused)
        blocking = [finding for step_sql in forms for finding in step_sql.blocking]
        if blocking:
            raise BlockingSql(blocking)
        for step_sql in forms:
            for finding in step_sql.allowed:
                logger.warning("blocking statement allowed: %s", finding.describe())
        volume_rules = load_volume_statement(files)
        load_source_statement(files)  # linted with the rest, before anything runs
        lineage = lineage_of(parsed, files, view_definitions)
        readers = _readers(parsed, files, view_definitions)
        checks = {step: load_checks(step, files) for step in parsed}
        plans = {
            step: StepPlan(
                step=step,
                statements=step_sql.statements,
                objects=step_sql.objects,
                temp_tables=step_sql.temp_tables,
                checks=checks[step],
                allow_shrink=allow_shrink,
                max_shrink_share=max_shrink_share,
                volume_rules=volume_rules,
                upkeep=upkeep,
                incremental=_form(step_sql, incremental.get(step), lineage, checks[step], files),
                mode=mode or ModeRequest(),
                readers=readers,
            )
            for step, step_sql in parsed.items()
        }
        return plans, lineage
    except SqlScriptError as error:
        raise SqlScriptError(f"{str(error).rstrip('.')}. Nothing was refreshed.") from None


def _readers(
    parsed: dict[StepName, StepSql], files: SqlFiles, view_definitions: ViewDefinitions | None
) -> tuple[tuple[str, str], ...]:
    """(source, step) for every step with an incremental form, selected tonight or not."""
    with_forms = [step for step in STEPS if incremental_file(step).exists()]
    full_forms = {step: parsed.get(step) or analyse_step(step, files) for step in with_forms}
    lineage = lineage_of(full_forms, files, view_definitions)
    return tuple(
        sorted((source, step) for step, full in full_forms.items() for source in _sources(full, lineage))
    )


def _sources(full: StepSql, lineage: Lineage) -> tuple[str, ...]:
    """What a step reads that it does not refresh: the tables whose changes it takes."""
    reads = {name for obj in full.objects for name in lineage.reads.get(obj, ())}
    return tuple(sorted(reads - set(full.objects)))


def _form(
    full: StepSql, incremental: StepSql | None, lineage: Lineage, checks: list[Check], files: SqlFiles
) -> IncrementalForm | None:
    """The incremental form, if it refreshes only what the full form does; its sources: what the full form reads."""
    if incremental is None:
        return None
    strays = [name for name in incremental.objects if name not in full.objects]
    if strays:
        raise SqlScriptError(
            f"incremental/{incremental.path.name} writes {', '.join(strays)}, which its full form "
            f"does not refresh: an incremental form refreshes the same objects"
        )
    return IncrementalForm(
        statements=incremental.statements,
        temp_tables=incremental.temp_tables,
        sources=_sources(full, lineage),
        objects=tuple(full.objects),
        checks=load_incremental_checks(full.step, {check.name: check.severity for check in checks}, files),
        capture_sql=_capture_sql(files),
    )


def _capture_sql(files: SqlFiles) -> str | None:
    """incremental/capture.sql's one SELECT, linted, if there is one (engine.changes.installed)."""
    path = capture_file()
    if not path.exists():
        return None
    statements = files.load(path).statements
    if len(statements) != 1:
        raise SqlScriptError(f"{display_path(path)}: one SELECT of source, keys and sums")
    return checked_read(statements[0]).text
