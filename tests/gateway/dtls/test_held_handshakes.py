"""Handshakes held on a pending PSK lookup (an RFC 9202 §3.3 kid identity
being fetched, RFC 4279 §2 lookup answering :data:`~dtls12.PSK_PENDING`),
counted by the real DTLS server on loopback: how many holds started, and how
many ended with the lookup still pending (exported as
``acegw_dtls_handshakes_held_total``, see tests/fleet/test_shared_tokens.py)."""

from __future__ import annotations

import asyncio

import pytest

from dtls12 import PSK_PENDING, PskPending
from gateway.dtls.probe import ProbeError
from tests.gateway.conftest import dtls_get, dtls_wait_for

RESUMED = b"kid-resumed"
NEVER = b"kid-never-found"
PSK = b"psk-of-a-kid-001"


class Lookup:
    """``RESUMED`` is pending until ``found`` is set; ``NEVER`` stays pending."""

    def __init__(self) -> None:
        self.found = False

    def __call__(self, identity: bytes) -> bytes | PskPending | None:
        if identity == RESUMED:
            return PSK if self.found else PSK_PENDING
        if identity == NEVER:
            return PSK_PENDING
        return None


async def test_the_server_counts_held_handshakes_and_expired_holds(dtls_harness):
    lookup = Lookup()
    harness = await dtls_harness(psk_lookup=lookup)
    server = harness.server

    # held, then resumed by the driver once the key is found
    connecting = asyncio.create_task(
        harness.probe().connect(RESUMED, PSK, connection_id=True, retransmit_after=30.0)
    )
    await dtls_wait_for(lambda: server.stats().handshakes_held == 1, timeout=10.0)
    assert server.stats().handshaking == 1 and not connecting.done()
    lookup.found = True
    assert server.retry_held(RESUMED) == 1
    session = await asyncio.wait_for(connecting, 10.0)
    assert (await session.request(dtls_get())).payload.split(b"|")[0] == RESUMED
    stats = server.stats()
    assert (stats.handshakes_ok, stats.handshakes_held, stats.holds_expired) == (1, 1, 0)

    # held until the hold ends (EngineConfig.psk_hold) with the lookup still
    # pending: fails as an unknown identity
    with pytest.raises(ProbeError):
        await harness.probe().connect(NEVER, PSK, connection_id=True, timeout=15.0)
    stats = server.stats()
    assert (stats.handshakes_held, stats.holds_expired) == (2, 1)
    assert stats.handshake_failures.get("unknown_identity") == 1
