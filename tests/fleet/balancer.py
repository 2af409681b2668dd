"""A real UDP load balancer for fleet tests and ``bench.fleet``: Debian's
nginx with its stream module (``libnginx-mod-stream``), started as a process
of its own with its configuration, pid file and error log in a temporary
directory (``daemon off``), stopped at the end.

``hash $remote_addr$remote_port consistent`` keeps a device's 4-tuple on one
instance for as long as that instance answers: every DTLS record of a session
reaches the instance holding its keys. One worker process, so that one
client's datagrams are never split between workers' separate upstream
sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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


class BalancerError(AssertionError):
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
