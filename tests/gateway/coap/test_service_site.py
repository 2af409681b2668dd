"""The gateway's root resource (:class:`gateway.coap.service_site.ServiceSite`) behind
the DTLS server: its own block-wise flow (RFC 7959) with an aiocoap client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiocoap
import pytest
from aiocoap import resource

from gateway.coap.service_site import ServiceSite
from gateway.dtls import DtlsServerConfig, create_server_context
from gateway.operations.gateway_metrics import GatewayMetrics, RouteLabels
from tests.gateway.conftest import DTLS_PSKS, DtlsBlob


@pytest.fixture
async def root_and_port() -> AsyncIterator[tuple[ServiceSite, int]]:
    site = resource.Site()
    site.add_resource(["blob"], DtlsBlob())
    root = ServiceSite(site, GatewayMetrics(), RouteLabels(["/blob"]))
    context, server = await create_server_context(
        root, DtlsServerConfig(host="127.0.0.1", port=0), DTLS_PSKS.get
    )
    try:
        yield root, server.address[1]
    finally:
        await context.shutdown()


async def test_block2_and_block1_through_the_root_render_each_request_once(
    root_and_port: tuple[ServiceSite, int],
) -> None:
    root, port = root_and_port
    client = await aiocoap.Context.create_client_context(transports=["tinydtls"])
    base = f"coaps://127.0.0.1:{port}"
    try:
        client.client_credentials.load_from_dict(
            {f"{base}/*": {"dtls": {"psk": DTLS_PSKS[b"dev-1"], "client-identity": b"dev-1"}}}
        )
        # 3072 bytes: the first block is cut from the rendered response, the
        # later ones come from the Block2 cache without rendering again
        blob = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/blob")
        got = await asyncio.wait_for(client.request(blob).response, 10)
        upload = aiocoap.Message(code=aiocoap.POST, uri=f"{base}/blob", payload=b"u" * 5000)
        posted = await asyncio.wait_for(client.request(upload).response, 10)
    finally:
        await client.shutdown()
    assert got.code == aiocoap.CONTENT and got.payload == DtlsBlob.BODY
    assert posted.code == aiocoap.CHANGED and posted.payload == b"5000"
    requests = root._metrics.requests
    assert requests.get("/blob", "2.05") == 1
    assert requests.get("/blob", "2.04") == 1
    assert root.in_flight == 0


class _PathRecorder:
    """An inner site with ``render_at``: records the path it is given."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, ...]] = []
        self.limits: list[tuple[str, ...] | None] = []

    def oversized(
        self, request: aiocoap.Message, path: tuple[str, ...] | None = None
    ) -> aiocoap.Message | None:
        self.limits.append(path)
        return None

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        raise AssertionError("the root passes the path it read to render_at")

    async def render_at(self, request: aiocoap.Message, path: tuple[str, ...]) -> aiocoap.Message:
        self.paths.append(path)
        return aiocoap.Message(code=aiocoap.CONTENT, payload="/".join(path).encode())


class _Pipe:
    """The part of aiocoap's pipe the root uses: the request, the responses."""

    def __init__(self, request: aiocoap.Message) -> None:
        self.request = request
        self.responses: list[tuple[aiocoap.Message, bool]] = []

    def add_response(self, response: aiocoap.Message, is_last: bool = False) -> None:
        self.responses.append((response, is_last))


class _Remote:
    maximum_payload_size = 1024


def _request(*path: str) -> aiocoap.Message:
    request = aiocoap.Message(code=aiocoap.GET, uri_path=path)
    request.remote = _Remote()
    return request


async def test_the_uri_path_is_read_once_and_handed_to_the_inner_site(monkeypatch) -> None:
    """The root reads Uri-Path once per request and gives it to the route
    label, the body limit and the inner site's ``render_at``."""
    from gateway.coap import service_site

    reads = 0
    real = service_site.uri_path

    def counting(message: aiocoap.Message) -> tuple[str, ...]:
        nonlocal reads
        reads += 1
        return real(message)

    monkeypatch.setattr(service_site, "uri_path", counting)
    inner = _PathRecorder()
    root = ServiceSite(inner, GatewayMetrics(), RouteLabels(["/a"]))
    pipe = _Pipe(_request("a", "b"))
    await root.render_to_pipe(pipe)
    ((response, last),) = pipe.responses
    assert last and response.code == aiocoap.CONTENT and response.payload == b"a/b"
    assert inner.paths == [("a", "b")] and inner.limits == [("a", "b")]
    assert reads == 1
    assert root._metrics.requests.get("/a", "2.05") == 1


class _RenderOnly:
    """An inner site with only ``render(request)`` (no body limit)."""

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CHANGED, payload=b"plain")


async def test_an_inner_site_with_only_render_still_serves() -> None:
    """Any resource with ``render(request)`` can be the inner site (swapped
    on a reload, too)."""
    root = ServiceSite(_PathRecorder(), GatewayMetrics(), RouteLabels(["/x"]))
    plain = _RenderOnly()
    root.inner = plain
    assert root.inner is plain
    pipe = _Pipe(_request("x"))
    await root.render_to_pipe(pipe)
    ((response, _),) = pipe.responses
    assert response.code == aiocoap.CHANGED and response.payload == b"plain"
    assert root._metrics.requests.get("/x", "2.04") == 1
