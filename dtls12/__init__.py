"""DTLS 1.2 PSK, sans-I/O: records, handshake, a server engine with
Connection ID and a minimal client (RFC 6347, RFC 4279, RFC 6655, RFC 7627,
RFC 9146; RFC 9202 access tokens as PSK identities through the lookup
callback). Datagram, address and ``now`` in; datagrams, events and the next
deadline out. No I/O and no asyncio here: the gateway drives the server
(``gateway.dtls.server``, ``gateway.dtls.endpoint``), the simulator and the
probe drive the client. Imports only ``cryptography`` and the standard library.

Typical use::

    engine = DtlsServerEngine(EngineConfig(), psk_lookup, now=clock())
    engine.receive_datagram(datagram, address, clock())
    for data, address in engine.datagrams_to_send(): ...  # to the socket
    for event in engine.events(): ...  # ApplicationData -> engine.send(session, reply)
    engine.next_deadline()  # when due: engine.handle_timer(clock())
"""

from .config import EngineConfig
from .engine import PSK_PENDING, DtlsServerEngine, PskLookup, PskPending
from .errors import AlertDescription, ConfigurationError, EngineError, ParseError
from .events import (
    Address,
    AddressChanged,
    ApplicationData,
    CloseReason,
    Event,
    ForeignConnectionId,
    HandshakeFailed,
    HandshakeFailure,
    SessionClosed,
    SessionEstablished,
    identity_label,
)
from .session import Session

__all__ = [
    "PSK_PENDING",
    "Address",
    "AddressChanged",
    "AlertDescription",
    "ApplicationData",
    "CloseReason",
    "ConfigurationError",
    "DtlsServerEngine",
    "EngineConfig",
    "EngineError",
    "Event",
    "ForeignConnectionId",
    "HandshakeFailed",
    "HandshakeFailure",
    "ParseError",
    "PskLookup",
    "PskPending",
    "Session",
    "SessionClosed",
    "SessionEstablished",
    "identity_label",
]
