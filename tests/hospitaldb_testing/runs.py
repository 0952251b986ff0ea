"""Running the flow in tests and reading back what Prefect recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import State

from hospitaldb.engine.db.database import DATABASE_URL_ENV
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.refresh import hospitaldb_refresh

FAST = {"retry_delay_seconds": 0, "lock_timeout_seconds": 60}


def run_flow(**parameters: Any) -> State:
    return hospitaldb_refresh(**{**FAST, **parameters}, return_state=True)


def task_runs(state: State) -> dict[str, Any]:
    """The flow run's task runs by task name."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    return {run.name.rsplit("-", 1)[0]: run for run in runs}


def run_logs(state: State) -> str:
    """Every log line of the run, as the Prefect server has them."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # runs and hooks log through the batching API log worker
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    return "\n".join(log.message for log in logs)


def error_text(state: State) -> str:
    try:
        state.result()
    except Exception as error:
        return str(error)
    raise AssertionError(f"expected a failed run, got {state.type}")


class InBackground(threading.Thread):
    """Run a callable in a thread and keep its result."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target_fn()
        except BaseException as error:  # for the test to see, not a thread's traceback on stderr
            self.error = error


def wait_for_blocked_refresh(
    url: str,
    timeout: float = 60,
    application: str = "hospitaldb-refresh",
    process: subprocess.Popen | None = None,
) -> int:
    """Wait until a refresh statement (or another of the application's) waits on a lock; return its pid.

    process: the run's own, when it has one: if it ends first, its output says why.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the run ended before it waited on the lock:\n{output[-3000:]}")
        connection = psycopg2.connect(url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock' AND datname = current_database()",
                    (application,),
                )
                row = cursor.fetchone()
        finally:
            connection.close()
        if row:
            return row[0]
        time.sleep(0.05)
    if process is not None:
        process.kill()
        output = process.communicate()[0] or ""
        raise AssertionError(
            f"no refresh statement started waiting on the lock; the run said:\n{output[-3000:]}"
        )
    raise AssertionError("no refresh statement started waiting on the lock")


class TableLock:
    """Hold a lock that makes the refresh wait at a known statement (readers still pass)."""

    def __init__(self, url: str, table: str, mode: str = "SHARE") -> None:
        self.connection = psycopg2.connect(url)
        with self.connection.cursor() as cursor:
            from psycopg2 import sql

            schema, name = table.split(".")
            cursor.execute(
                sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.Identifier(schema, name), sql.SQL(mode))
            )

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()


def flow_process(
    prefect: str, database_url: str, arguments: str = "", output: bool = True
) -> subprocess.Popen:
    """`hospitaldb_refresh(arguments)` in a process of its own, to signal or kill (its output as text)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from hospitaldb.refresh import hospitaldb_refresh; hospitaldb_refresh({arguments})",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PREFECT_API_URL": prefect, DATABASE_URL_ENV: database_url},
        stdout=subprocess.PIPE if output else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
        text=True,
    )
