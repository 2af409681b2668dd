"""The HTTP port of one gateway: /metrics values move exactly as devices act
(a refused proof moves one counter, with its reason), /healthz, /readyz, the
verification key set, and no secret anywhere in the exposition."""

from __future__ import annotations

import contextlib
import io
import socket

import aiocoap
import pytest
from aiocoap.optiontypes import OpaqueOption
from aiohttp import web

from gateway.config import load_config
from gateway.dtls.probe import DtlsProbe, ProbeError
from gateway.operations.admin_http import AdminHttp
from gateway.operations.metrics import Counter, Family, Histogram, merge, parse, render
from gateway.runtime.gateway import Gateway
from tokens import cbor
from tokens.keys import SymmetricKey
from tokens.params import PROOF_OPTION

from .conftest import ProofClient, free_port, http_get, init_state, post, value

DEVICE, PSK = "meter-1", b"meter-1-psk-0123"


@pytest.fixture
async def upstream():
    app = web.Application()

    async def temp(request: web.Request) -> web.Response:
        return web.json_response({"celsius": 20.5})

    app.router.add_get("/temp", temp)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def gateway(tmp_path, upstream):
    state = init_state(tmp_path / "state")
    closed = free_port(socket.SOCK_STREAM)  # nothing listens there
    with (state / "acegw.toml").open("a") as f:
        f.write(f'\n[[routes]]\nprefix = "/temp"\nupstream = "{upstream}/temp"\n')
        f.write(f'\n[[routes]]\nprefix = "/down"\nupstream = "http://127.0.0.1:{closed}"\n')
        f.write("breaker_failures = 0\n")
    env = {
        "ACEGW_SERVER_BIND": "127.0.0.1",
        "ACEGW_SERVER_PORT": "0",
        "ACEGW_AUDIT_PATH": "off",
        "ACEGW_LIMITS_LOCKOUT_FAILURES": "1000",
    }
    gw = Gateway(load_config(state / "acegw.toml", env=env))
    gw.registry.add(DEVICE, psk=PSK, scope="/whoami:GET /temp:GET /down:GET /missing:GET")
    await gw.start()
    admin = AdminHttp(
        metrics=gw.metrics_text, ready=gw.readiness, key_set=gw.keystore.export_public
    )
    host, port = await admin.start("127.0.0.1", 0)
    try:
        yield gw, f"http://{host}:{port}"
    finally:
        await admin.stop()
        await gw.stop()
        gw.registry.close()


@contextlib.asynccontextmanager
async def _device(gw: Gateway, identity: str = DEVICE, psk: bytes = PSK):
    probe = DtlsProbe(gw.address)
    try:
        yield await probe.connect(identity.encode(), psk, timeout=10)
    finally:
        await probe.close()


async def _scrape(base: str):
    status, body = await http_get(base + "/metrics")
    assert status == 200
    return parse(body.decode()), body.decode()


def _changed(before, after, name: str) -> dict:
    """Series of ``name`` whose value moved, with the difference."""
    keys = {k for k in (*before, *after) if k[0] == name}
    return {
        dict(k[1]).get("reason"): after.get(k, 0) - before.get(k, 0)
        for k in keys
        if after.get(k, 0) != before.get(k, 0)
    }


@pytest.mark.parametrize(
    "tamper, reason",
    [
        ("wrong_key", "bad_signature"),
        ("replay", "replay"),
        ("unknown_kid", "unknown_kid"),
        ("garbage", "malformed"),
    ],
)
async def test_a_refused_proof_moves_exactly_one_counter(gateway, tamper, reason):
    gw, base = gateway
    async with _device(gw) as session:
        device = await ProofClient.enroll(session, "/whoami:GET")
        assert (await device.call()).code == aiocoap.CONTENT
        before, _ = await _scrape(base)
        if tamper == "wrong_key":
            msg = device.message(key=SymmetricKey.generate(device.key.kid))
        elif tamper == "replay":
            msg = device.message()
            assert (await session.request(msg)).code == aiocoap.CONTENT
            before, _ = await _scrape(base)
            msg.mid = None
        elif tamper == "unknown_kid":
            msg = device.message(key=SymmetricKey.generate(b"not-a-kid"))
        else:
            msg = device.message()
            msg.opt.delete_option(PROOF_OPTION)
            msg.opt.add_option(OpaqueOption(PROOF_OPTION, b"\xff\x00garbage"))
        resp = await session.request(msg)
        expected = aiocoap.BAD_REQUEST if reason == "malformed" else aiocoap.UNAUTHORIZED
        assert resp.code == expected
        after, _ = await _scrape(base)
    assert _changed(before, after, "acegw_proofs_rejected_total") == {reason: 1}
    assert _changed(before, after, "acegw_proofs_verified_total") == {}
    code = "4.00" if reason == "malformed" else "4.01"
    moved = value(after, "acegw_requests_total", route="/whoami", code=code) - value(
        before, "acegw_requests_total", route="/whoami", code=code
    )
    assert moved == 1


async def test_counters_follow_tokens_requests_upstreams_and_handshakes(gateway):
    gw, base = gateway
    before, _ = await _scrape(base)
    async with _device(gw) as session:
        device = await ProofClient.enroll(session)
        assert (await device.call(("temp",))).code == aiocoap.CONTENT
        assert (await device.call(("temp",))).code == aiocoap.CONTENT
        assert (await device.call(("down",))).code == aiocoap.BAD_GATEWAY
        assert (await post(session, "authz-info", b"\x01\x02")).code == aiocoap.BAD_REQUEST
        assert (await device.call(("nowhere",))).code == aiocoap.FORBIDDEN  # not in scope
        assert (await device.call(("missing",))).code == aiocoap.NOT_FOUND  # no resource
        mid, text = await _scrape(base)
        assert value(mid, "acegw_dtls_sessions", state="established") == 1
    with pytest.raises(ProbeError):
        async with _device(gw, psk=b"wrong-psk-000000"):
            pass
    after, text = await _scrape(base)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("acegw_tokens_issued_total") == 1
    assert moved("acegw_tokens_accepted_total", via="authz-info") == 1
    assert moved("acegw_tokens_rejected_total", endpoint="authz-info") == 1
    assert moved("acegw_proofs_verified_total") == 5  # every call after the Echo round
    assert moved("acegw_proofs_rejected_total", reason="echo_required") == 1
    assert moved("acegw_requests_total", route="/temp", code="2.05") == 2
    assert moved("acegw_requests_total", route="/down", code="5.02") == 1
    assert moved("acegw_requests_total", route="/token", code="2.01") == 1
    assert moved("acegw_requests_total", route="other", code="4.03") == 1
    assert moved("acegw_requests_total", route="other", code="4.04") == 1
    assert moved("acegw_requests_total", code="5.00") == 0
    assert moved("acegw_upstream_request_duration_seconds_count", route="/temp") == 2
    assert moved("acegw_upstream_request_duration_seconds_bucket", route="/temp", le="+Inf") == 2
    assert moved("acegw_upstream_errors_total", route="/down") == 1
    assert moved("acegw_dtls_handshakes_total", outcome="ok") == 1
    assert moved("acegw_dtls_handshakes_total", outcome="bad_finished") == 1
    assert moved("acegw_dtls_sessions_closed_total", reason="peer_closed") == 1
    assert value(after, "acegw_tokens_held") == 1
    assert all(dict(k[1]).get("worker") == "0" for k in after if not k[0].startswith("#"))
    # never a secret, a token, a PoP key or an identity in the exposition
    for secret in (PSK.decode(), device.token.hex(), device.key.secret.hex(), DEVICE):
        assert secret not in text


async def test_health_readiness_and_key_set(gateway):
    gw, base = gateway
    assert (await http_get(base + "/healthz"))[0] == 200
    status, body = await http_get(base + "/readyz")
    assert status == 200 and b'"ready":true' in body
    status, body = await http_get(base + "/keys")
    assert status == 200
    kids = {k[2] for k in cbor.decode(body, what="key set")}  # COSE_Key label 2 = kid
    assert kids == {k.kid for k in gw.keystore.verification_keys()}
    assert all(-4 not in k for k in cbor.decode(body, what="key set"))  # no private part
    async with _device(gw) as session:
        resp = await session.request(
            aiocoap.Message(code=aiocoap.GET, uri_path=(".well-known", "ace-keys"))
        )
        assert resp.code == aiocoap.CONTENT and resp.opt.content_format == 102
        assert resp.payload == body
    assert await gw.drain(1.0)
    status, body = await http_get(base + "/readyz")
    assert status == 503 and b'"draining":true' in body


def test_exposition_format_merges_workers():
    requests = Counter("acegw_requests_total", "Requests.", ("route", "code"))
    requests.inc("/temp", "2.05")
    requests.inc("/temp", "2.05")
    latency = Histogram("acegw_upstream_request_duration_seconds", "Latency.", ("route",))
    latency.observe(0.003, "/temp")
    worker0 = [requests.family({"worker": "0"}), latency.family({"worker": "0"})]
    worker1 = [requests.family({"worker": "1"})]
    text = render(merge([worker0, worker1]))
    assert text.count("# TYPE acegw_requests_total counter") == 1
    samples = parse(text)
    assert value(samples, "acegw_requests_total", code="2.05") == 4
    assert value(samples, "acegw_upstream_request_duration_seconds_bucket", le="0.0025") == 0
    assert value(samples, "acegw_upstream_request_duration_seconds_bucket", le="0.005") == 1
    assert value(samples, "acegw_upstream_request_duration_seconds_count") == 1
    odd = Family("x", "gauge", "a\nb", [("x", {"l": 'q"\\\n'}, 1.5)])
    assert parse(render([odd]))[("x", frozenset({("l", 'q"\\\n')}))] == 1.5
    assert io.StringIO(render([odd])).read().startswith("# HELP x a\\nb\n")
