"""How the gateway authenticates itself upstream: static bearer / API key,
per-device JWT (verified by the upstream with PyJWT, an independent JOSE
implementation), TLS with verification on by default and a client
certificate; secrets never in logs or error payloads; configuration errors."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jwt
import pytest
from aiocoap.numbers.codes import Code
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.proxy import Proxy
from gateway.proxy.upstream_auth import JwtAuth

from .conftest import Clock, Pki, RecordingUpstream, make_auth

API_KEY = "s3cr3t-api-key-0123456789"
BEARER = "static-bearer-token-abcdef"


async def test_bearer_from_env(make_proxy, upstream: RecordingUpstream):
    proxy = await make_proxy(
        [{"prefix": "/a", "upstream": upstream.url, "auth": "bearer", "secret_env": "UP_TOKEN"}],
        env={"UP_TOKEN": BEARER},
    )
    assert (await proxy.request(Code.GET, "/a/x")).code == Code.CONTENT
    assert upstream.seen[-1].headers["Authorization"] == f"Bearer {BEARER}"


async def test_api_key_from_file(make_proxy, upstream: RecordingUpstream, tmp_path: Path):
    (tmp_path / "key.txt").write_text(API_KEY + "\n")
    proxy = await make_proxy(
        [
            {
                "prefix": "/a",
                "upstream": upstream.url,
                "auth": "api_key",
                "secret_file": "key.txt",  # relative to the config directory
                "api_key_header": "X-Api-Token",
            }
        ]
    )
    await proxy.request(Code.GET, "/a/x")
    assert upstream.seen[-1].headers["X-Api-Token"] == API_KEY
    assert "Authorization" not in upstream.seen[-1].headers


async def test_secrets_never_in_logs_or_payloads(
    make_proxy, upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    upstream.reply("/denied", status=401, body=f"bad key {API_KEY}".encode())
    proxy = await make_proxy(
        [
            {
                "prefix": "/a",
                "upstream": upstream.url,
                "auth": "api_key",
                "secret_env": "K",
                "timeout": 0.5,
            },
            {
                "prefix": "/dead",
                "upstream": "http://127.0.0.1:9",
                "auth": "bearer",
                "secret_env": "K",
            },
        ],
        env={"K": API_KEY},
    )
    resp = await proxy.request(Code.GET, "/a/denied")
    assert resp.code == Code.BAD_GATEWAY  # the gateway's credential failed, not the device's
    assert API_KEY.encode() not in resp.payload
    resp = await proxy.request(Code.GET, "/dead/x")
    assert resp.code == Code.BAD_GATEWAY and API_KEY.encode() not in resp.payload
    assert API_KEY not in caplog.text
    assert API_KEY not in repr(proxy.proxy.routes[0].auth)


def _pem_pair(alg: str) -> tuple[bytes, bytes]:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_jwt_per_device_verified_by_upstream(
    make_proxy, upstream: RecordingUpstream, tmp_path: Path, alg: str
):
    private, public = _pem_pair(alg)
    (tmp_path / "jwt.pem").write_bytes(private)
    verified: list[dict] = []

    async def check(request: web.Request) -> web.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        try:
            claims = jwt.decode(
                token,
                public,
                algorithms=[alg],
                audience="legacy-api",
                issuer="acegw-test",
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            return web.Response(status=401, text=str(exc))
        verified.append(claims)
        assert jwt.get_unverified_header(token) == {"alg": alg, "typ": "JWT", "kid": "gw-1"}
        return web.json_response({"sub": claims["sub"]})

    upstream.handlers["/me"] = check
    clock = Clock(time.time())  # PyJWT checks exp/iat against the real clock
    proxy = await make_proxy(
        [
            {
                "prefix": "/me",
                "upstream": upstream.url + "/me",
                "auth": "jwt",
                "jwt_key_file": "jwt.pem",
                "jwt_audience": "legacy-api",
                "jwt_issuer": "acegw-test",
                "jwt_kid": "gw-1",
                "jwt_lifetime": 300,
            }
        ],
        clock=clock,
    )
    auth: JwtAuth = proxy.proxy.routes[0].auth  # type: ignore[assignment]
    proxy.auth = make_auth("sensor-1", "/me:GET")
    assert (await proxy.request(Code.GET, "/me")).code == Code.CONTENT
    assert (await proxy.request(Code.GET, "/me")).code == Code.CONTENT
    assert auth.minted == 1  # cached for the device
    tokens = [s.headers["Authorization"] for s in upstream.seen]
    assert tokens[0] == tokens[1]
    claims = verified[0]
    assert claims["sub"] == "sensor-1" and claims["client_id"] == "sensor-1"
    assert claims["scope"] == "/me:GET" and claims["aud"] == "legacy-api"
    assert claims["exp"] - claims["iat"] == 300
    # another device gets its own token
    proxy.auth = make_auth("sensor-2", "/me:GET")
    await proxy.request(Code.GET, "/me")
    assert auth.minted == 2 and verified[-1]["sub"] == "sensor-2"
    assert upstream.seen[-1].headers["Authorization"] != tokens[0]
    # shortly before expiry the first device's token is replaced (the upstream, on the
    # real clock, would now see a token from the future: only the minting is checked)
    proxy.auth = make_auth("sensor-1", "/me:GET")
    clock.now += 300 - 31
    await proxy.request(Code.GET, "/me")
    assert auth.minted == 2
    clock.now += 2
    await proxy.request(Code.GET, "/me")
    assert auth.minted == 3
    assert upstream.seen[-1].headers["Authorization"] != tokens[0]


async def test_jwt_rejected_by_upstream_is_502(
    make_proxy, upstream: RecordingUpstream, tmp_path: Path
):
    private, _ = _pem_pair("ES256")
    (tmp_path / "jwt.pem").write_bytes(private)
    upstream.reply("/me", status=401)
    proxy = await make_proxy(
        [
            {
                "prefix": "/me",
                "upstream": upstream.url + "/me",
                "auth": "jwt",
                "jwt_key_file": "jwt.pem",
            }
        ]
    )
    resp = await proxy.request(Code.GET, "/me")
    assert resp.code == Code.BAD_GATEWAY
    token = upstream.seen[-1].headers["Authorization"].removeprefix("Bearer ")
    assert token.encode() not in resp.payload
    # aud defaults to the upstream URL
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == upstream.url + "/me"


async def test_tls_verification_is_on_by_default(make_proxy, pki: Pki):
    up = RecordingUpstream(ssl_context=pki.server_context())
    await up.start()
    try:
        proxy = await make_proxy(
            [
                {"prefix": "/nocas", "upstream": up.url},
                {"prefix": "/ca", "upstream": up.url, "ca_file": str(pki.ca)},
            ]
        )
        resp = await proxy.request(Code.GET, "/nocas/x")
        assert resp.code == Code.BAD_GATEWAY and up.seen == []
        resp = await proxy.request(Code.GET, "/ca/x")
        assert resp.code == Code.CONTENT and up.seen[-1].raw_path == "/x"
    finally:
        await up.stop()


async def test_tls_client_certificate(make_proxy, pki: Pki):
    up = RecordingUpstream(ssl_context=pki.server_context(require_client_cert=True))
    await up.start()
    try:
        proxy = await make_proxy(
            [
                {"prefix": "/anon", "upstream": up.url, "ca_file": str(pki.ca)},
                {
                    "prefix": "/mtls",
                    "upstream": up.url,
                    "ca_file": str(pki.ca),
                    "client_cert": str(pki.client_cert),
                    "client_key": str(pki.client_key),
                },
            ]
        )
        assert (await proxy.request(Code.GET, "/anon/x")).code == Code.BAD_GATEWAY
        assert (await proxy.request(Code.GET, "/mtls/x")).code == Code.CONTENT
    finally:
        await up.stop()


def build(tmp_path: Path, route: dict, env: dict[str, str] | None = None) -> Proxy:
    config = parse_config({"routes": [route]}, base_dir=tmp_path, env={})
    return Proxy(config.routes, base_dir=tmp_path, env=env or {})


@pytest.mark.parametrize(
    ("route", "key"),
    [
        ({"auth": "bearer", "secret_env": "MISSING"}, "routes[0].secret_env"),
        ({"auth": "bearer"}, "routes[0].auth"),
        ({"auth": "api_key", "secret_file": "nope.txt"}, "routes[0].secret_file"),
        ({"auth": "jwt"}, "routes[0].jwt_key_file"),
        ({"auth": "jwt", "jwt_key_file": "weak.pem"}, "routes[0].jwt_key_file"),
        ({"ca_file": "ca.pem"}, "routes[0].ca_file"),  # TLS settings on an http upstream
        ({"upstream": "http://user:pw@127.0.0.1:1"}, "routes[0].upstream"),
        ({"prefix": "/"}, "routes[0].prefix"),
        (
            {"auth": "bearer", "secret_env": "K", "headers": {"Authorization": "x"}},
            "routes[0].headers",
        ),
    ],
)
def test_config_errors(tmp_path: Path, route: dict, key: str) -> None:
    (tmp_path / "ca.pem").write_text("x")
    weak = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "weak.pem").write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    full = {"prefix": "/a", "upstream": "http://127.0.0.1:1", **route}
    with pytest.raises(ConfigError) as info:
        build(tmp_path, full, env={"K": "secret-value"})
    assert info.value.key == key
    assert "secret-value" not in str(info.value) and "pw" not in str(info.value)
