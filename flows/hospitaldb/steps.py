"""The refresh steps, in pipeline order, and the SQL file each one runs.

What each step refreshes is read from its file (hospitaldb.sql_analysis), never
listed here: adapting the refresh to another warehouse changes SQL files only.

The step files live in `sql/` of this checkout, or in HOSPITALDB_SQL_DIR; the
project's own SQL (the etl_audit schema, monitoring queries, the demo) always
comes from this checkout's `sql/`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

from hospitaldb import settings
from hospitaldb.outcome import RefreshError, RunStatus


def _project_root() -> Path:
    # A checkout (and an editable install) has sql/ beside flows/; an installed copy of the
    # package runs from the project folder, the working directory set by the pull step.
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "sql").is_dir() else Path.cwd()


PROJECT_ROOT = _project_root()
SQL_DIR = PROJECT_ROOT / "sql"

StepName = Literal[
    "refresh_phase2_materialized_views",
    "refresh_phase3_reporting_tables",
    "refresh_dashboards",
]
STEPS: tuple[StepName, ...] = get_args(StepName)


def step_sql_dir() -> Path:
    """Where the step files are: HOSPITALDB_SQL_DIR, else this checkout's sql/."""
    configured = settings.SQL_DIR.read()
    return Path(configured).expanduser().resolve() if configured else SQL_DIR


def sql_file(step: StepName) -> Path:
    return step_sql_dir() / f"{step}.sql"


def display_path(path: Path) -> str:
    """How messages name a file: relative to the checkout when inside it, else in full."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


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
