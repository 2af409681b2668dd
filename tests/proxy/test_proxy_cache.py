"""The optional GET response cache: hits and misses, Max-Age counting down
(injected clock), revalidation with the ETag, no sharing across scopes (or
devices when the upstream request names the device), invalidation by unsafe
methods, bounded size."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiocoap.numbers.codes import Code
from aiohttp import web

from gateway.proxy.cache import ENTRY_OVERHEAD, CacheEntry, ResponseCache

from .conftest import Clock, ProxyHarness, RecordingUpstream, make_auth


@pytest.fixture
def clock() -> Clock:
    return Clock(500.0)


@pytest.fixture
async def proxy(upstream: RecordingUpstream, make_proxy, clock: Clock) -> ProxyHarness:
    return await make_proxy(
        [
            {"prefix": "/c", "upstream": upstream.url, "cache_bytes": 65536},
            {
                "prefix": "/dev",
                "upstream": upstream.url,
                "cache_bytes": 65536,
                "headers": {"X-Client-Id": "{client_id}"},
            },
            {"prefix": "/nocache", "upstream": upstream.url},
        ],
        monotonic=clock,
    )


async def test_hit_and_miss_with_max_age_counting_down(
    proxy: ProxyHarness, upstream: RecordingUpstream, clock: Clock
):
    upstream.reply(
        "/t",
        body=b"21.5",
        headers={"Cache-Control": "max-age=30", "Content-Type": "text/plain", "ETag": '"a"'},
    )
    first = await proxy.request(Code.GET, "/c/t")
    assert (first.payload, first.opt.max_age, first.opt.etag) == (b"21.5", 30, b"a")
    clock.now += 10
    second = await proxy.request(Code.GET, "/c/t")
    assert upstream.hits("/t") == 1  # served from the cache
    assert (second.payload, second.opt.max_age, second.opt.content_format) == (b"21.5", 20, 0)
    assert second.opt.etag == b"a"
    valid = await proxy.request(Code.GET, "/c/t", etags=[b"a"])
    assert (valid.code, valid.payload, upstream.hits("/t")) == (Code.VALID, b"", 1)
    # other query, other Accept: other entries
    await proxy.request(Code.GET, "/c/t?x=1")
    await proxy.request(Code.GET, "/c/t", accept=0)
    assert upstream.hits("/t") == 3
    # a route without a cache always asks
    await proxy.request(Code.GET, "/nocache/t")
    await proxy.request(Code.GET, "/nocache/t")
    assert upstream.hits("/t") == 5


async def test_stale_entry_is_revalidated_with_its_etag(
    proxy: ProxyHarness, upstream: RecordingUpstream, clock: Clock
):
    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"', "Cache-Control": "max-age=5"})
        return web.Response(
            body=b"big-representation", headers={"ETag": '"v1"', "Cache-Control": "max-age=5"}
        )

    upstream.handlers["/r"] = handler
    await proxy.request(Code.GET, "/c/r")
    clock.now += 6
    resp = await proxy.request(Code.GET, "/c/r")
    assert upstream.seen[-1].headers["If-None-Match"] == '"v1"'
    assert (resp.code, resp.payload, resp.opt.max_age) == (Code.CONTENT, b"big-representation", 5)
    await proxy.request(Code.GET, "/c/r")
    assert upstream.hits("/r") == 2  # fresh again after the 304


async def test_304_without_freshness_restarts_the_stored_lifetime(
    proxy: ProxyHarness, upstream: RecordingUpstream, clock: Clock
):
    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(body=b"doc", headers={"ETag": '"v1"', "Cache-Control": "max-age=8"})

    upstream.handlers["/q"] = handler
    await proxy.request(Code.GET, "/c/q")
    clock.now += 9
    resp = await proxy.request(Code.GET, "/c/q")
    assert (resp.payload, resp.opt.max_age, upstream.hits("/q")) == (b"doc", 8, 2)
    clock.now += 1
    assert (await proxy.request(Code.GET, "/c/q")).opt.max_age == 7
    assert upstream.hits("/q") == 2


async def test_no_sharing_across_scopes(proxy: ProxyHarness, upstream: RecordingUpstream):
    async def handler(request: web.Request) -> web.Response:
        n = upstream.hits("/s")
        return web.Response(text=f"answer {n}", headers={"Cache-Control": "max-age=60"})

    upstream.handlers["/s"] = handler
    proxy.auth = make_auth("a", "/c/*:GET")
    assert (await proxy.request(Code.GET, "/c/s")).payload == b"answer 1"
    proxy.auth = make_auth("b", "/c/*:GET /admin:*")  # another scope: its own entry
    assert (await proxy.request(Code.GET, "/c/s")).payload == b"answer 2"
    proxy.auth = make_auth("c", "/c/*:GET")  # same scope as "a": shared
    assert (await proxy.request(Code.GET, "/c/s")).payload == b"answer 1"
    assert upstream.hits("/s") == 2


async def test_per_device_upstream_request_is_cached_per_device(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text=f"for {request.headers['X-Client-Id']}", headers={"Cache-Control": "max-age=60"}
        )

    upstream.handlers["/me"] = handler
    proxy.auth = make_auth("a", "/dev/*:GET")
    assert (await proxy.request(Code.GET, "/dev/me")).payload == b"for a"
    proxy.auth = make_auth("b", "/dev/*:GET")  # same scope, other device
    assert (await proxy.request(Code.GET, "/dev/me")).payload == b"for b"
    proxy.auth = make_auth("a", "/dev/*:GET")
    assert (await proxy.request(Code.GET, "/dev/me")).payload == b"for a"
    assert upstream.hits("/me") == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-store"},
        {"Cache-Control": "private, max-age=60"},
        {"Cache-Control": "max-age=60", "Vary": "X-Client-Id"},
        {},
    ],
)
async def test_not_stored(proxy: ProxyHarness, upstream: RecordingUpstream, headers: dict):
    upstream.reply("/n", body=b"x", headers=headers)
    await proxy.request(Code.GET, "/c/n")
    await proxy.request(Code.GET, "/c/n")
    assert upstream.hits("/n") == 2


async def test_unsafe_method_invalidates(proxy: ProxyHarness, upstream: RecordingUpstream):
    upstream.reply("/v", body=b"x", headers={"Cache-Control": "max-age=60"})
    await proxy.request(Code.GET, "/c/v")
    await proxy.request(Code.GET, "/c/v")
    assert upstream.hits("/v") == 1
    await proxy.request(Code.PUT, "/c/v", b"new")
    await proxy.request(Code.GET, "/c/v")
    assert upstream.hits("/v") == 3


def test_cache_is_bounded_in_bytes() -> None:
    clock = Clock(0.0)
    cache = ResponseCache(4096, clock)
    for i in range(100):
        entry = CacheEntry(b"p" * 500, None, None, None, 0.0, 60)
        cache.put(((f"r{i}",), (), None, ("scope",)), entry)
        assert cache.bytes <= 4096
    assert 0 < len(cache) <= 4096 // (500 + ENTRY_OVERHEAD)
    assert cache.get((("r99",), (), None, ("scope",))) is not None  # newest kept
    assert cache.get((("r0",), (), None, ("scope",))) is None  # oldest evicted
    assert not cache.put(
        (("huge",), (), None, ()), CacheEntry(b"x" * 5000, None, None, None, 0, 60)
    )


def test_stale_entry_without_etag_is_dropped(tmp_path: Path) -> None:
    clock = Clock(0.0)
    cache = ResponseCache(10_000, clock)
    key = (("a",), (), None, ("s",))
    cache.put(key, CacheEntry(b"x", None, None, None, 0.0, 5))
    clock.now = 5.0
    assert cache.get(key) is None and len(cache) == 0 and cache.bytes == 0
