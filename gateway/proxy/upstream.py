"""The HTTP side of the proxy: one :class:`Upstream` per route, with its own
aiohttp client session and connection pool, a bounded wait queue, a circuit
breaker and one deadline per request.

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

aiohttp exceptions become gateway errors in one place, :func:`translate`
(httpcore's ``map_exceptions`` pattern). The sessions never store cookies,
never follow redirects, never read proxy settings from the environment and
do not ask for compressed bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import yarl

from ..errors import (
    CircuitOpen,
    GatewayError,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
    UpstreamTlsError,
    UpstreamTooLarge,
)
from .mapping import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

#: Bytes asked from the body stream per read.
READ_CHUNK = 64 * 1024
#: User-Agent sent upstream.
USER_AGENT = "acegw-proxy"


# --- translation of client errors: the one place -----------------------------------


def translate(exc: BaseException) -> GatewayError:
    """The gateway error for an exception raised while talking to an
    upstream (aiohttp, the socket layer, the deadline). Messages are fixed
    texts: never a URL, a header or a certificate detail."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout("upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return UpstreamTlsError("upstream TLS failed")
    if isinstance(exc, ssl.SSLError):
        return UpstreamTlsError("upstream TLS failed")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError("upstream unreachable")
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return UpstreamBadResponse("upstream sent an invalid HTTP response")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamBadResponse("upstream closed the connection")
    if isinstance(exc, aiohttp.ClientError | OSError):
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

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active < self.slots and not self._waiters:
            self.active += 1
        elif len(self._waiters) >= self.queue:
            raise UpstreamBusy("upstream queue full", max_age=self.max_age)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # the releaser hands its slot over (active unchanged)
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # got the slot just as we were cancelled
                else:
                    self._waiters.remove(waiter)
                raise
        try:
            yield
        finally:
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
    """The HTTP client of one route. :meth:`start` creates the session (in
    the running loop), :meth:`close` closes it."""

    def __init__(
        self,
        *,
        name: str,
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
        self._ssl = ssl_context
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self._pool_size,
            limit_per_host=0,
            ssl=self._ssl if self._ssl is not None else True,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, request: HttpRequest, headers: dict[str, str]) -> HttpResponse:
        """Send ``request`` with ``headers`` (complete: mapped, route and
        credential headers) and read the response, all within the route's
        timeout. Raises only :class:`~gateway.errors.GatewayError`."""
        session = self._session
        if session is None:
            raise UpstreamError("proxy not started")
        probe = self.breaker.admit()
        outcome: Callable[[], None] = self.breaker.release
        sent = False
        try:
            async with asyncio.timeout(self.timeout):
                async with self.gate.slot():
                    sent = True
                    response = await self._exchange(session, request, headers)
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
            raise error from None
        if response.status >= 500:
            self.breaker.failure()
        else:
            self.breaker.success()
        return response

    async def _exchange(
        self, session: aiohttp.ClientSession, request: HttpRequest, headers: dict[str, str]
    ) -> HttpResponse:
        skip = () if "Content-Type" in headers else ("Content-Type",)
        async with session.request(
            request.method,
            yarl.URL(request.url, encoded=True),
            headers=headers,
            data=request.body if request.body else None,
            allow_redirects=False,
            skip_auto_headers=skip,
        ) as resp:
            encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                resp.close()
                raise UpstreamBadResponse("upstream sent a compressed body it was not asked for")
            body = await read_bounded(resp, self.max_body)
            return HttpResponse(status=resp.status, headers=resp.headers, body=body)


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or :class:`UpstreamTooLarge` as soon as it exceeds
    ``limit`` (a Content-Length above it fails before reading). Never holds
    more than ``limit + 1`` bytes; the connection is dropped, not reused."""
    if resp.content_length is not None and resp.content_length > limit:
        resp.close()
        raise UpstreamTooLarge("upstream response larger than the route's max_body")
    buf = bytearray()
    while True:
        chunk = await resp.content.read(min(READ_CHUNK, limit + 1 - len(buf)))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            resp.close()
            raise UpstreamTooLarge("upstream response larger than the route's max_body")
