"""DTLS-PSK client sessions for many simulated devices in one process
(RFC 6347 DTLS 1.2, RFC 4279 PSK, TLS_PSK_WITH_AES_128_CCM_8), driven by
DTLSSocket 0.2.3 (tinydtls 0.8.6) on an asyncio loop.

Shape, decided after measuring (see ``docs/simulator.md``):

* **One tinydtls context for all devices of a worker.** tinydtls keys its
  peers by the ``session_t`` address it is handed and only ever uses that
  address to call back ``write``; it never sends by itself. Every device
  connection gets a unique *synthetic* key (an address in ``fd00:5e55::/32``
  that is never put on the wire) and the ``write`` callback maps the key to
  the device's own UDP socket, which is ``connect()``-ed to the gateway. So
  each device has its own source port and its own DTLS session (the gateway
  sees ordinary separate clients) while the process holds a single context.
  One context also avoids resetting tinydtls' process-wide clock, which every
  new ``dtls.DTLS`` does.
* The PSK identity (``DTLS.pskId``, a ``char *`` that borrows the bytes it is
  given) and the PSK store answer for the connection on whose behalf the
  library is called: they are set before each call, and the identity bytes
  stay referenced by the connection. Callbacks are only ever called
  synchronously from inside such a call, so they know their connection.
* Nothing calls into tinydtls from inside a callback: callbacks record what
  happened; events are delivered after the library returns.
* tinydtls retransmits handshake flights only when ``checkRetransmit()`` is
  called; it is polled every :data:`RETRANSMIT_POLL` seconds while any
  handshake is in progress.

A connection in *raw* mode is not handed to tinydtls at all: its datagrams go
to :meth:`SessionEvents.raw_datagram` (used by the handshake-flood attack,
which writes DTLS records by hand, :func:`client_hello`).

A device whose PSK or identity tinydtls cannot take (PSKs above
:data:`MAX_PSK_LENGTH` bytes, identities above :data:`MAX_IDENTITY_LENGTH`:
RFC 4279 §5.3 allows 64 and 128) runs its session on the sans-I/O DTLS 1.2
PSK client of the ``dtls12`` package instead (same cipher suite, extended
master secret), driven by the same pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol

from DTLSSocket import dtls

from dtls12.client import DtlsClient

log = logging.getLogger(__name__)

#: tinydtls event code for "handshake finished" (level 0).
EVENT_CONNECTED = 0x01DE
#: Alert levels (RFC 5246 §7.2).
ALERT_WARNING = 1
ALERT_FATAL = 2
#: Largest PSK and identity tinydtls 0.8.6 handles: DTLSSocket copies the key
#: without a bound check into a 16-byte buffer; 17 and 18 bytes were measured
#: to work (the gateway registry generates 18-character PSKs), 19+ fail or
#: corrupt memory, so longer keys are refused before they reach the library.
MAX_PSK_LENGTH = 18
MAX_IDENTITY_LENGTH = 32
#: What a session on the engine's client takes (RFC 4279 §5.3).
MAX_LONG_PSK_LENGTH = 64
MAX_LONG_IDENTITY_LENGTH = 128
#: Seconds between ``checkRetransmit`` calls while handshakes are in progress.
RETRANSMIT_POLL = 0.2
_RECV_SIZE = 4096
_RECV_BATCH = 32

#: Connection states.
HANDSHAKING = "handshaking"
CONNECTED = "connected"
CLOSED = "closed"
RAW = "raw"


class SessionEvents(Protocol):
    """What the pool reports; called from the event loop, never from inside
    tinydtls."""

    def dtls_connected(self, conn: Connection) -> None: ...

    def dtls_data(self, conn: Connection, data: bytes) -> None: ...

    def dtls_closed(self, conn: Connection, reason: str) -> None: ...

    def raw_datagram(self, conn: Connection, data: bytes) -> None: ...


class Connection:
    """One device's DTLS session (or raw socket) towards the gateway."""

    __slots__ = (
        "dtls_session",
        "engine",
        "fd",
        "identity",
        "key",
        "owner",
        "psk",
        "sock",
        "state",
        "timer",
    )

    def __init__(
        self,
        owner: Any,
        sock: socket.socket,
        identity: bytes,
        psk: bytes,
        dtls_session: Any,
        key: tuple[str, int],
        state: str,
    ) -> None:
        self.owner = owner
        self.sock = sock
        self.fd = sock.fileno()
        self.identity = identity
        self.psk = psk
        self.dtls_session = dtls_session
        self.key = key
        self.state = state
        #: the engine's client for keys tinydtls cannot take, else None
        self.engine: Any = None
        self.timer: asyncio.TimerHandle | None = None

    @property
    def local_port(self) -> int:
        try:
            return int(self.sock.getsockname()[1])
        except OSError:
            return 0

    def __repr__(self) -> str:  # never the PSK
        return f"<Connection {self.state} port={self.local_port}>"


class _PskStore:
    """The dict-like store DTLSSocket asks (``keys()``, ``in``, ``[]``) for
    the connection currently being served."""

    __slots__ = ("identity", "psk")

    def __init__(self) -> None:
        self.identity = b""
        self.psk = b""

    def keys(self) -> _PskStore:
        return self

    def __contains__(self, identity: object) -> bool:
        return identity == self.identity

    def __getitem__(self, identity: bytes) -> bytes:
        return self.psk


class DtlsClientPool:
    """Many client connections to one gateway address, one tinydtls context.

    ``server`` is the gateway's ``(host, port)``; IPv4 and IPv6 literals work.
    """

    def __init__(self, server: tuple[str, int], events: SessionEvents) -> None:
        self._loop = asyncio.get_running_loop()
        info = socket.getaddrinfo(server[0], server[1], type=socket.SOCK_DGRAM)[0]
        self.family = info[0]
        self.server = info[4]
        self._events = events
        self._store = _PskStore()
        self._identity_ref = b""
        self._by_key: dict[tuple[str, int], Connection] = {}
        self._handshaking = 0
        self._next_key = 1
        self._muted = False
        self._pending: list[tuple[str, Connection, bytes]] = []
        self._current: Connection | None = None
        self._poll: asyncio.TimerHandle | None = None
        self._closed = False
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.send_errors = 0
        self._ctx: Any = dtls.DTLS(
            read=self._on_read,
            write=self._on_write,
            event=self._on_event,
            pskId=b"",
            pskStore=self._store,
        )

    # --- tinydtls callbacks (record only; never raise) ------------------------

    def _on_write(self, addr: tuple[str, int], data: bytes) -> int:
        try:
            conn = self._by_key.get(addr)
            if conn is None or self._muted:
                return len(data)
            try:
                conn.sock.send(data)
                self.datagrams_sent += 1
            except OSError:
                self.send_errors += 1
            return len(data)
        except Exception:  # pragma: no cover - must not reach Cython
            log.exception("write callback failed")
            return -1

    def _on_read(self, addr: tuple[str, int], data: bytes) -> int:
        conn = self._by_key.get(addr)
        if conn is not None:
            self._pending.append(("data", conn, bytes(data)))
        return 0

    def _on_event(self, level: int, code: int) -> None:
        conn = self._current
        if conn is None:
            return
        if level == 0 and code == EVENT_CONNECTED:
            self._pending.append(("connected", conn, b""))
        elif level == ALERT_FATAL:
            self._pending.append(("closed", conn, b"fatal_alert_%d" % code))
        elif level == ALERT_WARNING and code == 0:
            self._pending.append(("closed", conn, b"close_notify"))

    # --- calls into tinydtls ------------------------------------------------------

    def _enter(self, conn: Connection) -> None:
        self._current = conn
        self._identity_ref = conn.identity
        self._ctx.pskId = conn.identity
        self._store.identity = conn.identity
        self._store.psk = conn.psk

    def _leave(self) -> None:
        self._current = None
        self._store.psk = b""
        pending, self._pending = self._pending, []
        for kind, conn, data in pending:
            if conn.state == CLOSED:
                continue
            if kind == "data":
                if conn.state == CONNECTED:
                    self._events.dtls_data(conn, data)
            elif kind == "connected":
                if conn.state == HANDSHAKING:
                    conn.state = CONNECTED
                    self._handshaking -= 1
                    self._events.dtls_connected(conn)
            else:
                reason = data.decode()
                self._muted = True  # free what tinydtls may still hold, silently
                try:
                    self._ctx.resetPeer(conn.dtls_session)
                finally:
                    self._muted = False
                self._forget(conn)
                self._events.dtls_closed(conn, reason)

    # --- public API ----------------------------------------------------------------

    def new_socket(self, bind: str | None = None) -> socket.socket:
        """A non-blocking UDP socket connected to the gateway, with its own
        source port (on ``bind``, a local address, if given). Raises OSError
        (e.g. EMFILE) when none can be had."""
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if bind is not None:
                sock.bind((bind, 0))
            sock.connect(self.server)
        except OSError:
            sock.close()
            raise
        return sock

    def open(
        self,
        owner: Any,
        identity: bytes,
        psk: bytes,
        *,
        sock: socket.socket | None = None,
        raw: bool = False,
    ) -> Connection:
        """Start a DTLS-PSK handshake for ``owner`` (or, with ``raw``, only
        open the socket). ``sock`` reuses a socket (same source port) from an
        earlier connection of the same device."""
        if self._closed:
            raise RuntimeError("pool closed")
        long_key = len(psk) > MAX_PSK_LENGTH or len(identity) > MAX_IDENTITY_LENGTH
        if not raw and (len(psk) > MAX_LONG_PSK_LENGTH or len(identity) > MAX_LONG_IDENTITY_LENGTH):
            raise ValueError("PSK longer than 64 bytes or identity longer than 128 bytes")
        if not raw and not long_key and b"\x00" in identity:
            raise ValueError("DTLSSocket cannot send a PSK identity containing NUL")
        if sock is None:
            sock = self.new_socket()
        if not raw and long_key:
            return self._open_engine(owner, sock, identity, psk)
        n = self._next_key
        self._next_key += 1
        session = dtls.Session(f"fd00:5e55::{(n >> 16) & 0xFFFF:x}:{n & 0xFFFF:x}", 5684)
        key = (session.addr, session.port)
        conn = Connection(owner, sock, identity, psk, session, key, RAW if raw else HANDSHAKING)
        self._by_key[key] = conn
        self._loop.add_reader(conn.fd, self._readable, conn)
        if not raw:
            self._handshaking += 1
            self._enter(conn)
            try:
                self._ctx.write(session, b"\x00")  # no peer yet: sends ClientHello
            finally:
                self._leave()
            self._schedule_poll()
        return conn

    def _open_engine(
        self, owner: Any, sock: socket.socket, identity: bytes, psk: bytes
    ) -> Connection:
        n = self._next_key
        self._next_key += 1
        key = (f"engine:{n}", 0)
        conn = Connection(owner, sock, identity, psk, None, key, HANDSHAKING)
        conn.engine = DtlsClient(identity, psk)
        self._by_key[key] = conn
        self._handshaking += 1
        self._loop.add_reader(conn.fd, self._readable, conn)
        self._engine_out(conn, conn.engine.connect(self._loop.time()))
        return conn

    def _engine_out(self, conn: Connection, datagrams: list[bytes]) -> None:
        """Send what the engine's client produced, (re)arm its timer, and
        report what changed: established, data, closed."""
        for datagram in datagrams:
            try:
                conn.sock.send(datagram)
                self.datagrams_sent += 1
            except OSError:
                self.send_errors += 1
        client = conn.engine
        if conn.state == HANDSHAKING and client.established:
            conn.state = CONNECTED
            self._handshaking -= 1
            self._events.dtls_connected(conn)
        if client.received and conn.state == CONNECTED:
            received, client.received = client.received, []
            for data in received:
                if conn.state != CONNECTED:
                    break
                self._events.dtls_data(conn, data)
        if client.closed and conn.state in (HANDSHAKING, CONNECTED):
            level, code = client.alerts[-1] if client.alerts else (ALERT_FATAL, 0)
            reason = (
                "close_notify" if (level, code) == (ALERT_WARNING, 0) else f"fatal_alert_{code}"
            )
            self._forget(conn)
            self._events.dtls_closed(conn, reason)
            return
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        deadline = client.next_deadline()
        if deadline is not None and conn.state == HANDSHAKING:
            conn.timer = self._loop.call_at(deadline, self._engine_timer, conn)

    def _engine_timer(self, conn: Connection) -> None:
        conn.timer = None
        if conn.state == HANDSHAKING:
            self._engine_out(conn, conn.engine.handle_timer(self._loop.time()))

    def send(self, conn: Connection, data: bytes) -> bool:
        """Send application data on an established session."""
        if conn.state != CONNECTED:
            return False
        if conn.engine is not None:
            try:
                conn.sock.send(conn.engine.send(data))
                self.datagrams_sent += 1
            except OSError:
                self.send_errors += 1
            return True
        self._enter(conn)
        try:
            ok = self._ctx.write(conn.dtls_session, data) > 0
        finally:
            self._leave()
        return bool(ok)

    def send_raw(self, conn: Connection, data: bytes) -> None:
        """Send a datagram as is from the connection's socket (raw mode)."""
        try:
            conn.sock.send(data)
            self.datagrams_sent += 1
        except OSError:
            self.send_errors += 1

    def close(self, conn: Connection, *, abrupt: bool = False, keep_socket: bool = False) -> None:
        """End a connection: with close_notify (RFC 5246 §7.2.1), or, with
        ``abrupt``, silently (a device that lost power). ``keep_socket``
        leaves the socket open for :meth:`open` to reuse (same source port);
        the caller then owns it."""
        if conn.state == CLOSED:
            if not keep_socket:
                _close_socket(conn.sock)
            return
        if conn.engine is not None:
            if conn.state == CONNECTED and not abrupt:
                with contextlib.suppress(OSError):
                    conn.sock.send(conn.engine.close())
        elif conn.state != RAW:
            self._enter(conn)
            self._muted = abrupt
            try:
                self._ctx.resetPeer(conn.dtls_session)
            finally:
                self._muted = False
                self._leave()
        self._forget(conn)
        if not keep_socket:
            _close_socket(conn.sock)

    def _forget(self, conn: Connection) -> None:
        if conn.state == HANDSHAKING:
            self._handshaking -= 1
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.state = CLOSED
        self._by_key.pop(conn.key, None)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(conn.fd)
        if conn.fd >= 0 and conn.sock.fileno() < 0:
            conn.fd = -1

    @property
    def connections(self) -> int:
        return len(self._by_key)

    @property
    def handshaking(self) -> int:
        return self._handshaking

    def shutdown(self) -> None:
        """Close every connection (with close_notify) and the context."""
        for conn in list(self._by_key.values()):
            self.close(conn)
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self._closed = True

    # --- I/O ---------------------------------------------------------------------------

    def _readable(self, conn: Connection) -> None:
        sock = conn.sock
        for _ in range(_RECV_BATCH):
            try:
                data = sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:  # ICMP port unreachable (connected socket)
                if conn.state in (HANDSHAKING, CONNECTED):
                    self._unreachable(conn)
                    return
                continue
            except OSError:
                continue
            self.datagrams_received += 1
            if conn.state == RAW:
                self._events.raw_datagram(conn, data)
            elif conn.engine is not None:
                if conn.state != CLOSED:
                    self._engine_out(conn, conn.engine.receive(data, self._loop.time()))
            elif conn.state != CLOSED:
                self._enter(conn)
                try:
                    self._ctx.handleMessage(conn.dtls_session, data)
                finally:
                    self._leave()
            if conn.state == CLOSED:
                return

    def _unreachable(self, conn: Connection) -> None:
        """Nothing listens at the gateway's address: the session is over."""
        if conn.engine is None:
            self._muted = True  # nobody to tell
            try:
                self._ctx.resetPeer(conn.dtls_session)
            finally:
                self._muted = False
        self._forget(conn)
        self._events.dtls_closed(conn, "port_unreachable")

    def _schedule_poll(self) -> None:
        if self._poll is None and self._handshaking > 0 and not self._closed:
            self._poll = self._loop.call_later(RETRANSMIT_POLL, self._retransmit)

    def _retransmit(self) -> None:
        self._poll = None
        self._current = None
        self._ctx.checkRetransmit()
        self._leave()
        self._schedule_poll()


def _close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


# --- hand-written DTLS records for the handshake-flood attack ---------------------------

#: DTLS 1.2 on the wire (RFC 6347 §4.1).
DTLS12 = b"\xfe\xfd"
#: TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655).
PSK_AES128_CCM8 = b"\xc0\xa8"
CONTENT_HANDSHAKE = 22
HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
HS_HELLO_VERIFY_REQUEST = 3


def client_hello(cookie: bytes = b"", *, sequence: int = 0, random: bytes | None = None) -> bytes:
    """One DTLS 1.2 record holding a ClientHello (RFC 6347 §4.2.1, RFC 5246
    §7.4.1.2) offering only TLS_PSK_WITH_AES_128_CCM_8, with ``cookie``."""
    rnd = os.urandom(32) if random is None else random
    body = b"".join(
        (
            DTLS12,
            rnd,
            b"\x00",  # session_id
            bytes((len(cookie),)) + cookie,
            b"\x00\x02" + PSK_AES128_CCM8,
            b"\x01\x00",  # compression: null
        )
    )
    n = len(body)
    handshake = b"".join(
        (
            bytes((HS_CLIENT_HELLO,)),
            n.to_bytes(3, "big"),
            sequence.to_bytes(2, "big"),
            b"\x00\x00\x00",
            n.to_bytes(3, "big"),
            body,
        )
    )
    header = struct.pack("!B2sH6sH", CONTENT_HANDSHAKE, DTLS12, 0, sequence.to_bytes(6, "big"), 0)
    return header[:-2] + len(handshake).to_bytes(2, "big") + handshake


def handshake_messages(datagram: bytes) -> list[tuple[int, bytes]]:
    """The (type, body) of each unencrypted handshake message in a datagram
    (epoch 0 records only; anything else is skipped). Never raises."""
    out: list[tuple[int, bytes]] = []
    i = 0
    n = len(datagram)
    while i + 13 <= n:
        ctype = datagram[i]
        epoch = (datagram[i + 3] << 8) | datagram[i + 4]
        length = (datagram[i + 11] << 8) | datagram[i + 12]
        record = datagram[i + 13 : i + 13 + length]
        i += 13 + length
        if ctype != CONTENT_HANDSHAKE or epoch != 0 or len(record) < 12:
            continue
        j = 0
        while j + 12 <= len(record):
            htype = record[j]
            hlen = int.from_bytes(record[j + 9 : j + 12], "big")
            out.append((htype, bytes(record[j + 12 : j + 12 + hlen])))
            j += 12 + hlen
    return out


def hello_verify_cookie(body: bytes) -> bytes | None:
    """The cookie of a HelloVerifyRequest body (RFC 6347 §4.2.1), or None."""
    if len(body) < 3 or body[2] + 3 > len(body):
        return None
    return bytes(body[3 : 3 + body[2]])


Clock = Callable[[], float]
