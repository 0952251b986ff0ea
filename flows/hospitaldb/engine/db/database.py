"""Where the HospitalDB is, and connections to it that identify themselves.

The database comes from the environment variable HOSPITALDB_DATABASE_URL or
from a prefect-sqlalchemy SqlAlchemyConnector block (the counterpart of
Airflow's `hospitaldb_postgres` connection). Both are read at run time. A
target never shows its password: messages name only database, host and port.
"""

from __future__ import annotations

import contextlib
import functools
import select
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from hospitaldb import settings
from hospitaldb.api_channel import before_loading, run_logger
from hospitaldb.engine.db.deadline import NO_LIMITS, DeadlineConnection, Limits
from hospitaldb.engine.db.errors import RefreshError
from hospitaldb.engine.db.libpq import hosts_as_query, libpq_keywords
from hospitaldb.engine.db.tls import tls_warning
from hospitaldb.statuses import RunStatus

APPLICATION_NAME = "hospitaldb-refresh"
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10
# The same on the server's end of each TCP session: a NAT that silently drops an idle lock
# session would otherwise leave its backend, and the overlap lock, held for the kernel's
# default two hours, refusing every following run as "already running". Ignored on Unix sockets.
SERVER_TCP_SETTINGS = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
# PostgreSQL 14+: the server checks every 10 s that the client is still there while a
# statement runs, so the backend of a killed worker stops instead of running on for hours.
CLIENT_CHECK_INTERVAL_MS = "10000"
DATABASE_URL_ENV = settings.DATABASE_URL.name
DEFAULT_DATABASE_BLOCK = "hospitaldb-postgres"
POSTGRES_DRIVERS = frozenset({"postgresql", "postgresql+psycopg2", "postgres"})

HOW_TO_CONFIGURE = (
    f"Set the environment variable {settings.DATABASE_URL}=postgresql://USER:PASSWORD@HOST:5432/DBNAME, "
    f"or create the SqlAlchemyConnector block '{DEFAULT_DATABASE_BLOCK}' "
    f"(python deployments/create_blocks.py reads HOSPITALDB_DB_* variables; see docs/configuration.md)."
)


class DatabaseNotConfigured(RefreshError):
    """No usable database settings; the message says how to provide them."""

    status = RunStatus.REFUSED


@dataclass(frozen=True)
class DatabaseTarget:
    """A PostgreSQL database to refresh. `str()` and `repr()` never show the password."""

    url: URL = field(repr=False)
    source: str
    connect_args: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        hosts = self.url.query.get("host")
        host = self.url.host or (",".join(hosts) if isinstance(hosts, tuple) else hosts) or "local socket"
        port = f":{self.url.port}" if self.url.port else ""
        return f"database '{self.url.database}' on {host}{port} (from {self.source})"

    def __str__(self) -> str:
        return self.describe()

    @functools.cached_property
    def _connection_kwargs(self) -> dict[str, Any]:
        """libpq's keywords, read from the URL once per target, however many sessions it opens."""
        return libpq_keywords(self.url, self.connect_args)

    @property
    def tls_warning(self) -> str | None:
        """Why this target's sessions are not authenticated beyond loopback (engine.db.tls), or None."""
        return tls_warning(self._connection_kwargs)

    def with_database(self, database: str) -> DatabaseTarget:
        return DatabaseTarget(self.url.set(database=database), self.source, self.connect_args)

    def connect(
        self, limits: Limits = NO_LIMITS, *, purpose: str | None = None, autocommit: bool = False
    ) -> psycopg2.extensions.connection:
        """Open a session that names itself and its purpose, with limits, keepalives and a connect deadline.

        Every session of the refresh goes through here. pg_stat_activity shows it as
        hospitaldb-refresh, or hospitaldb-refresh-PURPOSE (lock, audit, sources, monitor).
        The connect timeout (connect_timeout in the URL, default 10 s) holds even though
        the interruptible wait makes libpq connect asynchronously, where libpq itself
        ignores it: a server that accepts the TCP connection and never answers fails
        the connection instead of hanging the run.
        """
        session_limits = limits.now()
        kwargs = dict(self._connection_kwargs)
        if limits.deadline is not None:
            kwargs["connection_factory"] = DeadlineConnection
        timeout = float(kwargs.pop("connect_timeout", None) or DEFAULT_CONNECT_TIMEOUT_SECONDS)
        application_name = f"{APPLICATION_NAME}-{purpose}" if purpose else APPLICATION_NAME
        psycopg2.extensions.set_wait_callback(wait_interruptibly)
        _connecting.deadline = time.monotonic() + timeout
        _connecting.timeout = timeout
        try:
            connection = psycopg2.connect(application_name=application_name, **kwargs)
        finally:
            _connecting.deadline = None
        connection.autocommit = True
        if limits.deadline is not None:
            connection.deadline = limits.deadline
            connection.statement_timeout_seconds = limits.statement_timeout_seconds
            connection.lock_timeout_seconds = limits.lock_timeout_seconds
        with connection.cursor(cursor_factory=psycopg2.extensions.cursor) as cursor:
            # Session settings as parameters: values never become SQL text.
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                "       set_config('lock_timeout', %s, false)",
                (
                    _milliseconds(session_limits.statement_timeout_seconds),
                    _milliseconds(session_limits.lock_timeout_seconds),
                ),
            )
            if limits.parallel_workers is not None:
                cursor.execute(
                    "SELECT set_config('max_parallel_workers_per_gather', %s, false)",
                    (str(limits.parallel_workers),),
                )
            for name, value in SERVER_TCP_SETTINGS.items():
                if name != "tcp_user_timeout" or connection.server_version >= 120000:
                    cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
            if connection.server_version >= 140000:
                cursor.execute(
                    "SELECT set_config('client_connection_check_interval', %s, false)",
                    (CLIENT_CHECK_INTERVAL_MS,),
                )
        connection.autocommit = autocommit
        return connection


# The deadline of the connection being opened on this thread, read by the wait callback.
_connecting = threading.local()


def wait_interruptibly(connection: psycopg2.extensions.connection) -> None:
    """psycopg2 wait callback that lets signals in while a statement runs.

    libpq's own wait retries through signals, so a SIGTERM sent to a run blocked on a
    long statement would wait for the statement to end before Prefect could mark the run
    Crashed and alert. Waiting in Python lets the signal handler run; on any exception
    the server is told to cancel the statement, so its transaction rolls back at once.
    """
    deadline = getattr(_connecting, "deadline", None)
    while True:
        try:
            state = connection.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if state == psycopg2.extensions.POLL_READ:
                ready = select.select([connection.fileno()], [], [], wait)[0]
            elif state == psycopg2.extensions.POLL_WRITE:
                ready = select.select([], [connection.fileno()], [], wait)[1]
            else:
                raise psycopg2.OperationalError(f"bad state from poll: {state}")
            if not ready:
                raise psycopg2.OperationalError(
                    f"timeout expired: the server did not answer within {_connecting.timeout:g} s "
                    "(connect_timeout)"
                )
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
        parsed = make_url(hosts_as_query(url))
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

    before_loading(block_name, DatabaseNotConfigured)
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
    """The database to refresh, warned every time its sessions would not be authenticated (engine.db.tls).

    An explicit block name wins. Otherwise HOSPITALDB_DATABASE_URL if set, else the
    default block; with neither, DatabaseNotConfigured says how to set one up.
    """
    target = _resolve(block_name)
    warning = target.tls_warning
    if warning:
        run_logger().warning("%s: %s", target.describe(), warning)
    return target


def _resolve(block_name: str | None) -> DatabaseTarget:
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
