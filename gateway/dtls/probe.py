"""A small DTLS-PSK CoAP *client* for probing a coaps:// server: health checks,
integration tests and the DTLS benchmark (RFC 7252 §9 over RFC 6347).

Many sessions share one tinydtls context and one timer; each session has its
own UDP socket (its own source port, so the server sees one peer per session)
and its own PSK identity. Requests are CON with RFC 7252 §4.2 retransmission
and a piggybacked or separate response. Sessions whose PSK or identity
tinydtls cannot take (PSKs over 16 bytes, identities over 32 bytes: RFC 9202
access tokens as identities), and sessions that ask for a Connection ID
(RFC 9146), run on the engine's own client (:mod:`dtls12.client`)
instead.

Not a device simulator (that lives in ``device_sim``, which must not import
the gateway); this exists so the gateway can be tested and measured from the
outside with a client that scales to thousands of sessions in one process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Callable

from aiocoap import CON, Message
from aiocoap.numbers.types import Type
from DTLSSocket import dtls

from dtls12.client import DtlsClient
from dtls12.errors import EngineError

from .tinydtls import (
    EVENT_CONNECTED,
    LEVEL_NOALERT,
    MAX_IDENTITY_LENGTH,
    MAX_PSK_LENGTH,
    PskStore,
    TickClock,
    weak_callback,
)

log = logging.getLogger(__name__)

_RECV_SIZE = 2048
_NO_IDENTITY = b"probe"
#: RFC 7252 §4.8 ACK_TIMEOUT, without the random factor (loopback tests).
_ACK_TIMEOUT = 2.0


class ProbeError(Exception):
    """A probe session failed: handshake refused or timed out, session closed,
    request timed out."""


class ProbeSession:
    """One DTLS session of a :class:`DtlsProbe`."""

    def __init__(self, probe: DtlsProbe, identity: bytes, psk: bytes, sock: socket.socket):
        self._probe = probe
        self.identity = identity
        self._psk = psk
        self._sock = sock
        self.local_port: int = sock.getsockname()[1]
        # tinydtls knows this session's server under a unique fake address.
        self._dtls_session = dtls.Session("::1", self.local_port)
        self.key = (self._dtls_session.addr, self._dtls_session.port)
        loop = asyncio.get_running_loop()
        self._connected: asyncio.Future[None] = loop.create_future()
        self._pending: dict[bytes, asyncio.Future[Message]] = {}
        self._mid = int.from_bytes(os.urandom(2), "big")
        self._token = int.from_bytes(os.urandom(4), "big")
        #: Set when the server sent close_notify or a fatal alert.
        self.closed_by_peer = asyncio.Event()
        self.alert: tuple[int, int] | None = None
        self.is_open = False
        self._muted = False
        self._on_datagram: Callable[[bytes], bool] | None = None
        #: The engine's client, for sessions tinydtls cannot run.
        self._client: DtlsClient | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def server_cid(self) -> bytes:
        """The Connection ID the server gave this session (b"": none)."""
        return self._client.server_cid if self._client is not None else b""

    def rebind(self) -> None:
        """Continue from a new source port, as after a NAT rebinding (engine
        sessions only: the session goes on if the server gave a CID)."""
        if self._client is None:
            raise ProbeError("only engine sessions can move")
        self._probe._rebind(self)

    def __repr__(self) -> str:
        return f"<ProbeSession :{self.local_port}>"

    async def request(self, message: Message, timeout: float = 10.0) -> Message:
        """Send ``message`` as a CON request and return the response."""
        if not self.is_open:
            raise ProbeError("session is not open")
        self._mid = (self._mid + 1) & 0xFFFF
        self._token = (self._token + 1) & 0xFFFFFFFF
        message.mtype = CON
        message.mid = self._mid
        message.token = self._token.to_bytes(4, "big")
        data = message.encode()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[message.token] = future
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wait = _ACK_TIMEOUT
        try:
            while True:
                self._probe._write(self, data)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ProbeError("request timed out")
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(wait, remaining))
                except TimeoutError:
                    wait *= 2
        finally:
            self._pending.pop(message.token, None)

    async def repeat(self, message: Message, timeout: float = 10.0) -> Message:
        """Send ``message``, already sent by :meth:`request`, once more with
        the same Message ID and token (a retransmission as the server sees
        it, RFC 7252 §4.5) and return the response that comes back."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[message.token] = future
        try:
            self._probe._write(self, message.encode())
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ProbeError("no response to the repeated message") from None
        finally:
            self._pending.pop(message.token, None)

    def send_raw(self, datagram: bytes) -> None:
        """Send bytes to the server outside DTLS (hostile-input tests)."""
        self._sock.send(datagram)

    async def close(self, *, notify: bool = True) -> None:
        """End the session: close_notify to the server if ``notify`` (else
        just vanish), then release the socket."""
        self._probe._close_session(self, notify=notify)

    # --- from the probe ---

    def _received_plaintext(self, data: bytes) -> None:
        try:
            message = Message.decode(data)
        except Exception:
            log.debug("unparsable CoAP message on %r", self)
            return
        if message.mtype == Type.CON and self.is_open:
            ack = Message(code=0)
            ack.mtype, ack.mid = Type.ACK, message.mid
            self._probe._write(self, ack.encode())
        if message.code == 0:  # empty ACK of a separate response
            return
        future = self._pending.get(message.token)
        if future is not None and not future.done():
            future.set_result(message)

    def _fail(self, exc: Exception) -> None:
        self.is_open = False
        if not self._connected.done():
            self._connected.set_exception(exc)
            # Retrieved by whoever awaits connect(); avoid "never retrieved".
            self._connected.exception()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)


class DtlsProbe:
    """DTLS-PSK client sessions to one ``server`` ``(host, port)``."""

    def __init__(self, server: tuple[str, int], *, source: str | None = None) -> None:
        """``source``: the local address every session binds (None: any)."""
        self._server = server
        self._source = source
        self._family = (
            socket.AF_INET6 if ipaddress.ip_address(server[0]).version == 6 else socket.AF_INET
        )
        self._loop = asyncio.get_running_loop()
        self._sessions: dict[tuple[str, int], ProbeSession] = {}
        self._current: ProbeSession | None = None
        self._store = PskStore(weak_callback(self._lookup, None))
        self._dtls: dtls.DTLS | None = dtls.DTLS(
            read=weak_callback(self._on_read, 0),
            write=weak_callback(self._on_write, 0),
            event=weak_callback(self._on_event, None),
            pskId=_NO_IDENTITY,
            pskStore=self._store,
        )
        self._ticks = TickClock()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def sessions(self) -> list[ProbeSession]:
        return list(self._sessions.values())

    async def connect(
        self,
        identity: bytes,
        psk: bytes,
        *,
        timeout: float = 10.0,
        local_port: int = 0,
        on_datagram: Callable[[bytes], bool] | None = None,
        connection_id: bool = False,
        retransmit_after: float | None = None,
    ) -> ProbeSession:
        """Open a session (handshake with cookie exchange) from ``local_port``
        (0: any). ``on_datagram`` sees each datagram from the server first;
        returning False drops it (tests use it to stall a handshake).
        ``connection_id``: offer RFC 9146 (the session can then
        :meth:`~ProbeSession.rebind`). ``retransmit_after``: the engine
        client's first retransmission timeout (RFC 6347 §4.2.4.1; it then
        doubles), on the engine client only (set with ``connection_id``)."""
        if self._dtls is None:
            raise ProbeError("probe is closed")
        if not psk or not identity:
            raise ProbeError("empty identity or PSK")
        on_engine = (
            connection_id
            or len(psk) > MAX_PSK_LENGTH
            or len(identity) > MAX_IDENTITY_LENGTH
            or b"\0" in identity
        )
        sock = self._socket(local_port)
        session = ProbeSession(self, identity, psk, sock)
        session._on_datagram = on_datagram
        if on_engine:
            session._client = DtlsClient(
                identity,
                psk,
                cid=b"" if connection_id else None,
                initial_retransmit=retransmit_after or _ACK_TIMEOUT / 2,
            )
        self._sessions[session.key] = session
        self._loop.add_reader(sock.fileno(), self._on_readable, session)
        try:
            if session._client is not None:
                self._engine_send(session, session._client.connect(self._loop.time()))
            else:
                self._enter(session)
                try:
                    # write() to an unknown peer starts a client handshake;
                    # unlike connect() it returns no Connection, whose
                    # finalizer would close the session when garbage collected.
                    self._dtls.write(session._dtls_session, b"")
                finally:
                    self._leave()
                self._drive_retransmissions()
            await asyncio.wait_for(asyncio.shield(session._connected), timeout)
        except BaseException as e:
            self._close_session(session, notify=False)
            if isinstance(e, TimeoutError):
                raise ProbeError("handshake timed out") from None
            raise
        return session

    async def close(self) -> None:
        """Close every session (close_notify) and the tinydtls context."""
        for count, session in enumerate(list(self._sessions.values()), 1):
            self._close_session(session, notify=True)
            if count % 50 == 0:
                # Pace the close_notify burst so a server sharing this event
                # loop (tests) drains its socket in between.
                await asyncio.sleep(0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._dtls is not None:
            self._dtls.pycb = {"read": _ignore, "write": _ignore, "event": _ignore}
            self._dtls.pskStore = {}
            self._dtls = None

    # --- internals ---

    def _socket(self, local_port: int) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            wildcard = "::" if self._family == socket.AF_INET6 else "0.0.0.0"
            sock.bind((self._source or wildcard, local_port))
            sock.connect(self._server)
        except BaseException:
            sock.close()
            raise
        return sock

    def _rebind(self, session: ProbeSession) -> None:
        self._loop.remove_reader(session._sock.fileno())
        session._sock.close()
        session._sock = self._socket(0)
        session.local_port = session._sock.getsockname()[1]
        self._loop.add_reader(session._sock.fileno(), self._on_readable, session)

    # --- sessions on the engine's client ---

    def _engine_send(self, session: ProbeSession, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            if session._muted:
                return
            try:
                session._sock.send(datagram)
            except OSError as e:
                log.debug("%r: send failed: %s", session, e)
        self._engine_timer(session)

    def _engine_timer(self, session: ProbeSession) -> None:
        client = session._client
        assert client is not None
        if session._timer is not None:
            session._timer.cancel()
            session._timer = None
        deadline = client.next_deadline()
        if deadline is not None and not client.established and not client.closed:
            session._timer = self._loop.call_at(deadline, self._engine_retransmit, session)

    def _engine_retransmit(self, session: ProbeSession) -> None:
        session._timer = None
        client = session._client
        if client is not None and self._sessions.get(session.key) is session:
            self._engine_send(session, client.handle_timer(self._loop.time()))

    def _engine_received(self, session: ProbeSession, data: bytes) -> None:
        client = session._client
        assert client is not None
        seen = len(client.received)
        try:
            out = client.receive(data, self._loop.time())
        except EngineError as e:
            log.debug("%r: %s", session, e)
            # after the plaintext of earlier datagrams, already scheduled: a
            # response and the close that follows it arrive in that order
            self._loop.call_soon(self._peer_closed, session)
            return
        self._engine_send(session, out)
        if client.established and not session._connected.done():
            session.is_open = True
            session._connected.set_result(None)
        for plaintext in client.received[seen:]:
            self._loop.call_soon(session._received_plaintext, plaintext)
        del client.received[:]
        if client.alerts:
            session.alert = client.alerts[-1]
        if client.closed:
            self._loop.call_soon(self._peer_closed, session)

    # --- sessions on tinydtls ---

    def _enter(self, session: ProbeSession) -> None:
        self._current = session
        assert self._dtls is not None
        # DTLSSocket reads the client identity from this attribute (a char*
        # into the bytes object, which the session keeps alive).
        self._dtls.pskId = session.identity

    def _leave(self) -> None:
        self._current = None
        self._store.forget()
        if self._dtls is not None:
            # Do not leave a pointer into a session that may be freed.
            self._dtls.pskId = _NO_IDENTITY

    def _lookup(self, identity: bytes) -> bytes | None:
        session = self._current
        if session is None or identity != session.identity:
            return None
        return session._psk

    def _write(self, session: ProbeSession, data: bytes) -> None:
        if self._dtls is None or not session.is_open:
            return
        if session._client is not None:
            self._engine_send(session, [session._client.send(data)])
            return
        self._enter(session)
        try:
            self._dtls.write(session._dtls_session, data)
        finally:
            self._leave()

    def _close_session(self, session: ProbeSession, *, notify: bool) -> None:
        if self._sessions.get(session.key) is not session:
            return
        # Without notify the session vanishes silently: tinydtls forgets the
        # peer, and whatever it wants to send (close_notify) goes nowhere.
        session._muted = not notify
        if session._timer is not None:
            session._timer.cancel()
            session._timer = None
        if session._client is not None:
            client = session._client
            if client.established and not client.closed:
                self._engine_send(session, [client.close()])
        elif self._dtls is not None:
            self._enter(session)
            try:
                self._dtls.resetPeer(session._dtls_session)
            finally:
                self._leave()
        del self._sessions[session.key]
        self._loop.remove_reader(session._sock.fileno())
        session._sock.close()
        session._fail(ProbeError("session closed"))

    def _on_readable(self, session: ProbeSession) -> None:
        for _ in range(64):
            try:
                data = session._sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ICMP port unreachable and the like
                log.debug("%r: %s", session, e)
                return
            if session._on_datagram is not None and not session._on_datagram(data):
                continue
            if session._client is not None:
                self._engine_received(session, data)
                if self._sessions.get(session.key) is not session:
                    return
                continue
            if self._dtls is None:
                return
            self._enter(session)
            try:
                self._dtls.handleMessage(session._dtls_session, data)
            finally:
                self._leave()
            if not session.is_open or not session._connected.done():
                self._drive_retransmissions()
            if self._sessions.get(session.key) is not session:
                return

    def _on_read(self, address: tuple[str, int], data: bytes) -> int:
        session = self._sessions.get(address)
        if session is not None:
            self._loop.call_soon(session._received_plaintext, data)
        return len(data)

    def _on_write(self, address: tuple[str, int], data: bytes) -> int:
        session = self._sessions.get(address)
        if session is not None and not session._muted:
            try:
                session._sock.send(data)
            except OSError as e:
                log.debug("%r: send failed: %s", session, e)
        return len(data)

    def _on_event(self, level: int, code: int) -> None:
        session = self._current
        if session is None:
            return
        if level == LEVEL_NOALERT:
            if code == EVENT_CONNECTED and not session._connected.done():
                session.is_open = True
                session._connected.set_result(None)
            return
        session.alert = (level, code)
        self._loop.call_soon(self._peer_closed, session)

    def _peer_closed(self, session: ProbeSession) -> None:
        session.closed_by_peer.set()
        self._close_session(session, notify=False)

    def _drive_retransmissions(self) -> None:
        if self._dtls is None:
            return
        next_tick = self._dtls.checkRetransmit()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if next_tick:
            delay = self._ticks.seconds_until(next_tick)
            delay = 0.5 if delay is None else min(max(delay, 0.001), 5.0)
            self._timer = self._loop.call_later(delay, self._drive_retransmissions)


def _ignore(*_args: object) -> int:
    return 0
