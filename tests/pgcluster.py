"""A throwaway PostgreSQL cluster for the tests: initdb in a temp folder, socket only.

Used when the PostgreSQL server binaries are on this machine. As root, the
cluster runs as the ``postgres`` user (PostgreSQL refuses to run as root).
``ORCH_TEST_PG_DSN`` names an existing server instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def server_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class Cluster:
    """initdb, start, a DSN, and stop."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        self.data = self.folder / "data"
        self.as_user = "postgres" if os.geteuid() == 0 else None
        if self.as_user:
            account = pwd.getpwnam(self.as_user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", self.as_user, "--", *argv] if self.as_user else list(argv)
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def start(self) -> str:
        initdb, pg_ctl = server_bin("initdb"), server_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        done = self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        options = f"-c listen_addresses='' -c unix_socket_directories={self.folder} -c fsync=on -c max_connections=200"
        done = self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        if done.returncode:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}{(self.folder / 'log').read_text()}")
        return f"postgresql:///postgres?host={self.folder}&user=postgres"

    def stop(self) -> None:
        pg_ctl = server_bin("pg_ctl")
        if pg_ctl and self.data.exists():
            self._run(pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def fresh_database(dsn: str) -> str:
    """A new empty database on the server, so each test starts clean; returns its DSN."""
    import psycopg

    name = f"orch_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
