"""Offline checks that need no database and no Prefect server.

    python tools/validate.py

- every .sql file under sql/ parses with PostgreSQL's parser (pglast);
- every refresh step named in the flow has its SQL file;
- the flow module imports and defines the three step tasks;
- prefect.yaml has no unknown key, valid schedules and limits, loadable entrypoints and
  parameters that fit the flow (tools/prefect_yaml_check.py).

Each problem is printed as FILE:LINE: MESSAGE; the exit code is 1 if there is any.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "flows"))

sys.path.insert(0, str(ROOT / "tools"))

from hospitaldb.sql_script import SqlScriptError, load_statements  # noqa: E402
from hospitaldb.steps import SQL_DIR, STEPS, sql_file  # noqa: E402


def check_sql_files() -> list[str]:
    problems = []
    for path in sorted(SQL_DIR.rglob("*.sql")):
        try:
            load_statements(path, source=str(path.relative_to(ROOT)))
        except SqlScriptError as error:
            problems.append(str(error))
    for step in STEPS:
        if not sql_file(step).exists():
            problems.append(
                f"{sql_file(step).relative_to(ROOT)}:1: missing: the flow's step {step} runs this file"
            )
    return problems


def check_flow_imports() -> list[str]:
    try:
        refresh = importlib.import_module("refresh")
    except Exception as error:  # any import failure is the finding
        return [f"flows/refresh.py:1: does not import: {type(error).__name__}: {error}"]
    missing = [step for step in STEPS if step not in refresh.STEP_TASKS]
    return [f"flows/refresh.py:1: no task for step {step}" for step in missing]


def check_deployments() -> list[str]:
    from prefect_yaml_check import check_prefect_yaml

    return check_prefect_yaml(ROOT / "prefect.yaml")


def main() -> int:
    problems = check_sql_files() + check_flow_imports() + check_deployments()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"validate: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"validate: {len(list(SQL_DIR.rglob('*.sql')))} SQL files parse; the flow and its steps load; "
        "prefect.yaml is sound"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
