"""The overlap guard: one refresh at a time per database.

The lock lives on its own session for the whole run. If the process dies, the session ends
and PostgreSQL releases the lock: no stale lock file to clean up. It is a table lock on
etl_audit.refresh_lock (SHARE ROW EXCLUSIVE, in a transaction that writes nothing, so it
holds back no vacuum), which only a role allowed to write etl_audit may take; the advisory
key earlier versions used is taken too, so that a run of an earlier version and one of this
version stay apart. Any role that can log in may take an advisory key: one held by a role
without the refresher's rights is reported, with its role, and not waited for. Where there is
no etl_audit the advisory key is the guard, as before.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from hospitaldb.engine.db.allowlist import report
from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.errors import RefreshError, StepError
from hospitaldb.engine.db.transient import is_transient
from hospitaldb.text import in_utc

LOCK_NAME = "hospitaldb-refresh"

LOCK_TABLE = "etl_audit.refresh_lock"

# A session that ends releases its transaction's locks before its session's (PostgreSQL's
# ShutdownPostgres): a run that ends frees the table a moment before the advisory key. The
# run that took the table just then waits this long for the key rather than fail as overlapping.
ENDING_GRACE_SECONDS = 2.0

# Who holds the lock: pid, role, application, since when, and whether that role may refresh
# (may take the table lock). %s: the advisory key's name, or the table's.
ADVISORY_HOLDER = """
SELECT a.pid, a.usename, a.application_name, a.backend_start,
       coalesce(to_regclass(%s) IS NULL OR has_table_privilege(a.usesysid, to_regclass(%s), 'UPDATE'), true)
FROM pg_locks AS l
JOIN pg_stat_activity AS a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
"""
TABLE_HOLDER = """
SELECT a.pid, a.usename, a.application_name, a.backend_start, true
FROM pg_locks AS l
JOIN pg_stat_activity AS a USING (pid)
WHERE l.locktype = 'relation' AND l.granted AND l.relation = to_regclass(%s) AND l.pid <> pg_backend_pid()
  AND l.mode IN ('ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
"""


@dataclass(frozen=True)
class Holder:
    """A session holding the lock (or its advisory key)."""

    pid: int
    role: str | None
    application: str | None
    since: Any
    may_refresh: bool

    def __str__(self) -> str:
        # A role sees only the pid and role of another role's sessions (pg_stat_activity).
        parts = [f"PostgreSQL pid {self.pid}", f"role '{self.role}'"]
        if self.application is not None:
            parts.append(f"application '{self.application}'")
        if self.since is not None:
            parts.append(f"connected since {in_utc(self.since, seconds=True)}")
        return ", ".join(parts)


class RefreshAlreadyRunning(RefreshError):
    """Another refresh holds the lock; this run changed nothing."""


class DatabaseUnavailable(RefreshError):
    """The database could not be reached, even after retrying."""


class RefreshLockLost(StepError):
    """The overlap lock's session ended (terminated, server restart): the step stops, rolled back."""


HELD_QUERIES = {  # does this session still hold it?
    "table": "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' "
    "AND granted AND relation = to_regclass(%s) AND mode = 'ShareRowExclusiveLock'",
    "advisory": "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' "
    "AND granted AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
}


class _Busy(Exception):
    """Another refresh holds the lock (who, when it could be found)."""

    def __init__(self, holder: Holder | None) -> None:
        self.holder = holder


@dataclass
class HeldLock:
    """The overlap lock, held on its own session for the whole run."""

    connection: Any = field(repr=False)
    target: DatabaseTarget | None = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits, repr=False)
    kind: str = "table"  # 'table', or 'advisory' where this database has no etl_audit.refresh_lock
    outsider: Holder | None = None  # held the advisory key without the right to refresh: not waited for

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
                cursor.execute(HELD_QUERIES[self.kind], (LOCK_TABLE if self.kind == "table" else LOCK_NAME,))
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
        try:
            self.kind, self.outsider = _take(connection, 0)
        except (_Busy, psycopg2.Error):
            connection.close()
            return False
        with contextlib.suppress(psycopg2.Error):
            self.connection.close()
        self.connection = connection
        return True


OnAttempt = Callable[[int, BaseException | None], None]  # attempt number, and why it failed (None: it worked)


def _connect(
    target: DatabaseTarget, limits: Limits, retry_delays: Sequence[float], on_attempt: OnAttempt | None = None
) -> Any:
    """The lock session; transient connection failures are retried like a step's, each attempt told when retried."""
    for number, delay in enumerate([*retry_delays, None], start=1):
        try:
            connection = target.connect(limits, purpose="lock", autocommit=True)
        except psycopg2.Error as error:
            retried = delay is not None and is_transient(error)
            if on_attempt and (retried or number > 1):
                on_attempt(number, error)
            if not retried:
                raise DatabaseUnavailable(
                    f"Cannot connect to {target.describe()}: {report(error).text}. Nothing was "
                    "refreshed. Check that the server is up and reachable from this worker, and the "
                    "connection settings (docs/configuration.md)."
                ) from None
            time.sleep(delay)
            continue
        if on_attempt and number > 1:
            on_attempt(number, None)
        return connection
    raise AssertionError("unreachable")


def _take(connection: Any, wait_seconds: float) -> tuple[str, Holder | None]:
    """Take the lock: its kind, and an outsider that holds the advisory key; _Busy when another refresh has it."""
    table = _take_table(connection, wait_seconds)
    with connection.cursor() as cursor:
        if wait_seconds > 0 and not table:  # the advisory key is the guard: wait for it
            try:
                cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (LOCK_NAME,))
                return "advisory", None
            except psycopg2.errors.LockNotAvailable:
                connection.rollback()
        else:
            cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (LOCK_NAME,))
            if cursor.fetchone()[0]:
                return ("table" if table else "advisory"), None
        cursor.execute(ADVISORY_HOLDER, (LOCK_TABLE, LOCK_TABLE, LOCK_NAME))
        row = cursor.fetchone()
    holder = Holder(*row) if row else None
    if holder is not None and table and not holder.may_refresh:
        return "table", holder  # an outsider's: reported, not waited for
    if table and _advisory_after_table(connection, max(wait_seconds, ENDING_GRACE_SECONDS)):
        return "table", None
    raise _Busy(holder)


def _advisory_after_table(connection: Any, wait_seconds: float) -> bool:
    """The advisory key, waited for up to wait_seconds, with the table lock held (kept if not)."""
    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT advisory_key")
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(wait_seconds * 1000)}ms",))
        try:
            cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (LOCK_NAME,))
        except psycopg2.errors.LockNotAvailable:
            cursor.execute("ROLLBACK TO SAVEPOINT advisory_key")
            return False
        cursor.execute("RELEASE SAVEPOINT advisory_key")
    return True


def _take_table(connection: Any, wait_seconds: float) -> bool:
    """SHARE ROW EXCLUSIVE on etl_audit.refresh_lock in an open transaction; False where there is none to take."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND has_table_privilege(to_regclass(%s), 'UPDATE')",
            (LOCK_TABLE, LOCK_TABLE),
        )
        if not cursor.fetchone()[0]:
            return False
        # The transaction stays open, idle, for the whole run: a server's idle timeout must not end it.
        cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', false)")
    connection.autocommit = False
    wait = sql.SQL("" if wait_seconds > 0 else " NOWAIT")  # else the session's lock_timeout is the wait
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE{}").format(
                    sql.Identifier(*LOCK_TABLE.split(".")), wait
                )
            )
        return True
    except psycopg2.errors.LockNotAvailable:
        connection.rollback()
        with connection.cursor() as cursor:
            cursor.execute(TABLE_HOLDER, (LOCK_TABLE,))
            row = cursor.fetchone()
        raise _Busy(Holder(*row) if row else None) from None


@contextmanager
def refresh_lock(
    target: DatabaseTarget,
    wait_seconds: float = 0,
    retry_delays: Sequence[float] = (),
    statement_timeout_seconds: float = 0,
    on_attempt: OnAttempt | None = None,
) -> Iterator[HeldLock]:
    """Hold the refresh lock on target; wait up to wait_seconds for it, else raise.

    The wait is the lock session's lock_timeout; its statements have the run's statement_timeout.
    on_attempt hears of each attempt to open its session when there was more than one (for the record).
    """
    connection = _connect(target, Limits(statement_timeout_seconds, wait_seconds), retry_delays, on_attempt)
    try:
        try:
            kind, outsider = _take(connection, wait_seconds)
        except _Busy as busy:
            who = f" ({busy.holder})" if busy.holder else ""
            raise RefreshAlreadyRunning(
                f"Another HospitalDB refresh is running on {target.describe()}{who}; "
                f"waited {wait_seconds:g} s. This run refreshed nothing. Let the other run "
                "finish, or pass overlap_wait_seconds to wait for it."
            ) from None
        except psycopg2.Error as error:
            raise DatabaseUnavailable(
                f"Could not take the overlap lock on {target.describe()}: {report(error).text}. Nothing "
                "was refreshed."
            ) from None
        lock = HeldLock(connection, target, Limits(statement_timeout_seconds), kind, outsider)
        try:
            yield lock
        finally:
            connection = lock.connection  # taken again on a new session, maybe
    finally:
        # Closing the session releases the advisory lock.
        connection.close()
