"""The engine on real UDP behind two relays on loopback
(:class:`gateway.dtls.nat_relay.NatRelay`): one that drops 20 % of datagrams
each way (seeded), one that moves the client to a new source port every few
datagrams, as a NAT rebinding does (RFC 9146 §1)."""

from __future__ import annotations

import asyncio

from dtls12 import (
    AddressChanged,
    EngineConfig,
    HandshakeFailed,
    SessionEstablished,
)
from dtls12.client import DtlsClient
from gateway.dtls.nat_relay import NatRelay

from .conftest import GET_REQUEST, IDENTITY, PSK, ClientDriver


async def test_handshakes_and_requests_complete_through_a_20_percent_lossy_relay(serve) -> None:
    served = await serve(EngineConfig(initial_retransmit=0.2, max_retransmit=1.0))
    relay = NatRelay(("127.0.0.1", served.port), drop=0.2, seed=23)
    drivers = [
        ClientDriver(DtlsClient(IDENTITY, PSK, initial_retransmit=0.2), relay.address)
        for _ in range(4)
    ]
    try:
        await asyncio.gather(*(d.handshake(timeout=30) for d in drivers))
        for _ in range(5):
            replies = await asyncio.gather(
                *(d.request(GET_REQUEST, timeout=30, resend=0.3) for d in drivers)
            )
            assert all(r.endswith(b"\xffok") for r in replies)
    finally:
        for driver in drivers:
            driver.close()
        relay.close()
    assert relay.dropped > 0
    assert len(served.of_type(SessionEstablished)) == 4
    assert served.endpoint.engine.counters["retransmitted_flights"] > 0 or any(
        d.client.retransmissions for d in drivers
    )


async def test_with_cid_a_rebinding_nat_costs_no_new_handshake(serve) -> None:
    served = await serve()
    relay = NatRelay(("127.0.0.1", served.port), rebind_every=4)
    driver = ClientDriver(DtlsClient(IDENTITY, PSK, cid=b""), relay.address)
    try:
        await driver.handshake()
        for _ in range(12):
            reply = await driver.request(GET_REQUEST, timeout=10)
            assert reply.endswith(b"\xffok")
    finally:
        driver.close()
        relay.close()
    assert relay.rebinds >= 3
    assert len(served.of_type(SessionEstablished)) == 1  # zero new handshakes
    assert len(served.of_type(AddressChanged)) == relay.rebinds
    assert not served.of_type(HandshakeFailed)


async def test_without_cid_each_rebinding_costs_a_new_handshake(serve) -> None:
    """The behaviour CID removes, measured: requests from the new port reach
    no session; the client only gets through after a new handshake."""
    served = await serve()
    relay = NatRelay(("127.0.0.1", served.port), rebind_every=6)
    handshakes = 0
    answered = 0
    driver = ClientDriver(DtlsClient(IDENTITY, PSK), relay.address)
    try:
        for _ in range(12):
            try:
                if not driver.client.established:
                    await driver.handshake(timeout=3)
                    handshakes += 1
                await driver.request(GET_REQUEST, timeout=0.6, resend=0.3)
                answered += 1
            except AssertionError:
                driver.client = DtlsClient(IDENTITY, PSK)  # lost: start over
    finally:
        driver.close()
        relay.close()
    assert handshakes > 1 and relay.rebinds >= 2
    assert len(served.of_type(SessionEstablished)) == handshakes
    assert served.endpoint.engine.counters["unknown_peer"] > 0
    assert answered < 12
