"""What earlier runs recorded in etl_audit, read back: for hooks, recovery notices and baselines.

A worker's hook reads a cancelled or killed run back (its own process is gone); a run
that completes reads the run of its database that finished before it (was that a
failure?); the source checks read the last successful run's counts; the freshness check
when it last alerted. Every read goes through the run's audit session.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hospitaldb.engine.checks.source import SOURCE_CHECKS
from hospitaldb.engine.sql.lineage import Lineage
from hospitaldb.record.audit_session import AuditSession
from hospitaldb.record.outcome import Notice, PreviousRun, RunOutcome, StepOutcome
from hospitaldb.statuses import RunStatus, StepStatus


def load_outcome(audit: AuditSession, flow_run_id: str, flow_name: str) -> RunOutcome | None:
    """A run as recorded: how it ended, where, each step's last attempt and its lineage (no check details)."""
    found = audit.read(
        "SELECT flow_run_name, deployment, steps, outcome, failed_step, attempts, sqlstate, error, "
        "finished_at FROM etl_audit.refresh_runs WHERE flow_run_id = %s",
        (flow_run_id,),
    )
    if not found:
        return None
    name, deployment, steps, status, step, attempts, sqlstate, error, finished_at = found[0]
    last_attempts = _last_attempts(audit, flow_run_id)
    objects = audit.read(
        "SELECT object_name, step, reads, published_at IS NOT NULL FROM etl_audit.run_objects "
        "WHERE flow_run_id = %s ORDER BY array_position(%s::text[], step), object_name",
        (flow_run_id, steps),
    )
    lineage = Lineage(
        {name: step for name, step, _, _ in objects},
        {name: frozenset(reads or ()) for name, _, reads, _ in objects},
    )
    outcomes = [
        replace(  # what it committed (all, or with parallel_views some of its views)
            _step_as_recorded(step_name, last_attempts.get(step_name)),
            published=[name for name, of, _, published in objects if of == step_name and published],
        )
        for step_name in steps
    ]
    return RunOutcome(
        flow_name=flow_name,
        flow_run_id=flow_run_id,
        flow_run_name=name,
        deployment=deployment,
        database=audit.database,
        steps=outcomes,
        status=RunStatus(status),
        step=step,
        attempts=attempts,
        error=error,
        sqlstate=sqlstate,
        finished_at=finished_at,
        lineage=lineage if objects else None,
        notice=_notice(audit, flow_run_id),
        source_checks=(
            _step_as_recorded(SOURCE_CHECKS, last_attempts[SOURCE_CHECKS])
            if SOURCE_CHECKS in last_attempts
            else None
        ),
    )


def _last_attempts(audit: AuditSession, flow_run_id: str) -> dict[str, tuple[Any, ...]]:
    """Each step's (and the source checks') last attempt: number, status, statements, seconds, rows, task run."""
    return {
        row[0]: row[1:]
        for row in audit.read(
            "SELECT DISTINCT ON (step) step, attempt, status, statements, duration_seconds, rows_affected, "
            "task_run_id::text "
            "FROM etl_audit.step_attempts WHERE flow_run_id = %s ORDER BY step, attempt DESC",
            (flow_run_id,),
        )
    }


def _notice(audit: AuditSession, flow_run_id: str) -> Notice | None:
    notices = audit.read(
        "SELECT kind, channels, sent_by FROM etl_audit.run_notices WHERE flow_run_id = %s "
        "ORDER BY sent_at LIMIT 1",
        (flow_run_id,),
    )
    return Notice(notices[0][0], tuple(notices[0][1]), notices[0][2]) if notices else None


def previous_finished_run(audit: AuditSession, flow_run_id: str | None) -> PreviousRun | None:
    """The run of this database that finished last before this one."""
    rows = audit.read(
        "SELECT flow_run_name, outcome, finished_at FROM etl_audit.refresh_runs "
        "WHERE flow_run_id IS DISTINCT FROM %s AND outcome <> 'running' AND finished_at IS NOT NULL "
        "ORDER BY finished_at DESC LIMIT 1",
        (flow_run_id,),
    )
    return PreviousRun(rows[0][0], RunStatus(rows[0][1]), rows[0][2]) if rows else None


def last_successful_source_counts(audit: AuditSession) -> dict[str, int]:
    """Each source's row count at the last completed run that recorded one."""
    rows = audit.read(
        "SELECT source, row_count FROM etl_audit.source_counts WHERE flow_run_id = ("
        "  SELECT r.flow_run_id FROM etl_audit.refresh_runs AS r"
        "  WHERE r.status = 'completed'"
        "    AND EXISTS (SELECT FROM etl_audit.source_counts AS s WHERE s.flow_run_id = r.flow_run_id)"
        "  ORDER BY r.finished_at DESC LIMIT 1)"
    )
    return dict(rows)


def last_freshness_alert(audit: AuditSession, within_hours: float) -> Any:
    """When the freshness check last alerted within the given hours, or None."""
    rows = audit.read(
        "SELECT max(sent_at) FROM etl_audit.freshness_alerts "
        "WHERE sent_at > now() - make_interval(secs => %s)",
        (within_hours * 3600,),
    )
    return rows[0][0] if rows else None


def _step_as_recorded(step: str, last_attempt: tuple[Any, ...] | None) -> StepOutcome:
    if last_attempt is None:
        return StepOutcome(step)
    attempt, status, statements, seconds, rows, task_run_id = last_attempt
    return StepOutcome(
        step,
        task_run_id=task_run_id,
        status=StepStatus(status),
        attempts=attempt,
        statements=statements,
        seconds=float(seconds) if seconds is not None else None,
        rows=rows,
    )
