"""No hidden I/O on the request path: a DTLS handshake, a token request, a
token upload and proof-bearing requests run no SQLite statement on the
registry's connection; the registry's memory is moved by housekeeping only
(it applies the change log), and then a change from another process counts."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiocoap
import pytest
from aiocoap.numbers.codes import Code

from gateway.registry.registry import Registry
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from tests.integration.conftest import DEVICE_ID, DEVICE_PSK, ProofDevice, device, gateway_config

SECOND_ID = "sensor-2"
SECOND_PSK = b"sensor-2-psk-xyz"


@pytest.fixture
async def quiet_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A started gateway whose housekeeping task is stopped (the test runs
    housekeeping itself), with two registered devices."""
    state = tmp_path / "state"
    assert cli_main(["init", "--dir", str(state)], out=io.StringIO()) == 0
    gw = Gateway(gateway_config(state))
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    gw.registry.add(SECOND_ID, psk=SECOND_PSK, scope="/whoami:GET")
    await gw.start()
    assert gw._housekeeping is not None
    gw._housekeeping.cancel()
    try:
        yield gw
    finally:
        await gw.stop()
        gw.registry.close()


class Statements:
    """Every SQL statement run on one SQLite connection (sqlite3's trace hook)."""

    def __init__(self, registry: Registry) -> None:
        self.seen: list[str] = []
        self._db = registry.store._db  # type: ignore[attr-defined]
        self._db.set_trace_callback(self.seen.append)

    def close(self) -> None:
        self._db.set_trace_callback(None)


async def test_handshake_token_upload_and_requests_run_no_sqlite_statement(quiet_gateway):
    gw = quiet_gateway
    trace = Statements(gw.registry)
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            pd = await ProofDevice.enroll(dev)  # handshake, /token, /authz-info
            first = await dev.request(pd.message())
            assert first.code == Code.UNAUTHORIZED and first.opt.echo
            assert (await dev.request(pd.message(echo=first.opt.echo))).code == Code.CONTENT
            for _ in range(5):
                assert (await dev.request(pd.message())).code == Code.CONTENT
        async with device(gw, b"nobody", b"x" * 16) as stranger:  # an unknown identity
            with pytest.raises(Exception):  # noqa: B017 - the handshake fails, whatever aiocoap raises
                await stranger.request(pd.message(), timeout=3)
        assert trace.seen == [], trace.seen
        gw.housekeeping(gw.clock())  # the instrument works: housekeeping reads the change log
        assert any("changelog" in s for s in trace.seen)
    finally:
        trace.close()


async def test_another_process_change_counts_once_housekeeping_applied_it(quiet_gateway):
    gw = quiet_gateway
    with Registry(gw.registry.path, gw.registry._key) as admin:  # another process's view
        admin.disable(SECOND_ID)
    assert gw.registry.psk_for(SECOND_ID) == SECOND_PSK  # memory: not yet applied
    gw.housekeeping(gw.clock())
    assert gw.registry.psk_for(SECOND_ID) is None
    trace = Statements(gw.registry)
    try:
        async with device(gw, SECOND_ID.encode(), SECOND_PSK) as dev:
            with pytest.raises(Exception):  # noqa: B017 - refused handshake
                await dev.request(
                    aiocoap.Message(code=aiocoap.GET, uri=dev.base + "/whoami"), timeout=3
                )
        assert trace.seen == []
    finally:
        trace.close()
