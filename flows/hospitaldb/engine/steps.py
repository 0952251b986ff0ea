"""The refresh steps, in pipeline order, and the SQL file each one runs.

What each step refreshes is read from its file (engine.sql.analysis), never listed
here: adapting the refresh to another warehouse changes SQL files only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

from hospitaldb.engine.db.errors import RefreshError
from hospitaldb.paths import step_sql_dir
from hospitaldb.statuses import RunStatus

StepName = Literal[
    "refresh_phase2_materialized_views",
    "refresh_phase3_reporting_tables",
    "refresh_dashboards",
]
STEPS: tuple[StepName, ...] = get_args(StepName)


def sql_file(step: StepName) -> Path:
    return step_sql_dir() / f"{step}.sql"


class InvalidSteps(RefreshError, ValueError):
    """The steps parameter names no step, or one that does not exist; nothing was run."""

    status = RunStatus.REFUSED


def in_pipeline_order(steps: Iterable[str] | None) -> list[StepName]:
    """The requested steps, deduplicated and in pipeline order; None means all of them."""
    if steps is None:
        return list(STEPS)
    requested = set(steps)
    unknown = requested.difference(STEPS)
    if unknown:
        raise InvalidSteps(f"Unknown step(s) {sorted(unknown)}; choose from {list(STEPS)}.")
    if not requested:
        raise InvalidSteps(f"No step selected; choose one or more of {list(STEPS)}.")
    return [step for step in STEPS if step in requested]
