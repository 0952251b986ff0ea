"""What `python flows/refresh.py` adds around the flow: finding a database, and a summary.

Only the local entry point may fall back to the embedded demo database; a
deployment run with no database configured fails and says how to configure one.
"""

from __future__ import annotations

import os
from typing import Any

from hospitaldb.database import (
    DATABASE_URL_ENV,
    DatabaseNotConfigured,
    resolve_database,
    target_from_url,
)
from hospitaldb.embedded import local_data_dir, start_embedded_postgres

DEMO_DATABASE = "hospitaldb"


def choose_local_database(database_url: str | None, database_block: str | None, demo_visits: int) -> str:
    """Pick the database for a local run; return a description of where the data lives."""
    if database_url:
        target = target_from_url(database_url, "--database-url")
        os.environ[DATABASE_URL_ENV] = database_url
        return target.describe()
    try:
        return resolve_database(database_block).describe()
    except DatabaseNotConfigured:
        if database_block:
            raise
    return _use_embedded_demo(demo_visits)


def _use_embedded_demo(demo_visits: int) -> str:
    from demo_db import build_demo_database, is_demo_database

    pgdata = local_data_dir() / "pgdata"
    print(f"No database configured: using the embedded demo PostgreSQL in {pgdata}")
    admin_url = start_embedded_postgres(pgdata)
    url = target_from_url(admin_url, "embedded demo").with_database(DEMO_DATABASE)
    demo_url = url.url.render_as_string(hide_password=False)
    if not is_demo_database(demo_url):
        print(f"Building the demo HospitalDB ({demo_visits:,} visits), first use only...")
        build_demo_database(demo_url, visits=demo_visits)
    os.environ[DATABASE_URL_ENV] = demo_url
    return f"embedded PostgreSQL, database '{DEMO_DATABASE}', data in {pgdata}"


def print_summary(results: list[dict[str, Any]], where: str) -> None:
    print("\nHospitalDB refresh completed")
    print(f"{'step':<36}{'statements':>11}{'seconds':>10}{'rows':>12}")
    for result in results:
        print(
            f"{result['step']:<36}{len(result['statements']):>11}"
            f"{result['seconds']:>10.2f}{result['rows']:>12,}"
        )
    print(f"\nData: {where}")
