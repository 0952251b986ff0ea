"""Lineage from the SQL: temp tables and CTEs resolved, views' definitions read, any warehouse's own."""

from __future__ import annotations

from pathlib import Path

from hospitaldb.engine.sql.analysis import analyse_step, analyse_steps
from hospitaldb.engine.sql.lineage import lineage_of
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.engine.steps import STEPS
from hospitaldb.tools.validation import main as validate

# Read off the SQL files by hand: sql/schema/02_analytics.sql for the views, the step files for the rest.
REFERENCE_READS = {
    "analytics.mv_billing_summary": {"staging.billing", "staging.payments", "staging.visits"},
    "analytics.mv_visit_summary": {"analytics.mv_billing_summary", "staging.visits"},
    "analytics.mv_patient_summary": {"analytics.mv_visit_summary", "staging.patients"},
    "analytics.mv_branch_billing_summary": {"analytics.mv_visit_summary", "staging.branches"},
    "reporting.patient_summary": {"analytics.mv_patient_summary", "staging.patients", "staging.branches"},
    "reporting.branch_summary": {
        "analytics.mv_branch_billing_summary",
        "staging.branches",
        "staging.doctors",
    },
    "reporting.revenue_summary": {"analytics.mv_visit_summary"},
    "dashboards.daily_revenue": {"reporting.revenue_summary"},
    "dashboards.branch_performance": {"reporting.branch_summary"},
    "dashboards.patient_activity": {"reporting.patient_summary"},
}

SHOP_VIEW = """
-- Orders per day, the shop's one view.
CREATE MATERIALIZED VIEW mart.orders_per_day AS
WITH paid AS (SELECT * FROM raw.orders WHERE paid)
SELECT day, count(*) AS orders FROM paid JOIN raw.calendar USING (day) GROUP BY day;
"""
SHOP_STEPS = {
    "refresh_phase2_materialized_views": "REFRESH MATERIALIZED VIEW CONCURRENTLY mart.orders_per_day;\n",
    "refresh_phase3_reporting_tables": """
CREATE TEMP TABLE staged ON COMMIT DROP AS SELECT day, orders FROM mart.orders_per_day;
INSERT INTO staged SELECT day, 0 FROM raw.calendar WHERE day NOT IN (SELECT day FROM staged);
WITH gone AS (DELETE FROM report.orders AS t WHERE NOT EXISTS (SELECT FROM staged AS s WHERE s.day = t.day))
INSERT INTO report.orders SELECT * FROM staged ON CONFLICT (day) DO UPDATE SET orders = excluded.orders;
""",
    "refresh_dashboards": """
MERGE INTO board.week AS t USING (SELECT date_trunc('week', day) AS week, sum(orders) AS orders
                                  FROM report.orders GROUP BY 1) AS s ON s.week = t.week
WHEN MATCHED THEN UPDATE SET orders = s.orders WHEN NOT MATCHED THEN INSERT VALUES (s.week, s.orders);
""",
}


def test_the_reference_warehouse_reads_what_its_sql_reads():
    files = SqlFiles()
    lineage = lineage_of(analyse_steps(files), files)
    assert {name: set(reads) for name, reads in lineage.reads.items()} == REFERENCE_READS
    assert lineage.sources == [
        f"staging.{name}" for name in ("billing", "branches", "doctors", "patients", "payments", "visits")
    ]
    assert lineage.unknown == frozenset()
    assert lineage.downstream(["reporting.revenue_summary"]) == ["dashboards.daily_revenue"]
    assert lineage.downstream(["analytics.mv_visit_summary"]) == [
        "analytics.mv_patient_summary",
        "analytics.mv_branch_billing_summary",
        "reporting.patient_summary",
        "reporting.branch_summary",
        "reporting.revenue_summary",
        "dashboards.daily_revenue",
        "dashboards.branch_performance",
        "dashboards.patient_activity",
    ]


def test_another_warehouse_gets_its_own_lineage_through_ctes_temp_tables_and_merge(tmp_path: Path):
    for step, text in SHOP_STEPS.items():
        (tmp_path / f"{step}.sql").write_text(text)
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "views.sql").write_text(SHOP_VIEW)
    parsed = {step: analyse_step(step, SqlFiles(), tmp_path / f"{step}.sql") for step in STEPS}

    lineage = lineage_of(parsed, SqlFiles())

    assert {name: set(reads) for name, reads in lineage.reads.items()} == {
        "mart.orders_per_day": {"raw.orders", "raw.calendar"},
        "report.orders": {"mart.orders_per_day", "raw.calendar"},
        "board.week": {"report.orders"},
    }
    assert lineage.sources == ["raw.calendar", "raw.orders"]
    assert 'n0["raw.calendar"]' in lineage.as_mermaid() and "n2 --> n3" in lineage.as_mermaid()


def test_a_view_defined_in_no_file_is_asked_of_the_database_or_said_unknown(tmp_path: Path):
    for step, text in SHOP_STEPS.items():
        (tmp_path / f"{step}.sql").write_text(text)
    parsed = {step: analyse_step(step, SqlFiles(), tmp_path / f"{step}.sql") for step in STEPS}

    assert lineage_of(parsed, SqlFiles()).unknown == {"mart.orders_per_day"}
    assert "mart.orders_per_day <- unknown" in lineage_of(parsed, SqlFiles()).as_text()
    asked = lineage_of(
        parsed, SqlFiles(), lambda names: {name: "SELECT day FROM raw.orders" for name in names}
    )
    assert asked.reads["mart.orders_per_day"] == {"raw.orders"} and not asked.unknown


def test_validate_prints_the_lineage_as_text_and_mermaid(capsys):
    assert validate(args=["--lineage"]) == 0
    text = capsys.readouterr().out
    assert "  dashboards.daily_revenue <- reporting.revenue_summary" in text
    assert "sources: staging.billing, staging.branches" in text
    assert validate(args=["--lineage", "--mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR\n  subgraph sources\n")
