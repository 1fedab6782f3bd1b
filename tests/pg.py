"""A throwaway PostgreSQL server on loopback, for tests that need a real one (no mocks).

The server binaries come from PATH or /usr/lib/postgresql/<version>/bin (where Debian and Ubuntu
put them); `.ci/run` installs them when missing. A missing server is an error, not a skip: the
multi-process tuning test must run in CI.

initdb and postgres refuse to run as root, and CI and the dev machine run as root: there the
server runs as `nobody` (runuser), in a data folder that user owns.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

RUN_AS = "nobody"
START_TIMEOUT_S = 60


class PostgresMissing(RuntimeError):
    pass


def find_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    # newest version first: /usr/lib/postgresql/15/bin before /usr/lib/postgresql/9.6/bin
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: [int(n) for n in re.findall(r"\d+", p)], reverse=True)
    if candidates:
        return candidates[0]
    raise PostgresMissing(f"PostgreSQL's {name} is neither on PATH nor in /usr/lib/postgresql/*/bin: "
                          "install the server (apt-get install postgresql; the README's test command "
                          "does it) to run the PostgreSQL tests")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl start in a temporary folder; `stop()` removes everything."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresMissing(f"running as root needs runuser (util-linux) to start PostgreSQL as {RUN_AS!r}")
            self._as_user = [runuser, "-u", RUN_AS, "--"]
        # not under pytest's tmp_path: its folders are private to root, and the server runs as RUN_AS
        self.root = Path(tempfile.mkdtemp(prefix="m2tune-pg-"))
        if self._as_user:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port: Optional[int] = None

    def _run(self, *args: str, timeout: float) -> None:
        done = subprocess.run([*self._as_user, *args], cwd=self.root, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}"
                               f"{done.stderr}{log}")

    def start(self) -> "PostgresServer":
        # C locale: CI containers often have no other; --no-sync and fsync=off: a test database
        # need not survive a power cut, and fsync makes every commit slow
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--no-sync", timeout=120)
        self.port = free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S),
                  "-o", options, "start", timeout=START_TIMEOUT_S + 30)
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL (what --storage takes)."""
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True          # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.port is not None and (self.data / "postmaster.pid").exists():
                self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
