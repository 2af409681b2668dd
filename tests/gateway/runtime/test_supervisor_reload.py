"""``acegw serve`` with two workers: a SIGHUP while a worker starts does not
kill it (the reload reaches it once it is ready), and a worker restarted after
a crash runs the configuration the supervisor last accepted, not a later edit
of the file that the supervisor refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiohttp import web

from gateway.dtls.probe import DtlsProbe
from tests.ops.conftest import (
    ACEGW,
    ProofClient,
    Served,
    add_devices,
    children,
    events,
    free_port,
    gateway_env,
    init_state,
    serving,
    until,
    value,
)

#: devices tried to find one whose session the kernel hashes to a given
#: worker (each 1 in 2: all 16 missing it has odds 2**-16)
DEVICES = 16


@pytest.fixture
async def upstream():
    """A local HTTP service answering ``/a`` and ``/b`` with the path."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_get("/a", answer)
    app.router.add_get("/b", answer)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _route(prefix: str, url: str) -> str:
    return f'\n[[routes]]\nprefix = "{prefix}"\nupstream = "{url}"\n'


def _worker_pids(supervisor: int) -> dict[int, int]:
    out = {}
    for pid in children(supervisor):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        out[int(argv[argv.index(b"--index") + 1])] = pid
    return out


async def _workers_up(served: Served, restarts: int = 0) -> None:
    """Both workers serving, worker 1 restarted ``restarts`` times, worker 0 never."""
    deadline = time.monotonic() + 60
    while True:  # another process: polled
        samples = await served.scrape()
        counts = [value(samples, "acegw_worker_restarts_total", worker=w) for w in "01"]
        assert counts[0] == 0 and counts[1] <= restarts, (counts, served.output()[-3000:])
        up = [value(samples, "acegw_worker_up", worker=w) for w in "01"]
        if up == [1, 1] and counts[1] == restarts:
            return
        assert time.monotonic() < deadline, f"workers not up in 60 s:\n{served.output()[-3000:]}"
        await asyncio.sleep(0.05)


def _reloaded_by(served: Served) -> list[Any]:
    return sorted(e.get("worker") for e in events(served, "config_reloaded"))


async def _device_on_worker(
    served: Served, probe: DtlsProbe, devices: list[tuple[str, bytes]], worker: str
) -> ProofClient:
    """A device with a token whose DTLS session is served by ``worker``
    (each new session has its own source port, which the kernel hashes)."""
    for identity, psk in devices:
        before = value(
            await served.scrape(), "acegw_dtls_sessions", worker=worker, state="established"
        )
        session = await probe.connect(identity.encode(), psk, timeout=15)
        after = value(
            await served.scrape(), "acegw_dtls_sessions", worker=worker, state="established"
        )
        if after > before:
            return await ProofClient.enroll(session)
        await session.close()
    raise AssertionError(f"no session of {len(devices)} landed on worker {worker}")


async def _serve_two_workers(tmp_path: Path, upstream: str):
    state = init_state(tmp_path / "state")
    devices = add_devices(state, DEVICES, "w-", "/a:GET /b:GET /whoami:GET")
    config = state / "acegw.toml"
    with config.open("a") as f:
        f.write(_route("/a", upstream + "/a"))
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(udp, http, ACEGW_LOGGING_LEVEL="INFO", ACEGW_SERVER_WORKERS="2")
    args = [*ACEGW, "serve", "--config", str(config)]
    return config, devices, serving(args, env, tmp_path / "gw.log", udp, http)


async def test_a_sighup_while_a_worker_starts_is_applied_once_it_is_ready(tmp_path, upstream):
    config, devices, gateway = await _serve_two_workers(tmp_path, upstream)
    async with gateway as served:
        await _workers_up(served)
        config.write_text(config.read_text() + _route("/b", upstream + "/b"))
        os.kill(_worker_pids(served.process.pid)[1], signal.SIGKILL)

        def restarting() -> bool:
            return any(
                e["index"] == 1 and e["restarts"] == 1 for e in events(served, "worker_started")
            )

        # the SIGHUP reaches the supervisor while worker 1 is still importing
        # and starting (its pid exists, it has not reported ready)
        await until(restarting, "worker 1 restarted", timeout=30)
        served.send(signal.SIGHUP)

        await _workers_up(served, restarts=1)
        await until(lambda: _reloaded_by(served) == [0, 1], "both workers reloaded", timeout=30)
        exits = [e["exit"] for e in events(served, "worker_exited")]
        assert exits == ["signal SIGKILL"], exits  # not killed by the SIGHUP
        probe = DtlsProbe(served.target)
        try:
            device = await _device_on_worker(served, probe, devices, "1")
            response = await device.call(("b",))
            assert response.code == aiocoap.CONTENT, response
            assert json.loads(response.payload) == {"path": "/b"}  # the reloaded route
        finally:
            await probe.close()
        assert await served.stop() == 0


async def test_a_restarted_worker_runs_the_last_accepted_configuration(tmp_path, upstream):
    config, devices, gateway = await _serve_two_workers(tmp_path, upstream)
    async with gateway as served:
        await _workers_up(served)
        accepted = config.read_text() + _route("/b", upstream + "/b")
        config.write_text(accepted)
        served.send(signal.SIGHUP)
        await until(lambda: _reloaded_by(served) == [0, 1], "both workers reloaded", timeout=30)

        config.write_text(accepted + "\n[broken\n")  # refused at the next SIGHUP
        served.send(signal.SIGHUP)
        (refused,) = await until(lambda: events(served, "config_reload_refused"), "refused")
        assert "not valid TOML" in refused["error"]

        os.kill(_worker_pids(served.process.pid)[1], signal.SIGKILL)
        await _workers_up(served, restarts=1)
        exits = [e["exit"] for e in events(served, "worker_exited")]
        assert exits == ["signal SIGKILL"], exits  # the restarted one did not fail
        probe = DtlsProbe(served.target)
        try:
            device = await _device_on_worker(served, probe, devices, "1")
            for path in ("a", "b"):  # the route of the accepted reload, too
                response = await device.call((path,))
                assert response.code == aiocoap.CONTENT, response
                assert json.loads(response.payload) == {"path": f"/{path}"}
        finally:
            await probe.close()
        assert await served.stop() == 0
    assert len(events(served, "config_reload_refused")) == 1
    assert _reloaded_by(served) == [0, 1]  # the restarted worker started on it: no reload
