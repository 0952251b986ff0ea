"""Where the database comes from, and that its password never shows."""

from __future__ import annotations

import pytest
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver
from sqlalchemy.engine import make_url

from hospitaldb.engine.db.database import (
    DATABASE_URL_ENV,
    DatabaseNotConfigured,
    resolve_database,
    target_from_url,
)
from hospitaldb_testing.db import scalar
from hospitaldb_testing.runs import error_text, run_flow

SECRET = "s3cret-Pa55word"


def test_no_database_configured_fails_at_once_saying_how_to_configure(prefect, monkeypatch):
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    state = run_flow()
    assert state.is_failed()
    message = error_text(state)
    assert DATABASE_URL_ENV in message
    assert "hospitaldb-postgres" in message
    assert "create_blocks.py" in message


def test_refresh_through_a_sqlalchemy_connector_block(demo_database, prefect, monkeypatch):
    url = make_url(demo_database)
    SqlAlchemyConnector(
        connection_info=ConnectionComponents(
            driver=SyncDriver.POSTGRESQL_PSYCOPG2,
            username=url.username,
            password=url.password or None,
            host=url.host,
            port=url.port,
            database=url.database,
            query=dict(url.query) or None,
        )
    ).save("test-hospitaldb", overwrite=True)
    monkeypatch.delenv(DATABASE_URL_ENV)

    state = run_flow(database_block="test-hospitaldb")

    assert state.is_completed(), state.message
    assert scalar(demo_database, "SELECT count(*) FROM dashboards.patient_activity") > 0


def test_missing_named_block_says_which_block_and_how_to_create_it(prefect):
    with pytest.raises(DatabaseNotConfigured, match="No SqlAlchemyConnector block named 'nope'"):
        resolve_database("nope")


def test_password_never_appears_in_errors_or_descriptions(prefect, monkeypatch):
    url = f"postgresql://refresher:{SECRET}@127.0.0.1:1/hospitaldb"
    assert SECRET not in target_from_url(url, "test").describe()
    assert SECRET not in repr(target_from_url(url, "test"))
    monkeypatch.setenv(DATABASE_URL_ENV, url)

    state = run_flow(retries=0)

    message = error_text(state)
    assert "Cannot connect to database 'hospitaldb' on 127.0.0.1:1" in message
    assert "Nothing was refreshed" in message
    assert SECRET not in message
    assert SECRET not in str(state.message)


def test_malformed_url_is_refused_without_echoing_it(monkeypatch):
    with pytest.raises(DatabaseNotConfigured) as caught:
        target_from_url(f"postgresql://u:{SECRET}@host:notaport/db", "environment variable X")
    assert SECRET not in str(caught.value)
    with pytest.raises(DatabaseNotConfigured, match="needs PostgreSQL"):
        target_from_url("mysql://u:p@host/db", "test")
