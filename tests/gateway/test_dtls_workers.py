"""Connection IDs across workers: ``acegw serve --workers 2`` on one port;
a device with a CID moves to a new source port before every request, so the
kernel's SO_REUSEPORT hash sends some of its datagrams to the worker that does
not hold its session. That worker hands them to the owner (the first CID
byte) through the supervisor: every request is answered on the one session
(RFC 9146 §6), with no new handshake on either worker."""

from __future__ import annotations

import socket
from pathlib import Path

import aiocoap

from gateway.dtls.probe import DtlsProbe
from tests.ops.conftest import (
    ACEGW,
    add_devices,
    free_port,
    gateway_env,
    init_state,
    serving,
    value,
)

REQUESTS = 24


async def test_a_moved_device_is_served_by_the_worker_owning_its_cid(tmp_path: Path) -> None:
    state = init_state(tmp_path / "state")
    ((identity, psk),) = add_devices(state, 1, "dev-", "/whoami:GET")
    assert len(psk) == 32  # the generated default
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    args = [*ACEGW, "serve", "--dir", str(state), "--workers", "2"]
    async with serving(args, gateway_env(udp, http), tmp_path / "gw.log", udp, http) as served:
        probe = DtlsProbe(served.target)
        try:
            session = await probe.connect(identity.encode(), psk, connection_id=True)
            owner = session.server_cid[0]
            codes = []
            for _ in range(REQUESTS):
                session.rebind()
                response = await session.request(
                    aiocoap.Message(code=aiocoap.GET, uri_path=("whoami",)), timeout=5
                )
                codes.append(response.code)
        finally:
            await probe.close()
        samples = await served.scrape()
    assert owner in (0, 1)
    # Without a token /whoami answers 4.01: the session carried every request.
    assert codes == [aiocoap.UNAUTHORIZED] * REQUESTS
    handshakes = {
        w: value(samples, "acegw_dtls_handshakes_total", worker=w, outcome="ok") for w in "01"
    }
    assert handshakes == {str(owner): 1, str(1 - owner): 0}, handshakes
    # 24 new source ports over SO_REUSEPORT: some landed on the other worker
    # (all on the owner: 2**-24), which handed them over to the owner.
    assert value(samples, "acegw_dtls_handed_over_total", worker=str(owner)) > 0
