"""Just enough of the DTLS 1.2 record layer to triage datagrams before tinydtls.

Sans-I/O: pure functions over bytes. The server looks at the plaintext parts of
a record (RFC 6347 §4.1 record header, §4.2.2 handshake header, §4.2.1
ClientHello cookie) to decide, without touching any state, whether a datagram
from an unknown peer may start a handshake, whether that handshake would make
tinydtls allocate state (a ClientHello that carries a cookie), and which
handshake message tinydtls itself just sent (HelloVerifyRequest: still
stateless; ServerHello: a peer now exists).

It also screens what a peer sends while its handshake is half-open
(:func:`screen_half_open`), so that tinydtls 0.8.6 never sees what it
handles badly: records with a handshake message_seq far ahead of the next
expected one (its reorder queue allocates for each without a limit), handshake
messages a PSK server never receives from a client, ClientHellos with a
session id longer than 32 bytes or too short to hold their fields, plaintext
Alerts that are not exactly two bytes (RFC 5246 §7.2).
"""

from __future__ import annotations

from dtls12.errors import AlertDescription, AlertLevel
from dtls12.wire import HANDSHAKE_HEADER_LENGTH, RECORD_HEADER_LENGTH, ContentType, HandshakeType
from dtls12.wire import MAX_SESSION_ID as MAX_SESSION_ID_LENGTH

#: DTLS 1.2 and DTLS 1.0 record versions on the wire (RFC 6347 §4.1).
DTLS_VERSIONS = (b"\xfe\xfd", b"\xfe\xff")
#: Handshake messages a peer may send ahead of the next expected message_seq
#: (RFC 6347 §4.2.2 lets a receiver buffer "future" messages; a PSK client
#: sends at most ClientKeyExchange and Finished in one flight).
HANDSHAKE_SEQ_WINDOW = 4


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


#: The content types of RFC 5246 §6.2.1 (not tls12_cid: tinydtls 0.8.6 has no
#: Connection ID, RFC 9146).
_CONTENT_TYPES = frozenset(
    {
        ContentType.CHANGE_CIPHER_SPEC,
        ContentType.ALERT,
        ContentType.HANDSHAKE,
        ContentType.APPLICATION_DATA,
    }
)


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
    """If ``datagram`` starts with a well-formed plaintext ClientHello, return
    the length of its cookie (0 for the first ClientHello of a handshake,
    RFC 6347 §4.2.1); otherwise None. Well-formed: a session id of at most 32
    bytes, and cipher suites and compression methods within the record
    (RFC 5246 §7.4.1.2).

    Only a ClientHello whose cookie is non-empty can make the server allocate
    handshake state: without a cookie the server answers with a stateless
    HelloVerifyRequest.
    """
    if first_handshake_type(datagram) != HandshakeType.CLIENT_HELLO:
        return None
    body = RECORD_HEADER_LENGTH + HANDSHAKE_HEADER_LENGTH
    # client_version(2) random(32) session_id<0..32> cookie<0..2^8-1>
    session_id_at = body + 2 + 32
    end = RECORD_HEADER_LENGTH + int.from_bytes(datagram[11:13], "big")
    if end <= session_id_at or datagram[session_id_at] > MAX_SESSION_ID_LENGTH:
        return None
    cookie_at = session_id_at + 1 + datagram[session_id_at]
    if end <= cookie_at:
        return None
    cookie_length = datagram[cookie_at]
    # cipher_suites<2..2^16-2> and compression_methods<1..2^8-1> follow
    suites_at = cookie_at + 1 + cookie_length
    if end < suites_at + 2:
        return None
    suites = int.from_bytes(datagram[suites_at : suites_at + 2], "big")
    methods_at = suites_at + 2 + suites
    if suites < 2 or suites % 2 or end < methods_at + 2 or datagram[methods_at] < 1:
        return None
    if end < methods_at + 1 + datagram[methods_at]:
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


#: Handshake messages a DTLS-PSK server accepts in plaintext from a client
#: (RFC 4279 §2; the Finished is encrypted).
_CLIENT_PLAINTEXT_HANDSHAKES = frozenset(
    {HandshakeType.CLIENT_HELLO, HandshakeType.CLIENT_KEY_EXCHANGE}
)


def screen_half_open(datagram: bytes, next_seq: int) -> tuple[str | None, int]:
    """Judge a datagram from a peer whose handshake is half-open, before
    tinydtls sees it: ``(reason, next_seq)`` where ``reason`` is None to pass
    it on, or why to drop it whole (a metrics label), and ``next_seq`` is the
    message_seq the peer should send next once it passed.

    Dropped (RFC 6347 §4.1.2.7: invalid records are silently discarded):
    ``handshake_window``: a plaintext handshake message beyond
    :data:`HANDSHAKE_SEQ_WINDOW` of ``next_seq``; ``malformed``: a datagram
    that is not a sequence of DTLS records, a plaintext handshake message
    other than ClientHello or ClientKeyExchange, a fragmented one, a
    malformed ClientHello, or a plaintext Alert whose length is not 2."""
    offset = 0
    size = len(datagram)
    while offset < size:
        if size - offset < RECORD_HEADER_LENGTH:
            return "malformed", next_seq
        content_type = datagram[offset]
        if (
            content_type not in _CONTENT_TYPES
            or datagram[offset + 1 : offset + 3] not in DTLS_VERSIONS
        ):
            return "malformed", next_seq
        length = int.from_bytes(datagram[offset + 11 : offset + 13], "big")
        body = offset + RECORD_HEADER_LENGTH
        if body + length > size:
            return "malformed", next_seq
        plaintext = datagram[offset + 3 : offset + 5] == b"\0\0"
        if plaintext and content_type == ContentType.ALERT and length != 2:
            return "malformed", next_seq
        if plaintext and content_type == ContentType.HANDSHAKE:
            if length < HANDSHAKE_HEADER_LENGTH:
                return "malformed", next_seq
            msg_type = datagram[body]
            fragment = datagram[body + 1 : body + 4]
            if (
                msg_type not in _CLIENT_PLAINTEXT_HANDSHAKES
                or datagram[body + 6 : body + 9] != b"\0\0\0"
                or datagram[body + 9 : body + 12] != fragment
                or int.from_bytes(fragment, "big") + HANDSHAKE_HEADER_LENGTH != length
            ):
                return "malformed", next_seq
            if msg_type == HandshakeType.CLIENT_HELLO and (
                client_hello_cookie_length(datagram[offset : body + length]) is None
            ):
                return "malformed", next_seq
            seq = int.from_bytes(datagram[body + 4 : body + 6], "big")
            if seq >= next_seq + HANDSHAKE_SEQ_WINDOW:
                return "handshake_window", next_seq
            if seq == next_seq:
                next_seq += 1
        offset = body + length
    return None, next_seq


def handshake_seq(datagram: bytes) -> int | None:
    """The message_seq of the plaintext handshake message in the first record
    (RFC 6347 §4.2.2), or None."""
    if first_handshake_type(datagram) is None:
        return None
    at = RECORD_HEADER_LENGTH + 4
    return int.from_bytes(datagram[at : at + 2], "big")


__all__ = [
    "DTLS_VERSIONS",
    "HANDSHAKE_HEADER_LENGTH",
    "HANDSHAKE_SEQ_WINDOW",
    "MAX_SESSION_ID_LENGTH",
    "RECORD_HEADER_LENGTH",
    "AlertDescription",
    "AlertLevel",
    "ContentType",
    "HandshakeType",
    "client_hello_cookie_length",
    "first_handshake_type",
    "handshake_seq",
    "is_encrypted_handshake",
    "record_header",
    "screen_half_open",
]
