"""CI: the workflow is valid, and it, .ci/run and the README share one entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.tools import validation

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "hospitaldb_ci.yml"


def check_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its vendored copy of GitHub's workflow schema: no network needed."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
    )


def test_workflow_validates_against_githubs_schema():
    done = check_workflow(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_rejects_a_misspelled_key(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    assert check_workflow(broken).returncode == 1


def test_the_workflow_tests_every_supported_postgresql_major_and_publishes_the_site():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    ci, pages = workflow["jobs"]["ci"], workflow["jobs"]["pages"]
    majors = ci["strategy"]["matrix"]["postgres"]
    assert len(majors) >= 3 and {"14", "18"} <= set(majors), majors
    assert ci["strategy"]["fail-fast"] is False, "a failure on one major must not hide the others"
    assert ci["services"]["postgres"]["image"] == "postgres:${{ matrix.postgres }}"
    assert ci["env"]["HOSPITALDB_TEST_DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:5432/")
    assert pages["needs"] == "ci" and "refs/heads/main" in pages["if"]
    used = [step.get("uses", "").split("@")[0] for step in pages["steps"]]
    assert {"actions/upload-pages-artifact", "actions/deploy-pages"} <= set(used)
    assert {"run": "python3 dev.py docs"}.items() <= next(s for s in pages["steps"] if "run" in s).items()


def test_workflow_ci_run_and_readme_share_the_entry_point():
    assert "run: python3 dev.py ci" in WORKFLOW.read_text()
    assert "python3 dev.py ci" in (PROJECT_ROOT / ".ci" / "run").read_text()
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "python3 dev.py test" in readme and "python3 dev.py demo" in readme


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for part in ("flows", "sql", "tools"):
        shutil.copytree(PROJECT_ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "prefect.yaml", tmp_path)
    return tmp_path


@dataclass
class Validated:
    returncode: int
    stderr: str


@pytest.fixture
def validate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[Path], Validated]:
    """tools/validate.py's checks of a project, in this process (the script itself: the test below)."""
    monkeypatch.chdir(PROJECT_ROOT)  # validation changes into the project; put back afterwards

    def validated(root: Path) -> Validated:
        returncode = validation.main(root, args=[])
        return Validated(returncode, capsys.readouterr().err)

    return validated


def test_validation_passes_on_the_project():
    done = subprocess.run(
        [sys.executable, "tools/validate.py"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_validation_names_file_and_line_of_a_broken_sql_file(project_copy: Path, validate):
    path = project_copy / "sql" / "refresh_dashboards.sql"
    lines = path.read_text().splitlines()
    broken_line = next(
        n for n, line in enumerate(lines) if line.startswith("INSERT INTO dashboards.daily_revenue")
    )
    lines[broken_line] = "INSERT INTO dashboards.daily_revenue AS t (revenue_date,"
    path.write_text("\n".join(lines))

    done = validate(project_copy)

    assert done.returncode == 1
    assert f"sql/refresh_dashboards.sql:{broken_line + 2}: syntax error" in done.stderr


def test_validation_fails_when_a_step_file_is_missing(project_copy: Path, validate):
    (project_copy / "sql" / "refresh_phase3_reporting_tables.sql").unlink()
    done = validate(project_copy)
    assert done.returncode == 1
    assert "sql/refresh_phase3_reporting_tables.sql:1: missing" in done.stderr


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "refresh_dashboards/two_statements.sql",
            "-- check\nSELECT 1;\nDELETE FROM dashboards.daily_revenue;\n",
            "sql/checks/refresh_dashboards/two_statements.sql:3: a check is exactly one SELECT",
        ),
        (
            "refresh_dashboards/bad_severity.sql",
            "-- severity: fatal\nSELECT 1 WHERE false;\n",
            "sql/checks/refresh_dashboards/bad_severity.sql:1: severity must be 'error' or 'warn', not 'fatal'",
        ),
        (
            "refresh_dashboards/syntax.sql",
            "-- check\nSELECT FROM WHERE;\n",
            "sql/checks/refresh_dashboards/syntax.sql:2: syntax error",
        ),
        (
            "refresh_dashbords/misplaced.sql",
            "SELECT 1 WHERE false;\n",
            "sql/checks/refresh_dashbords:1: not a step, so its checks would never run (did you mean 'refresh_dashboards'?)",
        ),
    ],
)
def test_validation_names_file_and_line_of_a_broken_check(
    project_copy: Path, validate, name: str, text: str, expected: str
):
    path = project_copy / "sql" / "checks" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    done = validate(project_copy)
    assert done.returncode == 1
    assert expected in done.stderr


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "refresh_phase2_materialized_views/analytics_reconciles_with_stagin.sql",
            "SELECT 1 WHERE false;\n",
            "sql/incremental/checks/refresh_phase2_materialized_views/analytics_reconciles_with_stagin.sql:1: "
            "stands in for no check of refresh_phase2_materialized_views",
        ),
        (
            "refresh_phase2_materialized_views/unbilled_visits.sql",
            "SELECT 1;\nDELETE FROM analytics.mv_visit_summary;\n",
            "sql/incremental/checks/refresh_phase2_materialized_views/unbilled_visits.sql:2: a check is exactly one SELECT",
        ),
        (
            "refresh_phase2/unbilled_visits.sql",
            "SELECT 1 WHERE false;\n",
            "sql/incremental/checks/refresh_phase2:1: not a step, so its checks would never run",
        ),
    ],
)
def test_validation_names_a_check_of_what_changed_that_would_never_run(
    project_copy: Path, validate, name: str, text: str, expected: str
):
    # A stand-in (incremental/checks/<step>/NAME.sql) replaces the step's check NAME on incremental
    # nights: one named after no check, or in no step's folder, would never run.
    path = project_copy / "sql" / "incremental" / "checks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    done = validate(project_copy)
    assert done.returncode == 1
    assert expected in done.stderr
