"""``acegw serve`` as a process: SIGTERM drains (no new handshakes, new
requests 5.03, the request in flight finishes), then close_notify and exit 0;
SIGHUP applies new routes and rate limits without dropping a session, and a
broken file changes nothing. Logs are JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import time

import aiocoap
import pytest
from aiohttp import web

from gateway.dtls.probe import DtlsProbe, ProbeError

from .conftest import (
    ACEGW,
    ProofClient,
    add_devices,
    events,
    free_port,
    gateway_env,
    http_get,
    init_state,
    serving,
    value,
)

SLOW_SECONDS = 2.5


class Upstream:
    """A local HTTP service whose /slow answers after SLOW_SECONDS."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.answered = asyncio.Event()
        self.url = ""

    async def slow(self, request: web.Request) -> web.Response:
        self.started.set()
        await asyncio.sleep(SLOW_SECONDS)
        self.answered.set()
        return web.json_response({"slow": True})

    async def fast(self, request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})


@pytest.fixture
async def upstream():
    service = Upstream()
    app = web.Application()
    app.router.add_get("/slow", service.slow)
    app.router.add_get("/a", service.fast)
    app.router.add_get("/b", service.fast)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    service.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield service
    finally:
        await runner.cleanup()


async def _until(check, what: str, timeout: float = 10.0) -> None:
    """Poll ``check`` (async: the gateway is another process) until true."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


def _readyz_is(served, status: int):
    async def check() -> bool:
        return (await http_get(served.http + "/readyz"))[0] == status

    return check


def _route(prefix: str, url: str) -> str:
    return f'\n[[routes]]\nprefix = "{prefix}"\nupstream = "{url}"\n'


async def test_sigterm_drains_in_flight_requests_then_closes_sessions(tmp_path, upstream):
    state = init_state(tmp_path / "state")
    devices = add_devices(state, 3, "life-", "/slow:GET /whoami:GET")
    with (state / "acegw.toml").open("a") as f:
        f.write(_route("/slow", upstream.url + "/slow"))
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(udp, http, ACEGW_LOGGING_LEVEL="INFO")
    args = [*ACEGW, "serve", "--dir", str(state)]
    async with serving(args, env, tmp_path / "gw.log", udp, http) as served:
        probe = DtlsProbe(served.target)
        try:
            a, b = [
                await ProofClient.enroll(await probe.connect(i.encode(), p, timeout=10))
                for i, p in devices[:2]
            ]
            assert (await b.call()).code == aiocoap.CONTENT
            in_flight = asyncio.create_task(a.call(("slow",), timeout=30))
            await asyncio.wait_for(upstream.started.wait(), 10)
            served.send(signal.SIGTERM)
            # draining: /readyz turns 503 as new requests start to get 5.03
            await _until(_readyz_is(served, 503), "draining")
            refused = await b.call(timeout=2)
            assert refused.code == aiocoap.SERVICE_UNAVAILABLE and refused.opt.max_age
            with pytest.raises(ProbeError):  # no new handshakes while draining
                await probe.connect(devices[2][0].encode(), devices[2][1], timeout=0.6)
            assert not in_flight.done()

            resp = await in_flight
            assert resp.code == aiocoap.CONTENT and json.loads(resp.payload) == {"slow": True}
            for device in (a, b):  # close_notify to every peer
                await asyncio.wait_for(device.session.closed_by_peer.wait(), 10)
            assert await served.stop() == 0
        finally:
            await probe.close()
    lines = served.output().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any(r["msg"].startswith("stopping: draining") for r in records)


async def test_a_drain_deadline_that_passes_reports_the_requests_cut_off(tmp_path, upstream):
    state = init_state(tmp_path / "state")
    devices = add_devices(state, 1, "cut-", "/slow:GET")
    with (state / "acegw.toml").open("a") as f:
        f.write(_route("/slow", upstream.url + "/slow"))
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    # the upstream answers after SLOW_SECONDS: the drain deadline passes first
    env = gateway_env(udp, http, ACEGW_LOGGING_LEVEL="INFO", ACEGW_SERVER_DRAIN_TIMEOUT="0.2")
    args = [*ACEGW, "serve", "--dir", str(state)]
    async with serving(args, env, tmp_path / "gw.log", udp, http) as served:
        probe = DtlsProbe(served.target)
        try:
            ((identity, psk),) = devices
            session = await probe.connect(identity.encode(), psk, timeout=10)
            device = await ProofClient.enroll(session)
            in_flight = asyncio.create_task(device.call(("slow",), timeout=30))
            await asyncio.wait_for(upstream.started.wait(), 10)
            assert await served.stop() == 0
            in_flight.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await in_flight
            await asyncio.wait_for(upstream.answered.wait(), 10)  # no handler left running
        finally:
            await probe.close()
    (stopped,) = events(served, "gateway_stopped")
    assert stopped["requests_cut_off"] == 1 and stopped["level"] == "WARNING"
    assert "1 request(s) still in flight were cut off" in stopped["msg"]


async def test_sighup_reloads_routes_and_limits_without_dropping_sessions(tmp_path, upstream):
    state = init_state(tmp_path / "state")
    devices = add_devices(state, 2, "hup-", "/a:GET /b:GET /whoami:GET")
    config = state / "acegw.toml"
    with config.open("a") as f:
        f.write(_route("/a", upstream.url + "/a"))
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(udp, http, ACEGW_LOGGING_LEVEL="INFO")
    for key in ("ACEGW_LIMITS_DEVICE_RATE", "ACEGW_LIMITS_DEVICE_BURST"):
        env.pop(key)  # the file decides, so a reload can change them
    args = [*ACEGW, "serve", "--config", str(config)]
    async with serving(args, env, tmp_path / "gw.log", udp, http) as served:
        probe = DtlsProbe(served.target)
        try:
            session = await probe.connect(devices[0][0].encode(), devices[0][1], timeout=10)
            device = await ProofClient.enroll(session)
            assert (await device.call(("a",))).code == aiocoap.CONTENT
            assert (await device.call(("b",))).code == aiocoap.NOT_FOUND

            text = config.read_text()
            text = re.sub(r"(?m)^device_rate = .*$", "device_rate = 0.01", text)
            text = re.sub(r"(?m)^device_burst = .*$", "device_burst = 3", text)
            config.write_text(text + _route("/b", upstream.url + "/b"))
            served.send(signal.SIGHUP)

            answers: list[aiocoap.Message] = []

            async def routed() -> bool:
                answers.append(await device.call(("b",)))
                return answers[-1].code != aiocoap.NOT_FOUND

            await _until(routed, "the new route")
            assert answers[-1].code == aiocoap.CONTENT  # the new route, same session
            codes = [(await device.call(("a",))).code for _ in range(4)]
            assert aiocoap.TOO_MANY_REQUESTS in codes  # the new burst of 3

            config.write_text(config.read_text() + "\n[broken\n")
            served.send(signal.SIGHUP)

            async def refused() -> bool:
                samples = await served.scrape()
                return bool(value(samples, "acegw_config_reloads_total", outcome="error"))

            await _until(refused, "the broken file refused")
            other = await ProofClient.enroll(
                await probe.connect(devices[1][0].encode(), devices[1][1], timeout=10)
            )
            assert (await other.call(("b",))).code == aiocoap.CONTENT  # old config kept

            samples = await served.scrape()
            assert value(samples, "acegw_config_reloads_total", outcome="ok") == 1
            assert value(samples, "acegw_config_reloads_total", outcome="error") == 1
            assert value(samples, "acegw_dtls_sessions_closed_total") == 0
            assert value(samples, "acegw_dtls_handshakes_total", outcome="ok") == 2
            assert value(samples, "acegw_dtls_sessions", state="established") == 2
        finally:
            await probe.close()
        assert await served.stop() == 0
    assert "configuration reloaded" in served.output()
