"""CoAP <-> HTTP mapping for the reverse proxy: a CoAP request from a device
becomes an HTTP request to the route's upstream, the HTTP response becomes
the CoAP response.

RFC 8075 defines the HTTP-to-CoAP direction; this module applies its tables
in reverse (CoAP-to-HTTP, RFC 7252 §10.1): methods (RFC 7252 §10.1, RFC 8132
for FETCH/PATCH/iPATCH), the URI (RFC 7252 §6.5 composition, RFC 3986
percent-encoding), Content-Format <-> Content-Type (RFC 8075 §5.4, the CoAP
Content-Formats registry), status codes (RFC 8075 §7 Table 2 inverted),
ETag / If-Match / If-None-Match (RFC 7252 §5.10.6, §5.10.8), Max-Age from
Cache-Control/Expires (RFC 7252 §5.10.5, RFC 9111 §4.2.1) and Location-Path /
Location-Query from Location (RFC 7252 §5.10.7).

Everything here is pure: no sockets, the clock is a parameter. The tables are
repeated in docs/proxy.md.
"""

from __future__ import annotations

import email.utils
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote, unquote, urljoin, urlsplit

import aiocoap
from aiocoap.numbers.codes import Code
from multidict import CIMultiDictProxy

from gateway.errors import (
    NotAcceptable,
    ProxyRequestError,
    UnmappableContentFormat,
    UpstreamAuthRejected,
    UpstreamBadResponse,
)

Segments = tuple[str, ...]

#: Largest Max-Age value (RFC 7252 §5.10.5: a 32-bit uint).
MAX_AGE_LIMIT = 0xFFFFFFFF

# --- methods ----------------------------------------------------------------------

#: CoAP method -> HTTP method (RFC 7252 §10.1; RFC 8132: PATCH and iPATCH both
#: become HTTP PATCH; FETCH becomes QUERY, the HTTP safe method with a body,
#: draft-ietf-httpbis-safe-method-w-body, which names FETCH as its counterpart).
HTTP_METHODS: Mapping[Code, str] = {
    Code.GET: "GET",
    Code.POST: "POST",
    Code.PUT: "PUT",
    Code.DELETE: "DELETE",
    Code.FETCH: "QUERY",
    Code.PATCH: "PATCH",
    Code.iPATCH: "PATCH",
}

#: The HTTP methods above (and HEAD, OPTIONS) that are idempotent (RFC 9110
#: §9.2.2; QUERY: draft-ietf-httpbis-safe-method-w-body, safe hence
#: idempotent): a request the upstream may not have seen can be sent again.
#: Named as :data:`HTTP_METHODS` names them, which is what the pool receives.
#: iPATCH is idempotent in CoAP (RFC 8132 §3) but becomes PATCH, which is not.
IDEMPOTENT_HTTP_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "QUERY"})

#: Config method names (``RouteConfig.methods``) -> CoAP method codes.
METHOD_CODES: Mapping[str, Code] = {
    "GET": Code.GET,
    "POST": Code.POST,
    "PUT": Code.PUT,
    "DELETE": Code.DELETE,
    "FETCH": Code.FETCH,
    "PATCH": Code.PATCH,
    "IPATCH": Code.iPATCH,
}

_SAFE_METHODS = frozenset({Code.GET, Code.FETCH})

# --- Content-Format <-> Content-Type -------------------------------------------------

#: CoAP Content-Format -> HTTP media type (RFC 7252 §12.3 and the IANA "CoAP
#: Content-Formats" registry). A Content-Format not listed is answered 4.15.
CONTENT_FORMATS: Mapping[int, str] = {
    0: "text/plain; charset=utf-8",
    19: "application/ace+cbor",
    40: "application/link-format",
    41: "application/xml",
    42: "application/octet-stream",
    47: "application/exi",
    50: "application/json",
    51: "application/json-patch+json",
    52: "application/merge-patch+json",
    60: "application/cbor",
    61: "application/cwt",
    63: "application/cbor-seq",
    110: "application/senml+json",
    111: "application/sensml+json",
    112: "application/senml+cbor",
    113: "application/sensml+cbor",
}

_MEDIA_TYPES: Mapping[str, int] = {
    v.split(";", 1)[0]: k for k, v in CONTENT_FORMATS.items() if k != 0
}
#: text/plain is Content-Format 0 only in UTF-8 (US-ASCII is a subset of it).
_TEXT_CHARSETS = frozenset({"", "utf-8", "utf8", "us-ascii"})


def content_type_for(content_format: int) -> str:
    """HTTP Content-Type for a request's Content-Format (RFC 8075 §5.4 in
    reverse); :class:`UnmappableContentFormat` (4.15) when there is none."""
    try:
        return CONTENT_FORMATS[content_format]
    except KeyError:
        raise UnmappableContentFormat(
            f"Content-Format {content_format} has no HTTP media type here"
        ) from None


def accept_for(content_format: int) -> str:
    """HTTP Accept for a request's Accept option; :class:`NotAcceptable` (4.06)
    when the format has no media type (RFC 7252 §5.10.4)."""
    try:
        return CONTENT_FORMATS[content_format]
    except KeyError:
        raise NotAcceptable(f"Accept {content_format} has no HTTP media type here") from None


def content_format_for(content_type: str | None) -> int | None:
    """Content-Format for an HTTP Content-Type, or ``None`` when it is absent
    or has no registered Content-Format (the payload is then sent without
    one). Parameters are ignored except text/plain's charset."""
    if not content_type:
        return None
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media == "text/plain":
        charset = ""
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                charset = value.strip().strip('"').lower()
        return 0 if charset in _TEXT_CHARSETS else None
    return _MEDIA_TYPES.get(media)


# --- the URI --------------------------------------------------------------------

# RFC 3986 pchar besides unreserved (quote() keeps unreserved itself).
_PATH_SAFE = "!$&'()*+,;=:@"
# A Uri-Query value may keep "/" and "?"; "&" separates the values (RFC 7252 §6.5 step 9).
_QUERY_SAFE = "!$'()*+,;=:@/?"


def check_segments(segments: Iterable[str]) -> Segments:
    """Refuse Uri-Path values that could climb out of the route's base path
    on the upstream: ``.`` and ``..`` (RFC 3986 §5.2.4 dot segments, which
    RFC 7252 §6.4 removes from URIs, so no well-formed request has them) and
    segments holding ``/`` or ``\\`` (an upstream that decodes ``%2F`` or
    treats backslash as a separator would see extra segments): 4.00."""
    out = tuple(segments)
    for seg in out:
        if seg in (".", "..") or "/" in seg or "\\" in seg:
            raise ProxyRequestError("path segment not allowed through the proxy")
    return out


def upstream_url(base: str, segments: Sequence[str], query: Sequence[str]) -> str:
    """The upstream URL for the rest of the request path and its query
    (RFC 7252 §6.5 steps 8-9): each Uri-Path value percent-encoded as one
    segment after ``base``, each Uri-Query value percent-encoded (``&``
    included) and joined with ``&``. The result is already encoded: its path
    and query go on the request line as they are (RFC 9112 §3.2.1)."""
    segs = check_segments(segments)
    try:
        path = "".join("/" + quote(s, safe=_PATH_SAFE) for s in segs)
        encoded_query = "&".join(quote(q, safe=_QUERY_SAFE) for q in query)
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8
        raise ProxyRequestError("path or query is not valid UTF-8") from None
    if not path and not urlsplit(base).path:
        path = "/"
    url = base + path
    if query:
        url += "?" + encoded_query
    return url


#: The port of an http or https URL that names none (RFC 9110 §4.2.1, §4.2.2).
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}


def _origin(parts: object) -> tuple[str, str, int | None]:
    scheme = getattr(parts, "scheme", "")
    host = (getattr(parts, "hostname", "") or "").lower()
    port = getattr(parts, "port", None) or DEFAULT_PORTS.get(scheme)
    return scheme, host, port


def location_options(
    location: str, request_url: str, base: str, prefix: Segments
) -> tuple[Segments, Segments] | None:
    """Location-Path and Location-Query for an HTTP Location (RFC 7252
    §5.10.7): the Location is resolved against the request URL; when it lies
    under the route's upstream ``base`` its remainder is appended to the
    route ``prefix``. A Location elsewhere (another host, outside the base
    path) cannot be expressed to the device and gives ``None``."""
    try:
        target = urlsplit(urljoin(request_url, location.strip()))
        base_parts = urlsplit(base)
        if _origin(target) != _origin(base_parts):
            return None
    except ValueError:
        return None
    base_path = base_parts.path.rstrip("/")
    if target.path != base_path and not target.path.startswith(base_path + "/"):
        return None
    rest = target.path[len(base_path) :]
    segs = tuple(unquote(s) for s in rest.split("/")[1:]) if rest else ()
    if segs == ("",):
        segs = ()
    if any(s in (".", "..") for s in segs):
        return None
    query = tuple(unquote(q) for q in target.query.split("&")) if target.query else ()
    return prefix + segs, query


# --- status codes ------------------------------------------------------------------

#: HTTP status -> CoAP code for non-2xx answers (RFC 8075 §7 Table 2, read
#: from right to left). 401 and 407 are absent on purpose (see coap_code).
STATUS_CODES: Mapping[int, Code] = {
    400: Code.BAD_REQUEST,
    403: Code.FORBIDDEN,
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    406: Code.NOT_ACCEPTABLE,
    409: Code.CONFLICT,
    410: Code.NOT_FOUND,
    412: Code.PRECONDITION_FAILED,
    413: Code.REQUEST_ENTITY_TOO_LARGE,
    414: Code.BAD_REQUEST,
    415: Code.UNSUPPORTED_CONTENT_FORMAT,
    422: Code.UNPROCESSABLE_ENTITY,
    429: Code.TOO_MANY_REQUESTS,
    500: Code.INTERNAL_SERVER_ERROR,
    501: Code.NOT_IMPLEMENTED,
    502: Code.BAD_GATEWAY,
    503: Code.SERVICE_UNAVAILABLE,
    504: Code.GATEWAY_TIMEOUT,
}

#: HTTP statuses that say the *gateway's* request was at fault (its
#: credential, its framing), never the device's: 5.02.
GATEWAY_FAULT_STATUSES = frozenset({401, 407, 408, 411, 417, 421, 505})


def success_code(method: Code, status: int) -> Code:
    """CoAP 2.xx for an HTTP 2xx (RFC 8075 §7 in reverse): 201 is 2.01;
    otherwise GET/FETCH give 2.05, DELETE 2.02, POST/PUT/PATCH/iPATCH 2.04."""
    if status == 201:
        return Code.CREATED
    if method in _SAFE_METHODS:
        return Code.CONTENT
    if method == Code.DELETE:
        return Code.DELETED
    return Code.CHANGED


def coap_code(status: int, method: Code) -> Code:
    """The CoAP response code for an HTTP status (RFC 8075 §7 Table 2
    inverted). 304 is 2.03 Valid for GET/FETCH. 401/407 raise
    :class:`UpstreamAuthRejected` (5.02: the upstream refused the gateway's
    credential), redirects and other statuses the device cannot act on raise
    :class:`UpstreamBadResponse` (5.02). Other 4xx are 4.00, other 5xx 5.00."""
    if 200 <= status < 300:
        return success_code(method, status)
    if status == 304 and method in _SAFE_METHODS:
        return Code.VALID
    if status in (401, 407):
        raise UpstreamAuthRejected(f"upstream refused the gateway's credential ({status})")
    if status in GATEWAY_FAULT_STATUSES or not 400 <= status < 600:
        raise UpstreamBadResponse(f"upstream answered HTTP {status}")
    mapped = STATUS_CODES.get(status)
    if mapped is not None:
        return mapped
    return Code.BAD_REQUEST if status < 500 else Code.INTERNAL_SERVER_ERROR


# --- ETags -------------------------------------------------------------------------

_ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]*"')
_ETAGC = frozenset(b"\x21" + bytes(range(0x23, 0x7F)))


def parse_entity_tag(value: str | None) -> str | None:
    """An HTTP ETag header value (RFC 9110 §8.8.3) or ``None`` if absent or
    malformed."""
    if value is None:
        return None
    value = value.strip()
    return value if _ENTITY_TAG.fullmatch(value) else None


class EtagCodec:
    """Maps HTTP entity-tags to CoAP ETag values (1-8 opaque bytes, RFC 7252
    §5.10.6) and back.

    A strong entity-tag of 1-8 ASCII characters is carried as its characters
    (``"v42"`` <-> ``b"v42"``), so it needs no state and survives restarts.
    Any other (weak, longer, empty) becomes the first 8 bytes of its SHA-256;
    the codec remembers the last ``max_entries`` of those to map them back
    (an unknown one after a restart just costs a full response)."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._hashed: OrderedDict[bytes, str] = OrderedDict()

    def to_coap(self, entity_tag: str) -> bytes:
        opaque = entity_tag[1:-1]
        if not entity_tag.startswith("W/") and 1 <= len(opaque) <= 8 and opaque.isascii():
            return opaque.encode("ascii")
        digest = hashlib.sha256(entity_tag.encode("utf-8", "surrogateescape")).digest()[:8]
        self._hashed[digest] = entity_tag
        self._hashed.move_to_end(digest)
        while len(self._hashed) > self.max_entries:
            self._hashed.popitem(last=False)
        return digest

    def to_http(self, etag: bytes) -> str | None:
        """The entity-tag for a CoAP ETag value, or ``None`` if unknown."""
        known = self._hashed.get(etag)
        if known is not None:
            return known
        if 1 <= len(etag) <= 8 and all(b in _ETAGC for b in etag):
            return '"' + etag.decode("ascii") + '"'
        return None


# --- freshness ------------------------------------------------------------------


#: HTTP response headers as :mod:`gateway.proxy.http1` parses them
#: (case-insensitive, repeatable).
Headers = CIMultiDictProxy[str]


@dataclass(frozen=True)
class Freshness:
    """What the upstream said about caching a response."""

    #: Seconds it stays fresh; ``None`` when the upstream said nothing.
    max_age: int | None
    #: May a shared cache (the gateway's response cache) store it?
    storable: bool


#: No freshness information at all.
_UNSAID = Freshness(None, False)


def _delta_seconds(text: str) -> int | None:
    text = text.strip().strip('"')
    return int(text) if text.isdigit() else None


def _http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def freshness(headers: Headers, now: float) -> Freshness:
    """Freshness lifetime of an HTTP response as a shared cache sees it
    (RFC 9111 §4.2.1): ``no-store``, ``no-cache`` and ``private`` mean 0 and
    not storable; else ``s-maxage``, then ``max-age``, then ``Expires`` minus
    ``Date``; less ``Age`` (RFC 9111 §4.2.3)."""
    if "Cache-Control" not in headers and "Expires" not in headers:
        return _UNSAID
    directives: dict[str, str] = {}
    for value in headers.getall("Cache-Control", []):
        for item in value.split(","):
            name, _, arg = item.partition("=")
            if name.strip():
                directives[name.strip().lower()] = arg
    if {"no-store", "no-cache", "private"} & directives.keys():
        return Freshness(0, False)
    lifetime: int | None = None
    for name in ("s-maxage", "max-age"):
        if name in directives:
            lifetime = _delta_seconds(directives[name])
            if lifetime is not None:
                break
    if lifetime is None:
        expires = _http_date(headers.get("Expires"))
        if headers.get("Expires") is not None and expires is None:
            return Freshness(0, False)  # an invalid Expires means "already expired"
        if expires is not None:
            date = _http_date(headers.get("Date")) or now
            lifetime = max(0, math.floor(expires - date))
    if lifetime is None:
        return Freshness(None, False)
    age = _delta_seconds(headers.get("Age") or "") or 0
    return Freshness(min(max(0, lifetime - age), MAX_AGE_LIMIT), True)


def retry_after(headers: Headers, now: float) -> int | None:
    """Seconds from an HTTP Retry-After (RFC 9110 §10.2.3), for the Max-Age
    of a 5.03 (RFC 7252 §5.9.3.4)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    seconds = _delta_seconds(value)
    if seconds is None:
        when = _http_date(value)
        if when is None:
            return None
        seconds = max(0, math.ceil(when - now))
    return min(seconds, MAX_AGE_LIMIT)


# --- whole messages -----------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """An upstream request built from a device request (headers exclude the
    route's own headers and the upstream credential, added later)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class HttpResponse(NamedTuple):
    """An upstream response with its body read (bounded)."""

    status: int
    headers: Headers
    body: bytes


#: Request headers this module derives from CoAP options: the only headers
#: whose values a device influences (docs/proxy.md, "Header rules").
MAPPED_REQUEST_HEADERS = frozenset({"content-type", "accept", "if-match", "if-none-match"})


def map_request(
    request: aiocoap.Message,
    *,
    base: str,
    segments: Sequence[str],
    codec: EtagCodec,
    extra_etags: Sequence[str] = (),
) -> HttpRequest:
    """The HTTP request for a device request (RFC 7252 §10.1, RFC 8075 §5 in
    reverse). Options with no HTTP meaning here (Uri-Host, Uri-Port, Block,
    Size, Observe, No-Response, Echo, ...) are not forwarded; unknown
    elective options are dropped. ``extra_etags`` are entity-tags the
    gateway's own cache wants validated (If-None-Match)."""
    method = HTTP_METHODS[request.code]
    url = upstream_url(base, segments, request.opt.uri_query)
    headers: dict[str, str] = {}
    cf = request.opt.content_format
    if cf is not None:
        headers["Content-Type"] = content_type_for(int(cf))
    accept = request.opt.accept
    if accept is not None:
        headers["Accept"] = accept_for(int(accept))
    if request.code in _SAFE_METHODS:
        tags = [t for t in (codec.to_http(bytes(e)) for e in request.opt.etags) if t]
        tags += [t for t in extra_etags if t not in tags]
        if tags:
            headers["If-None-Match"] = ", ".join(tags)
    if request.opt.if_match:
        matches = []
        for etag in request.opt.if_match:
            if not etag:
                matches = ["*"]  # an empty If-Match: "the resource exists"
                break
            # an ETag we cannot name can match nothing upstream: send one that won't
            matches.append(codec.to_http(bytes(etag)) or f'"acegw-{bytes(etag).hex()}"')
        headers["If-Match"] = ", ".join(matches)
    if request.opt.if_none_match:
        headers["If-None-Match"] = "*"
    return HttpRequest(method=method, url=url, headers=headers, body=bytes(request.payload))


@dataclass(frozen=True)
class LocationBase:
    """What Location mapping needs: the URL requested, the route's upstream
    base and its CoAP prefix."""

    request_url: str
    base: str
    prefix: Segments


def map_response(
    response: HttpResponse,
    *,
    method: Code,
    accept: int | None,
    device_etags: Sequence[bytes],
    codec: EtagCodec,
    location: Callable[[], LocationBase],
    now: float,
) -> aiocoap.Message:
    """The CoAP response for an upstream HTTP response (RFC 8075 §7 in
    reverse): code, Content-Format, ETag, Max-Age, Location-Path/-Query and
    the payload. ``location`` builds what Location mapping needs, called
    only for a response with a Location header. Raises the 5.02/4.06 errors
    of :func:`coap_code` and RFC 7252 §5.10.4."""
    code = coap_code(response.status, method)
    headers = response.headers
    entity_tag = parse_entity_tag(headers.get("ETag"))
    etag = codec.to_coap(entity_tag) if entity_tag else None
    fresh = freshness(headers, now)
    if code == Code.VALID:
        if etag is None:
            if len(device_etags) != 1:
                raise UpstreamBadResponse("304 without an ETag")
            etag = device_etags[0]
        return aiocoap.Message(code=code, etag=etag, max_age=fresh.max_age or 0)
    cf = content_format_for(headers.get("Content-Type"))
    if accept is not None and code == Code.CONTENT and response.body and cf != accept:
        raise NotAcceptable("the upstream did not return the format the Accept option asks for")
    msg = aiocoap.Message(code=code, payload=response.body)
    if cf is not None and (response.body or headers.get("Content-Type")):
        msg.opt.content_format = cf
    if etag is not None and code.is_successful():
        msg.opt.etag = etag
    if code == Code.SERVICE_UNAVAILABLE:
        msg.opt.max_age = retry_after(headers, now) or fresh.max_age or 0
    elif code == Code.CONTENT or not code.is_successful():
        # cacheable codes: the CoAP default Max-Age (60 s) would invent a
        # freshness the upstream never gave, so say 0 explicitly
        msg.opt.max_age = fresh.max_age or 0
    loc = headers.get("Location")
    if loc:
        base = location()
        mapped = location_options(loc, base.request_url, base.base, base.prefix)
        if mapped is not None:
            msg.opt.location_path, msg.opt.location_query = mapped
    return msg
