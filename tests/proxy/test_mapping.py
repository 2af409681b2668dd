"""The pure mapping functions (RFC 8075 tables in reverse, RFC 7252 §6.5,
§5.10) and the header rules, without sockets."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import (
    ConfigError,
    NotAcceptable,
    ProxyRequestError,
    UnmappableContentFormat,
    UpstreamAuthRejected,
    UpstreamBadResponse,
)
from gateway.proxy.headers import IDENTITY_HEADERS, compile_headers, field_value
from gateway.proxy.mapping import (
    CONTENT_FORMATS,
    HTTP_METHODS,
    IDEMPOTENT_HTTP_METHODS,
    MAPPED_REQUEST_HEADERS,
    EtagCodec,
    content_format_for,
    content_type_for,
    freshness,
    location_options,
    map_request,
    retry_after,
    upstream_url,
)
from gateway.proxy.mapping import (
    coap_code as map_code,
)

NOW = 1_800_000_000.0


def headers(**kw: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in kw.items()}))


REQUIRED_FORMATS = {
    0: "text/plain; charset=utf-8",
    40: "application/link-format",
    41: "application/xml",
    42: "application/octet-stream",
    50: "application/json",
    60: "application/cbor",
    110: "application/senml+json",
    112: "application/senml+cbor",
}


@pytest.mark.parametrize(("cf", "media"), sorted(REQUIRED_FORMATS.items()))
def test_required_content_formats_both_ways(cf: int, media: str) -> None:
    assert content_type_for(cf) == media
    assert content_format_for(media) == cf
    assert content_format_for(media.upper()) == cf


def test_every_table_entry_round_trips() -> None:
    for cf, media in CONTENT_FORMATS.items():
        assert content_format_for(media) == cf


@pytest.mark.parametrize("cf", [1, 11050, 65000])
def test_unmappable_content_format_is_415(cf: int) -> None:
    with pytest.raises(UnmappableContentFormat) as info:
        content_type_for(cf)
    assert info.value.coap_code.dotted == "4.15"


@pytest.mark.parametrize(
    ("content_type", "cf"),
    [
        ("text/plain", 0),
        ("text/plain;charset=US-ASCII", 0),
        ('text/plain; charset="utf-8"', 0),
        ("text/plain; charset=iso-8859-1", None),
        ("application/json; charset=utf-8", 50),
        ("application/vnd.unknown+json", None),
        ("", None),
        (None, None),
    ],
)
def test_content_type_parameters(content_type: str | None, cf: int | None) -> None:
    assert content_format_for(content_type) == cf


@pytest.mark.parametrize(
    ("status", "method", "code"),
    [
        (200, Code.GET, Code.CONTENT),
        (200, Code.FETCH, Code.CONTENT),
        (204, Code.GET, Code.CONTENT),
        (200, Code.POST, Code.CHANGED),
        (201, Code.POST, Code.CREATED),
        (201, Code.PUT, Code.CREATED),
        (204, Code.PUT, Code.CHANGED),
        (200, Code.DELETE, Code.DELETED),
        (204, Code.DELETE, Code.DELETED),
        (204, Code.PATCH, Code.CHANGED),
        (200, Code.iPATCH, Code.CHANGED),
        (304, Code.GET, Code.VALID),
        (400, Code.GET, Code.BAD_REQUEST),
        (403, Code.GET, Code.FORBIDDEN),
        (404, Code.GET, Code.NOT_FOUND),
        (405, Code.GET, Code.METHOD_NOT_ALLOWED),
        (406, Code.GET, Code.NOT_ACCEPTABLE),
        (409, Code.PUT, Code.CONFLICT),
        (410, Code.GET, Code.NOT_FOUND),
        (412, Code.PUT, Code.PRECONDITION_FAILED),
        (413, Code.POST, Code.REQUEST_ENTITY_TOO_LARGE),
        (415, Code.POST, Code.UNSUPPORTED_CONTENT_FORMAT),
        (418, Code.GET, Code.BAD_REQUEST),
        (422, Code.POST, Code.UNPROCESSABLE_ENTITY),
        (429, Code.GET, Code.TOO_MANY_REQUESTS),
        (500, Code.GET, Code.INTERNAL_SERVER_ERROR),
        (501, Code.GET, Code.NOT_IMPLEMENTED),
        (502, Code.GET, Code.BAD_GATEWAY),
        (503, Code.GET, Code.SERVICE_UNAVAILABLE),
        (504, Code.GET, Code.GATEWAY_TIMEOUT),
        (599, Code.GET, Code.INTERNAL_SERVER_ERROR),
    ],
)
def test_status_codes(status: int, method: Code, code: Code) -> None:
    assert map_code(status, method) == code


@pytest.mark.parametrize("status", [401, 407])
def test_upstream_auth_failure_is_the_gateways(status: int) -> None:
    with pytest.raises(UpstreamAuthRejected) as info:
        map_code(status, Code.GET)
    assert info.value.coap_code.dotted == "5.02"


@pytest.mark.parametrize(
    ("status", "method"), [(301, Code.GET), (302, Code.GET), (304, Code.POST), (101, Code.GET)]
)
def test_unusable_statuses_are_502(status: int, method: Code) -> None:
    with pytest.raises(UpstreamBadResponse):
        map_code(status, method)


def test_url_percent_encoding() -> None:
    url = upstream_url(
        "http://h:1/base", ["a b", "ü", "x%y", "semi;colon", "&amp"], ["k=a&b", "s=ä/?", "p+q"]
    )
    assert url == ("http://h:1/base/a%20b/%C3%BC/x%25y/semi;colon/&amp?k=a%26b&s=%C3%A4/?&p+q")
    assert upstream_url("http://h:1", [], []) == "http://h:1/"
    assert upstream_url("http://h:1/b", [], []) == "http://h:1/b"
    assert upstream_url("http://h:1/b", [""], []) == "http://h:1/b/"


@pytest.mark.parametrize("segment", [".", "..", "a/b", "a\\b"])
def test_segments_that_could_escape_the_base_are_refused(segment: str) -> None:
    with pytest.raises(ProxyRequestError) as info:
        upstream_url("http://h/base", ["x", segment], [])
    assert info.value.coap_code.dotted == "4.00"


_segment = st.text(min_size=0, max_size=12).filter(
    lambda s: s not in (".", "..") and "/" not in s and "\\" not in s
)


@given(st.lists(_segment, min_size=1, max_size=5), st.lists(st.text(max_size=12), max_size=4))
def test_url_round_trips_each_option(segments: list[str], query: list[str]) -> None:
    """Every Uri-Path value stays one segment, every Uri-Query value one item."""
    url = upstream_url("http://h/base", segments, query)
    parts = urlsplit(url)
    got = [unquote(s, errors="surrogatepass") for s in parts.path.split("/")[2:]]
    assert got == segments
    items = parts.query.split("&") if query else []
    assert [unquote(q, errors="surrogatepass") for q in items] == (query if query else [])
    assert "#" not in url and " " not in url


def test_location_mapping() -> None:
    base = "http://h:8080/api/v1"
    req = "http://h:8080/api/v1/readings"
    prefix = ("data",)
    assert location_options("/api/v1/readings/7?x=1&y=%26", req, base, prefix) == (
        ("data", "readings", "7"),
        ("x=1", "y=&"),
    )
    assert location_options("readings/8", req + "/", base, prefix) == (
        ("data", "readings", "readings", "8"),
        (),
    )
    assert location_options("http://h:8080/api/v1/a%2Fb", req, base, prefix) == (
        ("data", "a/b"),
        (),
    )
    # outside the base, another host, or climbing out: not expressible
    assert location_options("/other/1", req, base, prefix) is None
    assert location_options("http://evil:8080/api/v1/x", req, base, prefix) is None
    assert location_options("/api/v1/../../x", req, base, prefix) is None
    assert location_options("/api/v1x", req, base, prefix) is None


def test_freshness() -> None:
    assert freshness(headers(Cache_Control="max-age=30"), NOW).max_age == 30
    assert freshness(headers(Cache_Control="max-age=30, s-maxage=5"), NOW).max_age == 5
    assert freshness(headers(Cache_Control="max-age=30", Age="10"), NOW).max_age == 20
    for cc in ("no-store", "no-cache", "private, max-age=60"):
        f = freshness(headers(Cache_Control=cc), NOW)
        assert (f.max_age, f.storable) == (0, False)
    f = freshness(
        headers(Date="Thu, 01 Jan 2026 00:00:00 GMT", Expires="Thu, 01 Jan 2026 00:01:40 GMT"),
        NOW,
    )
    assert (f.max_age, f.storable) == (100, True)
    assert freshness(headers(Expires="garbage"), NOW).max_age == 0
    assert freshness(headers(), NOW).max_age is None


def test_retry_after() -> None:
    assert retry_after(headers(Retry_After="17"), NOW) == 17
    import email.utils

    when = email.utils.formatdate(NOW + 42, usegmt=True)
    assert retry_after(headers(Retry_After=when), NOW) == 42
    assert retry_after(headers(Retry_After="soon"), NOW) is None


def test_etag_codec() -> None:
    codec = EtagCodec(max_entries=2)
    assert codec.to_coap('"v1"') == b"v1"
    assert codec.to_http(b"v1") == '"v1"'
    long_tag = '"0123456789abcdef"'
    weak = 'W/"v1"'
    h1, h2 = codec.to_coap(long_tag), codec.to_coap(weak)
    assert len(h1) == len(h2) == 8 and h1 != h2 and h2 != b"v1"
    assert codec.to_http(h1) == long_tag and codec.to_http(h2) == weak
    codec.to_coap('""')
    assert codec.to_http(h1) is None  # bounded: the oldest mapping is forgotten
    assert codec.to_http(b"\x00\xff") is None


def test_map_request_headers() -> None:
    codec = EtagCodec()
    msg = aiocoap.Message(code=Code.GET, uri="coap://x/a", content_format=50, accept=60)
    msg.opt.etags = [b"v1", b"v2"]
    req = map_request(msg, base="http://h/b", segments=["a"], codec=codec)
    assert req.method == "GET" and req.url == "http://h/b/a"
    assert req.headers == {
        "Content-Type": "application/json",
        "Accept": "application/cbor",
        "If-None-Match": '"v1", "v2"',
    }
    put = aiocoap.Message(code=Code.PUT, uri="coap://x/a", payload=b"1")
    put.opt.if_match = [b"v1", b"\x00\x01"]
    req = map_request(put, base="http://h/b", segments=[], codec=codec)
    assert req.headers == {"If-Match": '"v1", "acegw-0001"'} and req.body == b"1"
    put.opt.if_match = [b""]
    put.opt.if_none_match = True
    req = map_request(put, base="http://h/b", segments=[], codec=codec)
    assert req.headers == {"If-Match": "*", "If-None-Match": "*"}
    with pytest.raises(NotAcceptable):
        map_request(
            aiocoap.Message(code=Code.GET, accept=9999), base="http://h", segments=[], codec=codec
        )
    with pytest.raises(UnmappableContentFormat):
        map_request(
            aiocoap.Message(code=Code.POST, content_format=9999, payload=b"x"),
            base="http://h",
            segments=[],
            codec=codec,
        )


def test_fetch_and_ipatch_methods() -> None:
    codec = EtagCodec()
    for code, method in ((Code.FETCH, "QUERY"), (Code.iPATCH, "PATCH"), (Code.PATCH, "PATCH")):
        req = map_request(aiocoap.Message(code=code), base="http://h", segments=[], codec=codec)
        assert req.method == method


def test_idempotent_http_methods_are_named_as_the_method_map_names_them() -> None:
    """The pool resends a request on a stale connection by its HTTP method:
    GET, PUT, DELETE and FETCH (as QUERY) are idempotent (RFC 7252 §5.8,
    RFC 8132 §2); iPATCH is too in CoAP, but its HTTP PATCH is not."""
    idempotent = {Code.GET, Code.PUT, Code.DELETE, Code.FETCH}
    for code, method in HTTP_METHODS.items():
        assert (method in IDEMPOTENT_HTTP_METHODS) == (code in idempotent), code
    assert "QUERY" in IDEMPOTENT_HTTP_METHODS and "PATCH" not in IDEMPOTENT_HTTP_METHODS


@given(
    code=st.sampled_from(sorted(HTTP_METHODS)),
    cf=st.none() | st.sampled_from(sorted(CONTENT_FORMATS)),
    accept=st.none() | st.sampled_from(sorted(CONTENT_FORMATS)),
    etags=st.lists(st.binary(min_size=1, max_size=8), max_size=3),
    if_match=st.lists(st.binary(max_size=8), max_size=3),
    if_none_match=st.booleans(),
)
def test_map_request_writes_only_mapped_headers(
    code: Code,
    cf: int | None,
    accept: int | None,
    etags: list[bytes],
    if_match: list[bytes],
    if_none_match: bool,
) -> None:
    """The proxy sends map_request's headers as they are (no filtering)."""
    msg = aiocoap.Message(code=code, payload=b"x", content_format=cf, accept=accept)
    msg.opt.etags = etags
    msg.opt.if_match = if_match
    msg.opt.if_none_match = if_none_match
    req = map_request(msg, base="http://h", segments=["a"], codec=EtagCodec(), extra_etags=['"c"'])
    assert {name.lower() for name in req.headers} <= MAPPED_REQUEST_HEADERS


def test_mapped_headers_never_carry_identity() -> None:
    assert not MAPPED_REQUEST_HEADERS & IDENTITY_HEADERS


def test_field_value_cannot_break_a_header() -> None:
    assert field_value("dev\r\nX-Admin: 1") == "dev%0D%0AX-Admin: 1"
    assert field_value("ü%") == "%C3%BC%25"
    assert field_value("/temp:GET /cfg:GET,PUT") == "/temp:GET /cfg:GET,PUT"


@pytest.mark.parametrize(
    ("configured", "owned", "problem"),
    [
        ({"Content-Type": "x"}, frozenset(), "set by the proxy"),
        ({"If-Match": "x"}, frozenset(), "set by the proxy"),
        ({"Host": "x"}, frozenset(), "set by the proxy"),
        ({"authorization": "x"}, frozenset({"authorization"}), "credential"),
        ({"X-A": "{password}"}, frozenset(), "unknown placeholder"),
        ({"X-A": "{client_id"}, frozenset(), "unknown placeholder"),
        ({"X-A": "1", "x-a": "2"}, frozenset(), "twice"),
    ],
)
def test_route_headers_rules(configured: dict[str, str], owned: frozenset[str], problem: str):
    with pytest.raises(ConfigError, match=problem) as info:
        compile_headers(configured, key="routes[0].headers", owned=owned)
    assert "routes[0].headers" in str(info.value)


def test_route_header_templates() -> None:
    (t,) = compile_headers({"X-Client-Id": "dev={client_id};{scope}"}, key="k")
    assert t.render({"client_id": "a\nb", "scope": "/x:GET"}) == "dev=a%0Ab;/x:GET"
