"""Prefect artifacts for every refresh run: a table of steps and a short markdown summary.

Both render the run's recorded outcome (hospitaldb.record.outcome): the status is the
one the run recorded, never read from an error's words. Keys are stable
(artifact keys allow only [a-z0-9-]), so the Artifacts page shows the history of
each across runs.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from hospitaldb.engine.checks.step import CheckResult
from hospitaldb.engine.run.upkeep import upkeep_summary
from hospitaldb.record.outcome import RunOutcome, SourcesOutcome, StepOutcome
from hospitaldb.statuses import StepStatus
from hospitaldb.text import count_of as rows

STEPS_ARTIFACT_KEY = "hospitaldb-refresh-steps"
SUMMARY_ARTIFACT_KEY = "hospitaldb-refresh-summary"


def checks_summary(checks: list[CheckResult]) -> str:
    """'8 passed, 1 warned: unbilled_visits (1 row)': the outcome of a step's checks."""
    counts = {
        outcome: sum(check.outcome == outcome for check in checks)
        for outcome in ("passed", "warned", "failed")
    }
    text = ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
    flagged = [
        f"{check.name} ({rows(check.violating_rows)})" for check in checks if check.outcome != "passed"
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


def mode_summary(step: StepOutcome) -> str | None:
    """'incremental (412 changed keys)', 'full (mode full)', and drift a full run repaired."""
    if step.mode is None:
        return None
    what = f"{step.changed_keys:,} changed keys" if step.mode == "incremental" else step.mode_reason
    drift = ""
    if step.drift_checked:
        drift = f"; drift repaired: {changes_summary(step.drift)}" if step.drift else "; no drift"
    return f"{step.mode} ({what}){drift}"


def step_rows(outcome: RunOutcome) -> list[dict[str, Any]]:
    """One row per selected step: what it did and what its checks found, or that it did not run."""
    return [
        {
            "step": step.step,
            "status": step.status.value,
            "mode": mode_summary(step),
            "statements": step.statements,
            "seconds": step.seconds,
            "rows": step.rows,
            "attempts": step.attempts or None,
            "checks": checks_summary(step.checks) if step.checks else None,
            "changes": changes_summary(step.changes) if step.status == StepStatus.COMPLETED else None,
            "upkeep": upkeep_summary(step.upkeep) if step.upkeep else None,
        }
        for step in outcome.steps
    ]


def sources_line(sources: SourcesOutcome | None) -> str:
    if sources is None:
        return "Source checks: not run"
    problems = "; ".join(problem.text for problem in sources.problems)
    if not sources.enforced:
        return f"Source checks: skipped (skip_source_checks); {problems or 'nothing would have failed'}"
    if problems:
        return f"Source checks: failed: {problems}"
    return f"Source checks: {sources.sources} sources passed"


def summary_markdown(outcome: RunOutcome) -> str:
    what = "HospitalDB dry run (rolled back: nothing changed)" if outcome.dry_run else "HospitalDB refresh"
    lines = [
        f"# {outcome.title(what)}",
        "",
        f"Database: {outcome.database or 'not resolved'}",
        "",
        sources_line(outcome.sources),
        "",
        "| step | status | mode | statements | seconds | rows | attempts | checks | changes (+ins ~upd -del) "
        "| upkeep |",
        "|---|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for row in step_rows(outcome):
        cells = [row["step"], row["status"]] + [
            "" if row[key] is None else f"{row[key]:,}" if key == "rows" else str(row[key])
            for key in ("mode", "statements", "seconds", "rows", "attempts", "checks", "changes", "upkeep")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if outcome.error:
        lines += ["", f"**Error:** {outcome.error}"]
    if outcome.held_back:
        lines += [
            "",
            f"**Held back:** {len(outcome.held_back)} object(s) keep their previous data.",
            "",
            "| object | step | because |",
            "|---|---|---|",
            *(f"| {held.object_name} | {held.step} | {held.reason} |" for held in outcome.held_back),
        ]
    if outcome.lineage and not outcome.dry_run:
        # As text: the Prefect server's UI shows a mermaid block as its source (PrefectHQ/prefect#20764).
        lines += ["", "## Lineage (from the steps' SQL)", "", "```", outcome.lineage.as_text(), "```"]
    return "\n".join(lines)


def publish_run_artifacts(outcome: RunOutcome, logger: logging.Logger | logging.LoggerAdapter) -> bool:
    """Create both artifacts, on the outcome's own run (this one, or one being healed); False, logged, if not."""
    from prefect.artifacts import MarkdownArtifact, TableArtifact

    run = UUID(outcome.flow_run_id) if outcome.flow_run_id else None
    try:
        TableArtifact(
            table=step_rows(outcome),
            key=STEPS_ARTIFACT_KEY,
            description="HospitalDB refresh: steps of this run",
            flow_run_id=run,
        ).create()
        MarkdownArtifact(
            markdown=summary_markdown(outcome),
            key=SUMMARY_ARTIFACT_KEY,
            description="HospitalDB refresh: summary of this run",
            flow_run_id=run,
        ).create()
    except Exception as artifact_error:  # artifacts are a report, not part of the refresh
        logger.warning("run artifacts not created: %s", artifact_error)
        return False
    return True
