"""Prefect artifacts for every refresh run: a table of steps and a short markdown summary.

Keys are stable (artifact keys allow only [a-z0-9-]), so the Artifacts page shows
the history of each across runs.
"""

from __future__ import annotations

import logging
from typing import Any

STEPS_ARTIFACT_KEY = "hospitaldb-refresh-steps"
SUMMARY_ARTIFACT_KEY = "hospitaldb-refresh-summary"


def step_rows(
    results: list[dict[str, Any]], selected: list[str], error: BaseException | None
) -> list[dict[str, Any]]:
    """One row per selected step: what it did, or why it did not."""
    rows = [
        {
            "step": result["step"],
            "status": "completed",
            "statements": len(result["statements"]),
            "seconds": result["seconds"],
            "rows": result["rows"],
            "attempts": result["attempts"],
        }
        for result in results
    ]
    for position, step in enumerate(selected[len(results) :]):
        failed_here = position == 0 and getattr(error, "step", None) == step
        rows.append(
            {
                "step": step,
                "status": "failed" if failed_here else "not run",
                "statements": None,
                "seconds": None,
                "rows": None,
                "attempts": getattr(error, "attempt", None) if failed_here else None,
            }
        )
    return rows


def summary_markdown(rows: list[dict[str, Any]], target: str, error_text: str | None) -> str:
    status = "failed" if error_text else "completed"
    lines = [
        f"# HospitalDB refresh {status}",
        "",
        f"Database: {target}",
        "",
        "| step | status | statements | seconds | rows | attempts |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [row["step"], row["status"]] + [
            "" if row[key] is None else f"{row[key]:,}" if key == "rows" else str(row[key])
            for key in ("statements", "seconds", "rows", "attempts")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if error_text:
        lines += ["", f"**Error:** {error_text}"]
    return "\n".join(lines)


def publish_run_artifacts(
    results: list[dict[str, Any]],
    selected: list[str],
    target: str,
    error: BaseException | None,
    error_text: str | None,
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Create both artifacts; a failure here is logged, never raised."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = step_rows(results, selected, error)
    try:
        create_table_artifact(
            table=rows, key=STEPS_ARTIFACT_KEY, description="HospitalDB refresh: steps of this run"
        )
        create_markdown_artifact(
            markdown=summary_markdown(rows, target, error_text),
            key=SUMMARY_ARTIFACT_KEY,
            description="HospitalDB refresh: summary of this run",
        )
    except Exception as artifact_error:  # artifacts are a report, not part of the refresh
        logger.warning("run artifacts not created: %s", artifact_error)
