"""The overlap guard: one refresh at a time per database, via a PostgreSQL advisory lock.

The lock lives on its own session for the whole run. If the process dies, the
session ends and PostgreSQL releases the lock: no stale lock file to clean up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.errors

from hospitaldb.database import APPLICATION_NAME, DatabaseTarget

LOCK_NAME = "hospitaldb-refresh"

HOLDER_QUERY = """
SELECT a.pid, a.application_name, a.backend_start
FROM pg_locks AS l
JOIN pg_stat_activity AS a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
"""


class RefreshAlreadyRunning(RuntimeError):
    """Another refresh holds the lock; this run changed nothing."""


@contextmanager
def refresh_lock(target: DatabaseTarget, wait_seconds: float = 0) -> Iterator[None]:
    """Hold the refresh lock on target; wait up to wait_seconds for it, else raise."""
    connection = target.connect(
        application_name=f"{APPLICATION_NAME}-lock",
        lock_timeout_seconds=wait_seconds,
        autocommit=True,
    )
    try:
        with connection.cursor() as cursor:
            if wait_seconds > 0:
                try:
                    cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (LOCK_NAME,))
                    acquired = True
                except psycopg2.errors.LockNotAvailable:
                    acquired = False
            else:
                cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (LOCK_NAME,))
                acquired = cursor.fetchone()[0]
            if not acquired:
                cursor.execute(HOLDER_QUERY, (LOCK_NAME,))
                holder = cursor.fetchone()
                who = (
                    f" (PostgreSQL pid {holder[0]}, application '{holder[1]}', connected since "
                    f"{holder[2]:%Y-%m-%d %H:%M:%S %Z})"
                    if holder
                    else ""
                )
                raise RefreshAlreadyRunning(
                    f"Another HospitalDB refresh is running on {target.describe()}{who}; "
                    f"waited {wait_seconds:g} s. This run refreshed nothing. Let the other run "
                    "finish, or pass overlap_wait_seconds to wait for it."
                )
        yield
    finally:
        # Closing the session releases the advisory lock.
        connection.close()
