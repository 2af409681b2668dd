"""The circuit breaker (injected clock, no sleeping), the admission gate and
the one place client errors are translated."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

import pytest

from gateway.errors import (
    CircuitOpen,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
    UpstreamTlsError,
    UpstreamTooLarge,
)
from gateway.proxy.http1 import BodyTooLarge, ProtocolError
from gateway.proxy.mapping import HttpRequest
from gateway.proxy.pool import StaleConnection
from gateway.proxy.upstream import (
    AdmissionGate,
    BreakerState,
    CircuitBreaker,
    Upstream,
    translate,
)

from .conftest import Clock


def test_breaker_opens_after_consecutive_failures() -> None:
    clock = Clock(0.0)
    b = CircuitBreaker(3, 30.0, clock)
    for _ in range(2):
        assert b.admit() is False
        b.failure()
    assert b.admit() is False
    b.success()  # a success in between resets the count
    for _ in range(3):
        b.admit()
        b.failure()
    assert b.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as info:
        b.admit()
    assert info.value.max_age == 30 and info.value.coap_code.dotted == "5.03"
    clock.now = 29.2
    with pytest.raises(CircuitOpen) as info:
        b.admit()
    assert info.value.max_age == 1


def test_breaker_half_open_lets_exactly_one_probe() -> None:
    clock = Clock(0.0)
    b = CircuitBreaker(1, 10.0, clock)
    b.admit()
    b.failure()
    clock.now = 10.0
    assert b.state is BreakerState.HALF_OPEN
    assert b.admit() is True  # the probe
    with pytest.raises(CircuitOpen):
        b.admit()  # others wait while it is out
    b.failure()  # probe failed: open for another full period
    assert b.state is BreakerState.OPEN
    clock.now = 19.9
    with pytest.raises(CircuitOpen):
        b.admit()
    clock.now = 20.0
    assert b.admit() is True
    b.success()
    assert b.state is BreakerState.CLOSED
    assert b.admit() is False and b.admit() is False


def test_breaker_neutral_outcome_frees_the_probe() -> None:
    clock = Clock(0.0)
    b = CircuitBreaker(1, 5.0, clock)
    b.admit()
    b.failure()
    clock.now = 5.0
    assert b.admit() is True
    b.release()  # e.g. the probe was refused by the queue: say nothing about health
    assert b.state is BreakerState.HALF_OPEN
    assert b.admit() is True


async def test_refusal_by_the_open_breaker_is_observed() -> None:
    """The upstream_errors metric counts circuit_open; the refusal leaves
    the half-open probe that is out alone."""
    clock = Clock(0.0)
    breaker = CircuitBreaker(1, 5.0, clock)
    upstream = Upstream(
        name="/r",
        host="127.0.0.1",
        port=9,  # never connected to: the breaker refuses first
        timeout=1.0,
        max_body=1024,
        pool_size=1,
        queue_size=0,
        busy_max_age=1,
        breaker=breaker,
    )
    seen: list[tuple[float, str | None]] = []
    upstream.observer = lambda seconds, reason: seen.append((seconds, reason))
    await upstream.start()
    request = HttpRequest(method="GET", url="http://127.0.0.1:9/x")
    breaker.admit()
    breaker.failure()  # open
    with pytest.raises(CircuitOpen) as info:
        await upstream.send(request, {})
    assert info.value.max_age == 5
    assert seen == [(0.0, "circuit_open")]
    clock.now = 5.0
    assert breaker.admit() is True  # the probe is out ...
    with pytest.raises(CircuitOpen):
        await upstream.send(request, {})
    assert seen[-1] == (0.0, "circuit_open") and len(seen) == 2
    with pytest.raises(CircuitOpen):  # ... and still is: no second probe
        breaker.admit()
    assert upstream.pool.opened == 0
    await upstream.close()


def test_breaker_disabled() -> None:
    b = CircuitBreaker(0, 5.0, Clock(0.0))
    for _ in range(100):
        b.admit()
        b.failure()
    assert b.state is BreakerState.CLOSED


@contextlib.asynccontextmanager
async def _slot(gate: AdmissionGate) -> AsyncIterator[None]:
    """A slot as the upstream client takes one: enter, wait if queued, leave."""
    waiter = gate.enter()
    if waiter is not None:
        await gate.wait(waiter)
    try:
        yield
    finally:
        gate.leave()


async def test_gate_bounds_active_and_waiting() -> None:
    gate = AdmissionGate(slots=2, queue=1, max_age=3)
    release = asyncio.Event()
    order: list[int] = []

    async def user(n: int) -> None:
        async with _slot(gate):
            order.append(n)
            await release.wait()

    tasks = [asyncio.ensure_future(user(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert (gate.active, gate.waiting) == (2, 1)
    with pytest.raises(UpstreamBusy) as info:
        async with _slot(gate):
            pass
    assert info.value.max_age == 3
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and (gate.active, gate.waiting) == (0, 0)


async def test_gate_cancelled_waiter_leaves_no_trace() -> None:
    gate = AdmissionGate(slots=1, queue=2, max_age=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with _slot(gate):
            await release.wait()

    holder = asyncio.ensure_future(hold())
    waiter = asyncio.ensure_future(hold())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    release.set()
    await holder
    assert (gate.active, gate.waiting) == (0, 0)
    async with _slot(gate):
        assert gate.active == 1


async def test_gate_waiter_cancelled_after_handover_returns_the_slot() -> None:
    gate = AdmissionGate(slots=1, queue=1, max_age=1)
    held = _slot(gate)
    await held.__aenter__()
    entered = False

    async def wait_for_slot() -> None:
        nonlocal entered
        async with _slot(gate):
            entered = True

    waiter = asyncio.ensure_future(wait_for_slot())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    await held.__aexit__(None, None, None)  # hands the slot to the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not entered
    assert (gate.active, gate.waiting) == (0, 0)


@pytest.mark.parametrize(
    ("exc", "expected", "code"),
    [
        (TimeoutError(), UpstreamTimeout, "5.04"),
        (ConnectionRefusedError(111, "refused 127.0.0.1"), UpstreamError, "5.02"),
        (socket.gaierror(-2, "Name or service not known"), UpstreamError, "5.02"),
        (ssl.SSLCertVerificationError(), UpstreamTlsError, "5.02"),
        (ssl.CertificateError("hostname mismatch"), UpstreamTlsError, "5.02"),
        (ssl.SSLError(1, "handshake failure"), UpstreamTlsError, "5.02"),
        (StaleConnection("closed"), UpstreamBadResponse, "5.02"),
        (ProtocolError("truncated"), UpstreamBadResponse, "5.02"),
        (BodyTooLarge("big"), UpstreamTooLarge, "5.02"),
        (ConnectionResetError(), UpstreamError, "5.02"),
        (ValueError("invalid header value"), UpstreamError, "5.02"),
        (RuntimeError("other"), UpstreamError, "5.02"),
    ],
)
def test_translate(exc: BaseException, expected: type, code: str) -> None:
    err = translate(exc)
    assert type(err) is expected and err.coap_code.dotted == code
    assert "127.0.0.1" not in err.description
