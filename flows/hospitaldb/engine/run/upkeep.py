"""Upkeep after publish: ANALYZE what a step changed, and VACUUM where its dead rows call for it.

A merge leaves a dead row version for every row it updates or deletes, and REFRESH ...
CONCURRENTLY deletes and re-inserts every changed row of a view; statistics go stale
after a large change. Autovacuum gets there eventually, but not while the view is being
refreshed, and not before the dashboards' morning queries are planned on old statistics.

So right after a step commits, outside its transaction (VACUUM cannot run inside one), each
object the step changed is analysed, and vacuumed too when its dead rows reach
DEAD_ROW_SHARE of its rows (as counted, or the statistics' estimate where an incremental night
did not count them): the dead rows PostgreSQL counts since the object's last vacuum,
or at least those the step just left (its updates and deletes, counted for the step's
transaction: the statistics may not have them yet). Small nightly changes add up to a vacuum
every few nights, before autovacuum's 20% would. Both take SHARE UPDATE EXCLUSIVE, which blocks neither
readers (ACCESS SHARE) nor writers (ROW EXCLUSIVE); the refresh lock keeps the next
refresh away. Each statement keeps the run's statement_timeout and lock_timeout: an object
that autovacuum is working on is skipped at the lock timeout, not waited for. What was
done, skipped and why is returned for the record; upkeep never fails the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql

from hospitaldb.engine.db.allowlist import report
from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits, RunTimeLimitReached

DEAD_ROW_SHARE = 0.05  # a quarter of autovacuum's default scale factor (0.2): bloat stays small


@dataclass(frozen=True)
class Upkeep:
    """What upkeep did to one object: analyzed, vacuumed (and analyzed), or skipped, and why."""

    object_name: str
    action: str  # "analyzed", "vacuumed", "skipped"
    seconds: float
    why: str | None = None


def wants_vacuum(changes: dict[str, int], rows: int | None, dead_on_record: int) -> bool:
    """Whether the object's dead rows, as counted or at least as the step left them, call for a VACUUM."""
    dead = max(dead_on_record, changes.get("updated", 0) + changes.get("deleted", 0))
    return dead > 0 and dead >= DEAD_ROW_SHARE * max(rows or 0, 1)


def run_upkeep(
    target: DatabaseTarget,
    limits: Limits,
    changes: dict[str, dict[str, int]],
    row_counts: dict[str, int | None],
    logger: logging.Logger | logging.LoggerAdapter,
) -> list[Upkeep]:
    """Analyse (and where it pays, vacuum) every object the step changed; never raise a database error."""
    changed = [name for name, counts in changes.items() if any(counts.values())]
    if not changed:
        return []
    try:
        connection = target.connect(limits, purpose="upkeep", autocommit=True)
    except RunTimeLimitReached:
        why = "the run's time limit was reached"
        logger.warning("upkeep skipped: %s", why)
        return [Upkeep(name, "skipped", 0.0, why) for name in changed]
    except psycopg2.Error as error:
        why = f"no session: {report(error).text}"
        logger.warning("upkeep skipped: %s", why)
        return [Upkeep(name, "skipped", 0.0, why) for name in changed]
    try:
        return [_keep_up(connection, name, changes[name], row_counts.get(name), logger) for name in changed]
    finally:
        connection.close()


def _keep_up(
    connection: Any,
    name: str,
    changes: dict[str, int],
    rows: int | None,
    logger: logging.Logger | logging.LoggerAdapter,
) -> Upkeep:
    relation = sql.Identifier(*name.split("."))
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_has_role(current_user, c.relowner, 'USAGE'), coalesce(s.n_dead_tup, 0), "
                "       greatest(c.reltuples, s.n_live_tup, 0)::bigint "
                "FROM pg_class AS c LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid "
                "WHERE c.oid = to_regclass(%s)",
                (name,),
            )
            found = cursor.fetchone()
            if not found or not found[0]:
                # PostgreSQL 15 lets only the owner vacuum or analyse (it would skip with a warning).
                return Upkeep(name, "skipped", 0.0, "not its owner: left to autovacuum")
            # Rows not counted (an incremental night that did not shrink it): the statistics' estimate.
            vacuum = wants_vacuum(changes, found[2] if rows is None else rows, found[1])
            statement = "VACUUM (ANALYZE) {}" if vacuum else "ANALYZE {}"
            cursor.execute(sql.SQL(statement).format(relation))
    except (psycopg2.Error, RunTimeLimitReached) as error:
        why = (
            "the run's time limit was reached"
            if isinstance(error, RunTimeLimitReached)
            else report(error).text
        )
        logger.warning("upkeep of %s skipped: %s", name, why)
        return Upkeep(name, "skipped", round(time.perf_counter() - started, 3), why)
    done = Upkeep(name, "vacuumed" if vacuum else "analyzed", round(time.perf_counter() - started, 3))
    logger.info("upkeep: %s %s (%.3f s)", name, done.action, done.seconds)
    return done


def upkeep_summary(upkeep: list[Upkeep]) -> str:
    """'3 analyzed, 1 vacuumed, 1 skipped (0.42 s)': what upkeep did after a step."""
    counts = {
        action: sum(item.action == action for item in upkeep)
        for action in ("analyzed", "vacuumed", "skipped")
    }
    text = ", ".join(f"{count} {action}" for action, count in counts.items() if count)
    return f"{text} ({sum(item.seconds for item in upkeep):.2f} s)" if text else "nothing changed"
