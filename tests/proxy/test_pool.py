"""The upstream connection pool against real loopback servers: reuse of
keep-alive connections, what ends a connection, the retry of an idempotent
request on a connection the upstream closed while it was idle, the idle
timeout (injected clock) and the idle bound, and the errors of the socket
and HTTP layers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.proxy.http1 import BodyTooLarge, ProtocolError, RawResponse
from gateway.proxy.pool import ConnectionPool, StaleConnection

from .conftest import Clock, Pki

TIMEOUT = 5.0
LIMIT = 1 << 20


@dataclass
class Request:
    """One request as the upstream received it."""

    conn: int  # which accepted connection (0-based)
    index: int  # which request on that connection (0-based)
    method: str
    target: str
    headers: CIMultiDict[str]
    body: bytes


#: Writes the answer to a request; False: then close the connection.
Reply = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


def response(
    body: bytes = b"ok",
    *fields: str,
    version: str = "HTTP/1.1",
    status: int = 200,
    length: bool = True,
) -> bytes:
    head = [f"{version} {status} X", *fields]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_request(reader: asyncio.StreamReader, conn: int, index: int) -> Request | None:
    """The next request on a connection; None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    line, *lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = line.split(" ")
    assert version == "HTTP/1.1"
    headers: CIMultiDict[str] = CIMultiDict()
    for field in lines:
        name, _, value = field.partition(":")
        headers.add(name, value.strip())
    body = await reader.readexactly(int(headers.get("Content-Length", "0")))
    return Request(conn, index, method, target, headers, body)


class Upstream:
    """A raw HTTP/1.1 server on 127.0.0.1, port 0: ``reply`` answers each
    request; it records the requests, the connections it accepted and those
    the client closed."""

    def __init__(self, reply: Reply, ssl_context: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.ssl_context = ssl_context
        self.requests: list[Request] = []
        self.accepted = 0
        #: Connections on which the server read the client's end.
        self.client_closed: list[int] = []
        self.readers: list[asyncio.StreamReader] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait (bounded) until ``predicate()`` holds."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), TIMEOUT)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = self.accepted
        self.accepted += 1
        self.readers.append(reader)
        self.writers.append(writer)
        await self._notify()
        index = 0
        try:
            while True:
                request = await read_request(reader, conn, index)
                if request is None:
                    self.client_closed.append(conn)
                    break
                self.requests.append(request)
                await self._notify()
                if not await self.reply(request, writer):
                    break
                await writer.drain()
                index += 1
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            self.client_closed.append(conn)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            await self._notify()

    async def stop(self) -> None:
        """Wait (bounded) for every connection to end, then stop listening."""
        try:
            tasks = [t for t in self._tasks if not t.done()]
            if tasks:
                await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        finally:
            for task in self._tasks:
                task.cancel()
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()


def answer(body: bytes = b"ok", *fields: str, **kwargs: Any) -> Reply:
    """A reply that sends the same response to every request and keeps the
    connection."""

    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(body, *fields, **kwargs))
        return True

    return reply


async def echo(request: Request, writer: asyncio.StreamWriter) -> bool:
    """Answers with where the request arrived: ``conn/index method`` (for HEAD
    only its Content-Length)."""
    data = response(f"{request.conn}/{request.index} {request.method}".encode())
    if request.method == "HEAD":
        data = data[: data.index(b"\r\n\r\n") + 4]
    writer.write(data)
    return True


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    started: list[Upstream] = []

    async def start(reply: Reply, ssl_context: ssl.SSLContext | None = None) -> Upstream:
        upstream = Upstream(reply, ssl_context)
        started.append(upstream)
        return await upstream.start()

    yield start
    for upstream in started:
        await upstream.stop()


@pytest.fixture
async def pools(upstreams: Any) -> AsyncIterator[Callable[..., ConnectionPool]]:
    """Pools closed at the end of the test, before the upstreams stop (which
    waits for every connection to end: a leaked connection fails the test)."""
    made: list[ConnectionPool] = []

    def make(port: int, **kwargs: Any) -> ConnectionPool:
        pool = ConnectionPool("127.0.0.1", port, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


async def get(
    pool: ConnectionPool, method: str = "GET", body: bytes = b"", *, max_body: int = LIMIT
) -> RawResponse:
    return await asyncio.wait_for(pool.request(method, "/", {}, body, max_body=max_body), TIMEOUT)


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- reuse ------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection(upstreams, pools) -> None:
    up = await upstreams(echo)
    pool = pools(up.port)
    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "GET", "PATCH", "OPTIONS", "GET", "GET"]
    for i, method in enumerate(methods):
        r = await get(pool, method, body=b"x" * i)
        assert r.status == 200 and r.keep_alive
        assert r.body == (b"" if method == "HEAD" else f"0/{i} {method}".encode())
    assert up.accepted == 1
    assert pool.opened == 1
    assert pool.idle == 1
    assert [(q.conn, q.index, q.method, q.body) for q in up.requests] == [
        (0, i, m, b"x" * i) for i, m in enumerate(methods)
    ]


async def test_request_on_the_wire(upstreams, pools) -> None:
    up = await upstreams(answer(b"done", "X-Up: 1", "x-up: 2"))
    pool = pools(up.port)
    r = await asyncio.wait_for(
        pool.request(
            "POST",
            "/a/b?c=%20d",
            {"X-Test": "yes", "Host": "evil.example", "Content-Length": "99"},
            b"data",
            max_body=LIMIT,
        ),
        TIMEOUT,
    )
    assert (r.status, r.body) == (200, b"done")
    assert r.headers.getall("X-UP") == ["1", "2"]
    (seen,) = up.requests
    assert (seen.method, seen.target, seen.body) == ("POST", "/a/b?c=%20d", b"data")
    assert seen.headers.getall("Host") == [f"127.0.0.1:{up.port}"]
    assert seen.headers.getall("Content-Length") == ["4"]
    assert seen.headers["X-Test"] == "yes"


async def test_most_recently_used_connection_is_reused_first(upstreams, pools) -> None:
    release_first = asyncio.Event()

    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.index == 0:  # both first requests in, conn 1 answers first
            await up.until(lambda: len(up.requests) >= 2)
            if request.conn == 0:
                await release_first.wait()
        return await echo(request, writer)

    up = await upstreams(reply)
    pool = pools(up.port)
    tasks = [asyncio.ensure_future(get(pool)) for _ in range(2)]
    done, _ = await asyncio.wait(tasks, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    assert [t.result().body for t in done] == [b"1/0 GET"]
    assert pool.idle == 1
    release_first.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert (pool.opened, pool.idle) == (2, 2)
    # conn 0 went back last: it is taken first
    assert (await get(pool)).body == b"0/1 GET"
    assert (await get(pool)).body == b"0/2 GET"
    assert pool.opened == 2


# --- what ends a connection ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["connection-close", "http10", "http10-close", "eof-framed", "extra-bytes"]
)
async def test_response_that_ends_the_connection(upstreams, pools, kind: str) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        body = f"{request.conn}".encode()
        if kind == "connection-close":
            writer.write(response(body, "Connection: close"))
        elif kind == "http10":
            writer.write(response(body, version="HTTP/1.0"))
        elif kind == "http10-close":
            writer.write(response(body, "Connection: close", version="HTTP/1.0"))
        elif kind == "eof-framed":
            writer.write(response(body, length=False))
            return False  # the end of the body is the end of the connection
        else:
            writer.write(response(body) + b"HTTP/1.1 200 X\r\n")
        return True  # the server would keep the connection: the client must not

    up = await upstreams(reply)
    pool = pools(up.port)
    for i in range(3):
        r = await get(pool)
        assert r.body == str(i).encode()
        assert r.keep_alive is False
        assert pool.idle == 0
    assert (up.accepted, pool.opened) == (3, 3)
    if kind != "eof-framed":  # the client ended each connection
        await up.until(lambda: sorted(up.client_closed) == [0, 1, 2])


async def test_http10_keep_alive_is_reused(upstreams, pools) -> None:
    up = await upstreams(answer(b"ok", "Connection: keep-alive", version="HTTP/1.0"))
    pool = pools(up.port)
    for _ in range(3):
        assert (await get(pool)).keep_alive is True
    assert (up.accepted, pool.opened, pool.idle) == (1, 1, 1)


async def test_unsolicited_bytes_on_an_idle_connection_end_it(upstreams, pools) -> None:
    up = await upstreams(echo)
    pool = pools(up.port)
    assert (await get(pool)).body == b"0/0 GET"
    assert pool.idle == 1
    up.writers[0].write(b"HTTP/1.1 200 X\r\nContent-Length: 0\r\n\r\n")  # nobody asked
    await up.until(lambda: up.client_closed == [0])
    assert (await get(pool)).body == b"1/0 GET"
    assert pool.opened == 2


# --- the upstream closed an idle connection ----------------------------------------------------


async def test_get_after_the_upstream_closed_the_idle_connection(upstreams, pools) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(f"{request.conn}".encode()))  # keep-alive, but then
        return False  # the server closes it (its own keep-alive timeout)

    up = await upstreams(reply)
    pool = pools(up.port)
    assert (await get(pool)).body == b"0"
    assert (await get(pool)).body == b"1"
    assert (await get(pool)).body == b"2"
    assert (up.accepted, pool.opened) == (3, 3)
    assert [q.conn for q in up.requests] == [0, 1, 2]


async def test_post_after_the_close_was_noticed_uses_a_new_connection(upstreams, pools) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(f"{request.conn}".encode()))
        return request.conn != 0  # conn 0 is closed by the server once idle

    up = await upstreams(reply)
    pool = pools(up.port)
    assert (await get(pool)).body == b"0"
    # the pool's side of conn 0 sees the end of the connection while idle
    idle = pool._idle  # white box: the only way to know the FIN was processed

    async def noticed() -> None:
        while not all(conn.closed for conn in idle):
            await asyncio.sleep(0)

    await asyncio.wait_for(noticed(), TIMEOUT)
    assert pool.idle == 1  # still listed, but not handed out
    assert (await get(pool, "POST", body=b"x")).body == b"1"
    assert (pool.opened, pool.idle) == (2, 1)


def close_second_request_on_conn_0(seen: list[Request]) -> Reply:
    """conn 0 answers its first request, then closes (as if its idle timeout
    fired just as the next request arrived) without a byte of response; other
    connections answer everything."""

    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        seen.append(request)
        if request.conn == 0 and request.index == 1:
            return False
        return await echo(request, writer)

    return reply


# the HTTP method names the pool receives (mapping.HTTP_METHODS: CoAP FETCH is QUERY)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "QUERY"])
async def test_stale_connection_retried_for_idempotent_methods(
    upstreams, pools, method: str
) -> None:
    seen: list[Request] = []
    up = await upstreams(close_second_request_on_conn_0(seen))
    pool = pools(up.port)
    assert (await get(pool)).body == b"0/0 GET"
    r = await get(pool, method, body=b"b" if method in ("PUT", "QUERY") else b"")
    assert r.status == 200
    assert r.body == (b"" if method == "HEAD" else f"1/0 {method}".encode())
    assert (up.accepted, pool.opened, pool.idle) == (2, 2, 1)
    # sent twice: on the stale connection, then once on a new one
    assert [(q.conn, q.index, q.method) for q in seen[1:]] == [(0, 1, method), (1, 0, method)]


async def test_retry_goes_to_a_new_connection_not_another_idle_one(upstreams, pools) -> None:
    """Several idle connections closed by the upstream: the request is sent
    once on one of them, then on a new connection (not once per dead one)."""
    seen: list[Request] = []

    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        seen.append(request)
        if request.index >= 1:  # every connection's second request: close instead
            return False
        return await echo(request, writer)

    up = await upstreams(reply)
    pool = pools(up.port)
    await asyncio.wait_for(asyncio.gather(*(get(pool) for _ in range(3))), TIMEOUT)
    assert (up.accepted, pool.idle) == (3, 3)
    r = await get(pool)
    assert r.status == 200
    second = [(q.conn, q.index) for q in seen[3:]]
    assert len(second) == 2 and second[1] == (3, 0)  # one stale try, then a new connection
    assert pool.opened == 4


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_stale_connection_not_retried_for_other_methods(
    upstreams, pools, method: str
) -> None:
    seen: list[Request] = []
    up = await upstreams(close_second_request_on_conn_0(seen))
    pool = pools(up.port)
    assert (await get(pool)).body == b"0/0 GET"
    with pytest.raises(StaleConnection):
        await get(pool, method, body=b"once")
    assert [(q.conn, q.index, q.method, q.body) for q in seen[1:]] == [(0, 1, method, b"once")]
    assert (up.accepted, pool.opened, pool.idle) == (1, 1, 0)
    # the pool is fine afterwards
    assert (await get(pool, method)).body == f"1/0 {method}".encode()
    assert pool.opened == 2


async def test_new_connection_closed_before_a_response_is_not_retried(upstreams, pools) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        return False  # close without a byte of response

    up = await upstreams(reply)
    pool = pools(up.port)
    with pytest.raises(StaleConnection):
        await get(pool)
    assert (up.accepted, pool.opened, len(up.requests)) == (1, 1, 1)


async def test_response_cut_short_on_a_reused_connection_is_not_retried(upstreams, pools) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.index == 0:
            return await echo(request, writer)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        return False

    up = await upstreams(reply)
    pool = pools(up.port)
    await get(pool)
    with pytest.raises(ProtocolError):
        await get(pool)  # a byte of the response came back: the upstream may have acted
    assert (up.accepted, pool.opened, pool.idle, len(up.requests)) == (1, 1, 0, 2)


# --- idle timeout and idle bound -------------------------------------------------------------


async def test_idle_timeout_with_an_injected_clock(upstreams, pools) -> None:
    clock = Clock(1000.0)
    up = await upstreams(echo)
    pool = pools(up.port, idle_timeout=30.0, clock=clock)
    assert (await get(pool)).body == b"0/0 GET"
    clock.now += 29.9
    assert (await get(pool)).body == b"0/1 GET"  # idle 29.9 s: reused
    clock.now += 29.9
    assert (await get(pool)).body == b"0/2 GET"  # the idle time restarts at each use
    clock.now += 30.1
    assert (await get(pool)).body == b"1/0 GET"  # idle too long: a new connection
    assert (up.accepted, pool.opened, pool.idle) == (2, 2, 1)
    await up.until(lambda: up.client_closed == [0])  # and the old one was closed


async def test_max_idle_bounds_the_idle_connections(upstreams, pools) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        await up.until(lambda: len(up.requests) >= 5)  # five at once: five connections
        return await echo(request, writer)

    up = await upstreams(reply)
    pool = pools(up.port, max_idle=2)
    rs = await asyncio.wait_for(asyncio.gather(*(get(pool) for _ in range(5))), TIMEOUT)
    assert sorted(r.body for r in rs) == [f"{i}/0 GET".encode() for i in range(5)]
    assert (up.accepted, pool.opened, pool.idle) == (5, 5, 2)
    await up.until(lambda: len(up.client_closed) == 3)  # the others were closed
    kept = {0, 1, 2, 3, 4} - set(up.client_closed)
    rs = await asyncio.wait_for(asyncio.gather(get(pool), get(pool)), TIMEOUT)
    assert {int(r.body.split(b"/")[0]) for r in rs} == kept
    assert (up.accepted, pool.opened, pool.idle) == (5, 5, 2)


async def test_close_closes_the_idle_connections(upstreams, pools) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        await up.until(lambda: len(up.requests) >= 3)
        return await echo(request, writer)

    up = await upstreams(reply)
    pool = pools(up.port)
    await asyncio.wait_for(asyncio.gather(*(get(pool) for _ in range(3))), TIMEOUT)
    assert pool.idle == 3
    assert up.client_closed == []
    pool.close()
    assert pool.idle == 0
    await up.until(lambda: sorted(up.client_closed) == [0, 1, 2])  # each saw EOF


async def test_close_during_a_request_on_a_reused_connection(upstreams, pools) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        if (request.conn, request.index) == (0, 1):  # hold it until the client ends
            assert await up.readers[0].read(1) == b""
            return False
        return await echo(request, writer)

    up = await upstreams(reply)
    pool = pools(up.port)
    assert (await get(pool)).body == b"0/0 GET"
    task = asyncio.ensure_future(get(pool))
    await up.until(lambda: len(up.requests) == 2)
    pool.close()
    with pytest.raises(ConnectionError):
        await task
    assert (pool.opened, pool.idle) == (1, 0)


# --- errors ---------------------------------------------------------------------------------


async def test_connection_refused(pools) -> None:
    pool = pools(free_port())
    with pytest.raises(ConnectionRefusedError):
        await get(pool)
    assert (pool.opened, pool.idle) == (0, 0)


async def test_garbage_is_a_protocol_error_and_ends_the_connection(upstreams, pools) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"\x00\x01\x02 this is not HTTP\r\n\r\n")
        return True  # and keep the connection open: the client must end it

    up = await upstreams(reply)
    pool = pools(up.port)
    with pytest.raises(ProtocolError):
        await get(pool)
    assert pool.idle == 0
    await up.until(lambda: up.client_closed == [0])


@pytest.mark.parametrize("framing", ["length", "chunked", "eof"])
async def test_body_too_large_ends_the_connection(upstreams, pools, framing: str) -> None:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.method == "HEAD":  # small, to check the pool afterwards
            writer.write(response(b"", "Content-Length: 100", length=False))
            return True
        if framing == "length":
            writer.write(response(b"a" * 100))
        elif framing == "chunked":
            chunk = b"1e\r\n" + b"a" * 30 + b"\r\n"
            writer.write(response(b"", "Transfer-Encoding: chunked", length=False) + chunk * 2)
        else:
            writer.write(response(b"a" * 100, length=False))
        return True  # keep the connection open: the client must end it

    up = await upstreams(reply)
    pool = pools(up.port)
    with pytest.raises(BodyTooLarge):
        await get(pool, max_body=50)
    assert pool.idle == 0
    await up.until(lambda: up.client_closed == [0])
    r = await get(pool, "HEAD", max_body=50)
    assert (r.status, r.keep_alive) == (200, True)
    assert (up.accepted, pool.opened) == (2, 2)


async def test_body_at_max_body_is_accepted(upstreams, pools) -> None:
    up = await upstreams(answer(b"a" * 50))
    pool = pools(up.port)
    assert (await get(pool, max_body=50)).body == b"a" * 50
    assert (await get(pool, max_body=50)).body == b"a" * 50
    assert pool.opened == 1


async def test_cancelled_request_ends_its_connection(upstreams, pools) -> None:
    ended = asyncio.Event()

    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.conn == 0:  # no answer: wait for the client to end the connection
            assert await up.readers[0].read(1) == b""
            ended.set()
            return False
        return await echo(request, writer)

    up = await upstreams(reply)
    pool = pools(up.port)
    task = asyncio.ensure_future(get(pool))
    await up.until(lambda: len(up.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(ended.wait(), TIMEOUT)  # closed by the cancellation
    assert pool.idle == 0
    assert (await get(pool)).body == b"1/0 GET"
    assert pool.opened == 2


# --- TLS ---------------------------------------------------------------------------------


async def test_tls_connection_reused(upstreams, pools, pki: Pki) -> None:
    up = await upstreams(echo, pki.server_context())
    client = ssl.create_default_context(cafile=str(pki.ca))
    pool = pools(up.port, ssl_context=client)
    for i in range(3):
        assert (await get(pool)).body == f"0/{i} GET".encode()
    assert (up.accepted, pool.opened) == (1, 1)
    assert up.requests[0].headers["Host"] == f"127.0.0.1:{up.port}"
