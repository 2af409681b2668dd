"""The aiocoap side of the proxy: one :class:`ProxyRoute` per ``[[routes]]``
entry and the two aiocoap resources that serve it (the prefix itself and
everything below it).

The authorizing site (:mod:`gateway.coap.authorizing_site`) has already
verified every request that reaches these resources (token, proof, scope for
path and method) and put its
:class:`~gateway.resource_server.auth_context.AuthContext` on the request; the
mapping forwards only the options it maps (never the Proof). The route still
enforces, on every request, that it is no forward-proxy request (5.05,
RFC 7252 §5.10.2), its own ``methods`` (4.05) and ``max_body`` (4.13 with
Size1, RFC 7959 §2.9.3).

The gateway reaches these resources only through their :meth:`render`: the
root resource (:class:`gateway.coap.service_site.ServiceSite`) runs the block-wise
flow (RFC 7959) itself, then the authorizing site and the resource tree
(:mod:`gateway.coap.resource_tree`) call ``render`` of the resource found. So Block1 requests arrive
here reassembled, and the route's ``max_body`` is checked again on the whole
body: before a block is spooled, the root refuses a transfer above the
route's ``max_body`` (:meth:`gateway.proxy.Proxy.body_limit`; its Size1 or
where the block ends: 4.13 at once), which bounds what a device can make the
gateway buffer. Block2 responses are cut
from one upstream answer; a response with a body larger than a block carries
Size2 (RFC 7959 §4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiocoap
import aiocoap.interfaces
import aiocoap.resource
from aiocoap.numbers.codes import Code

from gateway.coap.authorizing_site import authorized
from gateway.coap.responses import error_response
from gateway.config import RouteConfig
from gateway.errors import (
    CircuitOpen,
    ConfigError,
    GatewayError,
    Overloaded,
    ProxyingNotSupported,
    RequestTooLarge,
    RouteMethodNotAllowed,
    UpstreamBusy,
    UpstreamError,
)
from gateway.proxy.cache import CacheEntry, CacheKey, ResponseCache
from gateway.proxy.headers import compile_headers, uses_identity
from gateway.proxy.mapping import (
    DEFAULT_PORTS,
    METHOD_CODES,
    EtagCodec,
    HttpRequest,
    HttpResponse,
    LocationBase,
    Segments,
    freshness,
    map_request,
    map_response,
    parse_entity_tag,
)
from gateway.proxy.upstream import USER_AGENT, CircuitBreaker, Upstream, tls_context
from gateway.proxy.upstream_auth import load_upstream_auth, resolve_path
from gateway.resource_server.auth_context import AuthContext

log = logging.getLogger(__name__)

#: Payload size above which a response carries Size2 when the peer's
#: transport does not say (RFC 7252 §4.6: 1024-byte payloads fit any path).
DEFAULT_BLOCK_PAYLOAD = 1024

_UNSAFE = frozenset({Code.POST, Code.PUT, Code.DELETE, Code.PATCH, Code.iPATCH})


def prefix_segments(prefix: str) -> Segments:
    """``"/api/v1"`` -> ``("api", "v1")`` (percent-decoded, RFC 7252 §6.4)."""
    return tuple(unquote(s) for s in prefix.strip("/").split("/") if s)


class InFlightLimit:
    """The worker-wide cap on upstream requests (``limits.max_in_flight``):
    beyond it, 5.03 at once."""

    def __init__(self, limit: int, max_age: int = 1) -> None:
        self.limit = limit
        self.max_age = max_age
        self.active = 0

    def enter(self) -> None:
        """Take a place, or :class:`UpstreamBusy` (5.03) at the limit."""
        if self.active >= self.limit:
            raise UpstreamBusy("gateway at its upstream in-flight limit", max_age=self.max_age)
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


class ProxyRoute:
    """One route: CoAP prefix -> HTTP upstream, with its client, credential,
    header templates, ETag codec and optional cache. Built at start; every
    configuration problem is a :class:`ConfigError` naming ``routes[i]``."""

    def __init__(
        self,
        config: RouteConfig,
        *,
        key: str,
        base_dir: Path,
        env: Mapping[str, str] | None,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        in_flight: InFlightLimit | None = None,
    ) -> None:
        self.config = config
        self.key = key
        self.prefix = prefix_segments(config.prefix)
        if not self.prefix:
            raise ConfigError(
                f"{key}.prefix: '/' cannot be proxied (it would hide /token and /authz-info)",
                key=f"{key}.prefix",
            )
        self.methods = frozenset(METHOD_CODES[m] for m in config.methods)
        self.base = config.upstream
        parts = urlsplit(config.upstream)
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                f"{key}.upstream: credentials do not belong in the URL; use auth",
                key=f"{key}.upstream",
            )
        self._clock = clock
        self._monotonic = monotonic
        self._in_flight = in_flight
        self.auth = load_upstream_auth(config, base_dir=base_dir, env=env, clock=clock, key=key)
        self.templates = compile_headers(
            config.headers, key=f"{key}.headers", owned=self.auth.header_names
        )
        tls = None
        tls_files = {
            name: resolve_path(value, base_dir, key=f"{key}.{name}")
            for name, value in (
                ("ca_file", config.ca_file),
                ("client_cert", config.client_cert),
                ("client_key", config.client_key),
            )
            if value
        }
        if parts.scheme == "https":
            if "client_key" in tls_files and "client_cert" not in tls_files:
                raise ConfigError(f"{key}.client_key: needs client_cert", key=f"{key}.client_key")
            try:
                tls = tls_context(
                    ca_file=tls_files.get("ca_file"),
                    client_cert=tls_files.get("client_cert"),
                    client_key=tls_files.get("client_key"),
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"{key}: cannot load the TLS files ({type(exc).__name__})", key=key
                ) from None
        elif tls_files:
            name = next(iter(tls_files))
            raise ConfigError(
                f"{key}.{name}: TLS settings need an https upstream", key=f"{key}.{name}"
            )
        self.upstream = Upstream(
            name=config.prefix,
            host=parts.hostname or "",
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            timeout=config.timeout,
            max_body=config.max_body,
            pool_size=config.pool_size,
            queue_size=config.queue_size,
            busy_max_age=config.busy_max_age,
            breaker=CircuitBreaker(config.breaker_failures, config.breaker_reset, monotonic),
            ssl_context=tls,
        )
        self.codec = EtagCodec()
        self.cache = ResponseCache(config.cache_bytes, monotonic) if config.cache_bytes else None
        #: The upstream request names the device: cache per device, not per scope only.
        self.cache_per_device = self.auth.per_device or uses_identity(self.templates)

    # --- the route's own checks ----------------------------------------------

    def check(self, request: aiocoap.Message) -> None:
        """The route's checks of every request, bodiless ones included:
        Proxy-Uri/Proxy-Scheme (5.05: a reverse proxy, not a forward proxy,
        RFC 7252 §5.7.2, §5.10.2), the route's ``methods`` (4.05) and its
        ``max_body`` (4.13; the request is reassembled, RFC 7959 §2.9.3)."""
        if request.opt.proxy_uri is not None or request.opt.proxy_scheme is not None:
            raise ProxyingNotSupported("this gateway is not a forward proxy")
        if request.code not in self.methods:
            raise RouteMethodNotAllowed(f"{request.code} is not allowed on this route")
        limit = self.config.max_body
        if len(request.payload) > limit:
            raise RequestTooLarge(f"request body above {limit} bytes")

    # --- one request ----------------------------------------------------------

    async def handle(self, request: aiocoap.Message) -> aiocoap.Message:
        """The CoAP response for an authorized, reassembled request."""
        try:
            response = await self._handle(request)
        except GatewayError as exc:
            return self.error_response(exc)
        size_limit = getattr(request.remote, "maximum_payload_size", DEFAULT_BLOCK_PAYLOAD)
        if (
            len(response.payload) > min(size_limit, DEFAULT_BLOCK_PAYLOAD)
            or request.opt.size2 is not None
            or request.opt.block2 is not None
        ):
            response.opt.size2 = len(response.payload)
        return response

    def error_response(self, exc: GatewayError) -> aiocoap.Message:
        """The response for a proxy error (via the gateway's one error
        renderer); errors are never cached downstream beyond their Max-Age."""
        if isinstance(exc, UpstreamBusy | CircuitOpen):
            max_age = exc.max_age
        elif isinstance(exc, Overloaded):
            max_age = 1
        else:
            max_age = 0
        size1 = self.config.max_body if isinstance(exc, RequestTooLarge) else None
        msg = error_response(exc, ace_body=False, max_age=max_age, size1=size1)
        if isinstance(exc, UpstreamError | Overloaded):
            log.log(
                logging.DEBUG if isinstance(exc, Overloaded) else logging.WARNING,
                "route %s: %s -> %s",
                self.config.prefix,
                exc.reason,
                exc.coap_code.dotted,
            )
        else:
            log.debug("route %s: %s", self.config.prefix, exc.reason)
        return msg

    async def _handle(self, request: aiocoap.Message) -> aiocoap.Message:
        self.check(request)
        auth = authorized(request)
        segments = tuple(request.opt.uri_path)[len(self.prefix) :]
        if segments == ("",):
            segments = ()  # "/api/" is the route's root, as "/api"
        accept = int(request.opt.accept) if request.opt.accept is not None else None
        safe = request.code in (Code.GET, Code.FETCH)
        device_etags = [bytes(e) for e in request.opt.etags] if safe else []
        key: CacheKey | None = None
        entry: CacheEntry | None = None
        if self.cache is not None and request.code == Code.GET:
            key = (segments, tuple(request.opt.uri_query), accept, self._who(auth))
            entry = self.cache.get(key)
            now = self._monotonic()
            if entry is not None and entry.fresh(now):
                return self._from_cache(entry, device_etags, now)
        http = map_request(
            request,
            base=self.base,
            segments=segments,
            codec=self.codec,
            extra_etags=(entry.entity_tag,) if entry is not None and entry.entity_tag else (),
        )
        response = await self._send(http, auth)
        if entry is not None and key is not None and response.status == 304:
            tag = parse_entity_tag(response.headers.get("ETag"))
            if tag == entry.entity_tag or (tag is None and not device_etags):
                return self._revalidated(key, entry, response, device_etags)
        msg = map_response(
            response,
            method=request.code,
            accept=accept,
            device_etags=device_etags,
            codec=self.codec,
            location=lambda: LocationBase(request_url=http.url, base=self.base, prefix=self.prefix),
            now=self._clock(),
        )
        if self.cache is not None:
            if key is not None and msg.code == Code.CONTENT and response.status == 200:
                self._store(key, msg, response)
            elif request.code in _UNSAFE and msg.code.is_successful():
                self.cache.invalidate_path(segments)
        return msg

    async def _send(self, http: HttpRequest, auth: AuthContext) -> HttpResponse:
        # map_request writes only MAPPED_REQUEST_HEADERS (mapping.py)
        headers = {"User-Agent": USER_AGENT, **http.headers}
        if self.templates:
            values = auth.headers_fields()
            for template in self.templates:
                headers[template.name] = template.render(values)
        headers.update(self.auth.headers(auth))
        in_flight = self._in_flight
        if in_flight is None:
            return await self.upstream.send(http, headers)
        in_flight.enter()
        try:
            return await self.upstream.send(http, headers)
        finally:
            in_flight.leave()

    # --- cache ----------------------------------------------------------------

    def _who(self, auth: AuthContext) -> tuple[str, ...]:
        scope = str(auth.scope)
        return (scope, auth.client_id) if self.cache_per_device else (scope,)

    def _from_cache(
        self, entry: CacheEntry, device_etags: list[bytes], now: float
    ) -> aiocoap.Message:
        remaining = entry.remaining(now)
        if entry.etag is not None and entry.etag in device_etags:
            return aiocoap.Message(code=Code.VALID, etag=entry.etag, max_age=remaining)
        msg = aiocoap.Message(code=Code.CONTENT, payload=entry.payload, max_age=remaining)
        if entry.content_format is not None:
            msg.opt.content_format = entry.content_format
        if entry.etag is not None:
            msg.opt.etag = entry.etag
        return msg

    def _revalidated(
        self, key: CacheKey, entry: CacheEntry, response: HttpResponse, device_etags: list[bytes]
    ) -> aiocoap.Message:
        # RFC 9111 §4.3.4: the 304's freshness replaces the stored one; when
        # it says nothing, the stored response's own lifetime starts again
        fresh = freshness(response.headers, self._clock())
        entry.stored_at = self._monotonic()
        if fresh.max_age is not None:
            entry.max_age = fresh.max_age
            if self.cache is not None and not fresh.storable:
                self.cache.invalidate_path(key[0])
        return self._from_cache(entry, device_etags, entry.stored_at)

    def _store(self, key: CacheKey, msg: aiocoap.Message, response: HttpResponse) -> None:
        if self.cache is None:
            return
        fresh = freshness(response.headers, self._clock())
        vary = {v.strip().lower() for v in (response.headers.get("Vary") or "").split(",")}
        if not fresh.storable or not fresh.max_age or vary - {"", "accept"}:
            return
        tag = parse_entity_tag(response.headers.get("ETag"))
        cf = msg.opt.content_format
        self.cache.put(
            key,
            CacheEntry(
                payload=bytes(msg.payload),
                content_format=int(cf) if cf is not None else None,
                etag=msg.opt.etag,
                entity_tag=tag,
                stored_at=self._monotonic(),
                max_age=fresh.max_age,
            ),
        )


class RouteResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """The aiocoap resource at a route's prefix (``/api``). The gateway
    calls only :meth:`render` (see the module docstring); every check of the
    route runs there."""

    def __init__(self, route: ProxyRoute) -> None:
        super().__init__()
        self.route = route

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        response = await self.route.handle(request)
        no_response = request.opt.no_response
        if no_response is not None and response.opt.no_response is None:
            response.opt.no_response = no_response
        return response


class RouteSubtree(RouteResource, aiocoap.resource.PathCapable):  # type: ignore[misc]
    """The aiocoap resource for everything below a route's prefix
    (``/api/x/y``); the Site strips the prefix from the request's path."""


def site_entries(route: ProxyRoute) -> list[tuple[Segments, aiocoap.interfaces.Resource]]:
    """The two aiocoap Site entries of a route: the prefix itself and its
    subtree (a Site gives sub-paths only to PathCapable resources)."""
    return [(route.prefix, RouteResource(route)), (route.prefix, RouteSubtree(route))]
