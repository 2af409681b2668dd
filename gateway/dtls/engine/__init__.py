"""A sans-I/O DTLS 1.2 PSK server engine with Connection ID, and its asyncio
UDP driver (RFC 6347, RFC 4279, RFC 6655, RFC 7627, RFC 9146; RFC 9202 access
tokens as PSK identities through the lookup callback).

Typical use::

    endpoint = await DtlsEndpoint.serve(EngineConfig(), psk_lookup, on_event, host="::", port=5684)
    ...  # on_event(ApplicationData(session, data)) -> endpoint.send(session, reply)
    endpoint.close()
"""

from .config import EngineConfig
from .engine import DtlsServerEngine, PskLookup
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
    "Session",
    "SessionClosed",
    "SessionEstablished",
    "identity_label",
]
