"""A sans-I/O DTLS 1.2 PSK server for many peers (RFC 6347, RFC 4279,
RFC 6655, RFC 7627, RFC 9146), in the shape of h11's and aioquic's
connections: datagrams, addresses and ``now`` go in; datagrams to send,
events and the next deadline come out. It never reads a clock, opens a
socket or starts a timer.

Typical driver loop::

    engine = DtlsServerEngine(EngineConfig(), psk_lookup, now=clock())
    engine.receive_datagram(data, address, clock())
    for datagram, address in engine.datagrams_to_send(): sock.sendto(datagram, address)
    for event in engine.events(): ...
    deadline = engine.next_deadline()   # call engine.handle_timer(clock()) then

Routing: a tls12_cid record goes to the session owning its CID wherever it
came from (RFC 9146 §6); every other record goes to the session of its source
address. No state is kept for an address until it returns a valid cookie
(RFC 6347 §4.2.1); a ClientHello never gets more bytes back than it sent.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Callable

from . import wire
from .config import MAX_PSK_LENGTH, PSK_PENDING, EngineConfig, PskPending
from .cookies import CookieJar
from .errors import AlertError, ParseError
from .events import (
    Address,
    AddressChanged,
    CloseReason,
    Event,
    ForeignConnectionId,
    HandshakeFailed,
    HandshakeFailure,
    SessionClosed,
    identity_label,
)
from .session import Phase, Session
from .wire import ContentType, HandshakeType

log = logging.getLogger(__name__)

#: ``psk_lookup(identity) -> psk, None or PSK_PENDING`` (RFC 4279 §2; RFC
#: 9202 §3.2.2: the identity may be a whole access token). Must not block.
PskLookup = Callable[[bytes], bytes | PskPending | None]
#: ``admit(identity, address) -> bool``: judged before the PSK lookup; False
#: (a lockout of this identity from this address) fails the handshake like
#: an unknown identity, reported as ``LOCKED_OUT``. Must not block.
AdmissionCheck = Callable[[bytes, Address], bool]


class DtlsServerEngine:
    """All DTLS sessions of one server socket."""

    def __init__(
        self,
        config: EngineConfig,
        psk_lookup: PskLookup,
        *,
        now: float,
        admit: AdmissionCheck | None = None,
    ) -> None:
        self.config = config
        self._psk_lookup = psk_lookup
        self._admit = admit
        self._cookies = CookieJar(config.cookie_rotation, now)
        self._by_address: dict[Address, Session] = {}
        self._by_cid: dict[bytes, Session] = {}
        self._handshakes_by_host: Counter[object] = Counter()
        #: Handshakes under way, oldest first.
        self._handshakes: dict[Session, None] = {}
        #: Established sessions, least recently active first.
        self._idle: OrderedDict[Session, None] = OrderedDict()
        #: Established sessions by identity.
        self._by_identity: dict[bytes, dict[Session, None]] = {}
        self._sessions = 0
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[Event] = []
        self._timers: list[tuple[float, int, Session]] = []
        self._tie = itertools.count()
        self._touched: list[Session] = []
        #: Drop and protocol counters (metrics).
        self.counters: Counter[str] = Counter()
        #: False while draining: ClientHellos from new peers get nothing.
        self.accepting = True

    # --- driver interface ------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        """Process one datagram from ``address``."""
        records, truncated = wire.parse_records(data, self.config.cid_length)
        if truncated or not records:
            self.count("malformed_record")
        for record in records:
            if record.content_type == ContentType.TLS12_CID:
                session = self._by_cid.get(record.cid)
                if session is None:
                    # The whole datagram is another worker's (or nobody's);
                    # sessions its earlier records touched still get a timer.
                    self._unknown_cid(record.cid, data, address)
                    break
                session.receive(record, address, now)
                continue
            session = self._by_address.get(address)
            if (
                record.epoch == 0
                and record.content_type == ContentType.HANDSHAKE
                and record.fragment[:1] == bytes((HandshakeType.CLIENT_HELLO,))
            ):
                self._client_hello(record, address, session, now)
            elif session is None:
                self.count("unknown_peer")
            elif (
                session.replaces is not None
                and record.epoch
                and record.content_type != ContentType.HANDSHAKE
            ):
                # Application data and alerts of the session being replaced
                # (RFC 6347 §4.2.8: it lives until the new handshake ends).
                session.replaces.receive(record, address, now)
            else:
                session.receive(record, address, now)
        self._reschedule_touched()

    def send(self, session: Session, data: bytes) -> bool:
        """Queue ``data`` as one application_data record; False if the session
        is not established (nothing sent)."""
        if not session.established:
            self.count("send_on_closed")
            return False
        session.send_application_data(data)
        return True

    def close(self, session: Session, reason: CloseReason = CloseReason.CLOSED) -> None:
        """Close a session (close_notify to an established peer) or abort a
        handshake. Reports SessionClosed / HandshakeFailed."""
        if session.established:
            session.close()
            self.end(session, reason)
        elif session.handshaking:
            self.abandon(
                session, HandshakeFailed(session.address, session.identity, HandshakeFailure.CLOSED)
            )

    def close_identity(self, identity: bytes) -> int:
        """Close every session and handshake of ``identity`` (device disabled,
        PSK rotated); returns how many."""
        victims = list(self._by_identity.get(identity, ()))
        victims += [s for s in self._handshakes if s.identity == identity]
        for session in victims:
            self.close(session)
        return len(victims)

    def shutdown(self) -> None:
        """Close everything (close_notify to every established peer)."""
        self.accepting = False
        for session in self._all_sessions():
            self.close(session, CloseReason.SHUTDOWN)

    def handle_timer(self, now: float) -> None:
        """Run every session deadline that is due."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, session = heapq.heappop(timers)
            if session.wake_at != at:
                continue  # superseded entry
            session.wake_at = None
            session.on_timer(now)
            self._schedule(session)
        self._reschedule_touched()

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should be called next (None: no timer)."""
        timers = self._timers
        while timers and timers[0][2].wake_at != timers[0][0]:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def retry_held(self, identity: bytes, now: float) -> int:
        """The handshakes held on a pending PSK for ``identity`` ask the
        lookup again (the driver learnt that its fetch ended); how many.
        Each completes, fails as an unknown identity, or (still pending)
        waits on until its hold ends."""
        held = [s for s in self._handshakes if s.identity == identity and s.psk_held]
        for session in held:
            session.retry_psk(now)
        self._reschedule_touched()
        return len(held)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Datagrams produced since the last call, with their destinations."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        """Events produced since the last call, in order."""
        events, self._events = self._events, []
        return events

    def sessions(self, identity: bytes | None = None) -> list[Session]:
        """The established sessions (of ``identity``, if given)."""
        if identity is None:
            return list(self._idle)
        return list(self._by_identity.get(identity, ()))

    def session_for_cid(self, cid: bytes) -> Session | None:
        return self._by_cid.get(cid)

    def session_at(self, address: Address) -> Session | None:
        """The session (established or handshaking) records from ``address``
        go to, if any."""
        return self._by_address.get(address)

    @property
    def handshaking_count(self) -> int:
        return len(self._handshakes)

    @property
    def established_count(self) -> int:
        return len(self._idle)

    @property
    def session_count(self) -> int:
        """Sessions with state (established and handshaking)."""
        return self._sessions

    # --- for Session ---------------------------------------------------------------------

    def count(self, name: str) -> None:
        self.counters[name] += 1

    def output(self, datagram: bytes, address: Address) -> None:
        self._out.append((datagram, address))

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def admits(self, identity: bytes, address: Address) -> bool:
        """The driver's admission check (True without one; False if it fails)."""
        if self._admit is None:
            return True
        try:
            return bool(self._admit(identity, address))
        except Exception:
            log.exception("admission check failed for %s", identity_label(identity))
            return False

    def touch(self, session: Session) -> None:
        """Authenticated application data: ``session`` is the most recently
        active one (eviction takes the longest idle)."""
        self._idle.move_to_end(session)

    def lookup_psk(self, identity: bytes) -> bytes | PskPending | None:
        """The PSK for ``identity``, None for an unknown, over-long or
        unusable one (the caller continues with a decoy key), or
        :data:`PSK_PENDING` (the caller holds the handshake)."""
        if not identity or len(identity) > self.config.max_identity_length:
            return None
        try:
            psk = self._psk_lookup(identity)
        except Exception:
            log.exception("psk_lookup failed for %s", identity_label(identity))
            return None
        if psk is None or psk is PSK_PENDING:
            return psk
        if not isinstance(psk, bytes) or not 1 <= len(psk) <= MAX_PSK_LENGTH:
            log.error("the PSK of %s is not 1..64 bytes", identity_label(identity))
            return None
        return psk

    def assign_cid(self, session: Session) -> bytes:
        """A fresh unpredictable CID (RFC 9146 §3), prefixed with the owner
        byte if configured."""
        owner = self.config.cid_owner
        size = self.config.cid_length
        while True:
            cid = os.urandom(size) if owner is None else bytes((owner,)) + os.urandom(size - 1)
            if cid not in self._by_cid:
                self._by_cid[cid] = session
                return cid

    def move(self, session: Session, address: Address) -> None:
        """RFC 9146 §6: an authenticated, newest tls12_cid record came from
        ``address``; send there from now on."""
        old = session.address
        if self._by_address.get(old) is session:
            del self._by_address[old]
        displaced = self._by_address.get(address)
        if displaced is not None and displaced is not session:
            self.count("address_taken_over")
        self._by_address[address] = session
        session.address = address
        self.count("address_changed")
        self.emit(AddressChanged(session, old, address))

    def established(self, session: Session) -> None:
        """A handshake completed (called before SessionEstablished is emitted)."""
        del self._handshakes[session]
        self._release_host(session)
        self._idle[session] = None
        assert session.identity is not None
        self._by_identity.setdefault(session.identity, {})[session] = None
        old = session.replaces
        session.replaces = None
        if old is not None and old.established:
            self.end(old, CloseReason.REHANDSHAKE)
        self._touched.append(session)

    def abandon(self, session: Session, failure: HandshakeFailed) -> None:
        """Forget a handshake that failed; the session it would have replaced
        gets its address back."""
        if not session.handshaking:
            return
        del self._handshakes[session]
        self._release_host(session)
        self._forget(session)
        old = session.replaces
        session.replaces = None
        if old is not None and old.established and old.address not in self._by_address:
            self._by_address[old.address] = old
        log.debug(
            "handshake with %r (%s) failed: %s",
            session.address,
            identity_label(failure.identity) if failure.identity is not None else "no identity",
            failure.reason.value,
        )
        self.counters["handshake_failed_" + failure.reason.value] += 1
        self.emit(failure)

    def end(self, session: Session, reason: CloseReason) -> None:
        """Forget an established session and report it."""
        if not session.established:
            return
        del self._idle[session]
        assert session.identity is not None
        same = self._by_identity[session.identity]
        del same[session]
        if not same:
            del self._by_identity[session.identity]
        self._forget(session)
        self.counters["closed_" + reason.value] += 1
        self.emit(SessionClosed(session, reason))

    # --- internals ------------------------------------------------------------------------

    def _all_sessions(self) -> list[Session]:
        seen: dict[int, Session] = {}
        for session in itertools.chain(self._by_address.values(), self._by_cid.values()):
            seen[id(session)] = session
            if session.replaces is not None:
                seen[id(session.replaces)] = session.replaces
        return list(seen.values())

    def _forget(self, session: Session) -> None:
        session.forget_handshake()
        if self._by_address.get(session.address) is session:
            del self._by_address[session.address]
        if session.cid and self._by_cid.get(session.cid) is session:
            del self._by_cid[session.cid]
        self._sessions -= 1
        session.wake_at = None

    def _release_host(self, session: Session) -> None:
        host = _host(session.address)
        left = self._handshakes_by_host[host] - 1
        if left > 0:
            self._handshakes_by_host[host] = left
        else:
            del self._handshakes_by_host[host]

    def _unknown_cid(self, cid: bytes, datagram: bytes, address: Address) -> None:
        owner = self.config.cid_owner
        if owner is not None and cid[0] != owner:
            self.count("foreign_cid")
            self.emit(ForeignConnectionId(cid[0], datagram, address))
        else:
            self.count("unknown_cid")

    def _client_hello(
        self, record: wire.Record, address: Address, current: Session | None, now: float
    ) -> None:
        """RFC 6347 §4.2.1: without a valid cookie, a stateless
        HelloVerifyRequest; with one, a new session."""
        try:
            fragments = wire.parse_handshake_fragments(record.fragment)
            first = fragments[0]
            if not first.is_whole or first.msg_type != HandshakeType.CLIENT_HELLO:
                # A server may require an unfragmented first message; state
                # for reassembly is only kept after a cookie.
                self.count("fragmented_client_hello")
                return
            hello = wire.parse_client_hello(first.body)
        except ParseError:
            self.count("malformed_client_hello")
            return
        if current is not None and current.handshaking and current.client_random == hello.random:
            current.receive(record, address, now)  # our flight was lost
            return
        peer = _address_bytes(address)
        parameters = hello.cookie_input()
        if not self._cookies.verify(hello.cookie, peer, parameters, now):
            cookie = self._cookies.issue(peer, parameters, now)
            message = wire.handshake_message(
                HandshakeType.HELLO_VERIFY_REQUEST,
                first.message_seq,
                wire.hello_verify_request(cookie),
            )
            # RFC 6347 §4.2.1: the record sequence number of the ClientHello.
            self.output(
                wire.plaintext_record(ContentType.HANDSHAKE, 0, record.sequence, message), address
            )
            self.count("hello_verify_requests")
            return
        if not self._may_start(address, now):
            return
        replaced: Session | None = None
        if current is not None:
            if current.handshaking:
                replaced = current.replaces
                self.abandon(
                    current, HandshakeFailed(address, current.identity, HandshakeFailure.CLOSED)
                )
            else:
                replaced = current
        session = Session(self, address, now)
        session.replaces = replaced
        self._sessions += 1
        self._handshakes[session] = None
        self._handshakes_by_host[_host(address)] += 1
        self._by_address[address] = session
        try:
            session.start(hello, first.body, first.message_seq, record.sequence, now)
        except (AlertError, ParseError) as error:
            session.fail(HandshakeFailure.PROTOCOL, error.alert, now)
            return
        self.count("handshakes_started")
        self._touched.append(session)

    def _may_start(self, address: Address, now: float) -> bool:
        """Admission of a cookie-verified ClientHello: not while draining, at
        most the host's share of the handshake table; at the global handshake
        cap only in place of a stalled handshake; at the session cap in place
        of the longest-idle established session."""
        if not self.accepting:
            self.count("not_accepting")
            return False
        stalled: Session | None = None
        if len(self._handshakes) >= self.config.max_handshakes:
            stalled = next(iter(self._handshakes))
            if stalled.progressed or stalled.started + self.config.stall_after > now:
                self.count("handshake_cap")
                return False
        per_host = self.config.max_handshakes_per_host
        if per_host is not None and self._handshakes_by_host[_host(address)] >= per_host:
            self.count("host_handshake_cap")
            return False
        if stalled is not None:
            self.count("handshakes_displaced")
            stalled.fail(HandshakeFailure.DISPLACED, None, now)
        if self._sessions >= self.config.max_sessions:
            idlest = next(iter(self._idle), None)
            if idlest is None:
                self.count("session_cap")
                return False
            self.close(idlest, CloseReason.EVICTED)
        return True

    def _schedule(self, session: Session) -> None:
        at = session.deadline()
        if at is None or session.phase is Phase.CLOSED:
            session.wake_at = None
            return
        if session.wake_at is not None and session.wake_at <= at:
            return
        session.wake_at = at
        heapq.heappush(self._timers, (at, next(self._tie), session))

    def _reschedule_touched(self) -> None:
        touched, self._touched = self._touched, []
        for session in touched:
            self._schedule(session)


def _host(address: Address) -> object:
    return address[0] if isinstance(address, tuple) and address else address


def _address_bytes(address: Address) -> bytes:
    if isinstance(address, tuple):
        return repr(address[:2]).encode()
    return repr(address).encode()
