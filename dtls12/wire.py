"""DTLS 1.2 wire formats a PSK server needs: record headers with and without a
Connection ID, handshake headers, ClientHello, ClientKeyExchange and the
server's own messages (RFC 6347 §4.1 and §4.2, RFC 5246 §7.4, RFC 4279 §2,
RFC 9146 §3-§4, RFC 7627 §5.1, RFC 5746 §3.2).

Pure functions over bytes. Every parser either returns a value or raises
:class:`~dtls12.errors.ParseError`; nothing else escapes for
any input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .errors import ParseError

#: Record layer versions (RFC 6347 §4.1: DTLS 1.2 is {254, 253}, 1.0 {254, 255}).
DTLS_1_2 = 0xFEFD
DTLS_1_0 = 0xFEFF
#: type(1) version(2) epoch(2) sequence_number(6) length(2).
RECORD_HEADER_LENGTH = 13
#: msg_type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3).
HANDSHAKE_HEADER_LENGTH = 12
#: Largest sequence number of an epoch (48 bits, RFC 6347 §4.1).
MAX_SEQUENCE = (1 << 48) - 1
#: Largest ciphertext fragment accepted (RFC 5246 §6.2.3: 2^14 + 2048).
MAX_CIPHERTEXT = (1 << 14) + 2048
#: Largest session_id (RFC 5246 §7.4.1.2).
MAX_SESSION_ID = 32

_RECORD = struct.Struct(">BHHHIH")
_HANDSHAKE = struct.Struct(">B3sH3s3s")


class ContentType(IntEnum):
    """Record content types (RFC 5246 §6.2.1; tls12_cid from RFC 9146 §4)."""

    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    TLS12_CID = 25


class HandshakeType(IntEnum):
    """Handshake messages (RFC 5246 §7.4; hello_verify_request RFC 6347 §4.3.2)."""

    HELLO_REQUEST = 0
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    HELLO_VERIFY_REQUEST = 3
    SERVER_KEY_EXCHANGE = 12
    SERVER_HELLO_DONE = 14
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20


class ExtensionType(IntEnum):
    """The ClientHello extensions a PSK server answers."""

    #: RFC 7627 §5.1.
    EXTENDED_MASTER_SECRET = 23
    #: RFC 9146 §3 (draft versions used 53, with another record format).
    CONNECTION_ID = 54
    #: RFC 5746 §3.2.
    RENEGOTIATION_INFO = 0xFF01


#: RFC 5746 §3.3 signalling cipher suite value.
TLS_EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a datagram. ``header`` is the record header as received
    (type through length, the CID included), ``fragment`` its payload."""

    content_type: int
    version: int
    epoch: int
    sequence: int
    cid: bytes
    header: bytes
    fragment: bytes


def parse_records(datagram: bytes, cid_length: int) -> tuple[list[Record], bool]:
    """Split ``datagram`` into records (RFC 6347 §4.1.1: several records may
    share a datagram). A ``tls12_cid`` record carries a CID of ``cid_length``
    bytes, the length this server gives out (RFC 9146 §4). Returns the
    well-formed records and whether the datagram was cut short by a malformed
    one (the rest is dropped, RFC 6347 §4.1.2.7)."""
    records: list[Record] = []
    offset = 0
    total = len(datagram)
    while offset < total:
        if total - offset < RECORD_HEADER_LENGTH:
            return records, True
        content_type, version, epoch, seq_high, seq_low, length = _RECORD.unpack_from(
            datagram, offset
        )
        start = offset + RECORD_HEADER_LENGTH
        cid = b""
        if content_type == ContentType.TLS12_CID:
            if cid_length == 0 or total - offset < RECORD_HEADER_LENGTH + cid_length:
                return records, True
            # The CID sits between sequence_number and length (RFC 9146 §4).
            cid = datagram[offset + 11 : offset + 11 + cid_length]
            length = int.from_bytes(datagram[start - 2 + cid_length : start + cid_length], "big")
            start += cid_length
        if version >> 8 != 0xFE or length > MAX_CIPHERTEXT or start + length > total:
            return records, True
        records.append(
            Record(
                content_type,
                version,
                epoch,
                (seq_high << 32) | seq_low,
                cid,
                datagram[offset:start],
                datagram[start : start + length],
            )
        )
        offset = start + length
    return records, False


def record_header(content_type: int, epoch: int, sequence: int, length: int) -> bytes:
    """A DTLS 1.2 record header without CID (RFC 6347 §4.1)."""
    return _RECORD.pack(
        content_type, DTLS_1_2, epoch, sequence >> 32, sequence & 0xFFFFFFFF, length
    )


def plaintext_record(content_type: int, epoch: int, sequence: int, payload: bytes) -> bytes:
    """An unprotected record (epoch 0)."""
    return record_header(content_type, epoch, sequence, len(payload)) + payload


@dataclass(frozen=True, slots=True)
class HandshakeFragment:
    """One handshake message fragment (RFC 6347 §4.2.2)."""

    msg_type: int
    length: int
    message_seq: int
    fragment_offset: int
    body: bytes

    @property
    def is_whole(self) -> bool:
        """True when the fragment is the entire message."""
        return self.fragment_offset == 0 and len(self.body) == self.length


def parse_handshake_fragments(payload: bytes) -> list[HandshakeFragment]:
    """The handshake fragments of one record (several may share it)."""
    fragments = []
    offset = 0
    while offset < len(payload):
        if len(payload) - offset < HANDSHAKE_HEADER_LENGTH:
            raise ParseError("truncated handshake header")
        msg_type, length, seq, frag_offset, frag_length = _HANDSHAKE.unpack_from(payload, offset)
        total = int.from_bytes(length, "big")
        start = int.from_bytes(frag_offset, "big")
        size = int.from_bytes(frag_length, "big")
        offset += HANDSHAKE_HEADER_LENGTH
        if start + size > total or offset + size > len(payload):
            raise ParseError("handshake fragment outside its message or record")
        fragments.append(
            HandshakeFragment(msg_type, total, seq, start, payload[offset : offset + size])
        )
        offset += size
    return fragments


def handshake_message(msg_type: int, message_seq: int, body: bytes) -> bytes:
    """A whole handshake message with its DTLS header: the form sent on the
    wire and hashed into the transcript (RFC 6347 §4.2.6)."""
    length = len(body).to_bytes(3, "big")
    return _HANDSHAKE.pack(msg_type, length, message_seq, b"\0\0\0", length) + body


class Reader:
    """Bounds-checked reads over untrusted bytes (raises ParseError)."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise ParseError("truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.uint(length_size))

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def end(self) -> None:
        if self.remaining:
            raise ParseError("trailing bytes")


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A parsed ClientHello (RFC 6347 §4.2.1 adds the cookie to RFC 5246
    §7.4.1.2). ``extensions`` maps type to body; a type occurs once."""

    client_version: int
    random: bytes
    session_id: bytes
    cookie: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: dict[int, bytes]

    def cookie_input(self) -> bytes:
        """The parameters a cookie binds (RFC 6347 §4.2.1: the second
        ClientHello repeats them): everything but the cookie."""
        return b"".join(
            (
                self.client_version.to_bytes(2, "big"),
                self.random,
                bytes((len(self.session_id),)),
                self.session_id,
                b"".join(suite.to_bytes(2, "big") for suite in self.cipher_suites),
                self.compression_methods,
            )
        )


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello body. A session_id longer than 32 bytes, an empty
    cipher suite list, an odd-length one, no compression method or a repeated
    extension are decode errors (RFC 5246 §7.4.1.2, §7.4.1.4)."""
    reader = Reader(body)
    version = reader.uint(2)
    random = reader.take(32)
    session_id = reader.vector(1)
    if len(session_id) > MAX_SESSION_ID:
        raise ParseError("session_id longer than 32 bytes")
    cookie = reader.vector(1)
    suites = reader.vector(2)
    if not suites or len(suites) % 2:
        raise ParseError("cipher_suites empty or of odd length")
    compression = reader.vector(1)
    if not compression:
        raise ParseError("no compression method")
    extensions: dict[int, bytes] = {}
    if reader.remaining:
        ext_reader = Reader(reader.vector(2))
        while ext_reader.remaining:
            ext_type = ext_reader.uint(2)
            if ext_type in extensions:
                raise ParseError("repeated extension")
            extensions[ext_type] = ext_reader.vector(2)
    reader.end()
    cipher_suites = tuple(
        int.from_bytes(suites[i : i + 2], "big") for i in range(0, len(suites), 2)
    )
    return ClientHello(version, random, session_id, cookie, cipher_suites, compression, extensions)


def parse_connection_id_extension(body: bytes) -> bytes:
    """The CID a peer asks to receive (RFC 9146 §3: ``opaque cid<0..2^8-1>``)."""
    reader = Reader(body)
    cid = reader.vector(1)
    reader.end()
    return cid


def parse_client_key_exchange(body: bytes) -> bytes:
    """The psk_identity of a PSK ClientKeyExchange (RFC 4279 §2)."""
    reader = Reader(body)
    identity = reader.vector(2)
    reader.end()
    return identity


def hello_verify_request(cookie: bytes) -> bytes:
    """HelloVerifyRequest body; server_version is DTLS 1.0 as RFC 6347 §4.2.1
    recommends for any version to be negotiated."""
    return DTLS_1_0.to_bytes(2, "big") + bytes((len(cookie),)) + cookie


def extension(ext_type: int, body: bytes) -> bytes:
    """One extension (RFC 5246 §7.4.1.4)."""
    return ext_type.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


def server_hello(random: bytes, cipher_suite: int, extensions: bytes) -> bytes:
    """ServerHello body with an empty session_id (no resumption, RFC 5246
    §7.4.1.3) and null compression."""
    return b"".join(
        (
            DTLS_1_2.to_bytes(2, "big"),
            random,
            b"\x00",
            cipher_suite.to_bytes(2, "big"),
            b"\x00",
            len(extensions).to_bytes(2, "big") if extensions else b"",
            extensions,
        )
    )
