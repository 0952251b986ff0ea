"""Prefect artifacts for every refresh run: a table of steps and a short markdown summary.

Keys are stable (artifact keys allow only [a-z0-9-]), so the Artifacts page shows
the history of each across runs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

STEPS_ARTIFACT_KEY = "hospitaldb-refresh-steps"
SUMMARY_ARTIFACT_KEY = "hospitaldb-refresh-summary"


def checks_summary(checks: list[dict[str, Any]]) -> str:
    """'8 passed, 1 warned: unbilled_visits (1 row)': the outcome of a step's checks."""
    counts = {
        outcome: sum(c["outcome"] == outcome for c in checks) for outcome in ("passed", "warned", "failed")
    }
    text = ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
    flagged = [
        f"{c['name']} ({c['violating_rows']:,} row{'s' if c['violating_rows'] != 1 else ''})"
        for c in checks
        if c["outcome"] != "passed"
    ]
    return text + (": " + ", ".join(flagged) if flagged else "") if text else "none"


def changes_summary(changes: dict[str, dict[str, int]]) -> str:
    """'reporting.patient_summary +1 ~4 -0': rows inserted, updated, deleted per changed object."""
    changed = [
        f"{name} +{c['inserted']:,} ~{c['updated']:,} -{c['deleted']:,}"
        for name, c in changes.items()
        if c["inserted"] or c["updated"] or c["deleted"]
    ]
    return "; ".join(changed) or "no change"


def step_rows(
    results: list[dict[str, Any]], selected: list[str], error: BaseException | None
) -> list[dict[str, Any]]:
    """One row per selected step: what it did and what its checks found, or why it did not run."""
    rows = [
        {
            "step": result["step"],
            "status": "completed",
            "statements": len(result["statements"]),
            "seconds": result["seconds"],
            "rows": result["rows"],
            "attempts": result["attempts"],
            "checks": checks_summary(result["checks"]),
            "changes": changes_summary(result.get("changes") or {}),
        }
        for result in results
    ]
    for position, step in enumerate(selected[len(results) :]):
        failed_here = position == 0 and getattr(error, "step", None) == step
        failed_checks = getattr(error, "results", None) if failed_here else None
        rows.append(
            {
                "step": step,
                "status": getattr(error, "status", "failed") if failed_here else "not run",
                "statements": None,
                "seconds": None,
                "rows": None,
                "attempts": getattr(error, "attempt", None) if failed_here else None,
                "checks": checks_summary([{**asdict(c), "outcome": c.outcome} for c in failed_checks])
                if failed_checks
                else None,
                "changes": None,
            }
        )
    return rows


def sources_line(sources: dict[str, Any] | None, error: BaseException | None) -> str:
    if sources is None:
        failed = getattr(error, "problems", None)
        return "Source checks: failed: " + "; ".join(failed) if failed else "Source checks: not run"
    if not sources["enforced"]:
        skipped = "; ".join(sources["problems"]) or "nothing would have failed"
        return f"Source checks: skipped (skip_source_checks); {skipped}"
    return f"Source checks: {sources['sources']} sources passed"


def summary_markdown(
    rows: list[dict[str, Any]], target: str, error_text: str | None, sources: str = "", dry_run: bool = False
) -> str:
    status = ("cancelled" if "cancelled" in error_text else "failed") if error_text else "completed"
    what = "dry run (rolled back: nothing changed)" if dry_run else "refresh"
    lines = [
        f"# HospitalDB {what} {status}",
        "",
        f"Database: {target}",
        "",
        sources,
        "",
        "| step | status | statements | seconds | rows | attempts | checks | changes (+ins ~upd -del) |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        cells = [row["step"], row["status"]] + [
            "" if row[key] is None else f"{row[key]:,}" if key == "rows" else str(row[key])
            for key in ("statements", "seconds", "rows", "attempts", "checks", "changes")
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
    sources: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> None:
    """Create both artifacts; a failure here is logged, never raised."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = step_rows(results, selected, error)
    try:
        create_table_artifact(
            table=rows, key=STEPS_ARTIFACT_KEY, description="HospitalDB refresh: steps of this run"
        )
        create_markdown_artifact(
            markdown=summary_markdown(rows, target, error_text, sources_line(sources, error), dry_run),
            key=SUMMARY_ARTIFACT_KEY,
            description="HospitalDB refresh: summary of this run",
        )
    except Exception as artifact_error:  # artifacts are a report, not part of the refresh
        logger.warning("run artifacts not created: %s", artifact_error)
