"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp dir, on a free loopback port.

Why a real server and not a mock: the store must behave the same on SQLite and PostgreSQL (JSON
columns, timezone-aware timestamps, transactions), and only the real server shows differences.

The binaries come from the Debian ``postgresql`` package (``/usr/lib/postgresql/<ver>/bin``) or
``PATH``. PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` user (or ``nobody``) through ``runuser``. Tests skip, saying why, only when the
binaries are absent.

Usage (in a test module)::

    from tests.pg_server import pg_server  # noqa: F401  (the session fixture)

    def test_x(pg_server):
        url = pg_server.new_database()   # a fresh, empty database per test
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import skip_or_fail_in_ci

SKIP_REASON = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package `postgresql` "
    "(they live in /usr/lib/postgresql/<version>/bin)"
)


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin with initdb, else the directory of initdb on PATH."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> str | None:
    """The unprivileged user to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@dataclass
class PgServer:
    """A running server; :meth:`new_database` hands each test its own empty database."""

    bindir: Path
    root: Path
    port: int
    user: str | None

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, *args: str) -> list[str]:
        if self.user is None:
            return list(args)
        return ["runuser", "-u", self.user, "--", *args]

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        data = self.root / "data"
        log = self.root / "server.log"
        subprocess.run(
            self._command(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                          "-E", "UTF8", "--no-sync"),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off"
        result = subprocess.run(
            self._command(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
                          "-t", "60", "start"),
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{text}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not accept connections on port {self.port}")

    def stop(self) -> None:
        subprocess.run(
            self._command(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w",
                          "stop"),
            capture_output=True,
        )  # fmt: skip


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        skip_or_fail_in_ci(SKIP_REASON)
    pytest.importorskip("psycopg", reason="psycopg (3) is needed to talk to PostgreSQL: pip install 'psycopg[binary]'")
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="deescalate-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PgServer(bindir=bindir, root=root, port=_free_port(), user=user)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
