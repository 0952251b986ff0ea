"""Where the HospitalDB is, and connections to it that identify themselves.

The database comes from the environment variable HOSPITALDB_DATABASE_URL or
from a prefect-sqlalchemy SqlAlchemyConnector block (the counterpart of
Airflow's `hospitaldb_postgres` connection). Both are read at run time. A
target never shows its password: messages name only database, host and port.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from hospitaldb import settings

APPLICATION_NAME = "hospitaldb-refresh"
DATABASE_URL_ENV = settings.DATABASE_URL.name
DEFAULT_DATABASE_BLOCK = "hospitaldb-postgres"
POSTGRES_DRIVERS = frozenset({"postgresql", "postgresql+psycopg2", "postgres"})

HOW_TO_CONFIGURE = (
    f"Set the environment variable {settings.DATABASE_URL}=postgresql://USER:PASSWORD@HOST:5432/DBNAME, "
    f"or create the SqlAlchemyConnector block '{DEFAULT_DATABASE_BLOCK}' "
    f"(python deployments/create_blocks.py reads HOSPITALDB_DB_* variables; see README 'Configuration')."
)


class DatabaseNotConfigured(RuntimeError):
    """No usable database settings; the message says how to provide them."""


@dataclass(frozen=True)
class DatabaseTarget:
    """A PostgreSQL database to refresh. `str()` and `repr()` never show the password."""

    url: URL = field(repr=False)
    source: str
    connect_args: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        host = self.url.host or self.url.query.get("host") or "local socket"
        port = f":{self.url.port}" if self.url.port else ""
        return f"database '{self.url.database}' on {host}{port} (from {self.source})"

    def __str__(self) -> str:
        return self.describe()

    def connection_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = self.url.translate_connect_args(username="user", database="dbname")
        for key, value in self.url.query.items():
            kwargs[key] = value[-1] if isinstance(value, tuple) else value
        kwargs.update(self.connect_args)
        return kwargs

    def with_database(self, database: str) -> DatabaseTarget:
        return DatabaseTarget(self.url.set(database=database), self.source, self.connect_args)

    def connect(
        self,
        *,
        application_name: str = APPLICATION_NAME,
        statement_timeout_seconds: float = 0,
        lock_timeout_seconds: float = 0,
        autocommit: bool = False,
    ) -> psycopg2.extensions.connection:
        """Open a connection with application_name and timeouts set (0 means no timeout)."""
        kwargs = self.connection_kwargs()
        kwargs.setdefault("connect_timeout", 10)
        psycopg2.extensions.set_wait_callback(wait_interruptibly)
        connection = psycopg2.connect(application_name=application_name, **kwargs)
        connection.autocommit = True
        with connection.cursor() as cursor:
            # Session settings as parameters: values never become SQL text.
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                "       set_config('lock_timeout', %s, false)",
                (_milliseconds(statement_timeout_seconds), _milliseconds(lock_timeout_seconds)),
            )
        connection.autocommit = autocommit
        return connection


def wait_interruptibly(connection: psycopg2.extensions.connection) -> None:
    """psycopg2 wait callback that lets signals in while a statement runs.

    libpq's own wait retries through signals, so a SIGTERM sent to a run blocked on a
    long statement would wait for the statement to end before Prefect could mark the run
    Crashed and alert. Waiting in Python lets the signal handler run; on any exception
    the server is told to cancel the statement, so its transaction rolls back at once.
    """
    while True:
        try:
            state = connection.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            if state == psycopg2.extensions.POLL_READ:
                select.select([connection.fileno()], [], [])
            elif state == psycopg2.extensions.POLL_WRITE:
                select.select([], [connection.fileno()], [])
            else:
                raise psycopg2.OperationalError(f"bad state from poll: {state}")
        except psycopg2.Error:
            raise
        except BaseException:
            with contextlib.suppress(psycopg2.Error):
                connection.cancel()
            raise


def _milliseconds(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


def target_from_url(url: str, source: str) -> DatabaseTarget:
    """Validate a PostgreSQL URL; the error never repeats the URL (it may hold a password)."""
    authority = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        # Parsers split at one '@' or the other and show part of the password as the host.
        raise DatabaseNotConfigured(
            f"{source} has more than one '@' before the host: a user name or password holding '@' "
            "(or ':', '/', '%') must be percent-encoded, '@' as %40. The URL is not repeated here: "
            "it holds a password."
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise DatabaseNotConfigured(
            f"{source} is not a valid database URL. Expected "
            "postgresql://USER:PASSWORD@HOST:5432/DBNAME (special characters in the password "
            "percent-encoded)."
        ) from None
    if parsed.drivername not in POSTGRES_DRIVERS:
        raise DatabaseNotConfigured(
            f"{source} uses driver '{parsed.drivername}'; HospitalDB refresh needs PostgreSQL "
            "(postgresql:// or postgresql+psycopg2://)."
        )
    if not parsed.database:
        raise DatabaseNotConfigured(f"{source} names no database: add /DBNAME to the URL.")
    return DatabaseTarget(parsed, source)


def target_from_block(block_name: str) -> DatabaseTarget:
    """Load a SqlAlchemyConnector block; a missing block says how to create one."""
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector

    try:
        connector = SqlAlchemyConnector.load(block_name)
    except ValueError:
        raise DatabaseNotConfigured(
            f"No SqlAlchemyConnector block named '{block_name}' on this Prefect server. " + HOW_TO_CONFIGURE
        ) from None
    info = connector.connection_info
    source = f"block '{block_name}'"
    if isinstance(info, ConnectionComponents):
        target = target_from_url(info.create_url().render_as_string(hide_password=False), source)
    else:
        target = target_from_url(str(info), source)
    return DatabaseTarget(target.url, source, dict(connector.connect_args or {}))


def resolve_database(block_name: str | None = None) -> DatabaseTarget:
    """The database to refresh.

    An explicit block name wins. Otherwise HOSPITALDB_DATABASE_URL if set, else the
    default block; with neither, DatabaseNotConfigured says how to set one up.
    """
    if block_name:
        return target_from_block(block_name)
    url = settings.DATABASE_URL.read()
    if url:
        return target_from_url(url, f"environment variable {settings.DATABASE_URL}")
    try:
        return target_from_block(DEFAULT_DATABASE_BLOCK)
    except DatabaseNotConfigured:
        raise DatabaseNotConfigured(
            f"No database configured: {settings.DATABASE_URL} is not set and there is no "
            f"'{DEFAULT_DATABASE_BLOCK}' block. " + HOW_TO_CONFIGURE
        ) from None
