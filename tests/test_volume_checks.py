"""Volume checks on real PostgreSQL: 30 recorded nights of billing, then a night with a tenth of the
usual new rows is warned (the reference SQL) or refused (a copy that says error); a weekly rhythm over
eight weeks raises nothing; a refreshed object's changes are judged inside its step."""

from __future__ import annotations

import shutil
import uuid

import pytest

from hospitaldb.paths import PROJECT_SQL_DIR
from hospitaldb.settings import SQL_DIR
from hospitaldb_testing.db import checksums, execute, query, scalar
from hospitaldb_testing.runs import error_text, run_flow

BILLING_PER_NIGHT = 300


def record_nights(url: str, source: str, per_night: list[int]) -> None:
    """Earlier completed runs, one per night, with the source's counts: what nightly runs leave in
    etl_audit, without running them. per_night[i] is what the run i nights ago added (0: the last
    real run, today)."""
    (latest_count,) = query(
        url,
        "SELECT s.row_count FROM etl_audit.source_counts AS s JOIN etl_audit.refresh_runs AS r USING (flow_run_id) "
        "WHERE s.source = %s AND r.status = 'completed' ORDER BY r.started_at DESC LIMIT 1",
        (source,),
    )[0]
    count = latest_count
    for nights_ago, added in enumerate(per_night, start=1):
        count -= added  # the count one night earlier
        run = str(uuid.uuid4())
        execute(
            url,
            "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps, status, outcome, started_at, "
            "finished_at) VALUES (%s, %s, ARRAY['refresh_dashboards'], 'completed', 'completed', "
            "now() - make_interval(days => %s), now() - make_interval(days => %s))",
            (run, f"night-{nights_ago}", nights_ago, nights_ago),
        )
        execute(
            url,
            "INSERT INTO etl_audit.source_counts (flow_run_id, source, row_count) VALUES (%s, %s, %s)",
            (run, source, count),
        )


def add_billing_rows(url: str, rows: int) -> None:
    execute(
        url,
        "INSERT INTO staging.billing SELECT 95000000 + n, v.visit_id, 'LAB', 10.00, 'pending', current_date "
        "FROM (SELECT visit_id, row_number() OVER (ORDER BY visit_id) AS n FROM staging.visits) AS v WHERE n <= %s",
        (rows,),
    )


def volume_result(url: str, flow_run_id: str, name: str) -> tuple:
    return query(
        url,
        "SELECT severity, outcome, detail FROM etl_audit.check_results WHERE flow_run_id = %s AND check_name = %s",
        (flow_run_id, name),
    )[0]


def test_a_tenth_of_the_usual_new_billing_rows_is_warned_by_default(demo_database, prefect):
    assert run_flow().is_completed()
    record_nights(
        demo_database, "staging.billing", [BILLING_PER_NIGHT + (night % 5) * 5 - 10 for night in range(30)]
    )
    add_billing_rows(demo_database, BILLING_PER_NIGHT // 10)

    state = run_flow()

    assert state.is_completed(), error_text(state)
    severity, outcome, detail = volume_result(
        demo_database, str(state.state_details.flow_run_id), "volume staging.billing"
    )
    assert (severity, outcome) == ("warn", "warned")
    assert detail.startswith("staging.billing: 30 new rows, usual 290 to 310 on ")
    status = dict(query(demo_database, "SELECT object_name, last_run_checks FROM etl_audit.data_status"))
    assert set(status.values()) == {"warned"}, "the sources' warning reaches every object's status"


def test_the_same_night_is_refused_where_the_sql_says_error(demo_database, prefect, tmp_path, monkeypatch):
    sql_dir = tmp_path / "sql"
    shutil.copytree(PROJECT_SQL_DIR, sql_dir)
    volumes = sql_dir / "checks" / "volumes.sql"
    volumes.write_text(
        volumes.read_text().replace(
            "('staging.billing', 'new_rows', 'warn'", "('staging.billing', 'new_rows', 'error'"
        )
    )
    monkeypatch.setenv(SQL_DIR.name, str(sql_dir))
    assert run_flow().is_completed()
    record_nights(demo_database, "staging.billing", [BILLING_PER_NIGHT] * 30)
    add_billing_rows(demo_database, BILLING_PER_NIGHT // 10)
    before = checksums(demo_database)

    state = run_flow()

    assert state.is_failed()
    assert checksums(demo_database) == before, "refused before the first write"
    message = error_text(state)
    assert "source unusual: staging.billing: 30 new rows, usual 300 to 300 on " in message
    assert (
        scalar(
            demo_database,
            "SELECT outcome FROM etl_audit.refresh_runs WHERE flow_run_id = %s",
            (str(state.state_details.flow_run_id),),
        )
        == "sources_refused"
    )
    because = set(query(demo_database, "SELECT held_back_because FROM etl_audit.data_status"))
    assert because == {("the run failed at check_sources: source unusual: staging.billing",)}


def test_eight_weeks_with_tonights_weekday_the_quiet_one_raise_nothing(demo_database, prefect):
    assert run_flow().is_completed()
    # Tonight's weekday is the quiet one: every seventh night back from today's run.
    new_rows = [
        BILLING_PER_NIGHT // 3 if nights_ago % 7 == 0 else BILLING_PER_NIGHT for nights_ago in range(56)
    ]
    record_nights(demo_database, "staging.billing", new_rows)
    add_billing_rows(demo_database, BILLING_PER_NIGHT // 3)

    state = run_flow()

    assert state.is_completed()
    _, outcome, detail = volume_result(
        demo_database, str(state.state_details.flow_run_id), "volume staging.billing"
    )
    assert outcome == "passed", detail
    assert "usual 100 to 100 on " in detail and "(last 8)" in detail


@pytest.mark.parametrize("changed", [0, 40])
def test_a_refreshed_objects_changes_are_judged_inside_its_step(demo_database, prefect, changed):
    assert run_flow().is_completed()
    # That first run filled the table; the thirty earlier nights changed 40 revenue rows each.
    execute(
        demo_database,
        "UPDATE etl_audit.run_objects SET inserted = NULL WHERE object_name = 'reporting.revenue_summary'",
    )
    for nights_ago in range(1, 31):
        run = str(uuid.uuid4())
        execute(
            demo_database,
            "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps, status, outcome, started_at) "
            "VALUES (%s, 'night', ARRAY['refresh_phase3_reporting_tables'], 'completed', 'completed', "
            "now() - make_interval(days => %s));"
            "INSERT INTO etl_audit.run_objects (flow_run_id, step, object_name, inserted, updated, deleted) "
            "VALUES (%s, 'refresh_phase3_reporting_tables', 'reporting.revenue_summary', 2, 38, 0)",
            (run, nights_ago, run),
        )
    if changed:
        # One billing line in each of 40 (visit date, branch) pairs: 40 revenue rows change.
        execute(
            demo_database,
            "UPDATE staging.billing SET amount = amount + 1 WHERE billing_id IN ("
            "  SELECT billing_id FROM (SELECT DISTINCT ON (v.visit_date, v.branch_id) b.billing_id"
            "                          FROM staging.billing AS b JOIN staging.visits AS v USING (visit_id)"
            "                          ORDER BY v.visit_date, v.branch_id, b.billing_id) AS one LIMIT 40)",
        )

    state = run_flow()

    assert state.is_completed()
    _, outcome, detail = volume_result(
        demo_database, str(state.state_details.flow_run_id), "volume reporting.revenue_summary"
    )
    assert outcome == ("passed" if changed else "warned"), detail
    assert detail.startswith("reporting.revenue_summary: ")
    assert detail.startswith(f"reporting.revenue_summary: {changed} rows changed, usual 40 to 40 on ")
