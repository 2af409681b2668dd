"""The engine on real UDP behind two relays on loopback: one that drops 20 %
of datagrams each way (seeded), one that moves the client to a new source port
every few datagrams, as a NAT rebinding does (RFC 9146 §1)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket

from dtls12 import (
    AddressChanged,
    EngineConfig,
    HandshakeFailed,
    SessionEstablished,
)
from dtls12.client import DtlsClient

from .conftest import GET_REQUEST, IDENTITY, PSK, ClientDriver


class Relay:
    """Forwards datagrams between clients and a server. ``drop``: share of
    datagrams lost in each direction; ``rebind_every``: after that many
    datagrams from a client, its upstream socket (the source port the server
    sees) is replaced."""

    def __init__(
        self,
        server: tuple[str, int],
        *,
        drop: float = 0.0,
        seed: int = 0,
        rebind_every: int | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = server
        self._drop = drop
        self._rng = random.Random(seed)
        self._rebind_every = rebind_every
        self.front = self._bound()
        self._loop.add_reader(self.front.fileno(), self._from_client)
        self._upstreams: dict[tuple[str, int], socket.socket] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self.dropped = 0
        self.forwarded = 0
        self.rebinds = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.front.getsockname()
        return host, port

    @staticmethod
    def _bound() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock

    def _lost(self) -> bool:
        if self._drop and self._rng.random() < self._drop:
            self.dropped += 1
            return True
        return False

    def _upstream(self, client: tuple[str, int]) -> socket.socket:
        sock = self._upstreams.get(client)
        count = self._counts.get(client, 0) + 1
        self._counts[client] = count
        due = self._rebind_every is not None and count % self._rebind_every == 0
        if sock is not None and due:
            self._close(sock)
            sock = None
            self.rebinds += 1
        if sock is None:
            sock = self._bound()
            self._upstreams[client] = sock
            self._loop.add_reader(sock.fileno(), self._from_server, sock, client)
        return sock

    def _from_client(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, client = self.front.recvfrom(4096)
                if not self._lost():
                    self.forwarded += 1
                    self._upstream(client).sendto(data, self._server)

    def _from_server(self, sock: socket.socket, client: tuple[str, int]) -> None:
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            while True:
                data = sock.recv(4096)
                if not self._lost():
                    self.forwarded += 1
                    self.front.sendto(data, client)

    def _close(self, sock: socket.socket) -> None:
        self._loop.remove_reader(sock.fileno())
        sock.close()

    def close(self) -> None:
        for sock in self._upstreams.values():
            self._close(sock)
        self._upstreams.clear()
        self._close(self.front)


async def test_handshakes_and_requests_complete_through_a_20_percent_lossy_relay(serve) -> None:
    served = await serve(EngineConfig(initial_retransmit=0.2, max_retransmit=1.0))
    relay = Relay(("127.0.0.1", served.port), drop=0.2, seed=23)
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
    relay = Relay(("127.0.0.1", served.port), rebind_every=4)
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
    relay = Relay(("127.0.0.1", served.port), rebind_every=6)
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
