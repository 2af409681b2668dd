"""The gateway's DTLS-PSK server transport for aiocoap (CoAP over DTLS,
RFC 7252 §9; DTLS 1.2, RFC 6347; PSK, RFC 4279; Connection ID, RFC 9146),
on the project's own sans-I/O engine (:mod:`dtls12`).

One UDP socket bound exactly where configured (wildcards included, with
IP_PKTINFO / IPV6_PKTINFO so replies leave from the address a request was sent
to, :mod:`gateway.dtls.udp`), one :class:`~dtls12.DtlsServerEngine`
for all peers, one timer for the engine's next deadline. It plugs into aiocoap
below the message layer (as an :class:`aiocoap.interfaces.MessageInterface`),
so resources are ordinary :class:`aiocoap.resource.Site` resources and
``request.remote`` is a :class:`~gateway.dtls.remote.DtlsRemote` naming the
authenticated PSK identity.

The engine decides everything about the protocol (cookies, admission, the
half-open share of one address, bounded reassembly, stalled-handshake
displacement, longest-idle eviction, replay windows, Connection IDs); this
module turns its events into aiocoap dispatches, hook calls and counters.
A session whose peer moved (NAT rebinding, RFC 9146 §6) keeps its
:class:`DtlsRemote`, so aiocoap's deduplication, the proofs' replay windows
and the bound tokens carry over with no new handshake.

A datagram with a Connection ID another worker owns (the first CID byte,
``cid_owner``) is given to ``hand_over``; the owner's server takes it with
:meth:`DtlsServer.receive_handed_over`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import aiocoap
from aiocoap import interfaces
from aiocoap.util import hostportjoin

from dtls12 import (
    AddressChanged,
    ApplicationData,
    DtlsServerEngine,
    EngineConfig,
    ForeignConnectionId,
    HandshakeFailed,
    SessionClosed,
    SessionEstablished,
)
from dtls12 import HandshakeFailure as EngineFailure
from dtls12.session import Session as EngineSession

from .config import DtlsServerConfig
from .endpoint import EnginePump
from .interface import (
    TUNING,
    DtlsTransport,
    HandshakeHook,
    HandshakeOutcome,
    IdentityCheck,
    PskLookup,
    SessionClosedHook,
    server_context,
)
from .remote import DtlsRemote, hostinfo, identity_label
from .session import CloseReason, HandshakeFailure
from .stats import Counters, DtlsStats
from .udp import Cmsg, SockAddr, UdpEndpoint

log = logging.getLogger(__name__)

#: ``hand_over(owner, datagram, address, local)``: a datagram whose CID names
#: worker ``owner``; ``local`` is the ancillary data it arrived with.
HandOver = Callable[[int, bytes, SockAddr, Cmsg | None], None]


class _Budget:
    """A token bucket: ``rate`` per second up to ``burst``; ``now`` passed in."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._at = float(burst), now

    def take(self, now: float) -> bool:
        tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


#: Engine counters that are datagrams or records dropped, by the reason label
#: :class:`DtlsStats` reports them under.
_DROPPED = {
    "unknown_peer": "unknown_peer",
    "malformed_record": "malformed",
    "malformed_client_hello": "malformed",
    "fragmented_client_hello": "malformed",
    "malformed": "malformed",
    "wrong_epoch": "malformed",
    "unexpected_plaintext": "unexpected",
    "unexpected_protected": "unexpected",
    "early_application_data": "unexpected",
    "no_read_keys": "unexpected",
    "handshake_cap": "handshake_cap",
    "host_handshake_cap": "address_handshake_cap",
    "session_cap": "session_cap",
    "not_accepting": "not_accepting",
    "handshake_window": "handshake_window",
    "handshake_bytes": "handshake_bytes",
    "replayed": "replayed",
    "bad_record_mac": "bad_record_mac",
    "unknown_cid": "unknown_cid",
    "missing_cid": "missing_cid",
    "send_on_closed": "closed_session",
}

#: Engine counters that are a ClientHello dropped at a table cap: the server
#: keeps their source address for the event log (:meth:`DtlsServer.take_cap_drops`).
_CAPS = ("handshake_cap", "host_handshake_cap", "session_cap")
#: Source addresses kept between two reads; more are counted as ``other``.
_CAP_DROP_ADDRESSES = 256
#: Content type of a handshake record (RFC 6347 §4.1): only these can be capped.
_HANDSHAKE_RECORD = 22

__all__ = ["TUNING", "DtlsServer", "HandOver", "create_server_context", "engine_config"]


def engine_config(config: DtlsServerConfig) -> EngineConfig:
    """The engine settings for one server socket."""
    return EngineConfig(
        cid_length=config.cid_length,
        cid_owner=config.cid_owner if config.cid_length else None,
        max_sessions=config.max_sessions,
        max_handshakes=config.max_handshakes,
        max_handshakes_per_host=config.max_handshakes_per_address,
        handshake_timeout=config.handshake_timeout,
        handshake_stall=config.handshake_stall,
        idle_timeout=config.idle_timeout,
        max_reassembly_bytes=min(config.handshake_bytes, 4096),
    )


class _Peer:
    """What the transport keeps on an engine session (``session.user``)."""

    __slots__ = ("local", "remote")

    def __init__(self, local: Cmsg | None) -> None:
        #: Ancillary data choosing our source address (wildcard binds only).
        self.local = local
        self.remote: DtlsRemote | None = None


class DtlsServer(DtlsTransport):
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
        hand_over: HandOver | None = None,
    ) -> None:
        self._mman: interfaces.MessageManager | None = mman
        self._config = config
        self._on_session_closed = on_session_closed
        self._on_handshake = on_handshake
        self._hand_over = hand_over
        self._loop = asyncio.get_running_loop()
        self._hand_over_budget = _Budget(
            config.hand_over_rate, config.hand_over_burst, self._loop.time()
        )
        self._engine = DtlsServerEngine(
            engine_config(config), psk_lookup, now=self._loop.time(), admit=admit_identity
        )
        self._counters = Counters()
        #: ClientHellos dropped at a cap since the last read: (reason, host) -> n
        self._cap_drops: Counter[tuple[str, str]] = Counter()
        self._udp = UdpEndpoint(config, self._datagram_received, self._counters)
        #: Ancillary data of the datagram being handled (wildcard binds).
        self._local: Cmsg | None = None
        self._closing = False
        self._driver = EnginePump(
            self._engine,
            self._send_datagram,
            self._event,
            clock=self._loop.time,
            call_at=self._loop.call_at,
            after_timer=self._udp.flush,
        )
        #: Send what the engine produced, handle its events (handlers may
        #: produce more), rearm the engine's timer.
        self._pump = self._driver.pump

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
        hand_over: HandOver | None = None,
    ) -> DtlsServer:
        """Bind the socket and start serving (aiocoap message-interface
        constructor)."""
        self = cls(
            mman,
            config,
            psk_lookup,
            on_session_closed=on_session_closed,
            on_handshake=on_handshake,
            admit_identity=admit_identity,
            hand_over=hand_over,
        )
        self._udp.open()
        return self

    # --- public API -------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """False while draining (graceful shutdown): ClientHellos from peers
        without a session get nothing (counted as ``not_accepting``);
        established sessions are served on."""
        return self._engine.accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        self._engine.accepting = value

    def stats(self) -> DtlsStats:
        """Counters and gauges for metrics."""
        counters = self._counters
        engine_counts = self._engine.counters
        dropped = counters.dropped.copy()
        for name, reason in _DROPPED.items():
            count = engine_counts.get(name)
            if count:
                dropped[reason] += count
        counters.handshakes_displaced = engine_counts.get("handshakes_displaced", 0)
        counters.address_changes = engine_counts.get("address_changed", 0)
        counters.handshakes_held = engine_counts.get("psk_held", 0)
        counters.holds_expired = engine_counts.get("psk_hold_expired", 0)
        return counters.snapshot(
            sessions=self._engine.established_count,
            handshaking=self._engine.handshaking_count,
            dropped=dropped,
        )

    def remotes(self, identity: bytes | None = None) -> list[DtlsRemote]:
        """Remotes of the established sessions (of one identity, if given)."""
        found = []
        for session in self._engine.sessions(identity):
            peer = session.user
            if isinstance(peer, _Peer) and peer.remote is not None:
                found.append(peer.remote)
        return found

    def close_identity(self, identity: bytes) -> int:
        """Close every session authenticated as ``identity`` and abort every
        handshake presenting it (device disabled, PSK rotated, token
        superseded). Returns how many were closed. Each established one gets
        close_notify."""
        closed = self._engine.close_identity(identity)
        if closed:
            log.info("closed %d DTLS session(s) of %s", closed, identity_label(identity))
            self._pump()
        return closed

    def close_session(self, remote: DtlsRemote) -> bool:
        """Close the session of ``remote`` with close_notify. False if it had
        already ended."""
        if not self._remote_is_current(remote):
            return False
        self._engine.close(remote._session)
        self._pump()
        return True

    def retry_held(self, identity: bytes) -> int:
        """The handshakes waiting for the PSK of ``identity`` (its lookup
        answered :data:`~dtls12.PSK_PENDING`) ask again, because the fetch
        ended: each completes, or fails as an unknown identity, now rather
        than at the peer's next retransmission. How many there were."""
        if self._closing:
            return 0
        held = self._engine.retry_held(identity, self._loop.time())
        if held:
            self._pump()
        return held

    def receive_handed_over(self, data: bytes, sockaddr: SockAddr, local: Cmsg | None) -> None:
        """A datagram another worker received for a CID this one owns."""
        if self._closing:
            return
        self._counters.handed_over += 1
        self._datagram_received(data, sockaddr, local)

    # --- aiocoap MessageInterface -----------------------------------------------------

    def _write(self, remote: object, data: bytes) -> bool:
        if not isinstance(remote, DtlsRemote) or not self._remote_is_current(remote):
            return self._session_ended(remote, data)
        self._engine.send(remote._session, data)
        self._pump()
        return True

    async def shutdown(self) -> None:
        """Close every session (close_notify to established peers) and the
        socket."""
        if self._closing:
            return
        self._closing = True
        self._engine.shutdown()
        self._pump()
        self._driver.stop()
        self._udp.close()
        self._mman = None
        log.info("DTLS server on %s shut down", hostportjoin(*self._udp.address))

    # --- for DtlsRemote -------------------------------------------------------------------

    def _remote_is_current(self, remote: DtlsRemote) -> bool:
        session = remote._session
        peer = session.user
        return (
            remote._server is self
            and session.established
            and isinstance(peer, _Peer)
            and peer.remote is remote
        )

    def _local_hostinfo(self, session: EngineSession) -> str:
        peer = session.user
        local = peer.local if isinstance(peer, _Peer) else None
        return hostinfo(self._udp.local_host(local), self._udp.address[1])

    # --- the engine's input and output --------------------------------------------------

    def _datagram_received(self, data: bytes, sockaddr: SockAddr, local: Cmsg | None) -> None:
        self._local = local
        try:
            if data and data[0] == _HANDSHAKE_RECORD:
                counters = self._engine.counters
                before = [counters[name] for name in _CAPS]
                self._engine.receive_datagram(data, sockaddr, self._loop.time())
                for name, count in zip(_CAPS, before, strict=True):
                    if counters[name] != count:
                        self._cap_dropped(name, sockaddr, counters[name] - count)
            else:
                self._engine.receive_datagram(data, sockaddr, self._loop.time())
            self._pump()
        finally:
            self._local = None

    def _cap_dropped(self, name: str, sockaddr: SockAddr, count: int) -> None:
        key = (_DROPPED[name], str(sockaddr[0]))
        if key not in self._cap_drops and len(self._cap_drops) >= _CAP_DROP_ADDRESSES:
            key = (key[0], "other")
        self._cap_drops[key] += count

    def take_cap_drops(self) -> dict[tuple[str, str], int]:
        """ClientHellos dropped at a table cap since the last call, by
        (reason as in :meth:`stats`, source host); at most 256 hosts, the
        rest as ``other``."""
        drops, self._cap_drops = dict(self._cap_drops), Counter()
        return drops

    def _send_datagram(self, datagram: bytes, address: SockAddr) -> None:
        self._udp.send(datagram, address, self._local_for(address))

    def _local_for(self, address: SockAddr) -> Cmsg | None:
        """The source address to send from (wildcard binds): the session's,
        or that of the datagram being answered."""
        if not self._udp.pktinfo:
            return None
        session = self._engine.session_at(address)
        if session is None:
            return self._local
        peer = session.user
        if not isinstance(peer, _Peer):
            peer = session.user = _Peer(self._local)
        elif peer.local is None:
            peer.local = self._local
        return peer.local

    def _event(self, event: object) -> None:
        if isinstance(event, ApplicationData):
            self._application_data(event.session, event.data)
        elif isinstance(event, SessionEstablished):
            self._established(event.session)
        elif isinstance(event, SessionClosed):
            peer = event.session.user
            if isinstance(peer, _Peer) and peer.remote is not None:
                self._closed(peer.remote, CloseReason(event.reason.value))
        elif isinstance(event, HandshakeFailed):
            self._handshake_failed(event)
        elif isinstance(event, AddressChanged):
            self._address_changed(event)
        elif isinstance(event, ForeignConnectionId):
            if self._hand_over is None:
                self._counters.dropped["foreign_cid"] += 1
            elif self._hand_over_budget.take(self._loop.time()):
                self._hand_over(event.owner, event.datagram, event.address, self._local)
            else:
                self._counters.dropped["hand_over_limit"] += 1

    def _application_data(self, session: EngineSession, plaintext: bytes) -> None:
        peer = session.user
        if not isinstance(peer, _Peer) or peer.remote is None or self._mman is None:
            return
        if self._local is not None:
            # Follow the peer to another of our addresses only when it proved
            # it is the peer.
            peer.local = self._local
        self._deliver(peer.remote, plaintext)

    def _established(self, session: EngineSession) -> None:
        identity = session.identity
        assert identity is not None
        peer = session.user
        if not isinstance(peer, _Peer):
            peer = session.user = _Peer(self._local)
        address = session.address
        assert isinstance(address, tuple)
        peer.remote = DtlsRemote(self, session, address, identity)
        self._counters.handshakes_ok += 1
        log.debug("DTLS session with %s as %s", address, identity_label(identity))
        self._report(HandshakeOutcome(address, identity, None))

    def _handshake_failed(self, event: HandshakeFailed) -> None:
        if event.reason is EngineFailure.DISPLACED:
            failure = HandshakeFailure.TIMEOUT
        else:
            failure = HandshakeFailure(event.reason.value)
        self._counters.handshake_failures[failure.value] += 1
        address = event.address
        assert isinstance(address, tuple)
        self._report(HandshakeOutcome(address, event.identity, failure))

    def _address_changed(self, event: AddressChanged) -> None:
        peer = event.session.user
        address = event.new_address
        assert isinstance(address, tuple)
        if isinstance(peer, _Peer):
            if self._local is not None:
                peer.local = self._local
            if peer.remote is not None:
                peer.remote.moved(address)
        log.debug("DTLS session moved from %s to %s", event.old_address, address)


async def create_server_context(
    site: interfaces.Resource | None,
    config: DtlsServerConfig,
    psk_lookup: PskLookup,
    *,
    on_session_closed: SessionClosedHook | None = None,
    on_handshake: HandshakeHook | None = None,
    admit_identity: IdentityCheck | None = None,
    hand_over: HandOver | None = None,
    loggername: str = "coap-server",
) -> tuple[aiocoap.Context, DtlsServer]:
    """An aiocoap server context whose only transport is a :class:`DtlsServer`
    serving ``site``. Shut it down with ``await context.shutdown()``."""

    async def build(mman: interfaces.MessageManager) -> DtlsServer:
        return await DtlsServer.create(
            mman,
            config,
            psk_lookup,
            on_session_closed=on_session_closed,
            on_handshake=on_handshake,
            admit_identity=admit_identity,
            hand_over=hand_over,
        )

    return await server_context(site, build, loggername=loggername)
