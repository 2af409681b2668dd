"""Shared pieces for the DTLS engine tests: an in-memory client/server pair on
an injected clock, a tiny CoAP responder, a served endpoint on loopback and an
asyncio driver for the engine's own client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import pytest

from dtls12 import (
    ApplicationData,
    DtlsServerEngine,
    EngineConfig,
    Event,
    SessionEstablished,
)
from dtls12.client import DtlsClient
from gateway.dtls.endpoint import DtlsEndpoint

#: 32-byte printable PSK and 128-byte identity (libcoap's -k/-u take text).
PSK = b"0123456789abcdef0123456789abcdef"
IDENTITY = b"device-" + b"i" * 121
#: tinydtls in DTLSSocket: identity <= 32 bytes, PSK <= 16 bytes.
TINY_IDENTITY = b"tiny-device"
TINY_PSK = b"0123456789abcdef"
#: For openssl s_client: a 255-byte identity and a binary PSK given in hex.
LONG_IDENTITY = b"L" * 255
HEX_PSK = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
PSKS = {IDENTITY: PSK, TINY_IDENTITY: TINY_PSK, LONG_IDENTITY: HEX_PSK, b"dev-1": PSK}
ADDRESS = ("192.0.2.1", 40000)


@dataclass
class Pair:
    """A server engine and one client, wired in memory (aioquic-style
    ``transfer``); ``now`` is the injected clock."""

    engine: DtlsServerEngine
    client: DtlsClient
    address: object = ADDRESS
    now: float = 0.0
    events: list[Event] = field(default_factory=list)
    to_client: list[bytes] = field(default_factory=list)

    def to_server(self, datagrams: Iterable[bytes], address: object | None = None) -> None:
        for datagram in datagrams:
            self.engine.receive_datagram(datagram, address or self.address, self.now)
        self.collect()

    def collect(self) -> None:
        for datagram, _ in self.engine.datagrams_to_send():
            self.to_client.append(datagram)
        self.events += self.engine.events()

    def deliver(self) -> list[bytes]:
        """Give the client everything the server sent; return its answers."""
        out: list[bytes] = []
        pending, self.to_client = self.to_client, []
        for datagram in pending:
            out += self.client.receive(datagram, self.now)
        return out

    def handshake(self) -> None:
        out = self.client.connect(self.now)
        for _ in range(8):
            self.to_server(out)
            out = self.deliver()
            if not out:
                break
        assert self.client.established, self.events

    def tick(self, now: float) -> None:
        self.now = now
        self.engine.handle_timer(now)
        self.collect()

    def established(self) -> list[SessionEstablished]:
        return [e for e in self.events if isinstance(e, SessionEstablished)]

    def of_type(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def make_pair() -> Callable[..., Pair]:
    def make(config: EngineConfig | None = None, **client: object) -> Pair:
        engine = DtlsServerEngine(config or EngineConfig(), PSKS.get, now=0.0)
        identity = client.pop("identity", IDENTITY)
        psk = client.pop("psk", PSK)
        return Pair(engine, DtlsClient(identity, psk, **client))  # type: ignore[arg-type]

    return make


def coap_reply(request: bytes) -> bytes | None:
    """A piggybacked 2.05 "ok" for a confirmable request (RFC 7252 §3, §5.2.1)."""
    if len(request) < 4 or request[0] >> 6 != 1 or (request[0] >> 4) & 3 != 0:
        return None
    token_length = request[0] & 0x0F
    return (
        bytes((0x60 | token_length, 0x45))
        + request[2:4]
        + request[4 : 4 + token_length]
        + (b"\xffok")
    )


@dataclass
class Served:
    """An endpoint on loopback answering CoAP GETs, recording its events."""

    endpoint: DtlsEndpoint
    events: list[Event] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.endpoint.address[1]

    def of_type(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., asyncio.Future[Served]]]:
    endpoints: list[DtlsEndpoint] = []

    async def start(config: EngineConfig | None = None, host: str = "127.0.0.1") -> Served:
        served: Served | None = None

        def on_event(endpoint: DtlsEndpoint, event: Event) -> None:
            assert served is not None
            served.events.append(event)
            if isinstance(event, ApplicationData):
                reply = coap_reply(event.data)
                if reply is not None:
                    endpoint.send(event.session, reply)

        endpoint = await DtlsEndpoint.serve(config or EngineConfig(), PSKS.get, on_event, host=host)
        served = Served(endpoint)
        endpoints.append(endpoint)
        return served

    yield start  # type: ignore[misc]
    for endpoint in endpoints:
        endpoint.close()


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` on the loop (bounded)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class ClientDriver:
    """The engine's own client on a real UDP socket (its flights retransmit
    on the loop's clock). ``rebind()`` moves it to a new source port."""

    def __init__(self, client: DtlsClient, server: tuple[str, int]) -> None:
        self.client = client
        self.server = server
        self._loop = asyncio.get_running_loop()
        self.sock = self._socket()
        self.ports = [self.sock.getsockname()[1]]

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._readable, sock)
        return sock

    def rebind(self) -> None:
        self._close_socket()
        self.sock = self._socket()
        self.ports.append(self.sock.getsockname()[1])

    def _readable(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            while True:
                data = sock.recv(4096)
                self.send_all(self.client.receive(data, self._loop.time()))

    def send_all(self, datagrams: Iterable[bytes]) -> None:
        for datagram in datagrams:
            with contextlib.suppress(OSError):
                self.sock.sendto(datagram, self.server)

    async def handshake(self, timeout: float = 20.0) -> None:
        self.send_all(self.client.connect(self._loop.time()))
        end = self._loop.time() + timeout
        while not self.client.established:
            assert self._loop.time() < end, "handshake did not complete"
            assert not self.client.closed, f"handshake failed: {self.client.alerts}"
            await asyncio.sleep(0.02)
            self.send_all(self.client.handle_timer(self._loop.time()))

    async def request(self, payload: bytes, timeout: float = 20.0, resend: float = 1.0) -> bytes:
        """Send ``payload`` until a new datagram arrives (bounded)."""
        before = len(self.client.received)
        end = self._loop.time() + timeout
        while len(self.client.received) == before:
            assert self._loop.time() < end, "no response"
            self.send_all([self.client.send(payload)])
            wake = self._loop.time() + resend
            while len(self.client.received) == before and self._loop.time() < wake:
                await asyncio.sleep(0.01)
        return self.client.received[before]

    def _close_socket(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def close(self) -> None:
        self._close_socket()


#: A confirmable CoAP GET /x (RFC 7252 §3) the responder answers with 2.05 "ok".
GET_REQUEST = bytes((0x42, 0x01, 0x12, 0x34, 0xAB, 0xCD, 0xB1)) + b"x"
