"""The gateway's DTLS-PSK server transport for aiocoap (RFC 7252 §9 CoAP over
DTLS, RFC 6347 DTLS 1.2, RFC 4279 PSK), built on DTLSSocket/tinydtls.

Typical use::

    context, server = await create_server_context(site, DtlsServerConfig(port=5684), psk_lookup)
    ...  # resources see request.remote.psk_identity
    server.close_identity(b"device-7")  # device disabled or PSK rotated
    await context.shutdown()
"""

from .config import COAPS_PORT, DtlsServerConfig
from .remote import DtlsRemote, DtlsSessionClosed, PskIdentityClaim
from .server import (
    DtlsServer,
    HandshakeHook,
    HandshakeOutcome,
    IdentityCheck,
    PskLookup,
    SessionClosedHook,
    create_server_context,
)
from .session import CloseReason, HandshakeFailure
from .stats import DtlsStats
from .tinydtls import MAX_IDENTITY_LENGTH, MAX_PSK_LENGTH

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
    "HandshakeFailure",
    "HandshakeHook",
    "HandshakeOutcome",
    "IdentityCheck",
    "PskIdentityClaim",
    "PskLookup",
    "SessionClosedHook",
    "create_server_context",
]
