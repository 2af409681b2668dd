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
