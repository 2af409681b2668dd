"""The DTLS session table: who is connected, who is half-way there, and who
goes when the table is full or a peer falls silent.

Sans-I/O: every operation takes ``now`` (seconds, any monotonic origin) and the
table never reads a clock, opens a socket or schedules a timer; the server
asks it for the next deadline and for the sessions that are due.

Policy (RFC 6347 §4.2.1 and §4.2.8 leave it to the server):

- a peer is *handshaking* (half-open) from the moment the DTLS library keeps
  state for it (after a valid cookie) until its handshake completes; at most
  ``max_handshakes`` of those exist at once, and each gets
  ``handshake_timeout`` seconds;
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
    #: tinydtls no longer knew the peer when we wrote to it.
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

    __slots__ = ("created", "identity", "last_active", "peer", "pending_identity", "state")

    def __init__(self, peer: Hashable, now: float) -> None:
        self.peer = peer
        self.state = SessionState.HANDSHAKING
        self.created = now
        self.last_active = now
        self.identity: bytes | None = None
        self.pending_identity: bytes | None = None

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
    ) -> None:
        self.max_sessions = max_sessions
        self.max_handshakes = max_handshakes
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
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

    def establish(self, session: Session, identity: bytes, now: float) -> None:
        """The handshake of ``session`` completed with ``identity``."""
        self._unindex(session)
        self._handshaking.pop(session.peer, None)
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
        session.state = SessionState.HANDSHAKING
        session.identity = None
        session.pending_identity = None
        session.created = now
        session.last_active = now
        self._handshaking[session.peer] = session
        self._handshaking.move_to_end(session.peer)

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
        self._handshaking.pop(session.peer, None)
        self._unindex(session)

    def _unindex(self, session: Session) -> None:
        if session.identity is None:
            return
        peers = self._by_identity.get(session.identity)
        if peers is not None:
            peers.pop(session.peer, None)
            if not peers:
                del self._by_identity[session.identity]
