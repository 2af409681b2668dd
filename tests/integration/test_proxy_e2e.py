"""Device -> DTLS -> Proof -> authorization -> HTTP upstream, end to end on
loopback (RFC 8075 proxying behind the authorization layer)."""

from __future__ import annotations

import json
import shutil

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from aiohttp import web

from examples import demo_upstream
from gateway.runtime.gateway import Gateway
from tokens.params import PROOF_OPTION
from tokens.proof import ProofedRequest, build_proof

from .conftest import DEVICE_ID, DEVICE_PSK, ProofDevice, device, gateway_config


@pytest.fixture
async def upstream():
    seen: list[tuple[str, str, bytes, dict[str, str]]] = []

    @web.middleware
    async def record(request: web.Request, handler):
        body = await request.read()
        seen.append((request.method, request.path_qs, body, dict(request.headers)))
        return await handler(request)

    app = demo_upstream.create_app()
    app.middlewares.append(record)
    runner, url = await demo_upstream.start(app)
    try:
        yield url, seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def proxied(state_dir, upstream):
    url, seen = upstream
    routes = "".join(
        f'\n[[routes]]\nprefix = "/{name}"\nupstream = "{url}/{name}"\n'
        f"methods = {methods}\nmax_body = 1048576\n"
        f'headers = {{ "X-Device" = "{{client_id}}" }}\n'
        for name, methods in (("temp", '["GET", "PUT"]'), ("readings", '["GET", "POST"]'),
                              ("big", '["GET"]'))
    )  # fmt: skip
    config_path = state_dir / "acegw.toml"
    config_path.write_text(config_path.read_text() + routes)
    gw = Gateway(gateway_config(state_dir))
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/readings:POST /temp:GET /big:GET")
    gw.registry.add("sensor-2", psk=b"sensor-2-psk-abc", scope="/whoami:GET")
    await gw.start()
    try:
        yield gw, seen
    finally:
        await gw.stop()
        gw.registry.close()


async def test_authorized_requests_reach_the_upstream(proxied):
    gw, seen = proxied
    async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        body = json.dumps({"celsius": 21.5}).encode()
        resp = await pd.call(Code.POST, "/readings", payload=body, content_format=50)
        assert resp.code == Code.CREATED, resp.payload
        assert list(resp.opt.location_path) == ["readings", "1"]
        method, path, received, headers = seen[-1]
        assert (method, path, received) == ("POST", "/readings", body)
        assert headers["Content-Type"].startswith("application/json")
        assert headers["X-Device"] == DEVICE_ID

        resp = await pd.call(Code.GET, "/temp")
        assert resp.code == Code.CONTENT and resp.opt.content_format == 50

        # Block2 through DTLS: a 5000-byte upstream body, every byte intact
        resp = await pd.call(Code.GET, "/big", query=("size=5000",))
        assert resp.code == Code.CONTENT
        assert resp.payload == bytes(i % 251 for i in range(5000))

        # Block1: a 3000-byte JSON body; the proof covers the whole body
        big = json.dumps({"samples": list(range(700))}).encode()
        assert len(big) > 2048
        resp = await pd.call(Code.POST, "/readings", payload=big, content_format=50)
        assert resp.code == Code.CREATED, resp.payload
        assert seen[-1][2] == big


async def test_unauthorized_requests_never_reach_the_upstream(proxied):
    gw, seen = proxied
    async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        await pd.call(Code.GET, "/temp")  # opens the window
        before = len(seen)
        assert (await pd.call(Code.PUT, "/temp", payload=b"1")).code == Code.METHOD_NOT_ALLOWED
        assert (await pd.call(Code.POST, "/readings", payload=b"{}", proofed_as={"payload": b"[]"},
                              content_format=50)).code == Code.UNAUTHORIZED  # fmt: skip
        no_proof = aiocoap.Message(code=Code.GET, uri=dev.base + "/temp")
        assert (await dev.request(no_proof)).code == Code.UNAUTHORIZED
    async with device(gw, b"sensor-2", b"sensor-2-psk-abc") as dev2:
        other = await ProofDevice.enroll(dev2)
        assert (await other.call(Code.GET, "/temp")).code == Code.FORBIDDEN
        assert (await other.call(Code.GET, "/readings/1")).code == Code.FORBIDDEN
    assert len(seen) == before, "a refused request reached the upstream"


@pytest.mark.interop
async def test_libcoap_post_with_a_proof_reaches_the_upstream(proxied, tmp_path):
    gw, seen = proxied
    binary = shutil.which("coap-client-openssl")
    assert binary, "libcoap3-bin is installed by make test"
    async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        assert (await pd.call(Code.GET, "/temp")).code == Code.CONTENT  # window open
    body = b'{"celsius":19.25}'
    proof = build_proof(
        pd.key,
        ProofedRequest(code=2, path=("readings",), content_format=50, payload=body),
        pd.piv + 1,
    )
    out = tmp_path / "response"
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        binary, "-m", "post", "-u", DEVICE_ID, "-k", DEVICE_PSK.decode(), "-t", "50",
        "-e", body.decode(), "-O", f"{PROOF_OPTION},0x{proof.hex()}", "-o", str(out),
        "-B", "10", f"coaps://127.0.0.1:{gw.address[1]}/readings",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    log, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, log
    assert seen[-1][:3] == ("POST", "/readings", body)
    assert json.loads(out.read_bytes())["id"] >= 1
