"""A NAT on loopback for tests and benchmarks: a UDP relay between clients
and a server that drops a share of datagrams each way (seeded) and, like a
NAT whose binding expires (RFC 9146 §1), moves a client to a new source port
every ``rebind_every`` datagrams from it; and :func:`rebinding_run`, a device
holding an access token making proof-bearing requests through such a relay,
with or without a Connection ID.

Used by ``tests/dtls12/test_relays.py`` (the engine alone),
``tests/gateway/test_dtls_rebinding.py`` (the gateway) and
``bench.gateway_dtls`` (``cid_rebind_handshakes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from dataclasses import dataclass

import aiocoap
from aiocoap.optiontypes import OpaqueOption

from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.params import PROOF_OPTION
from tokens.proof import ProofedRequest, build_proof

from .probe import DtlsProbe, ProbeError, ProbeSession

__all__ = ["NatRelay", "RebindingRun", "rebinding_run"]

Address = tuple[str, int]


class NatRelay:
    """Forwards datagrams between clients and ``server`` (IPv4 loopback).
    ``drop``: share of datagrams lost in each direction; ``rebind_every``:
    after that many datagrams from a client, the socket it is relayed from
    (the source port the server sees) is replaced."""

    def __init__(
        self,
        server: Address,
        *,
        drop: float = 0.0,
        seed: int = 0,
        rebind_every: int | None = None,
    ) -> None:
        if rebind_every is not None and rebind_every < 1:
            raise ValueError("rebind_every must be at least 1")
        self._loop = asyncio.get_running_loop()
        self._server = server
        self._drop = drop
        self._rng = random.Random(seed)
        self._rebind_every = rebind_every
        self.front = self._bound()
        self._loop.add_reader(self.front.fileno(), self._from_client)
        self._upstreams: dict[Address, socket.socket] = {}
        self._counts: dict[Address, int] = {}
        #: datagrams lost on purpose, forwarded, and source-port changes
        self.dropped = 0
        self.forwarded = 0
        self.rebinds = 0

    @property
    def address(self) -> Address:
        """Where clients send to."""
        host, port = self.front.getsockname()
        return host, port

    def close(self) -> None:
        for sock in self._upstreams.values():
            self._close(sock)
        self._upstreams.clear()
        self._close(self.front)

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

    def _upstream(self, client: Address) -> socket.socket:
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
            for _ in range(256):  # bounded per wake-up
                data, client = self.front.recvfrom(4096)
                if not self._lost():
                    self.forwarded += 1
                    self._upstream(client).sendto(data, self._server)

    def _from_server(self, sock: socket.socket, client: Address) -> None:
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            for _ in range(256):
                data = sock.recv(4096)
                if not self._lost():
                    self.forwarded += 1
                    self.front.sendto(data, client)

    def _close(self, sock: socket.socket) -> None:
        self._loop.remove_reader(sock.fileno())
        sock.close()


@dataclass
class RebindingRun:
    """What a device saw through a rebinding NAT."""

    #: requests made and answered 2.05
    requests: int = 0
    answered: int = 0
    #: handshakes the device made (1 = the first one only)
    handshakes: int = 0
    #: 4.01 + Echo answers it had to repeat a request for (RFC 9175 §2.4)
    echo_rounds: int = 0
    #: source-port changes the relay made
    rebinds: int = 0

    @property
    def extra_handshakes(self) -> int:
        return max(self.handshakes - 1, 0)


class _TokenHolder:
    """A device's access token and PoP key (RFC 9200 §5.8, §5.10.1) and the
    proof-bearing requests it makes (the Proof option, docs/design.md "Wire
    formats")."""

    def __init__(self, key: object) -> None:
        self.key = key
        self.piv = 0

    def message(self, path: tuple[str, ...], echo: bytes | None) -> aiocoap.Message:
        self.piv += 1
        covered = ProofedRequest(code=int(aiocoap.GET), path=path)
        proof = build_proof(self.key, covered, self.piv, echo)  # type: ignore[arg-type]
        msg = aiocoap.Message(code=aiocoap.GET, uri_path=path)
        if echo is not None:
            msg.opt.echo = echo
        msg.opt.add_option(OpaqueOption(PROOF_OPTION, proof))
        return msg


async def _post(session: ProbeSession, path: str, payload: bytes) -> aiocoap.Message:
    msg = aiocoap.Message(code=aiocoap.POST, uri_path=(path,), payload=payload, content_format=19)
    return await session.request(msg, timeout=10.0)


async def rebinding_run(
    server: Address,
    identity: bytes,
    psk: bytes,
    *,
    connection_id: bool,
    requests: int,
    rebind_every: int,
    path: tuple[str, ...] = ("whoami",),
    request_timeout: float = 1.0,
) -> RebindingRun:
    """A device gets a token and uploads it (directly, not through the NAT),
    then makes ``requests`` proof-bearing GETs of ``path`` through a
    :class:`NatRelay` that moves it every ``rebind_every`` datagrams. A
    request unanswered within ``request_timeout`` (the session lost its
    address) costs a new handshake; a 4.01 with Echo is repeated once with
    the Echo. Raises :class:`ProbeError` when a request fails for another
    reason."""
    run = RebindingRun()
    direct = DtlsProbe(server)
    try:
        session = await direct.connect(identity, psk, connection_id=connection_id)
        resp = await _post(session, "token", TokenRequest().encode())
        if resp.code != aiocoap.CREATED:
            raise ProbeError(f"/token answered {resp.code}")
        tr = TokenResponse.decode(resp.payload)
        holder = _TokenHolder(cnf_mod.decode(tr.cnf).key)  # type: ignore[arg-type]
        resp = await _post(session, "authz-info", tr.access_token)
        if resp.code != aiocoap.CREATED:
            raise ProbeError(f"/authz-info answered {resp.code}")
    finally:
        await direct.close()
    relay = NatRelay(server, rebind_every=rebind_every)
    probe = DtlsProbe(relay.address)
    try:
        session = await probe.connect(identity, psk, connection_id=connection_id)
        run.handshakes = 1

        async def send(echo: bytes | None) -> aiocoap.Message:
            nonlocal session
            for attempt in range(3):
                try:
                    return await session.request(holder.message(path, echo), request_timeout)
                except ProbeError:
                    if attempt == 2:
                        raise
                    # the session lost its address: a new handshake from here
                    await session.close(notify=False)
                    session = await probe.connect(identity, psk, connection_id=connection_id)
                    run.handshakes += 1
            raise AssertionError("unreachable")

        while run.requests < requests:
            run.requests += 1
            resp = await send(None)
            if resp.code == aiocoap.UNAUTHORIZED and resp.opt.echo is not None:
                run.echo_rounds += 1
                resp = await send(resp.opt.echo)
            if resp.code != aiocoap.CONTENT:
                raise ProbeError(f"request {run.requests} answered {resp.code}")
            run.answered += 1
    finally:
        await probe.close()
        run.rebinds = relay.rebinds
        relay.close()
    return run
