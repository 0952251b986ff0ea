"""The refresh steps, in pipeline order, and the SQL file each one runs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = PROJECT_ROOT / "sql"

StepName = Literal[
    "refresh_phase2_materialized_views",
    "refresh_phase3_reporting_tables",
    "refresh_dashboards",
]
STEPS: tuple[StepName, ...] = get_args(StepName)


def sql_file(step: StepName) -> Path:
    return SQL_DIR / f"{step}.sql"


def in_pipeline_order(steps: Iterable[str] | None) -> list[StepName]:
    """The requested steps, deduplicated and in pipeline order; None means all of them."""
    if steps is None:
        return list(STEPS)
    requested = set(steps)
    unknown = requested.difference(STEPS)
    if unknown:
        raise ValueError(f"Unknown step(s) {sorted(unknown)}; choose from {list(STEPS)}.")
    if not requested:
        raise ValueError(f"No step selected; choose one or more of {list(STEPS)}.")
    return [step for step in STEPS if step in requested]
