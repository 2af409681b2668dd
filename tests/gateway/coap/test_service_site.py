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
    blockwise_key = "peer"


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


class _WithBlock1:
    """An inner site whose responses carry a Block1 option of their own."""

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        response = aiocoap.Message(code=aiocoap.CHANGED)
        response.opt.block1 = (5, False, 2)
        return response


async def test_block1_of_a_response_follows_the_request() -> None:
    """RFC 7959 §2.3: the response to a Block1 request carries the request's
    Block1; a request without one gets a response without one."""
    root = ServiceSite(_WithBlock1(), GatewayMetrics(), RouteLabels(["/x"]))
    plain = _Pipe(_request("x"))
    await root.render_to_pipe(plain)
    ((response, _),) = plain.responses
    assert response.opt.block1 is None
    single = _request("x")
    single.code = aiocoap.POST
    single.payload = b"body"
    single.opt.block1 = (0, False, 6)
    blockwise = _Pipe(single)
    await root.render_to_pipe(blockwise)
    ((response, _),) = blockwise.responses
    assert tuple(response.opt.block1) == (0, False, 6)


def test_oversized_judges_size1_and_where_the_block_ends() -> None:
    """RFC 7959 §2.9.3: 4.13 with Size1 = the limit, judged before assembly
    by Size1 and by where the block ends; a route's tighter limit by path."""
    from gateway.coap.authorizing_site import AuthorizingSite

    site = AuthorizingSite(
        None,  # type: ignore[arg-type]  # not reached by oversized()
        None,  # type: ignore[arg-type]
        lambda **_: None,
        clock=lambda: 0.0,
        max_body=1000,
        body_limit=lambda path: 100 if path == ("small",) else None,
    )

    def post(path: tuple[str, ...], payload: bytes, **options: object) -> aiocoap.Message:
        request = aiocoap.Message(code=aiocoap.POST, uri_path=path, payload=payload)
        for name, value in options.items():
            setattr(request.opt, name, value)
        return request

    assert site.oversized(post(("big",), b"x" * 1000)) is None
    assert site.oversized(post(("big",), b"")) is None
    refused = site.oversized(post(("big",), b"x", size1=1001))
    assert refused is not None and refused.code == aiocoap.REQUEST_ENTITY_TOO_LARGE
    assert refused.opt.size1 == 1000
    # block 15 of 64 bytes ends at 1024
    assert site.oversized(post(("big",), b"x" * 64, block1=(15, True, 2))) is not None
    assert site.oversized(post(("big",), b"x" * 64, block1=(14, True, 2))) is None
    small = site.oversized(post(("small",), b"x" * 101), ("small",))
    assert small is not None and small.opt.size1 == 100
    assert site.oversized(post(("small",), b"x" * 100)) is None
