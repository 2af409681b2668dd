"""The HTTP side of the proxy: one :class:`Upstream` per route, with its own
pool of persistent HTTP/1.1 connections (:mod:`gateway.proxy.pool`), a
bounded wait queue, a circuit breaker and one deadline per request.

Failure behaviour (docs/proxy.md, "Failure codes"):

* connection refused, DNS failure, reset: :class:`~gateway.errors.UpstreamError` 5.02, at once;
* no complete answer within the route's ``timeout`` (queue wait, connect,
  request and the whole body): :class:`~gateway.errors.UpstreamTimeout` 5.04, at the deadline;
* not HTTP, a redirect, a ``Content-Encoding`` that was not asked for:
  :class:`~gateway.errors.UpstreamBadResponse` 5.02;
* a body above ``max_body``: :class:`~gateway.errors.UpstreamTooLarge` 5.02
  (read in a bounded way: at most ``max_body + 1`` bytes are ever held);
* TLS verification failure: :class:`~gateway.errors.UpstreamTlsError` 5.02;
* ``pool_size`` requests in flight and ``queue_size`` waiting: the next is
  :class:`~gateway.errors.UpstreamBusy` 5.03 with Max-Age, at once;
* after ``breaker_failures`` consecutive failures the breaker opens:
  :class:`~gateway.errors.CircuitOpen` 5.03 with Max-Age until ``breaker_reset``
  has passed; then one probe request goes through (half-open), and its
  outcome closes or re-opens the breaker.

Client exceptions become gateway errors in one place, :func:`translate`
(httpcore's ``map_exceptions`` pattern). The client never stores cookies,
never follows redirects, never reads proxy settings from the environment and
does not ask for compressed bodies.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from gateway.errors import (
    CircuitOpen,
    GatewayError,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
    UpstreamTlsError,
    UpstreamTooLarge,
)
from gateway.proxy.http1 import BodyTooLarge, ProtocolError
from gateway.proxy.mapping import HttpRequest, HttpResponse
from gateway.proxy.pool import ConnectionPool, StaleConnection

log = logging.getLogger(__name__)

#: User-Agent sent upstream.
USER_AGENT = "acegw-proxy"


# --- translation of client errors: the one place -----------------------------------


def translate(exc: BaseException) -> GatewayError:
    """The gateway error for an exception raised while talking to an
    upstream (the HTTP/1.1 client, the socket layer, TLS, the deadline).
    Messages are fixed texts: never a URL, a header or a certificate detail."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream did not answer in time")
    if isinstance(exc, BodyTooLarge):
        return UpstreamTooLarge("upstream response larger than the route's max_body")
    if isinstance(exc, ProtocolError):
        return UpstreamBadResponse("upstream sent an invalid HTTP response")
    if isinstance(exc, StaleConnection):
        return UpstreamBadResponse("upstream closed the connection")
    if isinstance(exc, ssl.SSLError):  # ssl.CertificateError included
        return UpstreamTlsError("upstream TLS failed")
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return UpstreamError("upstream unreachable")
    if isinstance(exc, OSError):
        return UpstreamError("upstream connection failed")
    return UpstreamError("upstream request failed")


# --- circuit breaker ----------------------------------------------------------------


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; stays open for
    ``reset_after`` seconds (``clock`` is monotonic and injected); then lets
    exactly one probe through (half-open): success closes it, failure opens
    it again for another ``reset_after``. ``failures = 0`` disables it.

    Use: :meth:`admit` before a request (raises :class:`CircuitOpen`), then
    exactly one of :meth:`success`, :meth:`failure` or :meth:`release`
    (the request ended without saying anything about the upstream's health).
    """

    def __init__(self, failures: int, reset_after: float, clock: Callable[[], float]) -> None:
        self.threshold = failures
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self.reset_after:
            self._state = BreakerState.HALF_OPEN
        return self._state

    def admit(self) -> bool:
        """Raise :class:`CircuitOpen` (with the seconds until the next probe)
        unless a request may go; return whether it is the half-open probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        wait = max(1, math.ceil(self._opened_at + self.reset_after - self._clock()))
        raise CircuitOpen("upstream circuit breaker is open", max_age=wait)

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        self._state = BreakerState.CLOSED

    def failure(self) -> None:
        self._probing = False
        if self.threshold <= 0:
            return
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.threshold:
            if self._state is not BreakerState.OPEN:
                log.warning("circuit breaker opened after %d failure(s)", self._failures)
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    def release(self) -> None:
        self._probing = False


# --- admission: bounded pool and queue ------------------------------------------------


class AdmissionGate:
    """At most ``slots`` holders at once and at most ``queue`` waiting; the
    next caller gets :class:`UpstreamBusy` at once (5.03 with ``max_age``).
    Memory is bounded by ``slots + queue`` pending requests per route."""

    def __init__(self, slots: int, queue: int, max_age: int) -> None:
        self.slots = slots
        self.queue = queue
        self.max_age = max_age
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def enter(self) -> asyncio.Future[None] | None:
        """Take a slot: ``None`` when one was free (taken now), else a future
        to :meth:`wait` on; :class:`UpstreamBusy` when the queue is full."""
        if self.active < self.slots and not self._waiters:
            self.active += 1
            return None
        if len(self._waiters) >= self.queue:
            raise UpstreamBusy("upstream queue full", max_age=self.max_age)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    async def wait(self, waiter: asyncio.Future[None]) -> None:
        """Wait for the slot :meth:`enter` queued for; on cancellation the
        place in the queue (or the slot, if it was just handed over) is
        given up."""
        try:
            await waiter  # the releaser hands its slot over (active unchanged)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # got the slot just as we were cancelled
            else:
                self._waiters.remove(waiter)
            raise

    def leave(self) -> None:
        """Give back a slot taken by :meth:`enter` (and :meth:`wait`)."""
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


# --- TLS ---------------------------------------------------------------------------


def tls_context(
    *, ca_file: Path | None, client_cert: Path | None, client_key: Path | None
) -> ssl.SSLContext:
    """Client TLS context for an https upstream: certificate and host name
    verification always on (system CAs, or ``ca_file``), optional client
    certificate for mutual TLS."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    return ctx


# --- the client ----------------------------------------------------------------------


class Upstream:
    """The HTTP client of one route, for requests to ``host``:``port`` (TLS
    when ``ssl_context`` is given). :meth:`close` closes its connections."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        timeout: float,
        max_body: int,
        pool_size: int,
        queue_size: int,
        busy_max_age: int,
        breaker: CircuitBreaker,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.max_body = max_body
        self.gate = AdmissionGate(pool_size, queue_size, busy_max_age)
        self.breaker = breaker
        self.pool = ConnectionPool(host, port, ssl_context=ssl_context, max_idle=pool_size)
        #: Called after each exchange with its duration in seconds and, for
        #: a failure, the error's reason (the gateway's metrics).
        self.observer: Callable[[float, str | None], None] | None = None
        self._open = False

    async def start(self) -> None:
        self.pool.open()
        self._open = True

    async def close(self) -> None:
        self._open = False
        self.pool.close()

    async def send(self, request: HttpRequest, headers: dict[str, str]) -> HttpResponse:
        """Send ``request`` with ``headers`` (complete: mapped, route and
        credential headers) and read the response, all within the route's
        timeout. Raises only :class:`~gateway.errors.GatewayError`. Reports
        each outcome to :attr:`observer` (seconds, error reason or None), a
        request the open breaker refused included (``circuit_open``)."""
        if not self._open:
            raise UpstreamError("proxy not started")
        started = time.perf_counter()
        try:
            probe = self.breaker.admit()
        except CircuitOpen as exc:
            # outside the try below: nothing was admitted, so there is no
            # outcome to report to the breaker (release() would end a probe
            # another request is running)
            if self.observer is not None:
                self.observer(0.0, exc.reason)  # nothing was timed
            raise
        outcome: Callable[[], None] = self.breaker.release
        sent = False
        try:
            async with asyncio.timeout(self.timeout):
                gate = self.gate
                waiter = gate.enter()
                if waiter is not None:
                    await gate.wait(waiter)
                try:
                    sent = True
                    raw = await self.pool.request(
                        request.method,
                        _target(request.url),
                        headers,
                        request.body,
                        max_body=self.max_body,
                    )
                finally:
                    gate.leave()
            encoding = raw.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise UpstreamBadResponse("upstream sent a compressed body it was not asked for")
        except asyncio.CancelledError:
            outcome()
            raise
        except Exception as exc:  # TimeoutError included
            error = translate(exc)
            if sent and not isinstance(error, UpstreamTooLarge):
                outcome = self.breaker.failure  # the upstream itself misbehaved
            outcome()
            log.debug(
                "upstream %s: %s (%s)%s",
                self.name,
                error.reason,
                type(exc).__name__,
                " [probe]" if probe else "",
            )
            if self.observer is not None:
                self.observer(time.perf_counter() - started, error.reason)
            raise error from None
        if raw.status >= 500:
            self.breaker.failure()
        else:
            self.breaker.success()
        if self.observer is not None:
            self.observer(time.perf_counter() - started, None)
        return HttpResponse(status=raw.status, headers=raw.headers, body=raw.body)


def _target(url: str) -> str:
    """The origin-form request target (RFC 9112 §3.2.1) of an absolute URL
    built by :func:`gateway.proxy.mapping.upstream_url`: path and query."""
    start = url.find("/", url.find("://") + 3)
    return url[start:] if start >= 0 else "/"
