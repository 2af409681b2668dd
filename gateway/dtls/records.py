"""Just enough of the DTLS 1.2 record layer to triage datagrams before tinydtls.

Sans-I/O: pure functions over bytes. The server looks at the plaintext parts of
a record (RFC 6347 §4.1 record header, §4.2.2 handshake header, §4.2.1
ClientHello cookie) to decide, without touching any state, whether a datagram
from an unknown peer may start a handshake, whether that handshake would make
tinydtls allocate state (a ClientHello that carries a cookie), and which
handshake message tinydtls itself just sent (HelloVerifyRequest: still
stateless; ServerHello: a peer now exists).
"""

from __future__ import annotations

from enum import IntEnum

#: DTLS 1.2 and DTLS 1.0 record versions on the wire (RFC 6347 §4.1).
DTLS_VERSIONS = (b"\xfe\xfd", b"\xfe\xff")
#: Record header: type(1) version(2) epoch(2) sequence_number(6) length(2).
RECORD_HEADER_LENGTH = 13
#: Handshake header: msg_type(1) length(3) message_seq(2) fragment_offset(3)
#: fragment_length(3) (RFC 6347 §4.2.2).
HANDSHAKE_HEADER_LENGTH = 12


class ContentType(IntEnum):
    """TLS record content types (RFC 5246 §6.2.1)."""

    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


class HandshakeType(IntEnum):
    """Handshake message types used by a DTLS-PSK server (RFC 5246 §7.4,
    RFC 6347 §4.2.1 for hello_verify_request)."""

    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    HELLO_VERIFY_REQUEST = 3
    SERVER_HELLO_DONE = 14
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20


class AlertLevel(IntEnum):
    """Alert levels (RFC 5246 §7.2)."""

    WARNING = 1
    FATAL = 2


class AlertDescription(IntEnum):
    """The alert descriptions the server reacts to (RFC 5246 §7.2)."""

    CLOSE_NOTIFY = 0


def record_header(datagram: bytes) -> tuple[int, int] | None:
    """Return ``(content_type, epoch)`` of the first record in ``datagram``, or
    None if it does not start with a well-formed DTLS record header
    (RFC 6347 §4.1: known content type, DTLS version, length within the
    datagram)."""
    if len(datagram) < RECORD_HEADER_LENGTH:
        return None
    content_type = datagram[0]
    if content_type not in _CONTENT_TYPES or datagram[1:3] not in DTLS_VERSIONS:
        return None
    length = int.from_bytes(datagram[11:13], "big")
    if RECORD_HEADER_LENGTH + length > len(datagram):
        return None
    return content_type, int.from_bytes(datagram[3:5], "big")


_CONTENT_TYPES = frozenset(int(t) for t in ContentType)


def first_handshake_type(datagram: bytes) -> int | None:
    """Return the msg_type of the handshake message in the first record if that
    record is an epoch-0 (plaintext) handshake record, else None
    (RFC 6347 §4.2.2)."""
    header = record_header(datagram)
    if header is None or header != (ContentType.HANDSHAKE, 0):
        return None
    if len(datagram) < RECORD_HEADER_LENGTH + HANDSHAKE_HEADER_LENGTH:
        return None
    return datagram[RECORD_HEADER_LENGTH]


def client_hello_cookie_length(datagram: bytes) -> int | None:
    """If ``datagram`` starts with a plaintext ClientHello, return the length of
    its cookie (0 for the first ClientHello of a handshake, RFC 6347 §4.2.1);
    otherwise None.

    Only a ClientHello whose cookie is non-empty can make the server allocate
    handshake state: without a cookie the server answers with a stateless
    HelloVerifyRequest.
    """
    if first_handshake_type(datagram) != HandshakeType.CLIENT_HELLO:
        return None
    body = RECORD_HEADER_LENGTH + HANDSHAKE_HEADER_LENGTH
    # client_version(2) random(32) session_id<0..32> cookie<0..2^8-1>
    session_id_at = body + 2 + 32
    if len(datagram) <= session_id_at:
        return None
    cookie_at = session_id_at + 1 + datagram[session_id_at]
    if len(datagram) <= cookie_at:
        return None
    cookie_length = datagram[cookie_at]
    if len(datagram) < cookie_at + 1 + cookie_length:
        return None
    return cookie_length


def is_encrypted_handshake(datagram: bytes) -> bool:
    """True if some record in ``datagram`` is a handshake record of a non-zero
    epoch: in a DTLS-PSK handshake that is the peer's Finished message
    (RFC 5246 §7.4.9), the first message protected by the negotiated keys."""
    offset = 0
    while True:
        header = record_header(datagram[offset:])
        if header is None:
            return False
        content_type, epoch = header
        if content_type == ContentType.HANDSHAKE and epoch != 0:
            return True
        length = int.from_bytes(datagram[offset + 11 : offset + 13], "big")
        offset += RECORD_HEADER_LENGTH + length
