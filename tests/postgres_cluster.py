"""A throwaway PostgreSQL cluster for tests: ``initdb`` into a temporary
directory, ``pg_ctl start`` listening on a unix socket in that directory only
(no TCP port), stopped and removed at the end.

PostgreSQL refuses to run as root, so as root the cluster belongs to the
``postgres`` user the Debian package creates (``runuser``). When it cannot
start, the fixture fails with the reason (the Makefile's deps install the
``postgresql`` package); it never skips.

Fixtures (import them into a conftest): ``pg_cluster`` (session) and
``pg_url`` (a fresh database per test).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bindir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    pytest.fail("PostgreSQL is not installed (initdb not found): run 'make deps'")


class Cluster:
    """One running cluster: :meth:`url` names a database in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root
        self.bindir = _bindir()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("no 'postgres' user to run the test cluster as (install postgresql)")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres" if self._as else pwd.getpwuid(os.geteuid()).pw_name
        self._names = itertools.count(1)

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        proc = subprocess.run(
            [*self._as, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            pytest.fail(f"{Path(args[0]).name} failed: {(proc.stderr or proc.stdout).strip()}")

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-U",
            self.user,
        )
        self.restart()

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Start the server (again, after :meth:`stop`)."""
        opts = f"-c listen_addresses='' -k {self.socket_dir} -c fsync=off -c max_connections=200"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            opts,
            "-w",
            "start",
            timeout=90,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="acegw-pg-"))
    os.chmod(root, 0o755)
    cluster = Cluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            with contextlib.suppress(BaseException):
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    return pg_cluster.create_database()
