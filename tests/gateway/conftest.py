"""Fixtures for the DTLS server tests (every name here starts with ``dtls_``).

- ``dtls_harness``: a factory for a :mod:`gateway.dtls` server on loopback
  (port 0) serving ``/whoami``, with a PSK table and recorded hooks; shut down
  at teardown.
- ``DtlsRawPeer``: a peer that speaks DTLS through its own tinydtls context
  but only as far as the test says (to stall a handshake, replay a
  ClientHello, send garbage).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace

import aiocoap
import pytest
from aiocoap import resource
from DTLSSocket import dtls

from dtls12 import wire
from gateway.dtls import (
    CloseReason,
    DtlsRemote,
    DtlsServer,
    DtlsServerConfig,
    HandshakeOutcome,
    create_server_context,
)
from gateway.dtls.probe import DtlsProbe
from gateway.dtls.records import HandshakeType, first_handshake_type

#: Identities and PSKs every harness knows (PSKs at most 16 bytes: the
#: probe's tinydtls client).
DTLS_PSKS = {
    b"dev-1": b"psk-of-device-01",
    b"dev-2": b"psk-of-device-02",
    b"dev-3": b"psk-of-device-03",
    b"dev-4": b"psk-of-device-04",
}


class DtlsWhoAmI(resource.Resource):
    """``GET /whoami``: ``identity|hostinfo|hostinfo_local``; remembers the
    remotes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.remotes: list[DtlsRemote] = []

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        remote = request.remote
        self.remotes.append(remote)
        payload = b"|".join(
            [remote.psk_identity, remote.hostinfo.encode(), remote.hostinfo_local.encode()]
        )
        return aiocoap.Message(code=aiocoap.CONTENT, payload=payload)


class DtlsBlob(resource.Resource):
    """``GET /blob``: 3072 bytes (block-wise, RFC 7959); ``POST``: the length
    received."""

    BODY = bytes(range(256)) * 12

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.BODY)

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CHANGED, payload=b"%d" % len(request.payload))


class DtlsSlow(resource.Resource):
    """``GET /slow``: answers once ``release`` is set; ``entered`` is set when
    a request arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        self.entered.set()
        await self.release.wait()
        return aiocoap.Message(code=aiocoap.CONTENT, payload=b"late")


@dataclass
class DtlsHarness:
    """A running server plus what its hooks recorded."""

    context: aiocoap.Context
    server: DtlsServer
    whoami: DtlsWhoAmI
    slow: DtlsSlow
    psks: dict[bytes, bytes]
    closed: list[tuple[DtlsRemote, CloseReason]] = field(default_factory=list)
    handshakes: list[HandshakeOutcome] = field(default_factory=list)
    probes: list[DtlsProbe] = field(default_factory=list)
    shut_down: bool = False

    @property
    def port(self) -> int:
        return self.server.address[1]

    def target(self, host: str = "127.0.0.1") -> tuple[str, int]:
        return (host, self.port)

    def probe(self, host: str = "127.0.0.1") -> DtlsProbe:
        probe = DtlsProbe(self.target(host))
        self.probes.append(probe)
        return probe

    async def shutdown(self) -> None:
        """Shut the server context down (once)."""
        if not self.shut_down:
            self.shut_down = True
            await self.context.shutdown()

    async def close(self) -> None:
        for probe in self.probes:
            await probe.close()
        await self.shutdown()


DtlsHarnessFactory = Callable[..., Awaitable[DtlsHarness]]


@pytest.fixture
async def dtls_harness() -> AsyncIterator[DtlsHarnessFactory]:
    """``await dtls_harness(**config_fields)`` starts a server; ``psk_lookup=``
    replaces the PSK table lookup, ``admit_identity=`` adds a lockout check."""
    harnesses: list[DtlsHarness] = []

    async def make(
        *,
        psk_lookup: Callable[[bytes], bytes | None] | None = None,
        admit_identity: Callable[[bytes, tuple[object, ...]], bool] | None = None,
        **overrides: object,
    ) -> DtlsHarness:
        config = replace(DtlsServerConfig(host="127.0.0.1", port=0), **overrides)  # type: ignore[arg-type]
        site = resource.Site()
        whoami = DtlsWhoAmI()
        site.add_resource(["whoami"], whoami)
        site.add_resource(["blob"], DtlsBlob())
        slow = DtlsSlow()
        site.add_resource(["slow"], slow)
        psks = dict(DTLS_PSKS)
        closed: list[tuple[DtlsRemote, CloseReason]] = []
        handshakes: list[HandshakeOutcome] = []
        context, server = await create_server_context(
            site,
            config,
            psk_lookup or (lambda identity: psks.get(identity)),
            on_session_closed=lambda remote, reason: closed.append((remote, reason)),
            on_handshake=handshakes.append,
            admit_identity=admit_identity,
        )
        harness = DtlsHarness(context, server, whoami, slow, psks, closed, handshakes)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        await harness.close()


def dtls_get(path: str = "whoami") -> aiocoap.Message:
    return aiocoap.Message(code=aiocoap.GET, uri_path=[path])


async def dtls_wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` on the event loop until true (for effects that
    depend on datagrams in flight); fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class DtlsRawPeer:
    """One UDP socket with its own tinydtls client context, driven step by
    step by the test."""

    def __init__(self, server: tuple[str, int], identity: bytes, psk: bytes) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(server[0]).version == 6 else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(server)
        self.identity = identity
        self.outgoing: list[bytes] = []
        self.events: list[tuple[int, int]] = []
        self._session = dtls.Session("::1", 5684)
        self._dtls: dtls.DTLS | None = dtls.DTLS(
            read=lambda _address, data: len(data),
            write=self._write,
            event=lambda level, code: self.events.append((level, code)),
            pskId=identity,
            pskStore={identity: psk},
        )

    def _write(self, _address: tuple[str, int], data: bytes) -> int:
        self.outgoing.append(data)
        return len(data)

    def client_hello(self) -> bytes:
        """The first (cookie-less) ClientHello this context would send."""
        assert self._dtls is not None
        self._dtls.write(self._session, b"")
        return self.outgoing.pop(0)

    def feed(self, datagram: bytes) -> list[bytes]:
        """Give ``datagram`` to the client context; return what it sends."""
        assert self._dtls is not None
        self.outgoing.clear()
        self._dtls.handleMessage(self._session, bytes(datagram))
        sent, self.outgoing = self.outgoing, []
        return sent

    def send(self, datagram: bytes) -> None:
        self.sock.send(datagram)

    async def receive(self, timeout: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv(self.sock, 2048), timeout)
        except TimeoutError:
            return None

    async def until_server_hello_done(self, timeout: float = 5.0) -> None:
        """Run the cookie exchange and stop after the server's first flight:
        the server now holds a half-open handshake for this address."""
        self.send(self.client_hello())
        hello_verify = await self.receive(timeout)
        assert hello_verify is not None, "no HelloVerifyRequest"
        assert first_handshake_type(hello_verify) == HandshakeType.HELLO_VERIFY_REQUEST
        for datagram in self.feed(hello_verify):
            self.send(datagram)
        while True:
            datagram = await self.receive(timeout)
            assert datagram is not None, "no ServerHelloDone"
            if HandshakeType.SERVER_HELLO_DONE in dtls_handshake_types(datagram):
                return

    def close(self) -> None:
        if self._dtls is not None:
            self._dtls.resetPeer(self._session)
            self._dtls.pycb = {"read": _zero, "write": _zero, "event": _zero}
            self._dtls = None
        with contextlib.suppress(OSError):
            self.sock.close()


def dtls_handshake_types(datagram: bytes) -> list[int]:
    """The msg_type of every plaintext handshake message in ``datagram`` (a
    server may pack a whole flight into one datagram, RFC 6347 §4.1.1)."""
    records, _ = wire.parse_records(datagram, 0)
    return [
        fragment.msg_type
        for record in records
        if record.content_type == wire.ContentType.HANDSHAKE and record.epoch == 0
        for fragment in wire.parse_handshake_fragments(record.fragment)
    ]


def _zero(*_args: object) -> int:
    return 0


@pytest.fixture
def dtls_raw_peers() -> Iterator[Callable[..., DtlsRawPeer]]:
    """``dtls_raw_peers(server_address, identity=..., psk=...)`` makes a
    :class:`DtlsRawPeer`; all are closed at teardown."""
    peers: list[DtlsRawPeer] = []

    def make(
        server: tuple[str, int], identity: bytes = b"dev-1", psk: bytes = DTLS_PSKS[b"dev-1"]
    ) -> DtlsRawPeer:
        peer = DtlsRawPeer(server, identity, psk)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()
