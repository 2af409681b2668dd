"""A UDP relay on loopback that forwards datagrams between DTLS clients and one
server and records every datagram's size and DTLS records (RFC 6347 §4.1):
how the firmware notes measure bytes on the wire without tcpdump.

Each client address gets its own upstream socket, so the server sees one peer
per client, as it would without the relay. Records are classified from their
13-byte headers: content type, and for unencrypted handshake records (epoch
0) the handshake message type. Encrypted records are only counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

__all__ = ["Datagram", "UdpRelay", "describe_records"]

_HEADER = 13  # type(1) version(2) epoch(2) sequence_number(6) length(2)
_CONTENT = {20: "ChangeCipherSpec", 21: "Alert", 22: "Handshake", 23: "ApplicationData"}
_HANDSHAKE = {
    1: "ClientHello",
    2: "ServerHello",
    3: "HelloVerifyRequest",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    16: "ClientKeyExchange",
    20: "Finished",
}


def describe_records(datagram: bytes) -> list[str]:
    """Names of the DTLS records in ``datagram``, with their sizes:
    ``"ClientHello(99)"``, ``"Finished(61, encrypted)"``,
    ``"ApplicationData(88)"``. A malformed tail is reported as
    ``"garbage(n)"``."""
    out = []
    i = 0
    while i < len(datagram):
        if len(datagram) - i < _HEADER:
            out.append(f"garbage({len(datagram) - i})")
            break
        ctype = datagram[i]
        epoch = int.from_bytes(datagram[i + 3 : i + 5], "big")
        length = int.from_bytes(datagram[i + 11 : i + 13], "big")
        size = _HEADER + length
        name = _CONTENT.get(ctype, f"type{ctype}")
        if ctype == 22 and epoch == 0 and length:
            name = _HANDSHAKE.get(datagram[i + _HEADER], f"handshake{datagram[i + _HEADER]}")
        elif ctype == 22:
            name = "Finished"  # the only encrypted handshake message in DTLS 1.2 PSK
        suffix = ", encrypted" if epoch > 0 and ctype != 23 else ""
        out.append(f"{name}({size}{suffix})")
        i += size
    return out


@dataclass(frozen=True)
class Datagram:
    """One forwarded datagram. ``direction`` is ``"c>s"`` (client to server)
    or ``"s>c"``; ``client`` is the client's source port."""

    direction: str
    client: int
    size: int
    records: tuple[str, ...]
    #: the relay did not forward it (see ``UdpRelay.drop``)
    dropped: bool = False

    @property
    def application_data(self) -> bool:
        return all(r.startswith("ApplicationData") for r in self.records)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.relay._record("s>c", self.client, data) and self.relay._front is not None:
            self.relay._front.sendto(data, self.client)


class _Front(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._from_client(data, addr)


@dataclass
class UdpRelay:
    """``await relay.start()`` returns the (host, port) clients should use
    instead of ``server``; ``relay.datagrams`` is everything forwarded so far."""

    server: tuple[str, int]
    host: str = "127.0.0.1"
    #: called with each datagram before it is forwarded; True drops it (to
    #: simulate a lost datagram)
    drop: Callable[[Datagram], bool] | None = None
    datagrams: list[Datagram] = field(default_factory=list)
    _front: asyncio.DatagramTransport | None = None
    _upstreams: dict[tuple[str, int], _Upstream] = field(default_factory=dict)
    _pending: dict[tuple[str, int], list[bytes]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Front(self), local_addr=(self.host, 0)
        )
        self._front = transport
        host, port = transport.get_extra_info("sockname")[:2]
        return host, port

    def _record(self, direction: str, client: tuple[str, int], data: bytes) -> bool:
        """Record a datagram; return whether to forward it."""
        d = Datagram(direction, client[1], len(data), tuple(describe_records(data)))
        if self.drop is not None and self.drop(d):
            d = dataclasses.replace(d, dropped=True)
        self.datagrams.append(d)
        return not d.dropped

    def _from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._record("c>s", addr, data):
            return
        up = self._upstreams.get(addr)
        if up is not None and up.transport is not None:
            up.transport.sendto(data)
            return
        queued = self._pending.get(addr)
        if queued is not None:  # upstream socket still being opened
            queued.append(data)
            return
        self._pending[addr] = [data]
        task = asyncio.get_running_loop().create_task(self._open(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        up = _Upstream(self, addr)
        await loop.create_datagram_endpoint(lambda: up, remote_addr=self.server)
        self._upstreams[addr] = up
        assert up.transport is not None
        for data in self._pending.pop(addr):
            up.transport.sendto(data)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for up in self._upstreams.values():
            if up.transport is not None:
                up.transport.close()
        self._upstreams.clear()
        if self._front is not None:
            self._front.close()
            self._front = None
