"""The demo database: deterministic, realistic, and harmless to anything that is not demo data."""

from __future__ import annotations

import subprocess
import sys

import pglast
import pytest
from psycopg2 import sql

from hospitaldb.local.demo import NotADemoDatabase, build_demo_database, is_demo_database
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.db import execute, execute_outside_transaction, query, scalar

FINGERPRINT = """
SELECT md5(string_agg(v::text || b.amount::text || b.status, ',' ORDER BY b.billing_id))
FROM staging.billing AS b JOIN staging.visits AS v USING (visit_id)
"""


def test_same_seed_same_data_other_seed_other_data(new_database):
    build_demo_database(new_database, visits=500, seed=3)
    first = scalar(new_database, FINGERPRINT)
    build_demo_database(new_database, visits=500, seed=3)
    assert scalar(new_database, FINGERPRINT) == first
    build_demo_database(new_database, visits=500, seed=4)
    assert scalar(new_database, FINGERPRINT) != first


def test_data_is_realistic(new_database):
    build_demo_database(new_database, visits=5000, seed=1)
    assert scalar(new_database, "SELECT count(*) FROM staging.visits") == 5000
    years = scalar(new_database, "SELECT (max(visit_date) - min(visit_date)) / 365.0 FROM staging.visits")
    assert years > 3.5
    statuses = dict(query(new_database, "SELECT status, count(*) FROM staging.billing GROUP BY 1"))
    assert set(statuses) == {"paid", "partially_paid", "pending", "denied"}
    assert statuses["paid"] > statuses["pending"] > statuses["denied"]
    # The busiest 1% of patients account for far more than 1% of visits.
    top_share = scalar(
        new_database,
        """
        SELECT sum(c)::float / (SELECT count(*) FROM staging.visits) FROM (
            SELECT count(*) AS c FROM staging.visits GROUP BY patient_id ORDER BY c DESC
            LIMIT (SELECT count(*) / 100 FROM staging.patients)) AS top
        """,
    )
    assert top_share > 0.05
    assert scalar(new_database, "SELECT min(amount) > 0 AND max(amount) < 5000 FROM staging.billing")
    overpaid = """
        SELECT count(*) FROM staging.billing AS b
        JOIN (SELECT billing_id, sum(amount) AS paid FROM staging.payments GROUP BY billing_id) AS p
        USING (billing_id) WHERE p.paid > b.amount
    """
    assert scalar(new_database, overpaid) == 0


def test_refuses_a_database_with_other_data_and_changes_nothing(new_database):
    execute(
        new_database,
        "CREATE TABLE public.real_patients (id int); INSERT INTO public.real_patients VALUES (1)",
    )
    with pytest.raises(NotADemoDatabase, match=r"public\.real_patients.*--force"):
        build_demo_database(new_database, visits=100)
    assert scalar(new_database, "SELECT to_regnamespace('staging') IS NULL")
    assert not is_demo_database(new_database)

    build_demo_database(new_database, visits=100, force=True)
    assert scalar(new_database, "SELECT count(*) FROM public.real_patients") == 1, (
        "--force touches only our schemas"
    )
    assert scalar(new_database, "SELECT count(*) FROM staging.visits") == 100


def test_refuses_hospitaldb_schemas_that_it_did_not_create(new_database):
    execute(new_database, "CREATE SCHEMA staging; CREATE TABLE staging.visits (id int)")
    with pytest.raises(NotADemoDatabase, match=r"staging\.visits"):
        build_demo_database(new_database, visits=100)
    assert scalar(new_database, "SELECT count(*) FROM staging.visits") == 0


def test_command_line_creates_the_database_and_refuses_with_exit_code_2(postgres_admin_url, new_database):
    import uuid

    from hospitaldb.engine.db.database import target_from_url

    missing = target_from_url(postgres_admin_url, "t").with_database(f"hospitaldb_new_{uuid.uuid4().hex[:6]}")
    missing_url = missing.url.render_as_string(hide_password=False)
    command = [sys.executable, "flows/demo_db.py", "--visits", "200", "--database-url"]
    try:
        done = subprocess.run([*command, missing_url], cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "Loaded 200 demo visits" in done.stdout
        assert is_demo_database(missing_url)
    finally:
        execute_outside_transaction(
            postgres_admin_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(missing.url.database)),
        )

    execute(new_database, "CREATE TABLE public.keep_me (id int)")
    refused = subprocess.run([*command, new_database], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "Nothing was changed" in refused.stderr
    assert "Traceback" not in refused.stderr


UNIQUE_KEYS = """
SELECT c.oid::regclass::text, pg_get_viewdef(c.oid), array_agg(a.attname::text ORDER BY k.position)
FROM pg_class AS c
JOIN pg_index AS i ON i.indrelid = c.oid AND i.indisunique
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k (attnum, position)
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE c.relkind = 'm' AND c.relnamespace = 'analytics'::regnamespace
GROUP BY c.oid
"""


def test_every_materialized_view_returns_its_rows_in_unique_key_order(views_warehouse):
    # The concurrent refresh sorts the new rows on the whole row, key first; rows
    # that arrive in key order make that sort cheap (docs/performance.md). The reference's
    # views until 1.9.0, kept as the warehouse of views the tests run parallel_views on.
    views = query(views_warehouse, UNIQUE_KEYS)
    assert len(views) == 4
    for view, definition, key in views:
        (statement,) = pglast.parse_sql(definition)
        order = [item.node.fields[-1].sval for item in statement.stmt.sortClause or ()]
        assert order == key, f"{view} is ordered by {order}, not by its unique key {key}"
