"""The overlap guard: one refresh at a time per database, via a PostgreSQL advisory lock.

The lock lives on its own session for the whole run. If the process dies, the
session ends and PostgreSQL releases the lock: no stale lock file to clean up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors

from hospitaldb.engine.allowlist import report
from hospitaldb.engine.database import DatabaseTarget, Limits
from hospitaldb.engine.errors import RefreshError, StepError
from hospitaldb.engine.transient import is_transient
from hospitaldb.text import in_utc

LOCK_NAME = "hospitaldb-refresh"

HOLDER_QUERY = """
SELECT a.pid, a.application_name, a.backend_start
FROM pg_locks AS l
JOIN pg_stat_activity AS a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
"""


class RefreshAlreadyRunning(RefreshError):
    """Another refresh holds the lock; this run changed nothing."""


class DatabaseUnavailable(RefreshError):
    """The database could not be reached, even after retrying."""


class RefreshLockLost(StepError):
    """The overlap lock's session ended (terminated, server restart): the step stops, rolled back."""


HELD_QUERY = """
SELECT count(*) FROM pg_locks
WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted AND objsubid = 1
  AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)
"""


@dataclass
class HeldLock:
    """The overlap lock, held on its own session for the whole run."""

    connection: Any = field(repr=False)
    target: DatabaseTarget | None = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits, repr=False)

    def verify(self, step: str, *, retake: bool = False) -> bool:
        """Raise RefreshLockLost unless the lock's session is alive and still holds it.

        Called before every step attempt and right before every COMMIT: if the session was
        terminated (or the server restarted), PostgreSQL released the lock and another run
        may hold it now, so refreshing on would be unguarded. Before an attempt (retake),
        nothing of the attempt is written yet: the lock is taken again on a new session
        (after a failover, on the new primary) if nobody else holds it, and the run goes on:
        True then.
        """
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(HELD_QUERY, (LOCK_NAME,))
                if cursor.fetchone()[0]:
                    return False
                why = "its session no longer holds it"
        except psycopg2.Error as error:
            why = f"its session ended: {report(error).text}"
        if retake and self.target is not None and self._taken_again(step):
            return True
        raise RefreshLockLost(
            step,
            f"the overlap lock was lost ({why}); another refresh may be running, so this one stops "
            "instead of refreshing unguarded. Re-run when no other refresh runs",
        )

    def _taken_again(self, step: str) -> bool:
        """The lock on a new session, unless another session holds it (then False)."""
        assert self.target is not None
        try:
            connection = self.target.connect(self.limits, purpose="lock", autocommit=True)
        except psycopg2.Error as error:
            # Mid-failover, say: the attempt fails as transient, and its retry tries again.
            raise StepError(
                step,
                f"the overlap lock's session ended and no new one could be opened: {report(error).text}",
                transient=is_transient(error),
            ) from None
        if _take(connection, 0) is not None:
            connection.close()
            return False
        with contextlib.suppress(psycopg2.Error):
            self.connection.close()
        self.connection = connection
        return True


def _connect(target: DatabaseTarget, limits: Limits, retry_delays: Sequence[float]) -> Any:
    """The lock session; transient connection failures are retried like a step's."""
    for delay in [*retry_delays, None]:
        try:
            return target.connect(limits, purpose="lock", autocommit=True)
        except psycopg2.Error as error:
            if delay is None or not is_transient(error):
                raise DatabaseUnavailable(
                    f"Cannot connect to {target.describe()}: {report(error).text}. Nothing was "
                    "refreshed. Check that the server is up and reachable from this worker, and the "
                    "connection settings (docs/configuration.md)."
                ) from None
            time.sleep(delay)
    raise AssertionError("unreachable")


def _take(connection: Any, wait_seconds: float) -> tuple[Any, ...] | None:
    """Take the lock; None when taken, else who holds it (an empty tuple if they just let go)."""
    with connection.cursor() as cursor:
        if wait_seconds > 0:
            try:
                cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (LOCK_NAME,))
                return None
            except psycopg2.errors.LockNotAvailable:
                pass
        else:
            cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (LOCK_NAME,))
            if cursor.fetchone()[0]:
                return None
        cursor.execute(HOLDER_QUERY, (LOCK_NAME,))
        return cursor.fetchone() or ()


@contextmanager
def refresh_lock(
    target: DatabaseTarget,
    wait_seconds: float = 0,
    retry_delays: Sequence[float] = (),
    statement_timeout_seconds: float = 0,
) -> Iterator[HeldLock]:
    """Hold the refresh lock on target; wait up to wait_seconds for it, else raise.

    The wait is the lock session's lock_timeout; its statements have the run's statement_timeout.
    """
    connection = _connect(target, Limits(statement_timeout_seconds, wait_seconds), retry_delays)
    try:
        try:
            holder = _take(connection, wait_seconds)
        except psycopg2.Error as error:
            raise DatabaseUnavailable(
                f"Could not take the overlap lock on {target.describe()}: {report(error).text}. Nothing "
                "was refreshed."
            ) from None
        if holder is not None:
            who = (
                f" (PostgreSQL pid {holder[0]}, application '{holder[1]}', connected since "
                f"{in_utc(holder[2], seconds=True)})"
                if holder
                else ""
            )
            raise RefreshAlreadyRunning(
                f"Another HospitalDB refresh is running on {target.describe()}{who}; "
                f"waited {wait_seconds:g} s. This run refreshed nothing. Let the other run "
                "finish, or pass overlap_wait_seconds to wait for it."
            )
        lock = HeldLock(connection, target, Limits(statement_timeout_seconds))
        try:
            yield lock
        finally:
            connection = lock.connection  # taken again on a new session, maybe
    finally:
        # Closing the session releases the advisory lock.
        connection.close()
