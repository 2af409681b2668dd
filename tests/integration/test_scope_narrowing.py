"""Narrowing a client's rights cuts its tokens off (as a disable does):
`acegw clients update --scope` that takes a right away leaves no token
issued under the old scope usable, over real DTLS; widening does not."""

from __future__ import annotations

import io
import json
import time

from aiocoap.numbers.codes import Code

from gateway.registry.registry import Client, narrows
from gateway.resource_server.token_intake import CUT_OFF_MESSAGE
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway

from .conftest import DEVICE_ID, DEVICE_PSK, FakeClock, ProofDevice, device, gateway_config

WIDE = "/cfg:GET,PUT /whoami:GET"
NARROW = "/cfg:GET /whoami:GET"


def _client(scope: str, audiences: tuple[str, ...] = ()) -> Client:
    return Client(DEVICE_ID, scope, None, audiences, None, True, 0.0, None, 0)


def test_what_narrows():
    assert narrows(_client(WIDE), NARROW, None)  # a method taken away
    assert narrows(_client(WIDE), "/whoami:GET", None)  # a resource taken away
    assert not narrows(_client(NARROW), WIDE, None)  # widened
    assert not narrows(_client(WIDE), "/whoami:GET /cfg:PUT,GET", None)  # same rights
    assert not narrows(_client(WIDE), None, None)
    assert narrows(_client(WIDE, ("rs1", "rs2")), None, ("rs1",))
    assert not narrows(_client(WIDE, ("rs1",)), None, ("rs1", "rs2"))
    assert narrows(_client(WIDE), None, ("rs1",))  # no audiences = every audience
    assert not narrows(_client(WIDE, ("rs1",)), None, ())


def _update(state_dir, scope: str) -> str:
    out = io.StringIO()
    code = cli_main(
        ["clients", "update", DEVICE_ID, "--scope", scope, "--dir", str(state_dir)], out=out
    )
    assert code == 0, out.getvalue()
    return out.getvalue()


async def test_a_narrowed_scope_refuses_tokens_issued_before(state_dir):
    clock = FakeClock(time.time())
    gw = Gateway(gateway_config(state_dir), clock=clock)
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope=WIDE)
    await gw.start()
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            old = await ProofDevice.enroll(dev)
            assert (await old.call()).code == Code.CONTENT

            # widening keeps the token
            assert "narrowed" not in _update(state_dir, WIDE + " /temp:GET")
            gw.housekeeping(clock())
            assert gw.tokens.peek(old.key.kid) is not None

            printed = _update(state_dir, NARROW)
            assert "rights narrowed" in printed and DEVICE_PSK.decode() not in printed
            gw.housekeeping(clock())
            assert gw.tokens.peek(old.key.kid) is None  # dropped
            assert gw.dtls.remotes(DEVICE_ID.encode()) == []  # its session closed

        # the old token uploaded again over a new session: refused, saying why
        clock.now = time.time() + 2  # later than the cut-off's second (iat is whole seconds)
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            resp = await dev.post("/authz-info", old.token)
            assert resp.code == Code.UNAUTHORIZED
            assert resp.payload.decode() == CUT_OFF_MESSAGE
            new = await ProofDevice.enroll(dev)
            assert (await new.call()).code == Code.CONTENT
            put = await new.call(Code.PUT, "/cfg", payload=b"1")
            assert put.code == Code.METHOD_NOT_ALLOWED  # the new scope applies
    finally:
        await gw.stop()
        gw.registry.close()
    records = [json.loads(x) for x in (gw.config.base_dir / "audit.log").read_text().splitlines()]
    uploads = [r["reason"] for r in records if r.get("event") == "authz-info"]
    assert uploads == ["ok", "token_cut_off", "ok"]
