"""500 concurrent DTLS sessions from one process: every handshake and one
request each complete in bounded time, then everything is closed and nothing
(tasks, sockets, sessions) is left behind."""

from __future__ import annotations

import asyncio
import os

import aiocoap

from gateway.dtls import CloseReason
from gateway.dtls.probe import DtlsProbe, ProbeSession

from .conftest import DtlsHarnessFactory, dtls_get, dtls_wait_for

SESSIONS = 500
#: Handshakes started at once (all 500 sessions end up open together); the
#: server shares this event loop, so an unpaced burst would overflow a default
#: (208 KiB) socket buffer and wait for DTLS retransmissions.
HANDSHAKES_IN_FLIGHT = 100
#: Generous for 2 shared cores; measured ~1 s for handshakes + requests.
BUDGET_SECONDS = 30.0


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_500_concurrent_sessions_handshake_request_and_close_cleanly(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    loop = asyncio.get_running_loop()
    fds_before = _open_fds()
    tasks_before = asyncio.all_tasks()
    psks = {b"load-%03d" % i: b"psk-load-%07d" % i for i in range(SESSIONS)}
    h = await dtls_harness(psk_lookup=psks.get, max_handshakes=SESSIONS)
    probe = DtlsProbe(h.target())

    handshaking = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)

    async def connect(identity: bytes, psk: bytes) -> ProbeSession:
        async with handshaking:
            return await probe.connect(identity, psk, timeout=BUDGET_SECONDS)

    started = loop.time()
    sessions = await asyncio.gather(*(connect(identity, psk) for identity, psk in psks.items()))
    responses = await asyncio.gather(
        *(s.request(dtls_get(), timeout=BUDGET_SECONDS) for s in sessions)
    )
    elapsed = loop.time() - started

    assert elapsed < BUDGET_SECONDS
    assert len({s.local_port for s in sessions}) == SESSIONS
    for session, response in zip(sessions, responses, strict=True):
        assert response.code == aiocoap.CONTENT
        assert response.payload.split(b"|")[0] == session.identity
    stats = h.server.stats()
    assert (stats.sessions, stats.handshakes_ok, stats.handshakes_failed) == (SESSIONS, SESSIONS, 0)

    await probe.close()
    await dtls_wait_for(lambda: h.server.stats().sessions == 0, timeout=10.0)
    assert len(h.closed) == SESSIONS
    assert {reason for _, reason in h.closed} == {CloseReason.PEER_CLOSED}

    await h.shutdown()
    await dtls_wait_for(lambda: asyncio.all_tasks() - tasks_before <= {asyncio.current_task()})
    assert _open_fds() <= fds_before
