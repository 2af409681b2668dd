"""The libcoap walk-through tells its failures apart where the gateway
allows: nothing listening ("no answer from HOST:PORT"), a refused handshake
(a wrong PSK, an unknown or disabled identity: one alert for all, RFC 4279
§2), and a 4.01 whose diagnostic says locked out or client disabled."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_notes import walkthrough
from firmware_notes.walkthrough import Pdu, WalkError, refusal
from gateway.resource_server.token_intake import CUT_OFF_MESSAGE
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from tests.integration.conftest import gateway_config

pytestmark = pytest.mark.interop

PSK = "walk-failure-psk-0123456789"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    state = tmp_path / "state"
    assert cli_main(["init", "--dir", str(state)], out=io.StringIO()) == 0
    gw = Gateway(gateway_config(state))
    gw.registry.add("walker", psk=PSK.encode(), scope="/whoami:GET")
    gw.registry.add("sleeper", psk=PSK.encode(), scope="/whoami:GET", enabled=False)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
        gw.registry.close()


async def walk(port: int, client_id: str, psk: str, tmp_path: Path) -> str:
    with pytest.raises(WalkError) as failed:
        await walkthrough.run("127.0.0.1", port, client_id, psk, workdir=tmp_path, timeout=30.0)
    return str(failed.value)


async def test_no_gateway_is_no_answer(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    message = await walk(port, "walker", PSK, tmp_path)
    assert (
        message == f"token: no answer from 127.0.0.1:{port} (is the gateway running on that port?)"
    )


async def test_wrong_psk_unknown_and_disabled_are_a_refused_handshake(gateway, tmp_path):
    port = gateway.address[1]
    for client_id, psk in (("walker", "not-the-psk"), ("nobody", PSK), ("sleeper", PSK)):
        message = await walk(port, client_id, psk, tmp_path)
        assert message.startswith(f"token: handshake refused by 127.0.0.1:{port}"), message
        assert "wrong PSK or unknown identity" in message


def test_diagnostics_of_a_refusal_are_named():
    def pdu(payload: str) -> Pdu:
        return Pdu("ACK", "4.01", "1", "", "", payload)

    assert "locked out" in refusal(pdu("temporarily locked out after repeated failures"))
    assert "client disabled" in refusal(pdu("client disabled"))
    cut = refusal(pdu(CUT_OFF_MESSAGE))
    assert "get a new token" in cut and "client disabled" not in cut
    assert refusal(pdu("token expired")) == "4.01 'token expired'"
