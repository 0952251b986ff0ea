"""prefect.yaml is checked offline; mistakes Prefect would swallow are named with their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.tools.prefect_yaml_check import check_prefect_yaml
from hospitaldb.tools.prefect_yaml_schema import SCHEMA

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


def test_the_project_prefect_yaml_is_sound():
    assert check_prefect_yaml(PREFECT_YAML) == []


def line_of(text: str, fragment: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


@pytest.mark.parametrize(
    ("original", "broken", "expected"),
    [
        (
            "    entrypoint: flows",
            "    entrypont: flows",
            "unknown key 'entrypont' in deployment 'nightly' (did you mean 'entrypoint'?)",
        ),
        (
            "    work_pool:",
            "    workpool:",
            "unknown key 'workpool' in deployment 'nightly' (did you mean 'work_pool'?)",
        ),
        (
            '      - cron: "0 2 * * *"',
            '      - cron: "0 2 * *"',
            "invalid cron in deployment 'nightly'",
        ),
        (
            "        timezone: UTC",
            "        timezone: Mars/Olympus",
            "invalid timezone in deployment 'nightly'",
        ),
        (
            "        active: true",
            "        actve: true",
            "unknown key 'actve' in a schedule of deployment 'nightly'",
        ),
        (
            "      collision_strategy: CANCEL_NEW",
            "      collision_strategy: DROP",
            "must be ENQUEUE or CANCEL_NEW, not 'DROP'",
        ),
        (
            "      retries: 3\n      retry_delay",
            "      retrys: 3\n      retry_delay",
            "parameter 'retrys' of deployment 'nightly' is not a parameter of flow 'hospitaldb-refresh' (did you mean 'retries'?)",
        ),
        (
            "      lock_timeout_seconds: 30",
            "      lock_timeout_seconds: soon",
            "parameters of deployment 'nightly' do not fit the flow's signature",
        ),
        (
            "      retries: 3\n      retry_delay",
            "      retries: -1\n      retry_delay",
            "parameters of deployment 'nightly' do not fit the flow's signature",
        ),
        (
            "    entrypoint: flows/refresh.py:hospitaldb_refresh\n    schedules",
            "    entrypoint: flows/refresh.py:no_such_flow\n    schedules",
            "entrypoint 'flows/refresh.py:no_such_flow' of deployment 'nightly' does not load",
        ),
        (
            '          PREFECT_FLOWS_HEARTBEAT_FREQUENCY: "30"',
            '          PREFECT_FLOWS_HEARTBEAT_FREQUENCY: "10"',
            "deployment 'nightly' must set work_pool.job_variables.env.PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
        ),
        (
            '        env:\n          PREFECT_FLOWS_HEARTBEAT_FREQUENCY: "30"',
            '        env:\n          PREFECT_FLOWS_HEARTBEAT: "30"',
            "deployment 'nightly' must set work_pool.job_variables.env.PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
        ),
    ],
)
def test_mistakes_are_reported_with_their_line(
    tmp_path: Path, monkeypatch, original: str, broken: str, expected: str
):
    text = PREFECT_YAML.read_text()
    assert original in text
    broken_text = text.replace(original, broken, 1)
    path = tmp_path / "prefect.yaml"
    path.write_text(broken_text)
    monkeypatch.chdir(PROJECT_ROOT)  # entrypoints are relative to the project

    problems = check_prefect_yaml(path)

    matching = [problem for problem in problems if expected in problem]
    assert matching, problems
    assert matching[0].startswith(
        f"prefect.yaml:{line_of(broken_text, broken.splitlines()[0].strip())}:"
    ) or ("do not fit" in expected or "does not load" in expected)


@pytest.mark.parametrize("prefect_model", sorted(SCHEMA))
def test_our_schema_accepts_exactly_the_keys_the_installed_prefect_accepts(prefect_model):
    # The check itself never imports Prefect's private models; this test does, on purpose:
    # a Prefect upgrade that adds, renames or drops a prefect.yaml key fails here, with the
    # difference, and our schema (hospitaldb.tools.prefect_yaml_check) gets updated to match.
    from prefect.cli.deploy import _models

    theirs = getattr(_models, prefect_model)
    keys = lambda model: {field.alias or name for name, field in model.model_fields.items()}  # noqa: E731
    assert keys(SCHEMA[prefect_model]) == keys(theirs)
