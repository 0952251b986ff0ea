"""What a run will do, decided before it writes anything: each step's statements, objects and checks.

Every selected step file and check file is parsed and linted first, so a syntax
error in step 3, a broken check or a statement that would block readers refuses
the run with every table unchanged. The plans carry the parsed statements on to
the runner: what was checked is exactly what runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hospitaldb.engine.checks import Check, load_checks
from hospitaldb.engine.forbidden_sql import ForbiddenSql, forbidden_in
from hospitaldb.engine.lineage import Lineage, ViewDefinitions, lineage_of
from hospitaldb.engine.sql_analysis import BlockingSql, analyse_steps
from hospitaldb.engine.sql_script import SqlFiles, SqlScriptError, Statement
from hospitaldb.engine.steps import StepName
from hospitaldb.engine.volume_checks import load_volume_statement


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
    upkeep: bool = True  # ANALYZE / VACUUM what the step changed, once it committed (engine.upkeep)
    statement_total: int = 0  # a view group's plan: how many statements its step has, for the log

    @property
    def views(self) -> tuple[()]:
        """A step planned this way runs in one session: no view groups (engine.view_groups.ParallelPlan)."""
        return ()


def plan_steps(
    selected: list[StepName],
    allow_shrink: bool,
    max_shrink_share: float,
    logger: logging.Logger | logging.LoggerAdapter,
    view_definitions: ViewDefinitions | None = None,
    upkeep: bool = True,
    files: SqlFiles | None = None,
) -> tuple[dict[StepName, StepPlan], Lineage]:
    """Parse and lint every selected step and its checks; SqlScriptError (file and line) if one is unfit.

    Also what each refreshed object reads (engine.lineage), for what a failure holds back.
    Opted-out blocking statements are listed in the log. files: the run's SQL files, each
    read and parsed once (a check of every step is one file).
    """
    files = files or SqlFiles()
    try:
        parsed = analyse_steps(selected, files)
        refused = [reason for step_sql in parsed.values() for reason in forbidden_in(step_sql)]
        if refused:
            raise ForbiddenSql(refused)
        blocking = [finding for step_sql in parsed.values() for finding in step_sql.blocking]
        if blocking:
            raise BlockingSql(blocking)
        for step_sql in parsed.values():
            for finding in step_sql.allowed:
                logger.warning("blocking statement allowed: %s", finding.describe())
        volume_rules = load_volume_statement(files)
        plans = {
            step: StepPlan(
                step=step,
                statements=step_sql.statements,
                objects=step_sql.objects,
                temp_tables=step_sql.temp_tables,
                checks=load_checks(step, files),
                allow_shrink=allow_shrink,
                max_shrink_share=max_shrink_share,
                volume_rules=volume_rules,
                upkeep=upkeep,
            )
            for step, step_sql in parsed.items()
        }
        return plans, lineage_of(parsed, view_definitions, files)
    except SqlScriptError as error:
        raise SqlScriptError(f"{str(error).rstrip('.')}. Nothing was refreshed.") from None
