"""What the engine reports to its driver (h11/aioquic style events).

No secret is in any event. ``identity`` may be a whole access token
(RFC 9202 §3.2.2); render it with :func:`identity_label` before logging.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session

#: A peer's transport address as the driver gives it (e.g. a socket address).
Address = Hashable


class CloseReason(StrEnum):
    """Why an established session ended (metrics label, audit field)."""

    PEER_CLOSED = "peer_closed"
    FATAL_ALERT = "fatal_alert"
    IDLE_TIMEOUT = "idle_timeout"
    CLOSED = "closed"
    #: The peer completed a new handshake from the same address (RFC 6347 §4.2.8).
    REHANDSHAKE = "rehandshake"
    SHUTDOWN = "shutdown"
    #: The session table was full and this was the longest-idle session.
    EVICTED = "evicted"


class HandshakeFailure(StrEnum):
    """Why a handshake did not complete. The first two look the same on the
    wire (bad_record_mac, RFC 4279 §5.1); only the server knows which."""

    UNKNOWN_IDENTITY = "unknown_identity"
    BAD_FINISHED = "bad_finished"
    TIMEOUT = "timeout"
    #: The peer sent an alert.
    ALERT = "alert"
    #: Malformed or unacceptable handshake (we sent a fatal alert).
    PROTOCOL = "protocol"
    #: A new ClientHello from the same address replaced it, or it was closed.
    CLOSED = "closed"
    #: The driver's admission check refused the identity from this address
    #: (a lockout); the handshake went on with a random key and failed at the
    #: Finished like an unknown identity, so the peer cannot tell.
    LOCKED_OUT = "locked_out"
    #: The handshake table was full and this one had stalled (no datagram
    #: from its peer since the server's first flight): a new one took its place.
    DISPLACED = "displaced"


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    """The handshake completed: ``session.identity`` holds the PSK."""

    session: Session


@dataclass(frozen=True, slots=True)
class ApplicationData:
    """One authenticated application_data record's plaintext."""

    session: Session
    data: bytes


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """An established session ended; nothing more is sent on it."""

    session: Session
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """A handshake that had server state ended without a session."""

    address: Address
    #: The psk_identity presented, if the handshake got that far.
    identity: bytes | None
    reason: HandshakeFailure

    def __repr__(self) -> str:  # the identity may be a whole token
        who = identity_label(self.identity) if self.identity is not None else None
        return f"HandshakeFailed({self.address!r}, {who}, {self.reason.value})"


@dataclass(frozen=True, slots=True)
class AddressChanged:
    """An authenticated tls12_cid record newer than any before came from
    another address; replies now go there (RFC 9146 §6)."""

    session: Session
    old_address: Address
    new_address: Address


@dataclass(frozen=True, slots=True)
class ForeignConnectionId:
    """A datagram whose CID names another worker (``owner``) as the session's
    owner; the driver may hand it over."""

    owner: int
    datagram: bytes
    address: Address


Event = (
    SessionEstablished
    | ApplicationData
    | SessionClosed
    | HandshakeFailed
    | AddressChanged
    | ForeignConnectionId
)


def identity_label(identity: bytes) -> str:
    """A log-safe rendering of a PSK identity: short printable ones as text,
    anything longer than 32 bytes (it may be a whole token) by a digest."""
    if len(identity) > 32:
        return f"sha256:{hashlib.sha256(identity).hexdigest()[:16]}({len(identity)}B)"
    if identity and all(0x21 <= b < 0x7F for b in identity):
        return identity.decode("ascii")
    return "hex:" + identity.hex()
