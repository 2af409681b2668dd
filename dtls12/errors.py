"""The engine's one exception root and the TLS alerts it speaks (RFC 5246 §7.2,
RFC 6347 §4.1.2.7, RFC 5746 §4, RFC 4279 §2).

Untrusted bytes either parse or raise :class:`ParseError`; a protocol failure
that ends a handshake raises :class:`AlertError` carrying the alert to send.
Neither ever leaves :class:`~dtls12.engine.DtlsServerEngine`: it
turns them into an alert on the wire, a dropped record and a counter.
"""

from __future__ import annotations

from enum import IntEnum


class AlertLevel(IntEnum):
    """Alert levels (RFC 5246 §7.2)."""

    WARNING = 1
    FATAL = 2


class AlertDescription(IntEnum):
    """The alert descriptions a DTLS 1.2 PSK server sends or reacts to
    (RFC 5246 §7.2, RFC 5746 §3.6, RFC 4279 §2)."""

    CLOSE_NOTIFY = 0
    UNEXPECTED_MESSAGE = 10
    BAD_RECORD_MAC = 20
    RECORD_OVERFLOW = 22
    HANDSHAKE_FAILURE = 40
    ILLEGAL_PARAMETER = 47
    DECODE_ERROR = 50
    DECRYPT_ERROR = 51
    PROTOCOL_VERSION = 70
    INSUFFICIENT_SECURITY = 71
    INTERNAL_ERROR = 80
    NO_RENEGOTIATION = 100
    UNSUPPORTED_EXTENSION = 110
    UNKNOWN_PSK_IDENTITY = 115


class EngineError(Exception):
    """Root of every error the DTLS engine raises."""


class ParseError(EngineError):
    """Bytes from the peer that are not a well-formed DTLS structure
    (answered with ``decode_error`` inside a handshake, else dropped)."""

    alert = AlertDescription.DECODE_ERROR


class AlertError(EngineError):
    """A handshake failure that is answered with the fatal alert
    ``description`` (RFC 5246 §7.2.2)."""

    def __init__(self, description: AlertDescription, message: str) -> None:
        super().__init__(message)
        self.alert = description


class ConfigurationError(EngineError):
    """An engine setting out of range (names the setting)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
