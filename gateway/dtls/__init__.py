"""The gateway's DTLS-PSK server transport for aiocoap (RFC 7252 §9 CoAP over
DTLS, RFC 6347 DTLS 1.2, RFC 4279 PSK, RFC 9146 Connection ID), built on the
project's own sans-I/O engine (:mod:`dtls12`).

Typical use::

    context, server = await create_server_context(site, DtlsServerConfig(port=5684), psk_lookup)
    ...  # resources see request.remote.psk_identity
    server.close_identity(b"device-7")  # device disabled or PSK rotated
    await context.shutdown()
"""

from dtls12.config import DEFAULT_MAX_IDENTITY, MAX_PSK_LENGTH

from .config import COAPS_PORT, DtlsServerConfig
from .interface import (
    HandshakeHook,
    HandshakeOutcome,
    IdentityCheck,
    PskLookup,
    SessionClosedHook,
)
from .remote import DtlsRemote, DtlsSessionClosed, PskIdentityClaim
from .server import DtlsServer, HandOver, create_server_context
from .session import CloseReason, HandshakeFailure
from .stats import DtlsStats

#: Longest PSK identity the server looks up (RFC 9202 §3.2.2: a whole access
#: token may be the identity; RFC 4279 §5.3 asks for at least 128 bytes).
MAX_IDENTITY_LENGTH = DEFAULT_MAX_IDENTITY

__all__ = [
    "COAPS_PORT",
    "MAX_IDENTITY_LENGTH",
    "MAX_PSK_LENGTH",
    "CloseReason",
    "DtlsRemote",
    "DtlsServer",
    "DtlsServerConfig",
    "DtlsSessionClosed",
    "DtlsStats",
    "HandOver",
    "HandshakeFailure",
    "HandshakeHook",
    "HandshakeOutcome",
    "IdentityCheck",
    "PskIdentityClaim",
    "PskLookup",
    "SessionClosedHook",
    "create_server_context",
]
