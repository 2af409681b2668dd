"""Persistent HTTP/1.1 connections to one upstream origin (RFC 9112 §9).

A :class:`ConnectionPool` keeps the idle connections to one ``(host, port,
TLS)`` origin and hands them out one request at a time (no pipelining); a
connection goes back to the pool only after a complete response that allows
it (:attr:`~gateway.proxy.http1.RawResponse.keep_alive`), else it is closed.
How many requests run at once is bounded by the caller (the route's
admission gate); the pool keeps at most ``max_idle`` idle connections and
drops those idle for longer than ``idle_timeout``.

A keep-alive connection the upstream closed while it sat idle is found out
only when a request is written to it: if the connection was reused and no
byte of a response came back, an idempotent request (RFC 9110 §9.2.2;
:data:`~gateway.proxy.mapping.IDEMPOTENT_HTTP_METHODS`) is sent once more on
a new connection; others fail (the upstream may have acted on them).

The bytes go through :mod:`gateway.proxy.http1`; errors are the exceptions
of the socket layer, :mod:`ssl`, and :mod:`gateway.proxy.http1`, translated
in one place by :func:`gateway.proxy.upstream.translate`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

from gateway.proxy.http1 import RawResponse, ResponseParser, encode_request
from gateway.proxy.mapping import DEFAULT_PORTS, IDEMPOTENT_HTTP_METHODS

__all__ = ["ConnectionPool", "StaleConnection"]


class StaleConnection(ConnectionError):
    """A reused connection ended before any byte of the response."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, carrying one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[RawResponse] | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        parser, waiter = self._parser, self._waiter
        if parser is None or waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection is unusable
            return
        try:
            response = parser.feed(data)
        except Exception as exc:  # ProtocolError, BodyTooLarge
            self.close()
            waiter.set_exception(exc)
            return
        if response is not None:
            waiter.set_result(response)

    def eof_received(self) -> bool:
        self._ended(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        parser, waiter = self._parser, self._waiter
        self.closed = True
        if parser is None or waiter is None or waiter.done():
            return
        if not parser.started:
            error: Exception = StaleConnection("connection closed before the response")
            if exc is not None:
                error.__cause__ = exc
            waiter.set_exception(error)
            return
        try:
            waiter.set_result(parser.eof())
        except Exception as error:  # ProtocolError
            waiter.set_exception(error)

    # --- the pool's side ---

    def start(self, data: bytes, parser: ResponseParser) -> asyncio.Future[RawResponse]:
        """Write a request; the future of its response."""
        if self.closed or self.transport is None:
            raise StaleConnection("connection closed")
        waiter: asyncio.Future[RawResponse] = asyncio.get_running_loop().create_future()
        self._parser, self._waiter = parser, waiter
        self.transport.write(data)
        return waiter

    def finish(self) -> None:
        """Forget the exchange (its response arrived, or it was abandoned)."""
        self._parser = self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class ConnectionPool:
    """Idle keep-alive connections to one origin, and the request loop."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 16,
        idle_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._authority = _authority(host, port, ssl_context is not None)
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False
        #: Connections opened so far (for tests and metrics).
        self.opened = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes, *, max_body: int
    ) -> RawResponse:
        """Send one request (``target``: path and query, percent-encoded) and
        read its whole response, bounded by ``max_body``."""
        data = encode_request(method, target, self._authority, headers, body)
        retried = False
        while True:
            if self._closed:
                raise StaleConnection("connection pool closed")
            conn = None if retried else self._checkout()
            fresh = conn is None
            if conn is None:
                conn = await self._connect()
                if self._closed:  # closed while connecting
                    conn.close()
                    raise StaleConnection("connection pool closed")
            self._busy.add(conn)
            try:
                response = await conn.start(data, ResponseParser(method, max_body=max_body))
            except StaleConnection:
                conn.close()
                if fresh or method not in IDEMPOTENT_HTTP_METHODS or self._closed:
                    raise
                retried = True  # the upstream closed an idle connection: once more, on a new one
                continue
            except BaseException:
                conn.close()
                raise
            finally:
                conn.finish()
                self._busy.discard(conn)
            if response.keep_alive and not conn.closed and not self._closed:
                self._checkin(conn)
            else:
                conn.close()
            return response

    def open(self) -> None:
        """Take requests again after :meth:`close`."""
        self._closed = False

    def close(self) -> None:
        """Close every connection (idle ones now, busy ones under their
        request, which then fails); requests fail at once until :meth:`open`."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()

    def _checkout(self) -> _Connection | None:
        now = self._clock()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            conn.close()
        return None

    def _checkin(self, conn: _Connection) -> None:
        if len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = self._clock()
        self._idle.append(conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Connection,
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self._ssl is not None else None,
        )
        self.opened += 1
        return conn


def _authority(host: str, port: int, tls: bool) -> str:
    """The ``Host`` header value (RFC 9110 §7.2): the port only when it is
    not the scheme's default; IPv6 literals in brackets."""
    name = f"[{host}]" if ":" in host else host
    return name if port == DEFAULT_PORTS["https" if tls else "http"] else f"{name}:{port}"
