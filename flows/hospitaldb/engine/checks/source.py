"""Source checks: before the refresh writes anything, is the staging data it reads whole and new?

Like dbt's source freshness, but blocking: sql/checks/sources.sql returns one row
per source table with its row count, its newest data and the thresholds (all in
SQL, none here). A table with no rows, fewer rows than (1 - max_drop) times its
count at the last successful run, or newest data older than max_age fails the run
before step 1 starts, so every refreshed object keeps its previous data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

import psycopg2.extras

from hospitaldb.engine.checks.step import CheckResult
from hospitaldb.engine.checks.volume import (
    SOURCE_HISTORY,
    judge_volumes,
    load_volume_statement,
    read_volume_rules,
)
from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.errors import StepError, as_step_error
from hospitaldb.engine.sql.allowed import checked_read
from hospitaldb.engine.sql.script import SqlFiles, Statement
from hospitaldb.paths import display_path, step_sql_dir
from hospitaldb.statuses import RunStatus

SOURCE_CHECKS = "check_sources"  # the name the source checks go by: a task, a place a run can fail


@dataclass(frozen=True)
class SourceProblem:
    """A staging table that is empty, shrank too much, or is too old."""

    source: str
    kind: Literal["incomplete", "stale", "unusual"]
    text: str  # the whole sentence, e.g. "source incomplete: staging.visits has no rows"

    @property
    def headline(self) -> str:
        return f"source {self.kind}: {self.source}"


@dataclass(frozen=True)
class SourceState:
    source: str
    row_count: int
    newest: datetime | None
    max_age: timedelta | None
    max_drop: Decimal | None
    checked_at: datetime

    def problem(self, previous_count: int | None) -> SourceProblem | None:
        """Why the table is incomplete or stale, or None when it is fine.

        Counts and ages only: the newest date itself is a value from a row.
        """
        if self.row_count == 0:
            return SourceProblem(self.source, "incomplete", f"source incomplete: {self.source} has no rows")
        if previous_count and self.max_drop is not None:
            floor = previous_count * (1 - float(self.max_drop))
            if self.row_count < floor:
                drop = 1 - self.row_count / previous_count
                return SourceProblem(
                    self.source,
                    "incomplete",
                    f"source incomplete: {self.source} has {self.row_count:,} rows, {drop:.0%} fewer than "
                    f"the {previous_count:,} of the last successful run (limit {float(self.max_drop):.0%})",
                )
        if self.max_age is not None:
            if self.newest is None:
                age = "none at all"
            elif self.checked_at - self.newest > self.max_age:
                age = f"{_duration(self.checked_at - self.newest)} old"
            else:
                return None
            return SourceProblem(
                self.source,
                "stale",
                f"source stale: {self.source}'s newest data is {age} (limit {_duration(self.max_age)})",
            )
        return None


class SourceCheckFailed(StepError):
    """A source is stale or incomplete; nothing was refreshed. Its results go on record as a step's checks."""

    status = RunStatus.SOURCES_REFUSED

    def __init__(self, problems: list[SourceProblem], results: list[CheckResult]) -> None:
        self.problems, self.results = problems, results
        super().__init__(
            SOURCE_CHECKS,
            "; ".join(problem.text for problem in problems)
            + ". Nothing was refreshed. Fix the upstream load, or pass skip_source_checks for a "
            "deliberate reload",
        )


def sources_file() -> Path:
    return step_sql_dir() / "checks" / "sources.sql"


def load_source_statement(files: SqlFiles) -> Statement | None:
    """sources.sql's one SELECT, linted as a check (engine.sql.allowed); None without the file."""
    path = sources_file()
    if not path.exists():
        return None
    (statement,) = files.load(path, display_path(path)).statements
    return checked_read(statement)


def read_sources(
    target: DatabaseTarget,
    limits: Limits,
    files: SqlFiles,
    previous_counts: dict[str, int] | None = None,
) -> tuple[list[SourceState], list[CheckResult], float]:
    """Each source's row count and newest data, read on one snapshot; the sources' volume checks
    (engine.checks.volume: rows added since the last successful run, against their history);
    and the seconds it took.

    With the run's limits: a staging table locked by its loader fails at the run's
    lock_timeout (and is retried), instead of holding the run for as long as the load.
    """
    statement = load_source_statement(files)
    if statement is None:
        return [], [], 0.0
    volume_statement = load_volume_statement(files)
    previous_counts = previous_counts or {}
    started = time.perf_counter()
    with as_step_error(SOURCE_CHECKS, statement):
        connection = target.connect(limits, purpose="sources")
        try:
            connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                # Times are compared in UTC, whatever the server's TimeZone.
                cursor.execute("SET LOCAL TimeZone = 'UTC'")
                cursor.execute("SELECT now() AS checked_at")
                checked_at = cursor.fetchone()["checked_at"]
                cursor.execute(statement.text)
                rows = cursor.fetchall()
                counts = {row["source"]: int(row["row_count"]) for row in rows}
            with as_step_error(SOURCE_CHECKS, volume_statement), connection.cursor() as cursor:
                volumes = judge_volumes(
                    cursor,
                    read_volume_rules(cursor, volume_statement),
                    lambda rule: _new_rows(rule.object_name, counts, previous_counts),
                    SOURCE_HISTORY,
                )
        finally:
            connection.close()
    states = [
        SourceState(
            source=row["source"],
            row_count=int(row["row_count"]),
            newest=row["newest"],
            max_age=row["max_age"],
            max_drop=row["max_drop"],
            checked_at=checked_at,
        )
        for row in rows
    ]
    return states, volumes, round(time.perf_counter() - started, 3)


def _new_rows(source: str, counts: dict[str, int], previous_counts: dict[str, int]) -> int | None:
    if source not in counts or source not in previous_counts:
        return None
    return counts[source] - previous_counts[source]


def evaluate(
    states: list[SourceState],
    previous_counts: dict[str, int],
    seconds: float,
    logger: logging.Logger | logging.LoggerAdapter,
    volumes: list[CheckResult] | None = None,
) -> tuple[list[CheckResult], list[SourceProblem]]:
    """One check result per source and per volume check (for the audit trail and artifact), and
    the problems found: a source empty, shrunk or stale, or with an unusual volume (error)."""
    source = display_path(sources_file())
    results, problems = [], []
    for state in states:
        problem = state.problem(previous_counts.get(state.source))
        results.append(
            CheckResult(
                f"source {state.source}",
                source,
                "error",
                int(problem is not None),
                seconds,
                problem.text if problem else None,
            )
        )
        if problem:
            problems.append(problem)
            logger.warning("%s", problem.text)
        else:
            logger.info("source %s: %s rows", state.source, f"{state.row_count:,}")
    for volume in volumes or []:
        results.append(volume)
        source = volume.name.removeprefix("volume ")
        if volume.outcome == "failed":
            problems.append(SourceProblem(source, "unusual", f"source unusual: {volume.detail}"))
            logger.warning("%s", problems[-1].text)
        elif volume.outcome == "warned":
            logger.warning("source volume unusual (warning): %s", volume.detail)
        else:
            logger.info("source volume: %s", volume.detail)
    return results, problems


def _duration(interval: timedelta) -> str:
    hours = interval.total_seconds() / 3600
    return f"{hours / 24:.3g} days" if hours >= 48 else f"{hours:.3g} h"
