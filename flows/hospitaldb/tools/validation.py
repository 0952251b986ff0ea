"""Offline checks that need no database and no Prefect server (`python tools/validate.py`).

- every .sql file under sql/ parses with PostgreSQL's parser (pglast), and every check
  (sql/checks/) is one SELECT with a valid severity, in the folder of a step that exists;
- every refresh step named in the flow has its SQL file, and no step file holds a statement
  that would block dashboard readers (hospitaldb.engine.sql.analysis), unless opted out;
- the flow module imports and defines the three step tasks;
- prefect.yaml has no unknown key, valid schedules and limits, loadable entrypoints and
  parameters that fit the flow (hospitaldb.tools.prefect_yaml_check).

Each problem is printed as FILE:LINE: MESSAGE; the exit code is 1 if there is any.
`--lineage` prints what each refreshed object reads instead, down to the sources
(`--mermaid`: as a Mermaid flowchart).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from pathlib import Path

from hospitaldb import settings
from hospitaldb.engine.changes.capture import CAPTURE_FILE
from hospitaldb.engine.checks.step import EVERY_STEP, check_files, load_incremental_checks, parse_check
from hospitaldb.engine.sql.allowed import checked_read, refused_in, still_blocking
from hospitaldb.engine.sql.analysis import analyse_step, analyse_steps
from hospitaldb.engine.sql.lineage import lineage_of
from hospitaldb.engine.sql.script import SqlFiles, SqlScriptError, load_statements
from hospitaldb.engine.steps import STEPS
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.tools.prefect_yaml_check import check_prefect_yaml


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def check_sql_files(root: Path) -> list[str]:
    """Every SQL file of the project parses, and every step has its file."""
    step_dir = Path(settings.SQL_DIR.read() or root / "sql").resolve()
    problems = []
    files = SqlFiles()  # the checks and steps as a run reads them: named as a run names them
    for path in sorted({*(root / "sql").resolve().rglob("*.sql"), *step_dir.rglob("*.sql")}):
        try:
            load_statements(path, source=_shown(path, root))
            if path.parent.parent in (step_dir / "checks", step_dir / "incremental" / "checks") or (
                path.parent == step_dir / "checks"
            ):
                parse_check(path, files)
            elif path == step_dir / CAPTURE_FILE:  # read like a check: one SELECT
                checked_read(load_statements(path, source=_shown(path, root))[0])
        except SqlScriptError as error:
            problems.append(str(error))
    for folder in sorted(path for path in (step_dir / "checks").glob("*") if path.is_dir()):
        if folder.name not in (*STEPS, EVERY_STEP):
            problems.append(
                _not_a_step(_shown(folder, root), folder.name, "its checks", [*STEPS, EVERY_STEP])
            )
    for step in STEPS:
        path = step_dir / f"{step}.sql"
        if not path.exists():
            problems.append(f"{_shown(path, root)}:1: missing: the flow's step {step} runs this file")
            continue
        try:
            step_sql = analyse_step(step, files, path)
            refused = refused_in(step_sql)
            problems += [*refused, *still_blocking(step_sql, refused)]
        except SqlScriptError:
            pass  # already reported above
    return problems + _incremental_problems(step_dir, root, files)


def _not_a_step(shown: str, name: str, what: str, names: list[str] | None = None, suffix: str = "") -> str:
    """A file or folder named after no step: what of it would never run, and the name it may mean."""
    names = names or list(STEPS)
    hint = difflib.get_close_matches(name, STEPS, n=1)
    return f"{shown}:1: not a step, so {what} would never run" + (
        f" (did you mean '{hint[0]}{suffix}'?)" if hint else f"; name it after one of {names}"
    )


def _incremental_problems(step_dir: Path, root: Path, files: SqlFiles) -> list[str]:
    """Each incremental form is a step's, passes the steps' lint, and refreshes what its full form does."""
    problems = []
    for path in sorted((step_dir / "incremental").glob("*.sql")):
        if path == step_dir / CAPTURE_FILE:
            continue
        if path.stem not in STEPS:
            problems.append(
                _not_a_step(_shown(path, root), path.stem, "this incremental form", suffix=".sql")
            )
            continue
        try:
            form = analyse_step(path.stem, files, path)
            refused = refused_in(form)
            problems += [*refused, *still_blocking(form, refused)]
            full = analyse_step(path.stem, files, step_dir / f"{path.stem}.sql")
            problems += [
                f"{_shown(path, root)}:1: writes {name}, which {path.stem}.sql does not refresh: "
                "an incremental form refreshes the same objects as its full form"
                for name in form.objects
                if name not in full.objects
            ]
        except SqlScriptError:
            pass  # reported with the parse of every file
    return problems + _stand_in_problems(step_dir, root, files)


def _stand_in_problems(step_dir: Path, root: Path, files: SqlFiles) -> list[str]:
    """Each check of what changed stands in for a check of a step, or it would never run."""
    problems = []
    for folder in sorted(path for path in (step_dir / "incremental" / "checks").glob("*") if path.is_dir()):
        if folder.name not in STEPS:
            problems.append(_not_a_step(_shown(folder, root), folder.name, "its checks"))
            continue
        try:
            # By file name: a whole check that does not parse is reported with every file.
            names = {path.stem: "error" for path in check_files(folder.name, step_dir)}
            load_incremental_checks(folder.name, names, files, step_dir)
        except SqlScriptError as error:
            problems.append(str(error))
    return problems


def check_flow_imports() -> list[str]:
    try:
        refresh = importlib.import_module("hospitaldb.refresh")
    except Exception as error:  # any import failure is the finding
        return [f"flows/hospitaldb/refresh.py:1: does not import: {type(error).__name__}: {error}"]
    missing = [step for step in STEPS if step not in refresh.STEP_TASKS]
    return [f"flows/hospitaldb/refresh.py:1: no task for step {step}" for step in missing]


def print_lineage(mermaid: bool = False) -> int:
    """What each refreshed object reads, from the step files (HOSPITALDB_SQL_DIR or sql/)."""
    try:
        files = SqlFiles()
        lineage = lineage_of(analyse_steps(files), files)
    except SqlScriptError as error:
        print(error, file=sys.stderr)
        return 1
    print(lineage.as_mermaid() if mermaid else lineage.as_text())
    return 0


def main(root: Path = PROJECT_ROOT, args: list[str] | None = None, prog: str = "hospitaldb validate") -> int:
    """Validate the project in root; print each problem as FILE:LINE: MESSAGE.

    With --lineage, print what each refreshed object reads instead (--mermaid: as a Mermaid chart).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Offline checks, no database or Prefect server needed: every SQL file parses, every "
        "check is one SELECT, the flow and its steps load, prefect.yaml is sound.",
    )
    parser.add_argument("--lineage", action="store_true", help="print what each refreshed object reads")
    parser.add_argument("--mermaid", action="store_true", help="the lineage as a Mermaid flowchart")
    options = parser.parse_args(sys.argv[1:] if args is None else args)
    if options.lineage or options.mermaid:
        return print_lineage(mermaid=options.mermaid)
    root = root.resolve()
    # Entrypoints in prefect.yaml are paths relative to the project, as for `prefect deploy`.
    os.chdir(root)
    problems = check_sql_files(root) + check_flow_imports() + check_prefect_yaml(root / "prefect.yaml")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"validate: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"validate: {len(list((root / 'sql').rglob('*.sql')))} SQL files parse; the flow and its steps "
        "load; prefect.yaml is sound"
    )
    return 0
