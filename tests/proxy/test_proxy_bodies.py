"""Large bodies: block-wise transfer (RFC 7959) in both directions, Size1 and
Size2, and the body limits (the route's max_body, or the gateway's
``limits.max_body`` where no route is tighter) on requests, per block before
reassembly, and on upstream responses."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption, OpaqueOption
from aiohttp import web

from tokens.params import PROOF_OPTION

from .conftest import ProxyHarness, RecordingUpstream

BIG = bytes(i % 251 for i in range(5000))
#: ``limits.max_body`` of the gateway under test
GATEWAY_MAX_BODY = 8192


@pytest.fixture
async def proxy(upstream: RecordingUpstream, make_proxy) -> ProxyHarness:
    return await make_proxy(
        [
            {"prefix": "/api", "upstream": upstream.url, "max_body": 8192},
            {"prefix": "/small", "upstream": upstream.url, "max_body": 512},
            {"prefix": "/other", "upstream": upstream.url},
        ],
        max_body=GATEWAY_MAX_BODY,
    )


async def test_block1_request_reaches_upstream_whole(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    upstream.reply("/up", status=204)
    resp = await proxy.request(Code.POST, "/api/up", BIG, content_format=42)
    assert resp.code == Code.CHANGED
    assert len(upstream.seen) == 1  # one upstream request for all blocks
    assert upstream.seen[0].body == BIG
    assert upstream.seen[0].headers["Content-Length"] == str(len(BIG))


async def test_block2_response_reaches_device_whole(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    upstream.reply("/down", body=BIG, headers={"Content-Type": "application/octet-stream"})
    resp = await proxy.request(Code.GET, "/api/down")
    assert (resp.code, resp.payload, resp.opt.content_format) == (Code.CONTENT, BIG, 42)
    assert upstream.hits("/down") == 1  # later blocks come from aiocoap's block cache


async def test_first_block_carries_size2(proxy: ProxyHarness, upstream: RecordingUpstream):
    upstream.reply("/down", body=BIG)
    msg = proxy.message(Code.GET, "/api/down")
    msg.opt.block2 = BlockOption.BlockwiseTuple(0, False, 4)  # 256-byte blocks
    first = await proxy.send(msg, handle_blockwise=False)
    assert first.code == Code.CONTENT
    assert first.opt.size2 == len(BIG)
    assert first.opt.block2.more and len(first.payload) == 256
    assert first.payload == BIG[:256]


async def test_small_response_has_no_size2(proxy: ProxyHarness, upstream: RecordingUpstream):
    upstream.reply("/s", body=b"tiny")
    resp = await proxy.request(Code.GET, "/api/s")
    assert resp.payload == b"tiny" and resp.opt.size2 is None
    resp = await proxy.request(Code.GET, "/api/s", size2=0)  # the device asks for it
    assert resp.opt.size2 == 4


async def test_request_above_max_body_is_413_with_size1(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    resp = await proxy.request(Code.POST, "/small/x", b"x" * 800)
    assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE and resp.opt.size1 == 512
    # block-wise: refused at the first block from its Size1, before the root
    # spools anything ...
    msg = proxy.message(Code.POST, "/small/x", b"y" * 256)
    msg.opt.block1 = BlockOption.BlockwiseTuple(0, True, 4)
    msg.opt.size1 = 100_000
    resp = await proxy.send(msg, handle_blockwise=False)
    assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE and resp.opt.size1 == 512
    # ... and without Size1, at the block that crosses the limit
    resp = await proxy.request(Code.POST, "/small/x", b"z" * 2000)
    assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE and resp.opt.size1 == 512
    msg = proxy.message(Code.POST, "/small/x", b"y" * 256)
    msg.opt.block1 = BlockOption.BlockwiseTuple(2, True, 4)  # bytes 512-767
    resp = await proxy.send(msg, handle_blockwise=False)
    assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE and resp.opt.size1 == 512
    # a route with no tighter limit: the gateway's limits.max_body
    msg = proxy.message(Code.POST, "/other/x", b"y" * 256)
    msg.opt.block1 = BlockOption.BlockwiseTuple(GATEWAY_MAX_BODY // 256, True, 4)
    resp = await proxy.send(msg, handle_blockwise=False)
    assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert resp.opt.size1 == GATEWAY_MAX_BODY
    assert upstream.seen == []
    # and at the limit, the body goes through whole
    upstream.reply("/x", status=204)
    assert (await proxy.request(Code.POST, "/small/x", b"w" * 512)).code == Code.CHANGED
    assert [s.body for s in upstream.seen] == [b"w" * 512]


async def test_upstream_body_above_max_body_is_502_not_truncated(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    upstream.reply("/9k", body=b"a" * 9000)
    resp = await proxy.request(Code.GET, "/api/9k")
    assert resp.code == Code.BAD_GATEWAY and resp.payload != b"a" * 8192
    upstream.reply("/8k", body=b"a" * 8192)
    resp = await proxy.request(Code.GET, "/api/8k")
    assert resp.code == Code.CONTENT and resp.payload == b"a" * 8192


async def test_chunked_10mb_upstream_is_502_in_bounded_time(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    sent = 0

    async def huge(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse()  # chunked: no Content-Length to refuse early
        await resp.prepare(request)
        chunk = b"b" * 65536
        try:
            for _ in range(160):  # 10 MiB
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    upstream.handlers["/huge"] = huge
    t0 = time.monotonic()
    resp = await proxy.request(Code.GET, "/api/huge")
    assert resp.code == Code.BAD_GATEWAY
    assert time.monotonic() - t0 < 5
    # the gateway keeps serving other routes (and this one)
    upstream.reply("/fine", body=b"ok")
    assert (await proxy.request(Code.GET, "/other/fine")).payload == b"ok"
    assert (await proxy.request(Code.GET, "/api/fine")).payload == b"ok"


async def test_10mb_with_content_length_is_refused_before_reading(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    upstream.reply("/big", body=b"c" * (10 * 1024 * 1024))
    t0 = time.monotonic()
    resp = await proxy.request(Code.GET, "/api/big")
    assert resp.code == Code.BAD_GATEWAY
    assert time.monotonic() - t0 < 5


def _with_proof(msg):
    """Each block of a real transfer carries the same Proof option, over the
    whole body (docs/authorization.md, "Block-wise requests"); the gateway
    reassembles first, and the authorization layer removes the option
    before the route sees the request."""
    msg.opt.add_option(OpaqueOption(PROOF_OPTION, bytes([0xA0, 0x01])))
    return msg


async def test_block1_with_a_proof_per_block(proxy: ProxyHarness, upstream: RecordingUpstream):
    upstream.reply("/up", status=204)
    chunks = [BIG[i : i + 1024] for i in range(0, len(BIG), 1024)]
    for n, chunk in enumerate(chunks):
        more = n < len(chunks) - 1
        msg = _with_proof(proxy.message(Code.POST, "/api/up", chunk, content_format=42))
        msg.opt.block1 = BlockOption.BlockwiseTuple(n, more, 6)
        resp = await proxy.send(msg, handle_blockwise=False)
        assert resp.code == (Code.CONTINUE if more else Code.CHANGED), n
    assert [s.body for s in upstream.seen] == [BIG]


async def test_block2_with_a_proof_per_block(proxy: ProxyHarness, upstream: RecordingUpstream):
    upstream.reply("/down", body=BIG)
    got = b""
    n = 0
    while True:
        msg = _with_proof(proxy.message(Code.GET, "/api/down"))
        msg.opt.block2 = BlockOption.BlockwiseTuple(n, False, 6)
        resp = await proxy.send(msg, handle_blockwise=False)
        assert resp.code == Code.CONTENT, n
        got += resp.payload
        if not resp.opt.block2.more:
            break
        n += 1
    assert got == BIG and upstream.hits("/down") == 1


async def test_body_limit_is_the_longest_matching_routes(upstream: RecordingUpstream, make_proxy):
    """The root refuses a block by the limit of the route the Site would
    dispatch to: the longest matching prefix; none for paths no route serves."""
    harness = await make_proxy(
        [
            {"prefix": "/a", "upstream": upstream.url, "max_body": 4096},
            {"prefix": "/a/b", "upstream": upstream.url, "max_body": 256},
        ]
    )
    limit = harness.proxy.body_limit
    assert limit(("a",)) == 4096
    assert limit(("a", "x", "y")) == 4096
    assert limit(("a", "b")) == limit(("a", "b", "c")) == 256
    assert limit(("ab",)) is None and limit(()) is None
    msg = harness.message(Code.POST, "/a/b/c", b"y" * 256)
    msg.opt.block1 = BlockOption.BlockwiseTuple(0, True, 4)
    msg.opt.size1 = 300
    resp = await harness.send(msg, handle_blockwise=False)
    assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE and resp.opt.size1 == 256
    assert upstream.seen == []
