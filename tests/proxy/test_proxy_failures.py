"""Upstream failures: down, slow, garbage, overloaded, repeatedly failing;
each gives the right CoAP code in bounded time and the gateway keeps serving
other routes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiocoap.numbers.codes import Code
from aiohttp import web

from .conftest import Clock, RecordingUpstream


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(check, what: str, timeout: float = 5.0) -> None:
    """Poll ``check`` (state inside the proxy, which raises no event) on this
    event loop; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.005)


@pytest.fixture
async def garbage_server() -> AsyncIterator[str]:
    """A raw TCP server that answers any request with non-HTTP bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\x00\x01\x02 this is not HTTP\r\n\r\n" * 4)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def test_connection_refused_is_502_fast(make_proxy, upstream: RecordingUpstream):
    proxy = await make_proxy(
        [
            {"prefix": "/down", "upstream": f"http://127.0.0.1:{free_port()}", "timeout": 5},
            {"prefix": "/up", "upstream": upstream.url},
        ]
    )
    t0 = time.monotonic()
    resp = await proxy.request(Code.GET, "/down/x")
    assert resp.code == Code.BAD_GATEWAY
    assert time.monotonic() - t0 < 1.0  # not the 5 s timeout
    assert resp.payload == b"upstream unreachable"
    assert (await proxy.request(Code.GET, "/up/x")).code == Code.CONTENT


async def test_slow_upstream_is_504_at_the_timeout(make_proxy, upstream: RecordingUpstream):
    release, hanging = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        hanging.set()
        await release.wait()
        return web.Response(text="late")

    upstream.handlers["/slow"] = slow
    proxy = await make_proxy(
        [
            {"prefix": "/slow", "upstream": upstream.url + "/slow", "timeout": 0.4},
            {"prefix": "/fast", "upstream": upstream.url},
        ]
    )
    t0 = time.monotonic()
    slow_req = asyncio.ensure_future(proxy.request(Code.GET, "/slow"))
    await asyncio.wait_for(hanging.wait(), 5)
    # while the slow one hangs, another route answers at once
    fast = await proxy.request(Code.GET, "/fast/x")
    assert fast.code == Code.CONTENT and time.monotonic() - t0 < 0.4
    resp = await slow_req
    elapsed = time.monotonic() - t0
    release.set()
    assert resp.code == Code.GATEWAY_TIMEOUT
    assert 0.35 <= elapsed < 2.0


async def test_garbage_upstream_is_502(make_proxy, garbage_server: str):
    proxy = await make_proxy([{"prefix": "/g", "upstream": garbage_server, "timeout": 5}])
    t0 = time.monotonic()
    resp = await proxy.request(Code.GET, "/g/x")
    assert resp.code == Code.BAD_GATEWAY
    assert resp.payload == b"upstream sent an invalid HTTP response"
    assert time.monotonic() - t0 < 2.0


async def test_compressed_body_not_asked_for_is_502(make_proxy, upstream: RecordingUpstream):
    upstream.reply("/z", body=b"\x1f\x8b...", headers={"Content-Encoding": "gzip"})
    proxy = await make_proxy([{"prefix": "/z", "upstream": upstream.url + "/z"}])
    resp = await proxy.request(Code.GET, "/z")
    assert resp.code == Code.BAD_GATEWAY
    assert "Accept-Encoding" not in upstream.seen[-1].headers


async def test_queue_full_is_503_with_max_age(make_proxy, upstream: RecordingUpstream):
    release, reached = asyncio.Event(), asyncio.Event()
    arrived = 0

    async def blocked(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        reached.set()
        await release.wait()
        return web.Response(text="done")

    upstream.handlers["/b"] = blocked
    proxy = await make_proxy(
        [
            {
                "prefix": "/b",
                "upstream": upstream.url + "/b",
                "pool_size": 1,
                "queue_size": 1,
                "busy_max_age": 7,
            },
            {"prefix": "/other", "upstream": upstream.url},
        ]
    )
    first = asyncio.ensure_future(proxy.request(Code.GET, "/b"))  # in flight
    second = asyncio.ensure_future(proxy.request(Code.GET, "/b"))  # queued
    await asyncio.wait_for(reached.wait(), 5)
    gate = proxy.proxy.routes[0].upstream.gate
    await _until(lambda: gate.waiting == 1, "the second request queued")
    assert arrived == 1
    third = await proxy.request(Code.GET, "/b")
    assert third.code == Code.SERVICE_UNAVAILABLE and third.opt.max_age == 7
    assert (await proxy.request(Code.GET, "/other/x")).code == Code.CONTENT
    release.set()
    assert (await first).payload == b"done"
    assert (await second).payload == b"done"
    assert arrived == 2  # the refused one never reached the upstream


async def test_global_in_flight_limit(make_proxy, upstream: RecordingUpstream):
    release, reached = asyncio.Event(), asyncio.Event()

    async def blocked(request: web.Request) -> web.Response:
        reached.set()
        await release.wait()
        return web.Response(text="done")

    upstream.handlers["/b"] = blocked
    proxy = await make_proxy([{"prefix": "/b", "upstream": upstream.url + "/b"}], max_in_flight=1)
    first = asyncio.ensure_future(proxy.request(Code.GET, "/b"))
    await asyncio.wait_for(reached.wait(), 5)  # at the upstream: in flight
    assert proxy.proxy.in_flight.active == 1
    busy = await proxy.request(Code.GET, "/b")
    assert busy.code == Code.SERVICE_UNAVAILABLE and busy.opt.max_age is not None
    release.set()
    assert (await first).code == Code.CONTENT


async def test_breaker_opens_and_half_opens(make_proxy, upstream: RecordingUpstream):
    clock = Clock(1000.0)
    healthy = False

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(text="ok") if healthy else web.Response(status=500)

    upstream.handlers["/f"] = flaky
    proxy = await make_proxy(
        [
            {
                "prefix": "/f",
                "upstream": upstream.url + "/f",
                "breaker_failures": 3,
                "breaker_reset": 10,
            },
            {"prefix": "/other", "upstream": upstream.url},
        ],
        monotonic=clock,
    )
    for _ in range(3):
        assert (await proxy.request(Code.GET, "/f")).code == Code.INTERNAL_SERVER_ERROR
    assert upstream.hits("/f") == 3
    resp = await proxy.request(Code.GET, "/f")
    assert resp.code == Code.SERVICE_UNAVAILABLE and resp.opt.max_age == 10
    assert upstream.hits("/f") == 3  # open: the upstream is spared
    assert (await proxy.request(Code.GET, "/other/x")).code == Code.CONTENT
    clock.now += 4
    assert (await proxy.request(Code.GET, "/f")).opt.max_age == 6
    clock.now += 6  # half-open: one probe goes through; it fails: open again
    assert (await proxy.request(Code.GET, "/f")).code == Code.INTERNAL_SERVER_ERROR
    assert upstream.hits("/f") == 4
    assert (await proxy.request(Code.GET, "/f")).code == Code.SERVICE_UNAVAILABLE
    clock.now += 10
    healthy = True  # the next probe succeeds: closed
    assert (await proxy.request(Code.GET, "/f")).payload == b"ok"
    assert (await proxy.request(Code.GET, "/f")).payload == b"ok"
    assert upstream.hits("/f") == 6


async def test_breaker_counts_connection_failures(make_proxy):
    clock = Clock(0.0)
    proxy = await make_proxy(
        [
            {
                "prefix": "/d",
                "upstream": f"http://127.0.0.1:{free_port()}",
                "breaker_failures": 2,
                "breaker_reset": 5,
            }
        ],
        monotonic=clock,
    )
    assert (await proxy.request(Code.GET, "/d")).code == Code.BAD_GATEWAY
    assert (await proxy.request(Code.GET, "/d")).code == Code.BAD_GATEWAY
    resp = await proxy.request(Code.GET, "/d")
    assert resp.code == Code.SERVICE_UNAVAILABLE and resp.opt.max_age == 5
    # acegw_upstream_errors_total (docs/operations.md) counts each by reason
    errors = proxy.metrics.upstream_errors
    assert errors.get("/d", "upstream_unreachable") == 2
    assert errors.get("/d", "circuit_open") == 1
    assert proxy.metrics.requests.get("/d", "5.03") == 1
