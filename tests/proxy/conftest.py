"""Harness for the proxy tests: a real aiohttp upstream on 127.0.0.1 that
records what it received, and the proxy's resources served by a real aiocoap
server over plain UDP CoAP on 127.0.0.1, driven by an aiocoap client.

Requests take the gateway's production path to the proxy's resources: the
root is the gateway's :class:`~gateway.coap.service_site.ServiceSite` (block-wise flow,
RFC 7959; request metrics), in front of the gateway's
:class:`~gateway.coap.authorizing_site.AuthorizingSite` (body limit before
reassembly, critical options, the authorized context on the request), in
front of the gateway's :class:`~gateway.coap.resource_tree.ResourceTree`
whose dispatch calls the route resource's ``render``. Only the
authorizer is stood in for (:class:`StandInAuthorizer`: every request is
authorized as the harness's identity); the DTLS and proof layers are tested
elsewhere, and end to end through DTLS + proofs + libcoap in
tests/integration.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict

from gateway.coap.authorizing_site import DEFAULT_MAX_BODY, AuthorizingSite
from gateway.coap.resource_tree import ResourceTree
from gateway.coap.service_site import ServiceSite
from gateway.config import parse_config
from gateway.operations.gateway_metrics import GatewayMetrics, RouteLabels, time_upstream
from gateway.proxy import Proxy
from gateway.resource_server.auth_context import AuthContext
from gateway.resource_server.authorizer import Allow, Decisions, RequestView
from gateway.resource_server.token_store import AccessToken
from tokens.aif import Scope
from tokens.cwt import Claims
from tokens.keys import SymmetricKey


def make_auth(
    client_id: str = "sensor-1", scope: str = "/api/*:* /temp:*", cti: bytes = b"\x01\x02"
) -> AuthContext:
    """An AuthContext as the authorization layer would set it."""
    s = Scope.parse(scope)
    kid = client_id.encode()[:8] or b"k"
    token = AccessToken(
        kid=kid,
        pop_key=SymmetricKey(kid, bytes(32)),
        client_id=client_id,
        scope=s,
        exp=4_000_000_000.0,
        cti=cti,
        issuer="acegw",
        claims=Claims(sub=client_id, cti=cti),
    )
    return AuthContext(
        client_id=client_id, kid=kid, cti=cti, scope=s, issuer="acegw", via="proof", token=token
    )


class Clock:
    """An injected clock; tests move it instead of sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the upstream ------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    raw_path: str
    headers: CIMultiDict[str]
    body: bytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RecordingUpstream:
    """An aiohttp server on 127.0.0.1 that records every request; per path
    (without query) a handler may be installed, else it echoes."""

    seen: list[Seen] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    url: str = ""
    runner: web.AppRunner | None = None
    ssl_context: ssl.SSLContext | None = None

    def reply(
        self,
        path: str,
        status: int = 200,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=status, body=body, headers=headers or {})

        self.handlers[path] = handler

    def hits(self, path: str) -> int:
        return sum(1 for s in self.seen if s.raw_path.split("?")[0] == path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, CIMultiDict(request.headers), body))
        handler = self.handlers.get(request.path)
        if handler is not None:
            return await handler(request)
        return web.Response(
            body=json.dumps({"method": request.method, "path": request.raw_path}).encode(),
            content_type="application/json",
        )

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        port = self.runner.addresses[0][1]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


# --- the CoAP side -----------------------------------------------------------------


class StandInAuthorizer:
    """Stands in for :class:`gateway.resource_server.authorizer.Authorizer` behind the
    real :class:`AuthorizingSite`: every request is authorized, with
    ``identity()`` as its AuthContext."""

    def __init__(self, identity: Callable[[], AuthContext]) -> None:
        self._identity = identity
        self.decisions = Decisions()

    def authorize(self, view: RequestView, now: float) -> Allow:
        return Allow(self._identity())


class NoAudit:
    """An audit sink that is off (AuthorizingSite then builds no records)."""

    enabled = False

    def __call__(self, **record: Any) -> None:
        pass


def production_root(
    site: ResourceTree,
    identity: Callable[[], AuthContext],
    routes: list[str],
    metrics: GatewayMetrics,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    body_limit: Callable[[tuple[str, ...]], int | None] | None = None,
) -> ServiceSite:
    """The root resource as gateway.runtime.gateway builds it (Gateway.site and
    Gateway.start) around ``site``; ``max_body`` is ``limits.max_body``,
    ``body_limit`` the proxy's per-route limit."""
    authorizing = AuthorizingSite(
        site,
        StandInAuthorizer(identity),  # type: ignore[arg-type]
        NoAudit(),
        clock=lambda: 0.0,
        max_body=max_body,
        body_limit=body_limit,
    )
    return ServiceSite(authorizing, metrics, RouteLabels(routes))


class ProxyHarness:
    """A Proxy for ``routes`` (TOML-shaped dicts, parsed by the real config
    parser) behind an aiocoap UDP server, and a client for it."""

    def __init__(
        self,
        routes: list[dict[str, Any]],
        base_dir: Path,
        *,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
        max_in_flight: int | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        config = parse_config({"routes": routes}, base_dir=base_dir, env={})
        kwargs: dict[str, Any] = {}
        if clock is not None:
            kwargs["clock"] = clock
        if monotonic is not None:
            kwargs["monotonic"] = monotonic
        self.proxy = Proxy(
            config.routes,
            base_dir=base_dir,
            env=env or {},
            max_in_flight=max_in_flight,
            **kwargs,
        )
        self.auth = make_auth()
        #: ``limits.max_body``: the gateway-wide body limit, checked per block
        self.max_body = max_body
        self.metrics = GatewayMetrics()
        for route in self.proxy.routes:  # as Gateway does (gateway.runtime.gateway)
            time_upstream(route.upstream, route.config.prefix, self.metrics)
        self.root: ServiceSite | None = None
        self.server: aiocoap.Context | None = None
        self.client: aiocoap.Context | None = None
        self.port = 0

    async def start(self) -> ProxyHarness:
        site = ResourceTree()
        for path, resource in self.proxy.site_entries():
            site.add_resource(path, resource)
        self.root = production_root(
            site,
            lambda: self.auth,
            [route.config.prefix for route in self.proxy.routes],
            self.metrics,
            max_body=self.max_body,
            body_limit=self.proxy.body_limit,
        )
        await self.proxy.start()
        self.server = await aiocoap.Context.create_server_context(
            self.root, bind=("127.0.0.1", 0), transports=["udp6"]
        )
        mi = self.server.request_interfaces[0].token_interface.message_interface
        self.port = mi.transport.get_extra_info("socket").getsockname()[1]
        self.client = await aiocoap.Context.create_client_context(transports=["udp6"])
        return self

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.shutdown()
        if self.server is not None:
            await self.server.shutdown()
        await self.proxy.close()

    def message(
        self, code: aiocoap.Code, path: str, payload: bytes = b"", **options: Any
    ) -> aiocoap.Message:
        msg = aiocoap.Message(code=code, uri=f"coap://127.0.0.1:{self.port}{path}", payload=payload)
        for name, value in options.items():
            setattr(msg.opt, name, value)
        return msg

    async def send(
        self, msg: aiocoap.Message, *, handle_blockwise: bool = True, timeout: float = 10.0
    ) -> aiocoap.Message:
        assert self.client is not None
        req = self.client.request(msg, handle_blockwise=handle_blockwise)
        return await asyncio.wait_for(req.response, timeout)

    async def request(
        self, code: aiocoap.Code, path: str, payload: bytes = b"", **options: Any
    ) -> aiocoap.Message:
        return await self.send(self.message(code, path, payload, **options))


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    up = RecordingUpstream()
    await up.start()
    yield up
    await up.stop()


@pytest.fixture
async def make_proxy(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ProxyHarness]]]:
    started: list[ProxyHarness] = []

    async def make(routes: list[dict[str, Any]], **kwargs: Any) -> ProxyHarness:
        harness = ProxyHarness(routes, tmp_path, **kwargs)
        started.append(harness)
        return await harness.start()

    yield make
    for harness in started:
        await harness.stop()


# --- TLS material --------------------------------------------------------------------


@dataclass
class Pki:
    """A throw-away CA with a server certificate for 127.0.0.1 and a client
    certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca)
        return ctx


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    ip: str | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    if client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, None, ca_key, ca=True)
    out = {}
    for role, kwargs in (("server", {"ip": "127.0.0.1"}), ("client", {"client": True})):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"test {role}", key, ca.subject, ca_key, **kwargs)
        (d / f"{role}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(d / f"{role}.key", key)
        out[role] = (d / f"{role}.pem", d / f"{role}.key")
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca=d / "ca.pem",
        server_cert=out["server"][0],
        server_key=out["server"][1],
        client_cert=out["client"][0],
        client_key=out["client"][1],
    )
