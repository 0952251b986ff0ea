"""A dry run: every step and its checks, as a real run would run them, in one transaction rolled back.

One transaction for all steps, so that each step reads what the steps before it would
have published; then ROLLBACK: nothing changes, and what each step would have changed
is reported per object. Dry runs stay serial, whatever parallel_views says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.errors import as_step_error
from hospitaldb.engine.run.plans import StepPlan
from hospitaldb.engine.run.runner import StepResult, run_step_sql
from hospitaldb.engine.run.statements import drop_temp_tables

DRY_RUN = "dry_run"


def dry_run_steps(
    target: DatabaseTarget,
    plans: Mapping[str, StepPlan],
    limits: Limits,
    *,
    logger: logging.Logger | logging.LoggerAdapter,
    on_step: Callable[[StepResult], None],
) -> None:
    """Run each plan's statements and checks in one REPEATABLE READ transaction, then roll back."""
    with as_step_error(DRY_RUN):
        connection = target.connect(limits)
    try:
        connection.set_session(isolation_level="REPEATABLE READ")
        for step, plan in plans.items():
            result = run_step_sql(connection, plan, logger=logger)
            # Later steps create their own temporary tables, perhaps with the same names.
            drop_temp_tables(connection, step, plan.every_temp_table)
            for name, counts in result.changes.items():
                logger.info(
                    "dry run: %s would change %s: %d inserted, %d updated, %d deleted",
                    step,
                    name,
                    counts["inserted"],
                    counts["updated"],
                    counts["deleted"],
                )
            on_step(result)
    finally:
        connection.rollback()
        connection.close()
    logger.info("dry run: rolled back, nothing changed")
