"""Tests that cannot break each other: another pytest session beside this one leaves its PostgreSQL alone."""

from __future__ import annotations

import subprocess
import sys
import uuid

from psycopg2 import sql

from hospitaldb_testing.db import execute_outside_transaction, scalar, url_of_database

PROBE = "def test_uses_tmp_path(tmp_path):\n    (tmp_path / 'note.txt').write_text('x')\n"


def test_a_second_pytest_session_leaves_this_sessions_postgresql_answering(
    postgres_admin_url, template_database, tmp_path
):
    (tmp_path / "test_probe.py").write_text(PROBE)
    # A developer runs one test while the suite runs: a new session resets pytest's temporary
    # root to mode 0700 (its own safety rule), which a server living under it could not survive.
    second = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_probe.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stdout + second.stderr

    # This session's server still reads and writes its own files: a new database is a copy of them.
    name = f"hospitaldb_isolation_{uuid.uuid4().hex[:8]}"
    execute_outside_transaction(
        postgres_admin_url,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_database)
        ),
    )
    try:
        execute_outside_transaction(postgres_admin_url, sql.SQL("CHECKPOINT"))
        assert scalar(url_of_database(postgres_admin_url, name), "SELECT count(*) FROM staging.visits") > 0
    finally:
        execute_outside_transaction(
            postgres_admin_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
        )
