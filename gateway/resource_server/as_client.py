"""The gateway's own CoAP client session to an external AS, over DTLS 1.2
PSK (RFC 9202 §3, the AS-RS channel of RFC 9200 §5.9 and RFC 9770 §6):
the engine's sans-I/O client (:mod:`dtls12.client`) on one UDP socket.

Requests are CON with RFC 7252 §4.2 retransmission; an Observe registration
(RFC 7641 §3.1) delivers its first response and every notification to a
callback until the session ends. Received CON messages are acknowledged.
Everything from the AS is parsed defensively: a bad datagram is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from aiocoap import CON, GET, Message
from aiocoap.numbers.types import Type

from dtls12.client import DtlsClient
from dtls12.errors import EngineError
from gateway.errors import GatewayError
from tokens.params import CoapCode

log = logging.getLogger(__name__)

#: RFC 7252 §4.8 ACK_TIMEOUT (no random factor: one peer, a private channel).
ACK_TIMEOUT = 2.0


class AsUnreachable(GatewayError):
    """The AS did not complete a handshake or answer in time, or closed."""

    coap_code = CoapCode.SERVICE_UNAVAILABLE
    reason = "as_unreachable"


def coaps_address(uri: str) -> tuple[str, int]:
    """``coaps://host:port`` -> (host, port); 5684 when no port (RFC 7252 §6.2)."""
    parts = urlsplit(uri)
    if parts.scheme != "coaps" or not parts.hostname:
        raise AsUnreachable(f"not a coaps URI: {uri[:80]}")
    return parts.hostname, parts.port or 5684


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: AsSession) -> None:
        self._session = session

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._session._datagram(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("AS session socket error: %s", exc)
        self._session._refused(exc)


class AsSession:
    """One DTLS session to the AS at ``address`` as ``identity``."""

    def __init__(self, address: tuple[str, int], identity: bytes, psk: bytes) -> None:
        self.address = address
        self._identity = identity
        self._psk = psk
        self._client: DtlsClient | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._connected: asyncio.Future[None] | None = None
        self._pending: dict[bytes, asyncio.Future[Message]] = {}
        self._observers: dict[bytes, Callable[[Message], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._mid = int.from_bytes(os.urandom(2), "big")
        self._token = int.from_bytes(os.urandom(4), "big")
        #: set when the session ended (peer alert, close, error)
        self.closed = asyncio.Event()

    async def connect(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), remote_addr=self.address
        )
        self._client = DtlsClient(self._identity, self._psk, initial_retransmit=ACK_TIMEOUT / 2)
        self._connected = loop.create_future()
        self._send(self._client.connect(loop.time()))
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), timeout)
        except TimeoutError:
            self.close()
            raise AsUnreachable(
                f"no DTLS handshake with {self.address[0]}:{self.address[1]}"
            ) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None and self._client.established and not self._client.closed:
            with contextlib.suppress(EngineError, OSError):
                self._send([self._client.close()])
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        self._fail(AsUnreachable("session closed"))

    def _refused(self, exc: Exception) -> None:
        """An ICMP error (nothing listens there): a handshake in progress
        fails at once instead of waiting out its timeout."""
        if self._connected is not None and not self._connected.done():
            why = getattr(exc, "strerror", None) or str(exc)
            self._fail(AsUnreachable(f"{self.address[0]}:{self.address[1]}: {why}"))

    def _fail(self, exc: Exception) -> None:
        self.closed.set()
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(exc)
            self._connected.exception()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._observers.clear()

    # --- DTLS driving ---

    def _send(self, datagrams: list[bytes]) -> None:
        if self._transport is None:
            return
        for d in datagrams:
            self._transport.sendto(d)
        self._arm()

    def _arm(self) -> None:
        client = self._client
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if client is None or client.established or client.closed:
            return
        deadline = client.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, self._retransmit)

    def _retransmit(self) -> None:
        self._timer = None
        if self._client is not None and not self.closed.is_set():
            self._send(self._client.handle_timer(asyncio.get_running_loop().time()))

    def _datagram(self, data: bytes) -> None:
        client = self._client
        if client is None or self.closed.is_set():
            return
        try:
            out = client.receive(data, asyncio.get_running_loop().time())
        except EngineError as exc:
            log.debug("AS session: %s", exc)
            if not client.established:
                return
            self._fail(AsUnreachable("DTLS error from the AS"))
            return
        self._send(out)
        if client.established and self._connected is not None and not self._connected.done():
            self._connected.set_result(None)
        received, client.received = client.received, []
        for plaintext in received:
            self._coap(plaintext)
        if client.closed:
            self._fail(AsUnreachable("the AS closed the session"))

    # --- CoAP ---

    def _coap(self, data: bytes) -> None:
        try:
            message = Message.decode(data)
        except Exception:  # aiocoap raises several types on garbage
            log.debug("unparsable CoAP message from the AS")
            return
        if message.mtype == Type.CON and self._client is not None:
            ack = Message(code=0)
            ack.mtype, ack.mid = Type.ACK, message.mid
            with contextlib.suppress(EngineError):
                self._send([self._client.send(ack.encode())])
        if message.code == 0:
            return
        token = bytes(message.token)
        future = self._pending.get(token)
        if future is not None and not future.done():
            future.set_result(message)
            return
        callback = self._observers.get(token)
        if callback is not None:
            callback(message)

    def _next(self, message: Message) -> Message:
        self._mid = (self._mid + 1) & 0xFFFF
        self._token = (self._token + 1) & 0xFFFFFFFF
        message.mtype = CON
        message.mid = self._mid
        message.token = self._token.to_bytes(4, "big")
        return message

    async def request(self, message: Message, timeout: float = 10.0) -> Message:
        """Send ``message`` (CON, retransmitted) and return the response."""
        client = self._client
        if client is None or not client.established or self.closed.is_set():
            raise AsUnreachable("no session to the AS")
        message = self._next(message)
        record = client.send(message.encode())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        token = bytes(message.token)
        self._pending[token] = future
        deadline = loop.time() + timeout
        wait = ACK_TIMEOUT
        try:
            while True:
                self._send([record])
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AsUnreachable("the AS did not answer in time")
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(wait, remaining))
                except TimeoutError:
                    wait *= 2
        finally:
            self._pending.pop(token, None)

    async def observe(
        self,
        path: str,
        query: tuple[str, ...],
        on_message: Callable[[Message], None],
        timeout: float = 10.0,
    ) -> Message:
        """GET with Observe: 0 (RFC 7641 §3.1); returns the first response;
        later notifications go to ``on_message`` until the session ends."""
        message = Message(code=GET, observe=0)
        message.opt.uri_path = tuple(s for s in path.split("/") if s)
        if query:
            message.opt.uri_query = query
        # the callback is registered under the token the request will carry
        first_token = ((self._token + 1) & 0xFFFFFFFF).to_bytes(4, "big")
        self._observers[first_token] = on_message
        try:
            return await self.request(message, timeout)
        except BaseException:
            self._observers.pop(first_token, None)
            raise


__all__ = ["AsSession", "AsUnreachable", "coaps_address"]
