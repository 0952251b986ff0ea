"""Freshness check: alert when no refresh has succeeded for too long.

Open-source Prefect has no SLAs, so this small flow, scheduled hourly in
prefect.yaml, plays that part. It reads the audit trail (etl_audit) in the
HospitalDB, so it also notices a refresh that never started at all (worker
down, deployment paused), which no failure hook can. A stale warehouse alerts
once per `realert_hours`, not at every check.

    python flows/freshness.py            # check once, here (the entry point prefect.yaml deploys)
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from hospitaldb.engine.db.database import resolve_database
from hospitaldb.engine.db.errors import RefreshError
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.record.audit import AuditLog
from hospitaldb.record.audit_history import last_freshness_alert
from hospitaldb.record.monitoring import run_monitoring_query
from hospitaldb.report.healing import heal_earlier_runs
from hospitaldb.report.hooks import report_failure, report_interruption
from hospitaldb.report.notifications import DEFAULT_EMAIL_BLOCK, DEFAULT_SLACK_BLOCK
from hospitaldb.report.telling import Teller, describe_staleness
from hospitaldb.run_context import recorder_for_this_run, stopped_as


class FreshnessUnknown(RefreshError):
    """The audit trail cannot be read, so nobody can tell whether the data is fresh."""


@flow(name="hospitaldb-freshness-check", on_failure=[report_failure], on_crashed=[report_interruption])
def hospitaldb_freshness_check(
    max_age_hours: Annotated[float, Field(gt=0)] = 26,
    realert_hours: Annotated[float, Field(ge=0)] = 12,
    database_block: str | None = None,
    alert_emails: list[str] | None = None,
    alert_blocks: list[str] | None = None,
    email_block: str = DEFAULT_EMAIL_BLOCK,
    slack_block: str = DEFAULT_SLACK_BLOCK,
) -> dict[str, Any]:
    """Alert (email, Slack, any notification block) when a refresh step has not succeeded within max_age_hours.

    Args:
        max_age_hours: the oldest acceptable last success of every step (default 26: a
            nightly run plus two hours of slack).
        realert_hours: while still stale, alert again after this many hours (0 = every check).
        database_block: as in hospitaldb-refresh.
        alert_emails, alert_blocks, email_block, slack_block: as in hospitaldb-refresh.
    """
    logger = get_run_logger()
    # The record of this check (no etl_audit row: that trail is the refresh's), for its failure alert.
    teller = Teller.for_this_run(logger)  # its own failure is told like a refresh's
    with recorder_for_this_run().recording(stopped_as=stopped_as, tell=teller):
        return _check(database_block, max_age_hours, realert_hours, teller, logger)


def _check(
    database_block: str | None,
    max_age_hours: float,
    realert_hours: float,
    teller: Teller,
    logger: Any,
) -> dict[str, Any]:
    target = resolve_database(database_block)
    audit = AuditLog(target, logger, SqlFiles())
    try:
        if not audit.available:
            raise FreshnessUnknown(
                f"cannot read or create the audit trail (schema etl_audit) in {target.describe()}"
            )
        # A refresh Prefect still shows running, though it ended (the API was down): set from etl_audit,
        # which also frees the nightly deployment's concurrency slot for the next run.
        heal_earlier_runs(audit, logger, None)
        steps = run_monitoring_query(target, "last_successful_refresh")
        stale = [row for row in steps if row["hours_ago"] is None or row["hours_ago"] > max_age_hours]
        if not stale:
            logger.info("fresh: every step succeeded within %g h", max_age_hours)
            return {"stale_steps": [], "alerted": False}
        stale_steps = [row["step"] for row in stale]
        last_alert = last_freshness_alert(audit, within_hours=realert_hours)
        if last_alert:
            logger.warning(
                "still stale (%s); alerted at %s, next alert after %g h",
                ", ".join(stale_steps),
                last_alert,
                realert_hours,
            )
            return {"stale_steps": stale_steps, "alerted": False}
        alerted = teller.send(describe_staleness(stale, max_age_hours), logger)
        if alerted:
            audit.freshness_alert_sent(stale_steps)
    finally:
        audit.close()
    return {"stale_steps": stale_steps, "alerted": alerted}
