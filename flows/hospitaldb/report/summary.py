"""The summary `python flows/refresh.py` prints: the run as it was recorded, step by step."""

from __future__ import annotations

from hospitaldb.record.outcome import RunOutcome
from hospitaldb.report.artifacts import checks_summary, mode_summary
from hospitaldb.statuses import RunStatus


def summary_text(outcome: RunOutcome, where: str) -> str:
    """The run as it was recorded: each step's status, statements, time, rows and checks."""
    if outcome.dry_run and outcome.status == RunStatus.COMPLETED:
        lines = ["", "HospitalDB dry run: rolled back, nothing changed"]
    else:
        lines = ["", outcome.title("HospitalDB dry run" if outcome.dry_run else "HospitalDB refresh")]
    lines.append(f"{'step':<36}{'status':<11}{'statements':>11}{'seconds':>10}{'rows':>12}  checks")
    for step in outcome.steps:
        seconds = f"{step.seconds:.2f}" if step.seconds is not None else ""
        rows = f"{step.rows:,}" if step.rows is not None else ""
        lines.append(
            f"{step.step:<36}{step.status.value:<11}{step.statements or '':>11}{seconds:>10}{rows:>12}  "
            f"{checks_summary(step.checks) if step.checks else ''}"
        )
        if step.mode:
            lines.append(f"{'':<4}{mode_summary(step)}")
    if outcome.dry_run:
        lines += ["", f"{'would change':<44}{'inserted':>10}{'updated':>10}{'deleted':>10}"]
        lines += [
            f"{name:<44}{counts['inserted']:>10,}{counts['updated']:>10,}{counts['deleted']:>10,}"
            for step in outcome.steps
            for name, counts in step.changes.items()
        ]
    if outcome.error:
        lines += ["", f"Error: {outcome.error}"]
    lines += ["", f"Data: {where}"]
    return "\n".join(lines)
