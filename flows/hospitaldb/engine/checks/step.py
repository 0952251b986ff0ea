"""Data checks: SQL that must find nothing before a step may publish.

A check is one SELECT in sql/checks/<step>/NAME.sql (or sql/checks/all_steps/ for
every step) that returns the rows violating it: zero rows pass. A line
`-- severity: warn` makes it a warning; the default is error. The step runs its
checks after its last statement, in its own transaction and snapshot, before
COMMIT: a failed error check rolls the step back, so readers keep the previous,
complete data and nothing half-checked is ever visible.

A step that runs its incremental form may check only what changed: a file of the same name in
incremental/checks/<step>/ stands in for the check on those nights (same name and severity, in
etl_audit and the alerts). It reads the changed keys the engine took from change capture
(pg_temp.changed_<table>), not the form's own lists, so a form that misses a key is still caught;
what no key touched was checked by an earlier run and did not change since. A check without one
runs whole on every night.

Only the number of violating rows leaves the database, never their values: rows
can hold patient data.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import psycopg2.extensions
from pglast import ast
from psycopg2 import sql

from hospitaldb.engine.db.errors import StepError, as_step_error
from hospitaldb.engine.sql.allowed import checked_read
from hospitaldb.engine.sql.script import SqlFiles, SqlScriptError, Statement, line_of
from hospitaldb.paths import display_path, step_sql_dir
from hospitaldb.statuses import RunStatus
from hospitaldb.text import count_of

Severity = Literal["error", "warn"]
EVERY_STEP = "all_steps"
SEVERITY_LINE = re.compile(r"^\s*--\s*severity\s*:\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class CheckResult:
    name: str
    source: str
    severity: Literal["error", "warn"]
    violating_rows: int
    seconds: float
    detail: str | None = None

    @property
    def outcome(self) -> Literal["passed", "warned", "failed"]:
        if not self.violating_rows:
            return "passed"
        return "warned" if self.severity == "warn" else "failed"

    def describe(self) -> str:
        return f"check {self.name} ({self.source}) {self.outcome}: {self.detail or count_of(self.violating_rows, 'violating row')}"


@dataclass(frozen=True)
class Check:
    name: str
    source: str
    severity: Severity
    statement: Statement


class CheckFailed(StepError):
    """An error-severity check found violations; the step was rolled back (never retried)."""

    status = RunStatus.CHECK_FAILED

    def __init__(self, step: str, results: list[CheckResult]) -> None:
        self.results = results
        failed = [result for result in results if result.outcome == "failed"]
        super().__init__(step, "; ".join(result.describe() for result in failed))


def parse_check(path: Path, files: SqlFiles) -> Check:
    """Read one check file; SqlScriptError (with file and line) unless it is one SELECT."""
    source = display_path(path)
    parsed = files.load(path, source)
    text, statements = parsed.text, parsed.statements
    if len(statements) != 1 or not isinstance(statements[0].tree, ast.SelectStmt):
        line = statements[1].line if len(statements) > 1 else statements[0].line
        raise SqlScriptError(
            f"{source}:{line}: a check is exactly one SELECT that returns the violating rows "
            "(zero rows = pass); split other statements out"
        )
    severity = "error"
    for match in SEVERITY_LINE.finditer(text):
        severity = match[1].lower()
        if severity not in ("error", "warn"):
            line = line_of(text, match.start())
            raise SqlScriptError(f"{source}:{line}: severity must be 'error' or 'warn', not '{match[1]}'")
    return Check(name=path.stem, source=source, severity=severity, statement=checked_read(statements[0]))


def check_files(step: str, sql_dir: Path | None = None) -> list[Path]:
    """The check files that guard step: every-step checks first, then the step's own."""
    folder = (sql_dir or step_sql_dir()) / "checks"
    return [*sorted((folder / EVERY_STEP).glob("*.sql")), *sorted((folder / step).glob("*.sql"))]


def load_checks(step: str, files: SqlFiles) -> list[Check]:
    return [parse_check(path, files) for path in check_files(step)]


def incremental_check_files(step: str, sql_dir: Path | None = None) -> list[Path]:
    """The checks of what changed that stand in for step's checks on its incremental nights."""
    return sorted(((sql_dir or step_sql_dir()) / "incremental" / "checks" / step).glob("*.sql"))


def load_incremental_checks(
    step: str, severities: dict[str, Severity], files: SqlFiles, sql_dir: Path | None = None
) -> dict[str, Check]:
    """Each stand-in by the name of the check it replaces (severities: the step's checks'), with its severity.

    SqlScriptError if one replaces no check of the step: it would never run.
    """
    stand_ins = {}
    for path in incremental_check_files(step, sql_dir):
        stand_in = parse_check(path, files)
        if stand_in.name not in severities:
            raise SqlScriptError(
                f"{stand_in.source}:1: stands in for no check of {step} (its checks: "
                f"{', '.join(sorted(severities)) or 'none'}): name it after the check it replaces "
                "on incremental nights"
            )
        stand_ins[stand_in.name] = replace(stand_in, severity=severities[stand_in.name])
    return stand_ins


def checks_for(checks: list[Check], stand_ins: dict[str, Check]) -> list[Check]:
    """The checks of an incremental night: each one's stand-in where it has one, in the same order."""
    return [stand_ins.get(check.name, check) for check in checks]


def run_checks(
    connection: psycopg2.extensions.connection,
    checks: list[Check],
    step: str,
    logger: logging.Logger | logging.LoggerAdapter,
    judged: list[CheckResult] | None = None,
) -> list[CheckResult]:
    """Run every check on the open transaction; raise CheckFailed if an error check fails.

    Every check runs, even after a failure, so the alert and the audit trail list all
    that is wrong at once. judged: results decided already (the volume checks), reported
    and enforced with the others.
    """
    results = list(judged or [])
    for result in results:
        _log_result(step, result, logger)
    for check in checks:
        started = time.perf_counter()
        with as_step_error(step, check.statement), connection.cursor() as cursor:
            # The check is wrapped whole as a subquery: only its row count comes back.
            cursor.execute(
                sql.SQL("SELECT count(*) FROM ({}) AS violations").format(sql.SQL(check.statement.text))
            )
            violating_rows = cursor.fetchone()[0]
        result = CheckResult(
            check.name, check.source, check.severity, violating_rows, round(time.perf_counter() - started, 3)
        )
        _log_result(step, result, logger)
        results.append(result)
    if any(result.outcome == "failed" for result in results):
        raise CheckFailed(step, results)
    return results


def _log_result(step: str, result: CheckResult, logger: logging.Logger | logging.LoggerAdapter) -> None:
    if result.outcome == "passed":
        logger.info("%s check %s passed (%.3f s)", step, result.name, result.seconds)
    else:
        logger.warning("%s %s (%.3f s)", step, result.describe(), result.seconds)
