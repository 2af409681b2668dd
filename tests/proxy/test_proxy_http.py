"""The RFC 8075 mapping end to end: a device request through a real aiocoap
server and the proxy resource to a real aiohttp upstream on 127.0.0.1; each
case asserts what the upstream received and what the device got."""

from __future__ import annotations

import json

import pytest
from aiocoap.numbers.codes import Code
from aiohttp import web

from .conftest import ProxyHarness, RecordingUpstream, make_auth


@pytest.fixture
async def proxy(upstream: RecordingUpstream, make_proxy) -> ProxyHarness:
    return await make_proxy(
        [
            {
                "prefix": "/api",
                "upstream": upstream.url + "/v1",
                "methods": ["GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "iPATCH"],
                "headers": {"X-Client-Id": "{client_id}", "X-Scope": "{scope}", "X-Gw": "acegw"},
            },
            {"prefix": "/ro", "upstream": upstream.url + "/ro", "methods": ["GET"]},
        ]
    )


async def test_get_path_and_query_encoding(proxy: ProxyHarness, upstream: RecordingUpstream):
    resp = await proxy.request(Code.GET, "/api/a%20b/%C3%BC/x%25y?k=a%26b&q=%C3%A4&flag")
    assert resp.code == Code.CONTENT
    seen = upstream.seen[-1]
    assert (seen.method, seen.raw_path) == ("GET", "/v1/a%20b/%C3%BC/x%25y?k=a%26b&q=%C3%A4&flag")
    assert resp.opt.content_format == 50
    assert json.loads(resp.payload)["path"] == seen.raw_path


async def test_prefix_alone_and_trailing_slash(proxy: ProxyHarness, upstream: RecordingUpstream):
    assert (await proxy.request(Code.GET, "/api")).code == Code.CONTENT
    assert upstream.seen[-1].raw_path == "/v1"
    assert (await proxy.request(Code.GET, "/api/")).code == Code.CONTENT
    assert upstream.seen[-1].raw_path == "/v1"  # aiocoap gives a subtree "/api/" as its root
    assert (await proxy.request(Code.GET, "/api/x/")).code == Code.CONTENT
    assert upstream.seen[-1].raw_path == "/v1/x/"


async def test_dot_segments_never_reach_the_upstream(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    msg = proxy.message(Code.GET, "/api")
    msg.opt.uri_path = ("api", "..", "admin")
    resp = await proxy.send(msg)
    assert resp.code == Code.BAD_REQUEST
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("code", "http_method", "status", "expected"),
    [
        (Code.GET, "GET", 200, Code.CONTENT),
        (Code.POST, "POST", 200, Code.CHANGED),
        (Code.POST, "POST", 201, Code.CREATED),
        (Code.PUT, "PUT", 204, Code.CHANGED),
        (Code.PUT, "PUT", 201, Code.CREATED),
        (Code.DELETE, "DELETE", 204, Code.DELETED),
        (Code.FETCH, "QUERY", 200, Code.CONTENT),
        (Code.PATCH, "PATCH", 204, Code.CHANGED),
        (Code.iPATCH, "PATCH", 200, Code.CHANGED),
    ],
)
async def test_methods_and_success_codes(
    proxy: ProxyHarness,
    upstream: RecordingUpstream,
    code: Code,
    http_method: str,
    status: int,
    expected: Code,
):
    upstream.reply("/v1/r", status=status)
    payload = b'{"v":1}' if code not in (Code.GET, Code.DELETE) else b""
    resp = await proxy.request(code, "/api/r", payload, content_format=50 if payload else None)
    assert resp.code == expected
    seen = upstream.seen[-1]
    assert (seen.method, seen.body) == (http_method, payload)
    assert seen.headers["User-Agent"] == "acegw-proxy"
    if payload:
        assert seen.headers["Content-Type"] == "application/json"


async def test_route_methods_are_enforced(proxy: ProxyHarness, upstream: RecordingUpstream):
    resp = await proxy.request(Code.POST, "/ro/x", b"1")
    assert resp.code == Code.METHOD_NOT_ALLOWED
    assert upstream.seen == []
    assert (await proxy.request(Code.GET, "/ro/x")).code == Code.CONTENT


@pytest.mark.parametrize("code", [Code.DELETE, Code.POST, Code.PUT, Code.FETCH])
@pytest.mark.parametrize("path", ["/ro", "/ro/x"])
async def test_route_methods_are_enforced_without_a_body(
    proxy: ProxyHarness, upstream: RecordingUpstream, code: Code, path: str
):
    resp = await proxy.request(code, path)
    assert resp.code == Code.METHOD_NOT_ALLOWED and resp.payload != b""
    assert resp.opt.max_age == 0
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("cf", "content_type"),
    [
        (0, "text/plain; charset=utf-8"),
        (40, "application/link-format"),
        (41, "application/xml"),
        (42, "application/octet-stream"),
        (50, "application/json"),
        (60, "application/cbor"),
        (110, "application/senml+json"),
        (112, "application/senml+cbor"),
    ],
)
async def test_content_format_both_directions(
    proxy: ProxyHarness, upstream: RecordingUpstream, cf: int, content_type: str
):
    upstream.reply("/v1/echo", body=b"payload", headers={"Content-Type": content_type})
    resp = await proxy.request(Code.PUT, "/api/echo", b"data", content_format=cf, accept=cf)
    seen = upstream.seen[-1]
    assert seen.headers["Content-Type"] == content_type
    assert seen.headers["Accept"] == content_type
    assert resp.code == Code.CHANGED
    assert resp.opt.content_format == cf and resp.payload == b"payload"


async def test_unmappable_formats(proxy: ProxyHarness, upstream: RecordingUpstream):
    resp = await proxy.request(Code.POST, "/api/x", b"data", content_format=11050)
    assert resp.code == Code.UNSUPPORTED_CONTENT_FORMAT
    resp = await proxy.request(Code.GET, "/api/x", accept=11050)
    assert resp.code == Code.NOT_ACCEPTABLE
    assert upstream.seen == []
    # a response type with no Content-Format: payload without the option
    upstream.reply("/v1/odd", body=b"<b/>", headers={"Content-Type": "image/svg+xml"})
    resp = await proxy.request(Code.GET, "/api/odd")
    assert resp.code == Code.CONTENT and resp.payload == b"<b/>"
    assert resp.opt.content_format is None
    # ... but not when the device asked for a specific format (RFC 7252 §5.10.4)
    resp = await proxy.request(Code.GET, "/api/odd", accept=50)
    assert resp.code == Code.NOT_ACCEPTABLE


async def test_request_without_content_format_has_no_content_type(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    await proxy.request(Code.POST, "/api/x", b"raw")
    assert "Content-Type" not in upstream.seen[-1].headers


async def test_etag_and_conditional_get(proxy: ProxyHarness, upstream: RecordingUpstream):
    async def handler(request: web.Request) -> web.Response:
        if '"v7"' in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers={"ETag": '"v7"', "Cache-Control": "max-age=9"})
        return web.Response(body=b"21.5", headers={"ETag": '"v7"', "Content-Type": "text/plain"})

    upstream.handlers["/v1/t"] = handler
    resp = await proxy.request(Code.GET, "/api/t")
    assert (resp.code, resp.opt.etag, resp.payload) == (Code.CONTENT, b"v7", b"21.5")
    assert "If-None-Match" not in upstream.seen[-1].headers
    resp = await proxy.request(Code.GET, "/api/t", etags=[b"v6", b"v7"])
    assert upstream.seen[-1].headers["If-None-Match"] == '"v6", "v7"'
    assert (resp.code, resp.opt.etag, resp.payload, resp.opt.max_age) == (
        Code.VALID,
        b"v7",
        b"",
        9,
    )


async def test_long_and_weak_etags_round_trip(proxy: ProxyHarness, upstream: RecordingUpstream):
    tag = 'W/"a-very-long-entity-tag-0123456789"'

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.Response(body=b"x", headers={"ETag": tag})

    upstream.handlers["/v1/w"] = handler
    first = await proxy.request(Code.GET, "/api/w")
    assert first.code == Code.CONTENT and len(first.opt.etag) == 8
    again = await proxy.request(Code.GET, "/api/w", etags=[first.opt.etag])
    assert upstream.seen[-1].headers["If-None-Match"] == tag
    assert (again.code, again.opt.etag) == (Code.VALID, first.opt.etag)


async def test_if_match_and_if_none_match(proxy: ProxyHarness, upstream: RecordingUpstream):
    upstream.reply("/v1/cfg", status=412)
    resp = await proxy.request(Code.PUT, "/api/cfg", b"1", if_match=[b"v1"])
    assert upstream.seen[-1].headers["If-Match"] == '"v1"'
    assert resp.code == Code.PRECONDITION_FAILED
    await proxy.request(Code.PUT, "/api/cfg", b"1", if_match=[b""])
    assert upstream.seen[-1].headers["If-Match"] == "*"
    await proxy.request(Code.PUT, "/api/cfg", b"1", if_none_match=True)
    assert upstream.seen[-1].headers["If-None-Match"] == "*"


@pytest.mark.parametrize(
    ("cache_control", "max_age"),
    [("max-age=30", 30), ("public, max-age=30, s-maxage=12", 12), ("no-store", 0), (None, 0)],
)
async def test_max_age_from_cache_control(
    proxy: ProxyHarness, upstream: RecordingUpstream, cache_control: str | None, max_age: int
):
    upstream.reply(
        "/v1/m", body=b"1", headers={"Cache-Control": cache_control} if cache_control else {}
    )
    resp = await proxy.request(Code.GET, "/api/m")
    assert resp.code == Code.CONTENT and resp.opt.max_age == max_age


async def test_location_to_location_path_and_query(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    upstream.reply("/v1/readings", status=201, headers={"Location": "/v1/readings/42?v=%26x"})
    resp = await proxy.request(Code.POST, "/api/readings", b"{}", content_format=50)
    assert resp.code == Code.CREATED
    assert resp.opt.location_path == ("api", "readings", "42")
    assert resp.opt.location_query == ("v=&x",)
    upstream.reply("/v1/elsewhere", status=201, headers={"Location": "http://other.example/x"})
    resp = await proxy.request(Code.POST, "/api/elsewhere", b"{}", content_format=50)
    assert resp.code == Code.CREATED and resp.opt.location_path == ()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, Code.BAD_REQUEST),
        (403, Code.FORBIDDEN),
        (404, Code.NOT_FOUND),
        (405, Code.METHOD_NOT_ALLOWED),
        (409, Code.CONFLICT),
        (413, Code.REQUEST_ENTITY_TOO_LARGE),
        (415, Code.UNSUPPORTED_CONTENT_FORMAT),
        (422, Code.UNPROCESSABLE_ENTITY),
        (429, Code.TOO_MANY_REQUESTS),
        (500, Code.INTERNAL_SERVER_ERROR),
        (501, Code.NOT_IMPLEMENTED),
        (502, Code.BAD_GATEWAY),
        (504, Code.GATEWAY_TIMEOUT),
        (401, Code.BAD_GATEWAY),
        (407, Code.BAD_GATEWAY),
        (302, Code.BAD_GATEWAY),
    ],
)
async def test_error_statuses(
    proxy: ProxyHarness, upstream: RecordingUpstream, status: int, code: Code
):
    upstream.reply(
        "/v1/e",
        status=status,
        body=b'{"detail":"x"}',
        headers={"Content-Type": "application/json", "Location": "http://evil/"},
    )
    resp = await proxy.request(Code.POST, "/api/e", b"1")
    assert upstream.seen[-1].raw_path == "/v1/e"
    assert resp.code == code
    assert resp.opt.max_age == 0
    if status in (401, 407, 302):
        assert b"detail" not in resp.payload  # the upstream's body is not passed on
    else:
        assert resp.payload == b'{"detail":"x"}' and resp.opt.content_format == 50


async def test_503_retry_after_becomes_max_age(proxy: ProxyHarness, upstream: RecordingUpstream):
    upstream.reply("/v1/busy", status=503, headers={"Retry-After": "17"})
    resp = await proxy.request(Code.GET, "/api/busy")
    assert (resp.code, resp.opt.max_age) == (Code.SERVICE_UNAVAILABLE, 17)


async def test_identity_headers_from_the_auth_context_only(
    proxy: ProxyHarness, upstream: RecordingUpstream
):
    proxy.auth = make_auth("dev\r\nX-Evil: 1", "/api/*:GET")
    msg = proxy.message(Code.GET, "/api/who")
    msg.opt.uri_host = "admin.internal"
    msg.opt.uri_port = 1
    msg.opt.no_response = 0  # an elective option with no HTTP meaning
    resp = await proxy.send(msg)
    assert resp.code == Code.CONTENT
    h = upstream.seen[-1].headers
    assert h["X-Client-Id"] == "dev%0D%0AX-Evil: 1"
    assert "X-Evil" not in h
    assert h["X-Scope"] == "/api/*:GET" and h["X-Gw"] == "acegw"
    assert h["Host"] == upstream.url.split("//")[1]
    for name in ("Authorization", "Forwarded", "X-Forwarded-For", "Cookie", "Proxy-Authorization"):
        assert name not in h


async def test_proxy_uri_is_refused(proxy: ProxyHarness, upstream: RecordingUpstream):
    msg = proxy.message(Code.GET, "/api/x")
    msg.opt.proxy_scheme = "http"
    resp = await proxy.send(msg)
    assert resp.code == Code.PROXYING_NOT_SUPPORTED
    assert upstream.seen == []


@pytest.mark.parametrize("path", ["/api", "/api/x", "/ro/x"])
@pytest.mark.parametrize(
    "option", [("proxy_scheme", "http"), ("proxy_uri", "http://example.com/x")]
)
async def test_forward_proxy_requests_are_refused(
    proxy: ProxyHarness, upstream: RecordingUpstream, option: tuple[str, str], path: str
):
    """Proxy-Uri and Proxy-Scheme on a bodiless GET to a route (RFC 7252
    §5.10.2): 5.05, nothing upstream."""
    msg = proxy.message(Code.GET, path)
    setattr(msg.opt, *option)
    resp = await proxy.send(msg)
    assert resp.code == Code.PROXYING_NOT_SUPPORTED
    assert upstream.seen == []


async def test_no_cookies_or_redirects_followed(proxy: ProxyHarness, upstream: RecordingUpstream):
    upstream.reply("/v1/c", headers={"Set-Cookie": "session=abc; Path=/"})
    await proxy.request(Code.GET, "/api/c")
    upstream.reply("/v1/r", status=302, headers={"Location": upstream.url + "/v1/c"})
    resp = await proxy.request(Code.GET, "/api/r")
    assert resp.code == Code.BAD_GATEWAY
    assert upstream.hits("/v1/c") == 1  # the redirect was not followed
    await proxy.request(Code.GET, "/api/c")
    assert "Cookie" not in upstream.seen[-1].headers
