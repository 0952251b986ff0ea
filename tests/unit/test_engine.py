"""The engine's pure parts: which steps run, session limits, source problems, the lint, what SQL names,
and the Debian mirror an image is bootstrapped from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from hospitaldb.engine.checks.source import SourceState
from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.sql.analysis import analyse_step, relations_named
from hospitaldb.engine.sql.script import SqlFiles, split_statements
from hospitaldb.engine.steps import STEPS, InvalidSteps, in_pipeline_order
from hospitaldb.tools.container_image import debian_mirror

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def test_steps_run_in_pipeline_order_whatever_order_they_are_asked_in():
    assert in_pipeline_order(None) == list(STEPS)
    assert in_pipeline_order([STEPS[2], STEPS[0], STEPS[2]]) == [STEPS[0], STEPS[2]]
    with pytest.raises(InvalidSteps, match="choose from"):
        in_pipeline_order(["refresh_everything"])
    with pytest.raises(InvalidSteps, match="No step selected"):
        in_pipeline_order([])


def test_bookkeeping_limits_are_the_runs_but_never_longer_than_a_cap():
    assert Limits(3600, 30).at_most(10) == Limits(10, 10)
    assert Limits(5, 1).at_most(10) == Limits(5, 1)
    assert Limits(0, 0).at_most(10) == Limits(10, 10), "0 (none) becomes the cap"


def state(
    rows: int, newest: datetime | None = NOW, max_age: timedelta | None = timedelta(days=3)
) -> SourceState:
    return SourceState("staging.visits", rows, newest, max_age, Decimal("0.1"), NOW)


def test_a_source_is_judged_by_counts_and_ages_never_by_its_dates():
    assert state(1000).problem(1000) is None
    assert state(0).problem(1000).text == "source incomplete: staging.visits has no rows"
    shrunk = state(800).problem(1000)
    assert (shrunk.kind, shrunk.headline) == ("incomplete", "source incomplete: staging.visits")
    assert "800 rows, 20% fewer than the 1,000 of the last successful run (limit 10%)" in shrunk.text
    stale = state(1000, NOW - timedelta(days=5)).problem(1000)
    assert stale.text == "source stale: staging.visits's newest data is 5 days old (limit 3 days)"
    assert "2026" not in stale.text, "the newest date is a value from a row: only its age is shown"
    assert state(1000, None).problem(None).text.endswith("newest data is none at all (limit 3 days)")


def step_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "refresh_dashboards.sql"
    path.write_text(text)
    return path


def test_the_lint_names_the_lock_what_it_blocks_and_what_to_write_instead(tmp_path):
    sql = "-- board\nINSERT INTO dashboards.board SELECT 1;\nTRUNCATE dashboards.board;\nREFRESH MATERIALIZED VIEW a.v;\n"
    parsed = analyse_step("refresh_dashboards", SqlFiles(), step_file(tmp_path, sql))
    assert [(f.location.rsplit(":", 1)[1], f.lock, f.blocks) for f in parsed.blocking] == [
        ("3", "ACCESS EXCLUSIVE", "readers and writers"),
        ("4", "ACCESS EXCLUSIVE", "readers and writers"),
    ]
    assert "CONCURRENTLY" in parsed.blocking[1].fix
    allowed = analyse_step(
        "refresh_dashboards",
        SqlFiles(),
        step_file(tmp_path, "-- allow-blocking: nobody reads at night\nTRUNCATE t.board;\n"),
    )
    assert allowed.blocking == [] and allowed.allowed[0].allowed_because == "nobody reads at night"


def test_what_sql_names_leaves_out_temporary_tables_and_ctes():
    statements = split_statements(
        "CREATE TEMP TABLE new_rows AS SELECT * FROM staging.visits;\n"
        "WITH gone AS (DELETE FROM mart.t RETURNING id) "
        "INSERT INTO mart.t SELECT * FROM new_rows JOIN staging.patients USING (id) WHERE id NOT IN (SELECT id FROM gone);\n"
    )
    assert relations_named(statements) == {"staging.visits", "staging.patients", "mart.t"}


def test_the_image_is_bootstrapped_from_the_mirror_apt_uses_here():
    deb822 = (
        "Types: deb\nURIs: http://mirror.hospital.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.hospital.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert debian_mirror([("debian.sources", deb822)]) == "http://mirror.hospital.example/debian"
    one_line = "# local\ndeb [arch=amd64] http://apt.example/debian bookworm main\n"
    assert debian_mirror([("sources.list", one_line)]) == "http://apt.example/debian"
    assert debian_mirror([("sources.list", "deb http://apt.example/debian trixie main\n")]) is None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://refresher:pw@db-a:5432,db-b:5433/hospitaldb?target_session_attrs=read-write",
        "postgresql://refresher:pw@/hospitaldb?host=db-a:5432&host=db-b:5433&target_session_attrs=read-write",
    ],
)
def test_a_multi_host_url_names_every_host_to_libpq_in_order(url):
    target = target_from_url(url, "test")
    kwargs = target._connection_kwargs
    assert (kwargs["host"], kwargs["port"]) == ("db-a,db-b", "5432,5433")
    assert kwargs["target_session_attrs"] == "read-write" and kwargs["dbname"] == "hospitaldb"
    assert target.describe() == "database 'hospitaldb' on db-a:5432,db-b:5433 (from test)"
    assert "pw" not in target.describe()
