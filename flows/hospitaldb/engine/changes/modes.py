"""Full or incremental: which form of a step runs, decided inside the step's transaction, and its keys taken.

A step may have an incremental form beside its full SQL (`incremental/<step>.sql`), which
recomputes only what the changed keys of its sources touch. The keys come from change capture
(engine.changes.capture): the engine takes them inside the step's transaction into temporary
tables, `pg_temp.changed_<table>` with the source's key columns, before the incremental form
runs. Deciding and taking read the step's own snapshot, so the keys a step takes are exactly
those of the changes it can see; a step that rolls back (a failed check, a dry run) takes none.

A full run takes every change it could see too (it read everything), and a full run that could
have been incremental runs the incremental form first, in the same transaction: whatever the
full form still changes after it is drift, a fault of the incremental SQL, reported and repaired
by the full form before COMMIT.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args

from psycopg2 import sql

from hospitaldb.engine.changes.installed import capture_behind, installed_capture
from hospitaldb.engine.db.errors import RefreshError
from hospitaldb.paths import step_sql_dir
from hospitaldb.statuses import RunStatus

RunMode = Literal["auto", "full", "incremental"]
RUN_MODES: tuple[RunMode, ...] = get_args(RunMode)
StepMode = Literal["full", "incremental"]
CHANGED_PREFIX = "changed_"
# Executed as is: whether this session can read change capture at all.
CAPTURE_USABLE = """
SELECT coalesce(has_function_privilege(to_regprocedure('etl_changes.pending_changes(text, text[])'), 'EXECUTE')
            AND has_function_privilege(to_regprocedure('etl_changes.take_changed_keys(text, text)'), 'EXECUTE'),
                false)
"""


def incremental_file(step: str) -> Path:
    return step_sql_dir() / "incremental" / f"{step}.sql"


@dataclass(frozen=True)
class ModeRequest:
    """What the run asked for: mode auto, full or incremental, and when auto runs full anyway."""

    mode: RunMode = "auto"
    full_every_days: float = 7.0
    max_changed_share: float = 0.15  # measured: benchmarks/incremental_bench.py (docs: performance)


@dataclass(frozen=True)
class IncrementalForm:
    """A step's incremental SQL, parsed and linted like its full SQL, and the sources whose keys it reads."""

    statements: list[Any]  # engine.sql.script.Statement
    temp_tables: list[str]
    sources: tuple[str, ...]  # every relation the step's objects read, each must be captured
    # What the step refreshes: where one is captured (a later step reads it), a TRUNCATE of it by
    # anyone else means the next run must be full too.
    objects: tuple[str, ...] = ()
    # Checks of what changed (incremental/checks/<step>/), by the name of the check each replaces.
    checks: dict[str, Any] = field(default_factory=dict)  # engine.checks.step.Check
    capture_sql: str | None = None  # incremental/capture.sql's SELECT, linted: what capture should be


@dataclass(frozen=True)
class ChosenMode:
    """The form a step runs tonight, why, how many changed keys it took, and whether drift is looked for."""

    mode: StepMode
    reason: str
    changed_keys: int | None = None
    verify: bool = False  # full, after the incremental form: what full still changes is drift

    def describe(self) -> str:
        keys = "" if self.changed_keys is None else f", {self.changed_keys} changed keys"
        drift = ", drift checked" if self.verify else ""
        return f"{self.mode} ({self.reason}{keys}{drift})"


class IncrementalRefused(RefreshError):
    """mode=incremental was asked of a step that cannot run incrementally now; nothing of it ran."""

    status = RunStatus.REFUSED


@dataclass(frozen=True)
class _Pending:
    source: str
    captured: bool
    keys: tuple[str, ...]
    whole: bool
    changed_keys: int
    rows: float
    sums: tuple[str, ...] = ()  # summed columns: pg_temp.changed_<table> also holds their deltas


def choose_mode(
    cursor: Any, step: str, form: IncrementalForm | None, request: ModeRequest
) -> tuple[ChosenMode, list[_Pending]]:
    """Full or incremental for step, read in the caller's transaction; IncrementalRefused if asked and impossible.

    A step with no incremental form runs full in every mode. Incremental needs: capture
    readable by this role, every source captured, no TRUNCATE or new capture waiting (a change
    of unknown keys), and a full run since capture began. auto also runs full when the last
    full run is older than full_every_days (the periodic run that looks for drift), or when the
    changed keys exceed max_changed_share of the sources' rows, where a full run is cheaper.
    mode full (and auto's periodic full run) runs the incremental form first where it could
    have run: verify, the drift check.
    """
    if form is None:  # its full SQL is the only form it has, whatever the mode
        return ChosenMode("full", "mode full" if request.mode == "full" else "no incremental form"), []
    impossible, pending = _why_not_incremental(cursor, step, form)
    if impossible:
        if request.mode == "incremental":
            raise IncrementalRefused(
                f"{step} cannot run incrementally: {impossible}. Run it with mode full (or auto) first."
            )
        return ChosenMode("full", impossible if request.mode == "auto" else "mode full"), pending
    if request.mode == "full":
        return ChosenMode("full", "mode full", verify=True), pending
    if request.mode == "auto":
        cursor.execute(
            "SELECT now() - etl_changes.last_full_refresh(%s) > %s",
            (step, timedelta(days=request.full_every_days)),
        )
        if cursor.fetchone()[0]:
            return ChosenMode(
                "full", f"last full run over {request.full_every_days:g} days ago", verify=True
            ), pending
        # Over all its sources: a small table (a row per branch) changes whole on an ordinary night.
        changed, rows = sum(p.changed_keys for p in pending), sum(max(p.rows, 0) for p in pending)
        if changed > request.max_changed_share * max(rows, 1):
            return ChosenMode(
                "full", f"{changed} changed keys, over {request.max_changed_share:g} of its sources' rows"
            ), pending
    return ChosenMode("incremental", f"mode {request.mode}"), pending


def _why_not_incremental(cursor: Any, step: str, form: IncrementalForm) -> tuple[str | None, list[_Pending]]:
    """Why step cannot run incrementally now (None: it can), and what waits for it in each source."""
    cursor.execute(CAPTURE_USABLE)
    if not cursor.fetchone()[0]:
        return (
            "change capture is not installed (hospitaldb changes install), or this role may not take "
            "its keys (hospitaldb roles)",
            [],
        )
    cursor.execute(
        "SELECT p.source, p.captured, p.keys, p.whole, p.changed_keys, "
        # Rows now: the statistics' live count (kept as writers commit), or the last ANALYZE's.
        "       coalesce((SELECT greatest(c.reltuples, s.n_live_tup) FROM pg_class AS c "
        "                 LEFT JOIN pg_stat_all_tables AS s ON s.relid = c.oid "
        "                 WHERE c.oid = to_regclass(p.source)), -1) "
        "FROM etl_changes.pending_changes(%s, %s) AS p",
        (step, list(form.sources)),
    )
    pending = [
        _Pending(source, captured, tuple(keys or ()), whole, changed, rows)
        for source, captured, keys, whole, changed, rows in cursor.fetchall()
    ]
    for number, source in enumerate(pending):
        if source.captured and source.rows <= 0:  # no statistics yet: counted
            schema, table = _split(cursor, source.source)
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
            pending[number] = replace(source, rows=cursor.fetchone()[0])
    uncaptured = [p.source for p in pending if not p.captured]
    if uncaptured:
        return f"{', '.join(uncaptured)} not captured (list it in incremental/capture.sql)", pending
    installed = installed_capture(cursor, list(form.sources), {p.source: p.keys for p in pending})
    pending = [replace(p, sums=installed.get(p.source, ((), ()))[1]) for p in pending]
    behind = form.capture_sql and capture_behind(cursor, form.capture_sql, installed)
    if behind:
        return behind, pending
    whole = [p.source for p in pending if p.whole]
    cursor.execute(
        "SELECT source FROM etl_changes.pending_changes(%s, %s) WHERE whole", (step, list(form.objects))
    )
    whole += [source for (source,) in cursor.fetchall()]
    if whole:
        return f"{', '.join(whole)} truncated or newly captured since its last full run", pending
    cursor.execute("SELECT etl_changes.last_full_refresh(%s) IS NULL", (step,))
    if cursor.fetchone()[0]:
        return "no full run since change capture was installed", pending
    return None, pending


def take_changed_keys(cursor: Any, step: str, pending: list[_Pending]) -> int:
    """Each source's changed keys into pg_temp.changed_<table>, then every other change marked taken.

    The temporary tables drop at COMMIT; the keys are taken for good only if the step commits.
    """
    taken = 0
    names: dict[str, str] = {}
    for source in pending:
        schema, table = _split(cursor, source.source)
        name = f"{CHANGED_PREFIX}{table}"
        if name in names:
            raise RefreshError(
                f"{step}: {source.source} and {names[name]} would both be pg_temp.{name}; rename one source"
            )
        names[name] = source.source
        changed = sql.Identifier("pg_temp", name)
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(changed))  # a dry run's earlier step
        # A summed source: each key once with what it gained (row_change, <column>_change).
        deltas = [sql.SQL("(k->>'row_change')::bigint AS row_change")] if source.sums else []
        deltas += [
            sql.SQL("r.{} AS {}").format(sql.Identifier(summed), sql.Identifier(f"{summed}_change"))
            for summed in source.sums
        ]
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT DISTINCT {} "
                "FROM etl_changes.take_changed_keys(%s, %s) AS k, jsonb_populate_record(NULL::{}, k) AS r"
            ).format(
                changed,
                sql.SQL(", ").join(
                    [*(sql.SQL("r.{}").format(sql.Identifier(key)) for key in source.keys), *deltas]
                ),
                sql.Identifier(schema, table),
            ),
            (step, source.source),
        )
        taken += cursor.rowcount
        cursor.execute(sql.SQL("ANALYZE {}").format(changed))
    cursor.execute("SELECT etl_changes.take_all_changes(%s, false)", (step,))
    return taken


def take_all_changes(cursor: Any, step: str, *, is_full: bool) -> None:
    """Every change the step can see is taken; a full run read everything, and is on record."""
    cursor.execute(CAPTURE_USABLE)
    if cursor.fetchone()[0]:
        cursor.execute("SELECT etl_changes.take_all_changes(%s, %s)", (step, is_full))


def forget_taken(cursor: Any, readers: tuple[tuple[str, str], ...]) -> None:
    """Changes every step that reads their source has taken are no longer needed: trimmed.

    readers: (source, step) pairs. Until `hospitaldb changes install` is run again after an
    upgrade from 1.8.0 (whose trim_taken took a list of steps), nothing is trimmed.
    """
    cursor.execute(
        "SELECT coalesce(has_function_privilege("
        "to_regprocedure('etl_changes.trim_taken(text[], text[])'), 'EXECUTE'), false)"
    )
    if readers and cursor.fetchone()[0]:
        sources, steps = zip(*readers, strict=True)
        cursor.execute("SELECT etl_changes.trim_taken(%s, %s)", (list(sources), list(steps)))


def _split(cursor: Any, source: str) -> tuple[str, str]:
    cursor.execute(
        "SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s)",
        (source,),
    )
    found = cursor.fetchone()
    if found is None:
        raise RefreshError(f"{source}, a source of an incremental step, does not exist")
    return found


class DriftFound(RefreshError):
    """A full run changed rows after the incremental form ran: the incremental SQL is wrong. Repaired, reported."""

    def __init__(self, drift: dict[str, dict[str, dict[str, int]]]) -> None:
        self.step = next(iter(drift))
        where = "; ".join(
            f"{step}: "
            + ", ".join(
                f"{name} {counts['inserted']} inserted, {counts['updated']} updated, {counts['deleted']} deleted"
                for name, counts in objects.items()
            )
            for step, objects in drift.items()
        )
        super().__init__(
            f"Drift: after the incremental form, the full form still changed rows ({where}). The full run "
            "repaired them and committed; the incremental SQL of "
            + ", ".join(f"incremental/{step}.sql" for step in drift)
            + " misses a change: fix it, and prove it with the property test (docs: your own warehouse)."
        )
