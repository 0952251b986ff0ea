"""How parallel_views splits a step of materialized views into groups, decided before anything runs.

A view publishes only after every check that reads it has passed, and a check sees one
transaction: so views that share a check are refreshed together, in one session and one
transaction, as a group. A group starts once every view its views read has committed.
How much runs side by side is thus decided by the SQL: what each view reads (its
lineage), and which checks span views. engine.run.parallel runs the groups.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace

from pglast import ast

from hospitaldb.engine.db.errors import RefreshError
from hospitaldb.engine.run.plans import StepPlan, ViewGroup
from hospitaldb.engine.sql.lineage import Lineage, statement_reads
from hospitaldb.statuses import RunStatus


class ParallelViewsRefused(RefreshError, ValueError):
    """parallel_views was asked of a step it cannot split into views; nothing was run."""

    status = RunStatus.REFUSED


def splits_into_views(plan: StepPlan) -> bool:
    """True when every statement of the step refreshes one materialized view."""
    return len(plan.statements) == len(plan.objects) and all(
        isinstance(statement.tree, ast.RefreshMatViewStmt) for statement in plan.statements
    )


def group_views(plan: StepPlan, lineage: Lineage) -> list[ViewGroup]:
    """The step's views in groups (file order), each with what it waits for and the checks it runs.

    ParallelViewsRefused if a statement is not a REFRESH MATERIALIZED VIEW, or a view reads
    one the file refreshes after it (serially it would read that view's old rows too).
    """
    if not splits_into_views(plan):
        raise ParallelViewsRefused(
            f"parallel_views needs a step of REFRESH MATERIALIZED VIEW statements only, one view each; "
            f"{plan.step} has other statements. Run it with parallel_views=1"
        )
    views = plan.objects
    reads = {view: set(lineage.upstream(view)) & set(views) for view in views}
    for view, upstream in reads.items():
        later = sorted(name for name in upstream if views.index(name) > views.index(view))
        if later:
            raise ParallelViewsRefused(
                f"{view} reads {', '.join(later)}, which {plan.step} refreshes after it: "
                "refresh what a view reads first in the file, or run with parallel_views=1"
            )
    check_reads = [(check, statement_reads(check.statement) & set(views)) for check in plan.checks]
    root_of = _roots(views, reads, [read for _, read in check_reads])
    groups = []
    for root in dict.fromkeys(root_of.values()):
        names = [view for view in views if root_of[view] == root]
        # A check that reads none of the step's views (the shrink guard's counts) runs in every group.
        checks = [check for check, read in check_reads if not read or root_of[next(iter(read))] == root]
        sub_plan = replace(
            plan,
            statements=[plan.statements[views.index(view)] for view in names],
            objects=names,
            checks=checks,
            statement_total=len(plan.statements),
            incremental=None,  # views refresh whole: a group never takes changed keys
        )
        waits = {upstream for view in names for upstream in reads[view]} - set(names)
        groups.append(ViewGroup(tuple(names), sub_plan, frozenset(waits)))
    return groups


def _roots(views: list[str], reads: Mapping[str, set[str]], shared: Iterable[set[str]]) -> dict[str, str]:
    """Each view's group, named by its first view: views read by one check share a group.

    Groups that would wait for each other (A and C in one group, B in another that reads A
    and is read by C) become one, so that every group can start once those it reads committed.
    """
    group_of = {view: view for view in views}  # union-find

    def find(view: str) -> str:
        while group_of[view] != view:
            view = group_of[view]
        return view

    def join(together: Iterable[str]) -> None:
        roots = sorted({find(view) for view in together}, key=views.index)
        for root in roots[1:]:
            group_of[root] = roots[0]

    for together in shared:
        join(together)
    while cycle := _waiting_for_each_other({view: find(view) for view in views}, reads):
        join(cycle)
    return {view: find(view) for view in views}


def with_parallel_views(
    plans: Mapping[str, StepPlan],
    lineage: Lineage,
    sessions: int,
    logger: logging.Logger | logging.LoggerAdapter,
) -> dict[str, StepPlan]:
    """The plans, each step of materialized views only set to refresh them in `sessions` sessions.

    Decided before anything runs, so a step that cannot be split refuses the run untouched.
    """
    if sessions <= 1:
        return dict(plans)
    split = {}
    for step, plan in plans.items():
        if len(plan.objects) > 1 and splits_into_views(plan):
            groups = group_views(plan, lineage)
            split[step] = replace(plan, sessions=sessions, groups=tuple(groups))
            logger.info(
                "parallel_views: %s refreshes %d views in %d group(s), up to %d sessions, each group "
                "committing on its own after its checks: %s",
                step,
                len(plan.objects),
                len(groups),
                sessions,
                "; ".join(
                    group.name + (f" (after {', '.join(sorted(group.waits_for))})" if group.waits_for else "")
                    for group in groups
                ),
            )
    if not split:
        logger.warning(
            "parallel_views=%d: no selected step refreshes only materialized views; every step runs "
            "serially, in one transaction",
            sessions,
        )
    return {step: split.get(step, plan) for step, plan in plans.items()}


def _waiting_for_each_other(root_of: Mapping[str, str], reads: Mapping[str, set[str]]) -> list[str]:
    """Two groups (by their first views) that wait for each other, directly or not; [] if none."""
    waits: dict[str, set[str]] = {root: set() for root in root_of.values()}
    for view, upstream in reads.items():
        waits[root_of[view]].update(root_of[name] for name in upstream)
    for root in waits:
        waits[root].discard(root)
    # The groups' waits as a lineage: upstream() is the walk to everything a group waits for.
    graph = Lineage({}, {root: frozenset(waiting) for root, waiting in waits.items()})
    return next(
        ([group, other] for group in waits for other in waits[group] if group in graph.upstream(other)), []
    )
