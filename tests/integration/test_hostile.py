"""Hostile input to every endpoint: whatever arrives, the answer is a 4.xx
with the right code (never a 5.00 from an escaped exception), and the
gateway keeps serving. Hypothesis drives the resource tree in-process (the
same objects the DTLS server dispatches to); one case per endpoint also goes
over real DTLS."""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

import aiocoap
import cbor2
import pytest
from aiocoap.message import Direction
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import OpaqueOption
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from tokens.ace import TokenRequest
from tokens.params import PROOF_OPTION

from .conftest import DEVICE_ID, DEVICE_PSK, device, gateway_config


class Remote:
    """What the DTLS transport attaches to a request (hostinfo etc.)."""

    def __init__(self, identity: bytes) -> None:
        self.psk_identity = identity
        self.address = ("127.0.0.1", 40000)
        self.hostinfo = "127.0.0.1:40000"
        self.hostinfo_local = "127.0.0.1:5684"
        self.uri_base = "coaps://127.0.0.1:40000"
        self.uri_base_local = "coaps://127.0.0.1:5684"
        self.scheme = "coaps"
        self.is_multicast = False
        self.is_multicast_locally = False
        self.maximum_payload_size = 1024
        self.maximum_block_size_exp = 6
        self.blockwise_key = ("remote", identity)


@pytest.fixture(scope="module")
def offline_gateway():
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        assert cli_main(["init", "--dir", str(state)], out=io.StringIO()) == 0
        gw = Gateway(gateway_config(state, ACEGW_AUDIT_PATH="off"))
        gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
        gw.registry.add("rs-1", psk=b"rs-1-psk-abcdefg", scope="/introspect:POST")
        yield gw, gw.site()
        gw.registry.close()


ALLOWED = {
    Code.BAD_REQUEST,
    Code.UNAUTHORIZED,
    Code.FORBIDDEN,
    Code.REQUEST_ENTITY_TOO_LARGE,
    Code.UNSUPPORTED_CONTENT_FORMAT,
    Code.TOO_MANY_REQUESTS,
}

payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(
        cbor2.dumps,
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.binary(max_size=40)
            | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.integers(-5, 45) | st.text(max_size=5), inner, max_size=5)
            ),
            max_leaves=12,
        ),
    ),
)


async def render(site, request: aiocoap.Message) -> aiocoap.Message:
    request.direction = Direction.INCOMING
    try:
        return await site.render(request)
    except aiocoap.error.RenderableError as exc:  # aiocoap's own 4.xx
        return exc.to_message()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["token", "authz-info", "introspect"]),
    payload=payloads,
    content_format=st.sampled_from([None, 19, 19, 19, 60, 50, 0]),
    identity=st.sampled_from([DEVICE_ID.encode(), b"rs-1", b"stranger"]),
)
async def test_ace_endpoints_answer_4xx_to_anything(
    offline_gateway, path, payload, content_format, identity
):
    gw, site = offline_gateway
    gw.ace_limits = type(gw.ace_limits)(1e6, 1_000_000)  # no rate limit here
    msg = aiocoap.Message(code=Code.POST, uri_path=(path,), payload=payload)
    if content_format is not None:
        msg.opt.content_format = content_format
    msg.remote = Remote(identity)
    resp = await render(site, msg)
    assert resp.code in ALLOWED | {Code.CREATED, Code.CONTENT}, (path, payload, resp)
    if resp.code in (Code.CREATED, Code.CONTENT):
        # only well-formed requests can succeed
        assert content_format in (None, 19)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(proof=st.binary(max_size=120), echo=st.none() | st.binary(max_size=40))
async def test_protected_resource_answers_4xx_to_any_proof(offline_gateway, proof, echo):
    _gw, site = offline_gateway
    msg = aiocoap.Message(code=Code.GET, uri_path=("whoami",))
    msg.opt.add_option(OpaqueOption(PROOF_OPTION, proof))
    if echo is not None:
        msg.opt.echo = echo
    msg.remote = Remote(DEVICE_ID.encode())
    resp = await render(site, msg)
    assert resp.code in ALLOWED, resp


@pytest.mark.parametrize(
    "path, payload, content_format, code",
    [
        ("authz-info", b"", 19, Code.BAD_REQUEST),
        ("authz-info", b"\xff", 19, Code.BAD_REQUEST),
        ("authz-info", cbor2.dumps({1: "not bytes"}), 19, Code.BAD_REQUEST),
        ("authz-info", b"\x84" + b"\x40" * 3000, 19, Code.REQUEST_ENTITY_TOO_LARGE),
        ("authz-info", cbor2.dumps([b"", {}, b""]), 42, Code.UNSUPPORTED_CONTENT_FORMAT),
        ("introspect", b"", 19, Code.BAD_REQUEST),
        ("introspect", cbor2.dumps({11: 5}), 19, Code.BAD_REQUEST),
        ("introspect", cbor2.dumps({11: b"x"}), 50, Code.UNSUPPORTED_CONTENT_FORMAT),
    ],
)
async def test_hostile_input_over_dtls(gateway, path, payload, content_format, code):
    gateway.registry.add("rs-1", psk=b"rs-1-psk-abcdefg", scope="/introspect:POST")
    identity, psk = (b"rs-1", b"rs-1-psk-abcdefg") if path == "introspect" else (
        DEVICE_ID.encode(), DEVICE_PSK)  # fmt: skip
    async with device(gateway, identity, psk) as dev:
        resp = await dev.post(f"/{path}", payload, content_format=content_format)
        assert resp.code == code
        # and the same session keeps working
        ok = await dev.post("/token", TokenRequest().encode()) if path != "introspect" else None
        assert ok is None or ok.code == Code.CREATED


async def test_psk_rotation_drops_sessions(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        assert (await dev.post("/token", TokenRequest().encode())).code == Code.CREATED
        # aiocoap's tinydtls client takes at most 16-byte keys
        new_psk = gateway.registry.rotate_psk(DEVICE_ID, os.urandom(16))
        gateway.housekeeping(time.time())
        assert gateway.dtls.remotes(DEVICE_ID.encode()) == []
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as old:
        with pytest.raises(Exception) as info:
            await old.post("/token", TokenRequest().encode(), timeout=3)
        assert not isinstance(info.value, AssertionError)
    async with device(gateway, DEVICE_ID.encode(), new_psk) as new:
        assert (await new.post("/token", TokenRequest().encode())).code == Code.CREATED
