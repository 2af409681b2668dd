"""The fleet's real parts, shared by ``bench.fleet`` and the fleet tests
(``tests/fleet``, ``tests/postgres_cluster.py``): a throwaway PostgreSQL
cluster and a UDP load balancer.

PostgreSQL: ``initdb`` into a temporary directory, ``pg_ctl start`` listening
on a unix socket in that directory only (no TCP port), stopped and removed at
the end. PostgreSQL refuses to run as root, so as root the cluster belongs to
the ``postgres`` user the Debian package creates (``runuser``).

The balancer: Debian's nginx with its stream module (``libnginx-mod-stream``),
started as a process of its own with its configuration, pid file and error
log in a temporary directory (``daemon off``), stopped at the end.
``hash $remote_addr$remote_port consistent`` keeps a device's 4-tuple on one
instance for as long as that instance answers: every DTLS record of a session
reaches the instance holding its keys. One worker process, so that one
client's datagrams are never split between workers' separate upstream
sockets.

When either cannot start, :class:`FleetError` names the reason (the
Makefile's deps install the ``postgresql``, ``nginx-light`` and
``libnginx-mod-stream`` packages). It is an ``AssertionError``, so a test
using these fails, never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class FleetError(AssertionError):
    """A part of the fleet (PostgreSQL, nginx) is missing or did not start."""


# --- PostgreSQL -----------------------------------------------------------------------------


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
    raise FleetError("PostgreSQL is not installed (initdb not found): run 'make deps'")


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
                raise FleetError(
                    "no 'postgres' user to run the cluster as (install postgresql)"
                ) from None
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
            raise FleetError(f"{Path(args[0]).name} failed: {(proc.stderr or proc.stdout).strip()}")

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


# --- the balancer -------------------------------------------------------------------------

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

CONFIG = """\
load_module {module};
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
events {{ worker_connections 8192; }}
stream {{
    upstream gw {{
        hash $remote_addr$remote_port consistent;
{servers}
    }}
    server {{
        listen {host}:{port} udp;
        proxy_pass gw;
        proxy_timeout {timeout}s;
    }}
}}
"""


class BalancerError(FleetError):
    """nginx is missing or did not start (the Makefile's deps install it)."""


@dataclass
class Balancer:
    """A running nginx: :attr:`target` is where devices send."""

    process: asyncio.subprocess.Process
    target: tuple[str, int]
    root: Path

    def log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def nginx_binary() -> str:
    """The nginx executable, or a clear failure naming the packages."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found or not STREAM_MODULE.exists():
        raise BalancerError(
            "nginx with the stream module is not installed: run 'make deps' "
            "(Debian packages nginx-light and libnginx-mod-stream)"
        )
    return found


@contextlib.asynccontextmanager
async def balancing(
    upstreams: Sequence[tuple[str, int]],
    root: Path,
    *,
    host: str = "127.0.0.9",
    port: int,
    timeout_s: int = 60,
) -> AsyncIterator[Balancer]:
    """Start nginx in front of ``upstreams``; yield once its worker runs;
    stop it (SIGTERM, then SIGKILL) on exit."""
    binary = nginx_binary()
    root.mkdir(parents=True, exist_ok=True)
    servers = "\n".join(f"        server {h}:{p};" for h, p in upstreams)
    conf = root / "nginx.conf"
    conf.write_text(
        CONFIG.format(
            module=STREAM_MODULE,
            root=root,
            servers=servers,
            host=host,
            port=port,
            timeout=timeout_s,
        )
    )
    with open(root / "stdout.log", "wb") as out:
        process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(conf),
            "-p",
            str(root),
            "-e",
            str(root / "error.log"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    balancer = Balancer(process, (host, port), root)
    try:
        deadline = time.monotonic() + 15
        while "start worker process" not in balancer.log():
            if process.returncode is not None or time.monotonic() > deadline:
                raise BalancerError(
                    f"nginx did not start:\n{balancer.log()[-2000:]}"
                    f"{(root / 'stdout.log').read_text(errors='replace')[-2000:]}"
                )
            await asyncio.sleep(0.05)
        yield balancer
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
