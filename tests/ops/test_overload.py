"""The in-flight cap (limits.max_in_flight) at the root resource: a request
beyond it is answered 5.03 + Max-Age before any authorization work."""

from __future__ import annotations

import asyncio

import aiocoap
from aiocoap.numbers.codes import Code

from gateway.coap.service_site import ServiceSite
from gateway.operations.gateway_metrics import GatewayMetrics, RouteLabels


class Blocking:
    """An inner site whose requests wait until released; counts renders."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.rendered = 0

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        self.rendered += 1
        await self.release.wait()
        return aiocoap.Message(code=Code.CONTENT)


async def test_requests_beyond_the_cap_get_5_03_without_reaching_the_inner_site():
    inner = Blocking()
    root = ServiceSite(inner, GatewayMetrics(), RouteLabels([]), max_in_flight=2)
    first = [asyncio.create_task(root.render(aiocoap.Message(code=Code.GET))) for _ in range(2)]
    await asyncio.sleep(0)  # both enter the inner site
    assert root.in_flight == 2
    shed = await root.render(aiocoap.Message(code=Code.GET))
    assert shed.code == Code.SERVICE_UNAVAILABLE and shed.opt.max_age == 1
    assert inner.rendered == 2
    inner.release.set()
    assert [(await t).code for t in first] == [Code.CONTENT, Code.CONTENT]
    assert root.in_flight == 0
    assert (await root.render(aiocoap.Message(code=Code.GET))).code == Code.CONTENT


async def test_until_idle_wakes_as_the_last_request_ends():
    inner = Blocking()
    root = ServiceSite(inner, GatewayMetrics(), RouteLabels([]), max_in_flight=4)
    assert await root.until_idle(0) == 0  # nothing in flight: at once
    running = [asyncio.create_task(root.render(aiocoap.Message(code=Code.GET))) for _ in range(2)]
    await asyncio.sleep(0)
    assert await root.until_idle(0.01) == 2  # the deadline passes: how many are left
    waiter = asyncio.create_task(root.until_idle(30))
    await asyncio.sleep(0)
    assert not waiter.done()
    inner.release.set()
    assert await asyncio.wait_for(waiter, 5) == 0  # woken, not the 30 s deadline
    assert [(await t).code for t in running] == [Code.CONTENT, Code.CONTENT]
