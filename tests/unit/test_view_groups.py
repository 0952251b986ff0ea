"""parallel_views' groups, decided from the SQL before anything runs: views that share a check refresh
together; a group waits for the views its views read; a step that cannot be split is refused."""

from __future__ import annotations

import logging
import re

import pytest

from hospitaldb.engine.checks.step import Check
from hospitaldb.engine.run.plans import StepPlan, plan_steps
from hospitaldb.engine.run.view_groups import ParallelViewsRefused, group_views, with_parallel_views
from hospitaldb.engine.sql.lineage import Lineage
from hospitaldb.engine.sql.script import SqlFiles, Statement
from hospitaldb.settings import SQL_DIR
from hospitaldb_testing.db import views_warehouse_sql

STEP = "refresh_phase2_materialized_views"
LOG = logging.getLogger("test")


def refresh_plan(views: list[str], checks: dict[str, str], extra: str | None = None) -> StepPlan:
    texts = [f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}" for view in views]
    if extra:
        texts.append(extra)
    statements = [Statement(text, "step.sql", number, number) for number, text in enumerate(texts, 1)]
    return StepPlan(
        step=STEP,
        statements=statements,
        objects=list(views),
        checks=[
            Check(name, f"{name}.sql", "error", Statement(text, f"{name}.sql", 1, 1))
            for name, text in checks.items()
        ],
    )


def lineage(reads: dict[str, set[str]]) -> Lineage:
    return Lineage(
        steps=dict.fromkeys(reads, STEP), reads={name: frozenset(read) for name, read in reads.items()}
    )


def shape(groups) -> list[tuple[tuple[str, ...], list[str], list[str]]]:
    return [
        (group.views, sorted(group.waits_for), [check.name for check in group.plan.checks])
        for group in groups
    ]


def test_views_that_share_a_check_are_one_group_and_a_check_of_no_view_runs_in_every_group():
    plan = refresh_plan(
        ["m.a", "m.b", "m.c", "m.d"],
        {
            "counts": "SELECT object_name FROM pg_temp.refresh_row_counts",
            "a_matches_b": "SELECT 1 FROM m.a, m.b WHERE false",
            "d_alone": "SELECT 1 FROM m.d, raw.x WHERE false",
        },
    )
    reads = {"m.a": {"raw.x"}, "m.b": {"raw.y"}, "m.c": {"m.a"}, "m.d": {"m.a"}}

    assert shape(group_views(plan, lineage(reads))) == [
        (("m.a", "m.b"), [], ["counts", "a_matches_b"]),
        (("m.c",), ["m.a"], ["counts"]),
        (("m.d",), ["m.a"], ["counts", "d_alone"]),
    ]


def test_groups_that_would_wait_for_each_other_become_one():
    # a and c share a check; b reads a and c reads b: c's group would wait for b, b's for a's group.
    plan = refresh_plan(["m.a", "m.b", "m.c"], {"a_and_c": "SELECT 1 FROM m.a JOIN m.c ON true WHERE false"})
    reads = {"m.a": {"raw.x"}, "m.b": {"m.a"}, "m.c": {"m.b"}}

    assert shape(group_views(plan, lineage(reads))) == [(("m.a", "m.b", "m.c"), [], ["a_and_c"])]
    # Had b not read a, a and c would simply wait for b.
    reads["m.b"] = {"raw.y"}
    assert shape(group_views(plan, lineage(reads))) == [
        (("m.a", "m.c"), ["m.b"], ["a_and_c"]),
        (("m.b",), [], []),
    ]


def test_a_view_that_reads_one_refreshed_after_it_is_refused():
    plan = refresh_plan(["m.a", "m.b"], {})
    with pytest.raises(
        ParallelViewsRefused,
        match=re.escape("m.a reads m.b, which refresh_phase2_materialized_views refreshes after it"),
    ):
        group_views(plan, lineage({"m.a": {"m.b"}, "m.b": {"raw.x"}}))


def test_a_step_with_other_statements_is_refused_when_grouped_and_left_serial_by_the_flow(caplog):
    plan = refresh_plan(["m.a"], {}, extra="INSERT INTO m.log SELECT 1")
    with pytest.raises(ParallelViewsRefused, match="REFRESH MATERIALIZED VIEW statements only"):
        group_views(plan, lineage({"m.a": {"raw.x"}}))
    with caplog.at_level(logging.WARNING):
        plans = with_parallel_views({STEP: plan}, lineage({"m.a": {"raw.x"}}), 4, LOG)
    assert plans[STEP].groups == ()
    assert "no selected step refreshes only materialized views" in caplog.text


def test_a_step_1_of_views_runs_its_per_patient_and_per_branch_views_side_by_side(tmp_path, monkeypatch):
    # The reference's step 1 until 1.9.0, four materialized views.
    monkeypatch.setenv(SQL_DIR.name, str(views_warehouse_sql(tmp_path / "sql")))
    plans, reference = plan_steps([STEP], False, 0.5, LOG, SqlFiles())
    (plan,) = with_parallel_views(plans, reference, 2, LOG).values()
    assert [(group.views, sorted(group.waits_for)) for group in plan.groups] == [
        (("analytics.mv_billing_summary", "analytics.mv_visit_summary"), []),
        (("analytics.mv_patient_summary",), ["analytics.mv_billing_summary", "analytics.mv_visit_summary"]),
        (
            ("analytics.mv_branch_billing_summary",),
            ["analytics.mv_billing_summary", "analytics.mv_visit_summary"],
        ),
    ]
    every_check = {check.name for check in plan.checks}
    assert {check.name for group in plan.groups for check in group.plan.checks} == every_check
