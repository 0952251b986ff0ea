"""Volume checks: tonight's volumes judged against each object's own history.

`sql/checks/volumes.sql` (beside the other checks) returns one row per judged object,
with its thresholds, all in SQL:

    object_name   a source table (judged before the first write, with the source checks)
                  or a refreshed object (judged inside its step's transaction, before COMMIT)
    measure       new_rows: rows added since the last successful run (negative: removed);
                  changed_rows: rows the step inserted, updated or deleted (refreshed objects)
    severity      warn (the run goes on, the warning is on record) or error (refused)
    history_runs  how many recent runs make the usual range (default 30)
    min_history   judge only with at least this many runs on record (default 10)
    tolerance     how far outside the usual range is still fine, as a share of it (default 0.5)

The usual range is the lowest to the highest value of the same weekday over the last
eight weeks, once four such nights are on record: a quiet Sunday is judged against
Sundays. Before that it is the lowest to the highest of the last history_runs runs,
which holds every weekday's level. Tonight is unusual below low - tolerance * |low| or
above high + tolerance * |high|. History comes from the audit trail (source counts, and
what each step inserted, updated and deleted per object); only counts and names leave
the database, as words: "staging.billing: 812 new rows, usual 9,600 to 10,400 on
Tuesdays (last 6)".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hospitaldb.engine.checks.step import CheckResult, Severity
from hospitaldb.engine.sql.allowed import checked_read
from hospitaldb.engine.sql.script import SqlFiles, SqlScriptError, Statement
from hospitaldb.paths import display_path, step_sql_dir

Measure = Literal["new_rows", "changed_rows"]
MEASURE_WORDS = {"new_rows": "new rows", "changed_rows": "rows changed"}
WEEKDAY_WEEKS = 8
MIN_WEEKDAY_NIGHTS = 4
WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")

# Rows added between consecutive successful runs, per source, newest first, with the weekday of
# the later run (ISO: 1 = Monday).
SOURCE_HISTORY = """
SELECT new_rows, weekday, within_weeks FROM (
    SELECT s.row_count - lag(s.row_count) OVER (ORDER BY r.started_at) AS new_rows,
           extract(isodow FROM r.started_at AT TIME ZONE 'UTC')::int AS weekday,
           r.started_at > now() - make_interval(weeks => %(weeks)s) AS within_weeks,
           r.started_at
    FROM etl_audit.source_counts AS s
    JOIN etl_audit.refresh_runs AS r USING (flow_run_id)
    WHERE s.source = %(name)s AND r.status = 'completed'
) AS runs
WHERE new_rows IS NOT NULL
ORDER BY started_at DESC
LIMIT greatest(%(runs)s, 7 * %(weeks)s)
"""
# What each committed step did to the object, per run, newest first.
OBJECT_HISTORY = """
SELECT CASE WHEN %(measure)s = 'new_rows' THEN o.inserted - o.deleted
            ELSE o.inserted + o.updated + o.deleted END,
       extract(isodow FROM r.started_at AT TIME ZONE 'UTC')::int,
       r.started_at > now() - make_interval(weeks => %(weeks)s)
FROM etl_audit.run_objects AS o
JOIN etl_audit.refresh_runs AS r USING (flow_run_id)
WHERE o.object_name = %(name)s AND o.inserted IS NOT NULL
ORDER BY r.started_at DESC
LIMIT greatest(%(runs)s, 7 * %(weeks)s)
"""


class VolumeRulesInvalid(SqlScriptError):
    """sql/checks/volumes.sql returns something other than the rules it must."""


@dataclass(frozen=True)
class VolumeRule:
    object_name: str
    measure: Measure
    severity: Severity
    history_runs: int = 30
    min_history: int = 10
    tolerance: float = 0.5


@dataclass(frozen=True)
class Night:
    value: int
    weekday: int  # ISO, 1 = Monday
    within_weeks: bool  # within the weekday window (WEEKDAY_WEEKS)


def volumes_file() -> Path:
    return step_sql_dir() / "checks" / "volumes.sql"


def load_volume_statement(files: SqlFiles) -> Statement | None:
    """The rules' SELECT, parsed before anything is written; None when the file does not exist."""
    path = volumes_file()
    if not path.exists():
        return None
    statements = files.load(path, display_path(path)).statements
    if len(statements) != 1:
        raise VolumeRulesInvalid(f"{display_path(path)}: the volume rules are exactly one SELECT")
    return checked_read(statements[0])


def read_volume_rules(cursor: Any, statement: Statement | None) -> list[VolumeRule]:
    if statement is None:
        return []
    cursor.execute(statement.text)
    names = [column.name for column in cursor.description]
    rules = []
    for row in cursor.fetchall():
        values = {name: value for name, value in zip(names, row, strict=True) if value is not None}
        try:
            rule = VolumeRule(
                object_name=str(values["object_name"]),
                measure=values.get("measure", "new_rows"),
                severity=values.get("severity", "warn"),
                history_runs=int(values.get("history_runs", 30)),
                min_history=int(values.get("min_history", 10)),
                tolerance=float(values.get("tolerance", 0.5)),
            )
        except (KeyError, ValueError) as error:
            raise VolumeRulesInvalid(f"{statement.location}: a rule without a valid {error}") from None
        if rule.measure not in MEASURE_WORDS or rule.severity not in ("warn", "error"):
            raise VolumeRulesInvalid(
                f"{statement.location}: {rule.object_name}: measure must be new_rows or changed_rows and "
                f"severity warn or error, not {rule.measure!r} and {rule.severity!r}"
            )
        rules.append(rule)
    return rules


def measured(rule: VolumeRule, changes: dict[str, dict[str, int]]) -> int | None:
    """Tonight's value of a refreshed object's measure, from what its step did to it."""
    counts = changes.get(rule.object_name)
    if counts is None:
        return None
    if rule.measure == "new_rows":
        return counts["inserted"] - counts["deleted"]
    return counts["inserted"] + counts["updated"] + counts["deleted"]


def usual_range(
    rule: VolumeRule, tonight_weekday: int, history: Sequence[Night]
) -> tuple[int, int, str] | None:
    """(low, high, over what) of the history tonight is judged against; None with too little history."""
    same_day = [night.value for night in history if night.within_weeks and night.weekday == tonight_weekday]
    if len(same_day) >= MIN_WEEKDAY_NIGHTS:
        return min(same_day), max(same_day), f"on {WEEKDAYS[tonight_weekday - 1]} (last {len(same_day)})"
    recent = [night.value for night in history[: rule.history_runs]]
    if len(recent) < rule.min_history:
        return None
    return min(recent), max(recent), f"(last {len(recent)} runs)"


def judge(
    rule: VolumeRule, tonight: int, tonight_weekday: int, history: Sequence[Night], seconds: float = 0.0
) -> CheckResult:
    """The volume check's result for one object: counts and names only, in words."""
    words = MEASURE_WORDS[rule.measure]
    usual = usual_range(rule, tonight_weekday, history)
    if usual is None:
        detail = f"{rule.object_name}: {tonight:,} {words}; not judged yet: {len(history)} of {rule.min_history} runs on record"
        unusual = False
    else:
        low, high, over = usual
        unusual = tonight < low - rule.tolerance * abs(low) or tonight > high + rule.tolerance * abs(high)
        detail = f"{rule.object_name}: {tonight:,} {words}, usual {low:,} to {high:,} {over}"
    return CheckResult(
        f"volume {rule.object_name}",
        display_path(volumes_file()),
        rule.severity,
        int(unusual),
        seconds,
        detail,
    )


def judge_volumes(
    cursor: Any,
    rules: list[VolumeRule],
    tonight: Callable[[VolumeRule], int | None],
    history_query: str,
) -> list[CheckResult]:
    """Judge every rule that has a value tonight, reading its history through cursor.

    Without a readable audit trail (the first run creates it) there is no history: nothing is judged.
    """
    cursor.execute(
        "SELECT extract(isodow FROM now() AT TIME ZONE 'UTC')::int, "
        "coalesce(has_table_privilege(to_regclass('etl_audit.run_objects'), 'SELECT'), false) "
        "AND coalesce(has_table_privilege(to_regclass('etl_audit.source_counts'), 'SELECT'), false)"
    )
    weekday, history_readable = cursor.fetchone()
    results = []
    for rule in rules:
        count = tonight(rule)
        if count is None or not history_readable:
            continue
        started = time.perf_counter()
        cursor.execute(
            history_query,
            {
                "name": rule.object_name,
                "measure": rule.measure,
                "runs": rule.history_runs,
                "weeks": WEEKDAY_WEEKS,
            },
        )
        history = [Night(int(value), int(day), bool(within)) for value, day, within in cursor.fetchall()]
        results.append(judge(rule, count, weekday, history, round(time.perf_counter() - started, 3)))
    return results
