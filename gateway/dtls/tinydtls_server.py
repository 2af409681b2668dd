"""A DTLS-PSK server transport on tinydtls 0.8.6 through DTLSSocket, the
baseline ``bench.gateway_dtls`` measures the engine against (CoAP over DTLS,
RFC 7252 §9; DTLS 1.2, RFC 6347; PSK, RFC 4279). Same API as
:class:`gateway.dtls.server.DtlsServer`.

One UDP socket bound exactly where configured (wildcards included, with
IP_PKTINFO / IPV6_PKTINFO so replies leave from the address a request was sent
to), one tinydtls context for all peers, one timer for handshake
retransmissions, handshake timeouts and idle timeouts. It plugs into aiocoap
below the message layer (as an :class:`aiocoap.interfaces.MessageInterface`),
so resources are ordinary :class:`aiocoap.resource.Site` resources and
``request.remote`` is a :class:`~gateway.dtls.remote.DtlsRemote` naming the
authenticated PSK identity.

No call into tinydtls is made from inside a tinydtls callback: callbacks only
record what happened (:class:`_Call`); sessions change and CoAP messages are
dispatched after the library returns.
"""

from __future__ import annotations

import asyncio
import logging

import aiocoap
from aiocoap import interfaces
from aiocoap.util import hostportjoin
from DTLSSocket import dtls

from . import records
from .config import DtlsServerConfig
from .interface import (
    DtlsTransport,
    HandshakeHook,
    HandshakeOutcome,
    IdentityCheck,
    PskLookup,
    SessionClosedHook,
    server_context,
)
from .remote import DtlsRemote, hostinfo, identity_label
from .session import CloseReason, Expiry, HandshakeFailure, Session, SessionState, SessionTable
from .stats import Counters, DtlsStats
from .tinydtls import (
    EVENT_CONNECTED,
    LEVEL_NOALERT,
    MAX_PSK_LENGTH,
    PskStore,
    TickClock,
    new_session,
    weak_callback,
)
from .udp import Cmsg, SockAddr, UdpEndpoint

log = logging.getLogger(__name__)


#: Retransmission polling interval when tinydtls' clock cannot be read.
_RETRANSMIT_POLL = 0.5


class _PeerSession(Session):
    """A table session plus what the transport needs to reach the peer."""

    __slots__ = ("dtls_key", "dtls_session", "local", "remote", "sockaddr")

    def __init__(self, sockaddr: SockAddr, now: float, local: Cmsg | None) -> None:
        super().__init__(sockaddr, now)
        self.sockaddr = sockaddr
        self.dtls_session, self.dtls_key = new_session(sockaddr)
        #: Ancillary data choosing our source address (wildcard binds only).
        self.local = local
        self.remote: DtlsRemote | None = None


class _Call:
    """What tinydtls reported through its callbacks during one call for one
    peer."""

    __slots__ = (
        "active",
        "alert",
        "client_hello",
        "connected",
        "failed",
        "identity",
        "identity_refused",
        "identity_rejected",
        "plaintexts",
        "server_hello",
        "session",
    )

    def __init__(self) -> None:
        self.active = False
        self.session: _PeerSession | None = None
        self.reset()

    def reset(self) -> None:
        self.connected = False
        self.client_hello = False
        self.failed = False
        self.server_hello = False
        self.alert: tuple[int, int] | None = None
        self.identity: bytes | None = None
        self.identity_rejected = False
        self.identity_refused = False
        self.plaintexts: list[bytes] = []


class TinydtlsServer(DtlsTransport):
    """The DTLS-PSK server socket and its sessions. Create it with
    :func:`create_server_context` (or :meth:`create` inside aiocoap)."""

    def __init__(
        self,
        mman: interfaces.MessageManager,
        config: DtlsServerConfig,
        psk_lookup: PskLookup,
        *,
        on_session_closed: SessionClosedHook | None = None,
        on_handshake: HandshakeHook | None = None,
        admit_identity: IdentityCheck | None = None,
    ) -> None:
        self._mman: interfaces.MessageManager | None = mman
        self._config = config
        self._psk_lookup = psk_lookup
        self._on_session_closed = on_session_closed
        self._on_handshake = on_handshake
        self._admit_identity = admit_identity
        self._loop = asyncio.get_running_loop()
        self._table = SessionTable(
            max_sessions=config.max_sessions,
            max_handshakes=config.max_handshakes,
            max_handshakes_per_address=config.max_handshakes_per_address,
            idle_timeout=config.idle_timeout,
            handshake_timeout=config.handshake_timeout,
            stall_after=config.handshake_stall,
        )
        self._by_dtls_key: dict[tuple[str, int], _PeerSession] = {}
        self._counters = Counters()
        self._call = _Call()
        self._psk_store = PskStore(weak_callback(self._lookup_psk, None))
        self._ticks = TickClock()
        self._dtls: dtls.DTLS | None = dtls.DTLS(
            read=weak_callback(self._on_read, 0),
            write=weak_callback(self._on_write, 0),
            event=weak_callback(self._on_event, None),
            pskId=b"",
            pskStore=self._psk_store,
        )
        self._udp = UdpEndpoint(config, self._datagram_received, self._counters)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._retransmit_at: float | None = None
        self._closing = False
        #: False while draining (graceful shutdown): ClientHellos from peers
        #: without a session are dropped (counted as ``not_accepting``);
        #: established sessions are served on.
        self.accepting = True

    # --- construction ------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        mman: interfaces.MessageManager,
        config: DtlsServerConfig,
        psk_lookup: PskLookup,
        *,
        on_session_closed: SessionClosedHook | None = None,
        on_handshake: HandshakeHook | None = None,
        admit_identity: IdentityCheck | None = None,
    ) -> TinydtlsServer:
        """Bind the socket and start serving (aiocoap message-interface
        constructor)."""
        self = cls(
            mman,
            config,
            psk_lookup,
            on_session_closed=on_session_closed,
            on_handshake=on_handshake,
            admit_identity=admit_identity,
        )
        self._udp.open()
        return self

    # --- public API -------------------------------------------------------------------

    def stats(self) -> DtlsStats:
        """Counters and gauges for metrics."""
        return self._counters.snapshot(
            sessions=self._table.established_count,
            handshaking=self._table.handshaking_count,
        )

    def remotes(self, identity: bytes | None = None) -> list[DtlsRemote]:
        """Remotes of the established sessions (of one identity, if given)."""
        sessions = self._table if identity is None else self._table.with_identity(identity)
        return [s.remote for s in sessions if isinstance(s, _PeerSession) and s.remote is not None]

    def close_identity(self, identity: bytes) -> int:
        """Close every session authenticated as ``identity`` and abort every
        handshake presenting it (device disabled, PSK rotated). Returns how
        many were closed. Each established one gets close_notify."""
        sessions = self._table.with_identity(identity)
        for session in sessions:
            assert isinstance(session, _PeerSession)
            self._end(session, CloseReason.CLOSED, HandshakeFailure.CLOSED)
        if sessions:
            log.info("closed %d DTLS session(s) of %s", len(sessions), identity_label(identity))
            self._schedule()
        return len(sessions)

    def close_session(self, remote: DtlsRemote) -> bool:
        """Close the session of ``remote`` with close_notify. False if it had
        already ended."""
        if not self._remote_is_current(remote):
            return False
        self._end(remote._session, CloseReason.CLOSED, HandshakeFailure.CLOSED)
        self._schedule()
        return True

    # --- aiocoap MessageInterface -----------------------------------------------------

    def _write(self, remote: object, data: bytes) -> bool:
        """Hand ``data`` to tinydtls for ``remote``'s session (True); False,
        counted as dropped ``closed_session``, when that session has ended."""
        if not isinstance(remote, DtlsRemote) or not self._remote_is_current(remote):
            return self._session_ended(remote, data)
        session = remote._session
        call = self._begin(session)
        try:
            assert self._dtls is not None
            written = self._dtls.write(session.dtls_session, data)
        finally:
            self._finish(call)
        if call.client_hello:
            self._counters.dropped["closed_session"] += 1
            log.warning("tinydtls lost the session of %s; closing it", remote)
            self._end(session, CloseReason.LOST, HandshakeFailure.CLOSED)
            self._schedule()
        elif written < 0:
            self._counters.dropped["send_error"] += 1
            log.debug("tinydtls refused to send %d bytes to %s", len(data), remote)
        return True

    async def shutdown(self) -> None:
        """Close every session (close_notify to established peers), the socket
        and the tinydtls context."""
        if self._closing:
            return
        self._closing = True
        for session in list(self._table):
            assert isinstance(session, _PeerSession)
            self._end(session, CloseReason.SHUTDOWN, HandshakeFailure.CLOSED)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._udp.close()
        if self._dtls is not None:
            # Break the callback references before the context is freed.
            self._dtls.pycb = {"read": _ignore, "write": _ignore, "event": _ignore}
            self._dtls.pskStore = {}
            self._dtls = None
        self._mman = None
        log.info("DTLS server on %s shut down", hostportjoin(*self._udp.address))

    # --- for DtlsRemote -------------------------------------------------------------------

    def _remote_is_current(self, remote: DtlsRemote) -> bool:
        session = remote._session
        return (
            remote._server is self
            and session.remote is remote
            and session.state is SessionState.ESTABLISHED
            and self._table.get(session.peer) is session
        )

    def _local_hostinfo(self, session: _PeerSession) -> str:
        return hostinfo(self._udp.local_host(session.local), self._udp.address[1])

    # --- datagram triage ---------------------------------------------------------------------

    def _datagram_received(self, data: bytes, sockaddr: SockAddr, local: Cmsg | None) -> None:
        session = self._table.get(sockaddr)
        if session is None:
            self._from_unknown_peer(data, sockaddr, local)
            return
        assert isinstance(session, _PeerSession)
        client_hello = (
            data[:1] == b"\x16"
            and records.first_handshake_type(data) == records.HandshakeType.CLIENT_HELLO
        )
        if session.state is SessionState.ESTABLISHED and not client_hello:
            self._established_datagram(session, data, local)
            return
        if session.state is SessionState.HANDSHAKING:
            # Bounded work and memory per half-open peer (records.screen_half_open).
            session.handshake_bytes += len(data)
            if session.handshake_bytes > self._config.handshake_bytes:
                self._counters.dropped["handshake_bytes"] += 1
                return
            reason, session.next_seq = records.screen_half_open(data, session.next_seq)
            if reason is not None:
                self._counters.dropped[reason] += 1
                return
            session.progressed = True
        elif records.client_hello_cookie_length(data) is None:
            self._counters.dropped["malformed"] += 1
            return
        if local is not None:
            session.local = local
        self._handshake_datagram(session, data)

    def _from_unknown_peer(self, data: bytes, sockaddr: SockAddr, local: Cmsg | None) -> None:
        """Only a ClientHello may come from an address without a session. A
        ClientHello with a cookie makes tinydtls allocate state if the cookie
        is valid (RFC 6347 §4.2.1), so it counts against ``max_handshakes``."""
        cookie_length = records.client_hello_cookie_length(data)
        if cookie_length is None or self._closing:
            self._counters.dropped["unknown_peer"] += 1
            return
        if not self.accepting:
            self._counters.dropped["not_accepting"] += 1
            return
        now = self._loop.time()
        if cookie_length:
            refused = self._table.admission(sockaddr[0], now)
            if refused is not None:
                self._counters.dropped[refused] += 1
                return
        session = _PeerSession(sockaddr, now, local)
        call = self._handle(session, data)
        if not call.server_hello:
            # Stateless HelloVerifyRequest (or nothing): tinydtls kept no peer.
            if cookie_length:
                self._reset_peer(session)
            return
        session.next_seq = (records.handshake_seq(data) or 0) + 1
        session.handshake_bytes = len(data)
        self._table.add(session)
        self._by_dtls_key[session.dtls_key] = session
        log.debug("handshake started with %s", sockaddr)
        stalled = self._table.handshake_victim(now)
        if stalled is not None:
            assert isinstance(stalled, _PeerSession)
            self._counters.handshakes_displaced += 1
            self._end(stalled, CloseReason.EVICTED, HandshakeFailure.TIMEOUT)
        victim = self._table.eviction_victim()
        if victim is not None:
            assert isinstance(victim, _PeerSession)
            self._end(victim, CloseReason.EVICTED, HandshakeFailure.CLOSED)
        self._drive_retransmissions()
        self._schedule()

    def _handshake_datagram(self, session: _PeerSession, data: bytes) -> None:
        """A datagram for a handshake under way, or a ClientHello on an
        established session (the peer starts a new epoch, RFC 6347 §4.2.8;
        tinydtls checks its cookie first)."""
        was_established = session.state is SessionState.ESTABLISHED
        encrypted_handshake = records.is_encrypted_handshake(data)
        call = self._handle(session, data)
        now = self._loop.time()
        if was_established:
            if call.server_hello:
                self._rehandshake(session, now)
                session.next_seq = (records.handshake_seq(data) or 0) + 1
                session.handshake_bytes = len(data)
            else:
                self._process_established(session, call, now)
                return
        if call.identity is not None:
            session.pending_identity = call.identity
        if call.connected and session.pending_identity is not None:
            self._established(session, session.pending_identity, now)
            self._dispatch(session, call.plaintexts)
        elif call.connected:
            # tinydtls never connects without asking for a PSK.
            self._end(session, CloseReason.CLOSED, HandshakeFailure.UNKNOWN_IDENTITY)
        elif call.identity_refused:
            self._end(session, CloseReason.CLOSED, HandshakeFailure.LOCKED_OUT)
        elif call.identity_rejected:
            self._end(session, CloseReason.CLOSED, HandshakeFailure.UNKNOWN_IDENTITY)
        elif call.alert is not None or call.failed:
            self._end(session, CloseReason.FATAL_ALERT, HandshakeFailure.ALERT)
        elif encrypted_handshake and session.pending_identity is not None:
            # The peer's Finished arrived after its ClientKeyExchange and did
            # not verify: it holds another key (RFC 5246 §7.4.9).
            self._end(session, CloseReason.CLOSED, HandshakeFailure.BAD_FINISHED)
        self._drive_retransmissions()
        self._schedule()

    def _established_datagram(self, session: _PeerSession, data: bytes, local: Cmsg | None) -> None:
        call = self._handle(session, data)
        if call.plaintexts and local is not None:
            # Follow the peer to another of our addresses only when it proved
            # it is the peer.
            session.local = local
        self._process_established(session, call, self._loop.time())

    def _process_established(self, session: _PeerSession, call: _Call, now: float) -> None:
        if call.plaintexts:
            # Only authenticated data keeps a session alive.
            self._table.touch(session, now)
            self._dispatch(session, call.plaintexts)
        if call.alert is not None and self._table.get(session.peer) is session:
            level, code = call.alert
            closed = (level, code) == (
                records.AlertLevel.WARNING,
                records.AlertDescription.CLOSE_NOTIFY,
            )
            reason = CloseReason.PEER_CLOSED if closed else CloseReason.FATAL_ALERT
            self._end(session, reason, HandshakeFailure.ALERT)

    # --- session transitions ------------------------------------------------------------

    def _established(self, session: _PeerSession, identity: bytes, now: float) -> None:
        self._table.establish(session, identity, now)
        session.remote = DtlsRemote(self, session, session.sockaddr, identity)
        self._counters.handshakes_ok += 1
        log.debug("DTLS session with %s as %s", session.sockaddr, identity_label(identity))
        self._report_handshake(session, identity, None)

    def _rehandshake(self, session: _PeerSession, now: float) -> None:
        old = session.remote
        self._table.restart_handshake(session, now)
        session.remote = None
        if old is not None:
            self._closed(old, CloseReason.REHANDSHAKE)

    def _end(self, session: _PeerSession, reason: CloseReason, failure: HandshakeFailure) -> None:
        """Remove ``session``; tell the peer (close_notify, or an alert while
        handshaking) unless tinydtls already freed it; report it."""
        if self._table.get(session.peer) is not session:
            return
        was_established = session.state is SessionState.ESTABLISHED
        identity = session.identity if was_established else session.pending_identity
        self._table.remove(session)
        self._by_dtls_key.pop(session.dtls_key, None)
        # After the peer's close_notify tinydtls has answered and freed it:
        # resetting an unknown address is a no-op.
        self._reset_peer(session)
        remote, session.remote = session.remote, None
        if was_established and remote is not None:
            self._closed(remote, reason)
        else:
            self._report_handshake(session, identity, failure)

    def _report_handshake(
        self, session: _PeerSession, identity: bytes | None, failure: HandshakeFailure | None
    ) -> None:
        if failure is not None:
            self._counters.handshake_failures[failure.value] += 1
            log.debug(
                "handshake with %s (%s) failed: %s",
                session.sockaddr,
                identity_label(identity) if identity is not None else "no identity",
                failure.value,
            )
        self._report(HandshakeOutcome(session.sockaddr, identity, failure))

    def _dispatch(self, session: _PeerSession, plaintexts: list[bytes]) -> None:
        remote = session.remote
        if remote is None:
            return
        for plaintext in plaintexts:
            self._deliver(remote, plaintext)

    # --- timers ---------------------------------------------------------------------------------

    def _drive_retransmissions(self) -> None:
        """Run tinydtls' retransmission timer for the whole context
        (``dtls_check_retransmit``: resends due handshake flights, returns
        the tick of the next one)."""
        if self._dtls is None:
            return
        next_tick = self._dtls.checkRetransmit()
        if not next_tick:
            self._retransmit_at = None
            return
        delay = self._ticks.seconds_until(next_tick)
        if delay is None:
            delay = _RETRANSMIT_POLL
        # tinydtls' clock restarts whenever any dtls.DTLS is created in this
        # process; never sleep longer than a handshake may last.
        delay = min(max(delay, 0.001), self._config.handshake_timeout)
        self._retransmit_at = self._loop.time() + delay

    def _schedule(self) -> None:
        """Arm the one timer for the earliest deadline."""
        if self._closing:
            return
        deadline = self._table.next_deadline()
        if self._retransmit_at is not None:
            deadline = (
                self._retransmit_at if deadline is None else min(deadline, self._retransmit_at)
            )
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self._loop.time()
        if self._retransmit_at is not None and self._retransmit_at <= now:
            self._drive_retransmissions()
        for session, expiry in self._table.expired(now):
            assert isinstance(session, _PeerSession)
            if expiry is Expiry.HANDSHAKE:
                self._end(session, CloseReason.CLOSED, HandshakeFailure.TIMEOUT)
            else:
                self._end(session, CloseReason.IDLE_TIMEOUT, HandshakeFailure.CLOSED)
        self._udp.flush()
        self._schedule()

    # --- calls into tinydtls -----------------------------------------------------------------

    def _begin(self, session: _PeerSession) -> _Call:
        call = self._call
        if call.active:
            raise RuntimeError("re-entrant call into tinydtls")
        call.reset()
        call.session = session
        call.active = True
        return call

    def _finish(self, call: _Call) -> None:
        call.active = False
        call.session = None
        self._psk_store.forget()

    def _handle(self, session: _PeerSession, data: bytes) -> _Call:
        call = self._begin(session)
        try:
            assert self._dtls is not None
            # < 0: tinydtls gave up on the handshake (and sent a fatal alert).
            call.failed = self._dtls.handleMessage(session.dtls_session, data) < 0
        finally:
            self._finish(call)
        return call

    def _reset_peer(self, session: _PeerSession) -> None:
        """Free tinydtls' peer; an established one gets close_notify first."""
        if self._dtls is None:
            return
        call = self._begin(session)
        try:
            self._dtls.resetPeer(session.dtls_session)
        finally:
            self._finish(call)

    # --- tinydtls callbacks (must not raise, must not call back into tinydtls) -----------

    def _lookup_psk(self, identity: bytes) -> bytes | None:
        call = self._call
        if not call.active:
            return None
        if self._admit_identity is not None and call.session is not None:
            try:
                admitted = self._admit_identity(identity, call.session.sockaddr)
            except Exception:
                log.exception("admit_identity failed for identity %s", identity_label(identity))
                admitted = False
            if not admitted:
                call.identity = identity
                call.identity_rejected = call.identity_refused = True
                return None
        try:
            psk = self._psk_lookup(identity)
        except Exception:
            log.exception("psk_lookup failed for identity %s", identity_label(identity))
            psk = None
        if psk is not None and not (isinstance(psk, bytes) and 0 < len(psk) <= MAX_PSK_LENGTH):
            log.warning(
                "PSK of identity %s is not 1..%d bytes long; tinydtls cannot use it",
                identity_label(identity),
                MAX_PSK_LENGTH,
            )
            psk = None
        call.identity = identity
        if psk is None:
            call.identity_rejected = True
            return None
        return psk

    def _on_read(self, address: tuple[str, int], data: bytes) -> int:
        call = self._call
        if call.active and call.session is not None and call.session.dtls_key == address:
            call.plaintexts.append(data)
        return len(data)

    def _on_write(self, address: tuple[str, int], data: bytes) -> int:
        try:
            call = self._call
            session = call.session if call.active else None
            if session is not None and session.dtls_key == address:
                kind = records.first_handshake_type(data) if data[:1] == b"\x16" else None
                if kind == records.HandshakeType.SERVER_HELLO:
                    call.server_hello = True
                elif kind == records.HandshakeType.CLIENT_HELLO:
                    # tinydtls lost the peer and tries to connect to it as a
                    # client; a server never does that.
                    call.client_hello = True
                    return len(data)
            else:
                # Retransmission (checkRetransmit) or stray: route by address.
                session = self._by_dtls_key.get(address)
                if session is None:
                    return len(data)
            self._udp.send(data, session.sockaddr, session.local)
        except Exception:
            log.exception("internal error sending a DTLS record")
        return len(data)

    def _on_event(self, level: int, code: int) -> None:
        call = self._call
        if not call.active:
            return
        if level == LEVEL_NOALERT:
            if code == EVENT_CONNECTED:
                call.connected = True
        else:
            call.alert = (level, code)


def _ignore(*_args: object) -> int:
    return 0


async def create_tinydtls_server_context(
    site: interfaces.Resource | None,
    config: DtlsServerConfig,
    psk_lookup: PskLookup,
    *,
    on_session_closed: SessionClosedHook | None = None,
    on_handshake: HandshakeHook | None = None,
    admit_identity: IdentityCheck | None = None,
    loggername: str = "coap-server",
) -> tuple[aiocoap.Context, TinydtlsServer]:
    """An aiocoap server context on a :class:`TinydtlsServer` serving ``site``."""

    async def build(mman: interfaces.MessageManager) -> TinydtlsServer:
        return await TinydtlsServer.create(
            mman,
            config,
            psk_lookup,
            on_session_closed=on_session_closed,
            on_handshake=on_handshake,
            admit_identity=admit_identity,
        )

    return await server_context(site, build, loggername=loggername)
