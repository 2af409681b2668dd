"""The demo upstream (examples/demo_upstream.py) behind the proxy, as
``make run`` uses it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiocoap.numbers.codes import Code
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from examples import demo_upstream

from .conftest import Clock, ProxyHarness, make_auth


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "jwt.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = demo_upstream.create_app(jwt_public_key=public, jwt_audience="demo")
    runner, url = await demo_upstream.start(app)
    yield url, tmp_path / "jwt.pem"
    await runner.cleanup()


@pytest.fixture
async def proxy(demo: tuple[str, Path], make_proxy) -> ProxyHarness:
    url, key = demo
    return await make_proxy(
        [
            {"prefix": "/temp", "upstream": url + "/temp", "methods": ["GET", "PUT"]},
            {"prefix": "/readings", "upstream": url + "/readings", "methods": ["GET", "POST"]},
            {"prefix": "/big", "upstream": url + "/big", "max_body": 1 << 20},
            {
                "prefix": "/me",
                "upstream": url + "/me",
                "auth": "jwt",
                "jwt_key_file": str(key),
                "jwt_audience": "demo",
            },
        ],
        clock=Clock(time.time()),
    )


async def test_temp_get_put_with_etags(proxy: ProxyHarness):
    got = await proxy.request(Code.GET, "/temp")
    assert got.code == Code.CONTENT and got.opt.content_format == 50
    assert json.loads(got.payload) == {"celsius": 21.5}
    assert (got.opt.etag, got.opt.max_age) == (b"t1", 5)
    valid = await proxy.request(Code.GET, "/temp", etags=[b"t1"])
    assert (valid.code, valid.opt.etag) == (Code.VALID, b"t1")
    stale = await proxy.request(
        Code.PUT, "/temp", b'{"celsius": 19}', content_format=50, if_match=[b"t0"]
    )
    assert stale.code == Code.PRECONDITION_FAILED
    put = await proxy.request(
        Code.PUT, "/temp", b'{"celsius": 19}', content_format=50, if_match=[b"t1"]
    )
    assert (put.code, put.opt.etag) == (Code.CHANGED, b"t2")
    assert json.loads((await proxy.request(Code.GET, "/temp")).payload) == {"celsius": 19.0}


async def test_readings_created_with_location(proxy: ProxyHarness):
    created = await proxy.request(Code.POST, "/readings", b'{"t": 20.1}', content_format=50)
    assert created.code == Code.CREATED
    assert created.opt.location_path == ("readings", "1")
    back = await proxy.request(Code.GET, "/" + "/".join(created.opt.location_path))
    assert json.loads(back.payload) == {"t": 20.1}
    wrong = await proxy.request(Code.POST, "/readings", b"x", content_format=0)
    assert wrong.code == Code.UNSUPPORTED_CONTENT_FORMAT
    assert (await proxy.request(Code.GET, "/readings/99")).code == Code.NOT_FOUND


async def test_big_body_block2(proxy: ProxyHarness):
    resp = await proxy.request(Code.GET, "/big?size=70000")
    assert resp.code == Code.CONTENT and resp.opt.content_format == 42
    assert resp.payload == bytes(i % 251 for i in range(70000))


async def test_jwt_checking_endpoint(proxy: ProxyHarness):
    proxy.auth = make_auth("sensor-9", "/me:GET")
    resp = await proxy.request(Code.GET, "/me")
    assert resp.code == Code.CONTENT
    assert json.loads(resp.payload) == {"sub": "sensor-9", "scope": "/me:GET"}
