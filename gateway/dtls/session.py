"""The session table of the tinydtls baseline transport (``tinydtls_server``,
kept for the benchmark): who is connected, who is half-way there, and who
goes when the table is full or a peer falls silent. The gateway's own server
keeps its sessions in the ``dtls12`` engine; :class:`CloseReason` and
:class:`HandshakeFailure` here are the metric and audit labels both servers
report.

Sans-I/O: every operation takes ``now`` (seconds, any monotonic origin) and the
table never reads a clock, opens a socket or schedules a timer; the server
asks it for the next deadline and for the sessions that are due.

Policy (RFC 6347 §4.2.1 and §4.2.8 leave it to the server):

- a peer is *handshaking* (half-open) from the moment the DTLS library keeps
  state for it (after a valid cookie) until its handshake completes; at most
  ``max_handshakes`` of those exist at once, at most
  ``max_handshakes_per_address`` of them from one source address (the cookie
  proved the address: one address cannot fill the table), and each gets
  ``handshake_timeout`` seconds;
- at the global cap a new handshake may only take the place of the oldest
  half-open one that *stalled*: no datagram from its peer since the server's
  first flight for ``stall_after`` seconds. Handshakes that are progressing are
  never displaced, so under a flood from many addresses the ones under way
  finish first;
- an *established* session lives until ``idle_timeout`` seconds pass without
  a datagram from the peer;
- when more than ``max_sessions`` sessions exist, the established session that
  has been idle longest is evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from enum import Enum, StrEnum


class SessionState(Enum):
    """Where a peer is in its DTLS life."""

    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"


class CloseReason(StrEnum):
    """Why an established session ended (metrics label, audit field)."""

    #: The peer sent close_notify (RFC 5246 §7.2.1).
    PEER_CLOSED = "peer_closed"
    #: The peer sent a fatal alert.
    FATAL_ALERT = "fatal_alert"
    #: No datagram from the peer for ``idle_timeout`` seconds.
    IDLE_TIMEOUT = "idle_timeout"
    #: The table was full and this was the longest-idle session.
    EVICTED = "evicted"
    #: The gateway closed it (device disabled, PSK rotated, token expired).
    CLOSED = "closed"
    #: The peer started a new handshake on the same address (new epoch).
    REHANDSHAKE = "rehandshake"
    #: The server shut down.
    SHUTDOWN = "shutdown"
    #: tinydtls no longer knew the peer when we wrote to it (tinydtls
    #: transport only).
    LOST = "lost"


class HandshakeFailure(StrEnum):
    """Why a handshake did not complete (metrics label, audit field)."""

    #: The identity is unknown, disabled, or its PSK unusable.
    UNKNOWN_IDENTITY = "unknown_identity"
    #: The peer's Finished did not verify: it holds another PSK.
    BAD_FINISHED = "bad_finished"
    #: ``handshake_timeout`` passed (peer vanished mid-handshake).
    TIMEOUT = "timeout"
    #: The peer sent an alert during the handshake.
    ALERT = "alert"
    #: The gateway closed it (identity closed, eviction, shutdown).
    CLOSED = "closed"
    #: The identity is banned from this address (the gateway's lockout).
    LOCKED_OUT = "locked_out"
    #: A malformed or unacceptable handshake (answered with a fatal alert).
    PROTOCOL = "protocol"


class Expiry(Enum):
    """Which deadline a due session missed."""

    IDLE = "idle"
    HANDSHAKE = "handshake"


class Session:
    """One peer address (5-tuple on our socket) and its DTLS progress.

    ``identity`` is the PSK identity the handshake authenticated;
    ``pending_identity`` the one presented in the handshake under way (set once
    the peer's ClientKeyExchange has been processed).
    """

    __slots__ = (
        "address",
        "created",
        "handshake_bytes",
        "identity",
        "last_active",
        "next_seq",
        "peer",
        "pending_identity",
        "progressed",
        "state",
    )

    def __init__(self, peer: Hashable, now: float) -> None:
        self.peer = peer
        #: The source address without the port: what the cookie proved.
        self.address: Hashable = peer[0] if isinstance(peer, tuple) else peer
        self.state = SessionState.HANDSHAKING
        self.created = now
        self.last_active = now
        self.identity: bytes | None = None
        self.pending_identity: bytes | None = None
        #: Bytes the peer sent while half-open (bounded by the server).
        self.handshake_bytes = 0
        #: The handshake message_seq the peer should send next (RFC 6347 §4.2.2).
        self.next_seq = 0
        #: A datagram arrived after the server's first flight.
        self.progressed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.peer!r} {self.state.value}>"


class SessionTable:
    """All sessions of one server socket, indexed by peer address."""

    def __init__(
        self,
        *,
        max_sessions: int,
        max_handshakes: int,
        idle_timeout: float,
        handshake_timeout: float,
        max_handshakes_per_address: int | None = None,
        stall_after: float | None = None,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_handshakes = max_handshakes
        self.max_handshakes_per_address = max_handshakes_per_address or max_handshakes
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.stall_after = handshake_timeout / 4 if stall_after is None else stall_after
        #: Half-open handshakes by source address.
        self._half_open: dict[Hashable, int] = {}
        self._all: dict[Hashable, Session] = {}
        #: Established sessions, least recently active first.
        self._established: OrderedDict[Hashable, Session] = OrderedDict()
        #: Handshaking sessions, oldest first.
        self._handshaking: OrderedDict[Hashable, Session] = OrderedDict()
        self._by_identity: dict[bytes, dict[Hashable, Session]] = {}

    # --- queries ---------------------------------------------------------------

    def get(self, peer: Hashable) -> Session | None:
        return self._all.get(peer)

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._all.values()))

    @property
    def established_count(self) -> int:
        return len(self._established)

    @property
    def handshaking_count(self) -> int:
        return len(self._handshaking)

    def may_start_handshake(self) -> bool:
        """True if one more half-open handshake is allowed."""
        return len(self._handshaking) < self.max_handshakes

    def admission(self, address: Hashable, now: float) -> str | None:
        """None if a new half-open handshake from ``address`` may start now;
        otherwise why not: ``address_handshake_cap`` (the address holds its
        share) or ``handshake_cap`` (the table is full and no handshake in it
        stalled)."""
        if len(self._handshaking) >= self.max_handshakes and self.stalled(now) is None:
            return "handshake_cap"
        if self._half_open.get(address, 0) >= self.max_handshakes_per_address:
            return "address_handshake_cap"
        return None

    def stalled(self, now: float) -> Session | None:
        """The oldest half-open handshake if its peer sent nothing since the
        server's first flight for ``stall_after`` seconds, else None."""
        oldest = next(iter(self._handshaking.values()), None)
        if oldest is None or oldest.progressed or oldest.created + self.stall_after > now:
            return None
        return oldest

    def handshake_victim(self, now: float) -> Session | None:
        """While more than ``max_handshakes`` are half-open, the stalled one
        to drop (see :meth:`stalled`)."""
        if len(self._handshaking) <= self.max_handshakes:
            return None
        return self.stalled(now)

    def half_open(self, address: Hashable) -> int:
        """Half-open handshakes from ``address`` now."""
        return self._half_open.get(address, 0)

    def with_identity(self, identity: bytes) -> list[Session]:
        """Established sessions authenticated as ``identity`` and handshakes
        presenting it."""
        found = list(self._by_identity.get(identity, {}).values())
        found.extend(s for s in self._handshaking.values() if s.pending_identity == identity)
        return found

    def eviction_victim(self) -> Session | None:
        """While the table holds more than ``max_sessions``, the established
        session idle the longest; otherwise None."""
        if len(self._all) <= self.max_sessions:
            return None
        return next(iter(self._established.values()), None)

    def next_deadline(self) -> float | None:
        """The earliest moment at which :meth:`expired` can return something."""
        deadlines = []
        oldest_idle = next(iter(self._established.values()), None)
        if oldest_idle is not None:
            deadlines.append(oldest_idle.last_active + self.idle_timeout)
        oldest_handshake = next(iter(self._handshaking.values()), None)
        if oldest_handshake is not None:
            deadlines.append(oldest_handshake.created + self.handshake_timeout)
        return min(deadlines, default=None)

    def expired(self, now: float) -> list[tuple[Session, Expiry]]:
        """Sessions whose deadline is at or before ``now`` (not removed)."""
        due: list[tuple[Session, Expiry]] = []
        for session in self._handshaking.values():
            if session.created + self.handshake_timeout > now:
                break
            due.append((session, Expiry.HANDSHAKE))
        for session in self._established.values():
            if session.last_active + self.idle_timeout > now:
                break
            due.append((session, Expiry.IDLE))
        return due

    # --- transitions -----------------------------------------------------------

    def add(self, session: Session) -> None:
        """Insert a new handshaking session (the caller has checked
        :meth:`may_start_handshake`)."""
        if session.peer in self._all:
            raise ValueError("peer already has a session")
        session.state = SessionState.HANDSHAKING
        self._all[session.peer] = session
        self._handshaking[session.peer] = session
        self._count_half_open(session, 1)

    def establish(self, session: Session, identity: bytes, now: float) -> None:
        """The handshake of ``session`` completed with ``identity``."""
        self._unindex(session)
        if self._handshaking.pop(session.peer, None) is not None:
            self._count_half_open(session, -1)
        session.state = SessionState.ESTABLISHED
        session.identity = identity
        session.pending_identity = None
        session.last_active = now
        self._established[session.peer] = session
        self._established.move_to_end(session.peer)
        self._by_identity.setdefault(identity, {})[session.peer] = session

    def restart_handshake(self, session: Session, now: float) -> None:
        """An established peer started a new handshake (RFC 6347 §4.2.8): its
        old epoch is gone; it is half-open again."""
        self._unindex(session)
        self._established.pop(session.peer, None)
        if self._handshaking.pop(session.peer, None) is None:
            self._count_half_open(session, 1)
        session.state = SessionState.HANDSHAKING
        session.identity = None
        session.pending_identity = None
        session.created = now
        session.last_active = now
        session.handshake_bytes = 0
        session.progressed = False
        self._handshaking[session.peer] = session

    def touch(self, session: Session, now: float) -> None:
        """A datagram from the peer arrived."""
        session.last_active = now
        if session.state is SessionState.ESTABLISHED:
            self._established.move_to_end(session.peer)

    def remove(self, session: Session) -> None:
        """Forget ``session`` (idempotent)."""
        if self._all.get(session.peer) is not session:
            return
        del self._all[session.peer]
        self._established.pop(session.peer, None)
        if self._handshaking.pop(session.peer, None) is not None:
            self._count_half_open(session, -1)
        self._unindex(session)

    def _count_half_open(self, session: Session, delta: int) -> None:
        count = self._half_open.get(session.address, 0) + delta
        if count > 0:
            self._half_open[session.address] = count
        else:
            self._half_open.pop(session.address, None)

    def _unindex(self, session: Session) -> None:
        if session.identity is None:
            return
        peers = self._by_identity.get(session.identity)
        if peers is not None:
            peers.pop(session.peer, None)
            if not peers:
                del self._by_identity[session.identity]
