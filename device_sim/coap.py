"""A small CoAP message codec (RFC 7252 §3) and the confirmable-message
retransmission rule (RFC 7252 §4.2, §4.8), for the simulator's devices.

Why not :class:`aiocoap.Message`: the simulator encodes and decodes every
request and response of thousands of devices in one process, and only needs
the header, the token, a few options and the payload; this codec is several
times cheaper per message than aiocoap's (``python -m bench.sim``; figures in
BENCHMARKS.md).

Decoding raises only :class:`CoapFormatError`; the simulator counts such
answers as an error kind and never crashes on a peer's bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "CoapFormatError",
    "CoapMessage",
    "MessageType",
    "OptionNumber",
    "TransmissionParameters",
    "code_text",
    "decode",
    "encode",
    "encode_uint",
    "path_options",
]


class MessageType(IntEnum):
    """RFC 7252 §3 message types."""

    CON = 0
    NON = 1
    ACK = 2
    RST = 3


class OptionNumber(IntEnum):
    """Options the simulator sends or reads (RFC 7252 §5.10, RFC 7959 §2.1,
    RFC 9175 §2.2, DESIGN's Proof option)."""

    URI_HOST = 3
    URI_PORT = 7
    URI_PATH = 11
    CONTENT_FORMAT = 12
    MAX_AGE = 14
    URI_QUERY = 15
    BLOCK2 = 23
    BLOCK1 = 27
    SIZE2 = 28
    SIZE1 = 60
    ECHO = 252
    PROOF = 65001


class CoapFormatError(Exception):
    """Bytes that are not a well-formed CoAP message (RFC 7252 §3)."""


#: An option as (number, value); a message keeps them sorted by number.
Option = tuple[int, bytes]


@dataclass(slots=True)
class CoapMessage:
    """One CoAP message (RFC 7252 §3): header fields, token, options in
    ascending order (repeatable ones repeated), payload."""

    mtype: int
    code: int
    mid: int
    token: bytes = b""
    options: list[Option] = field(default_factory=list)
    payload: bytes = b""

    def option(self, number: int) -> bytes | None:
        """The first value of option ``number``, or None when absent."""
        for num, value in self.options:
            if num == number:
                return value
        return None

    def uint_option(self, number: int) -> int | None:
        """A uint option's value (RFC 7252 §3.2), or None when absent."""
        value = self.option(number)
        return None if value is None else int.from_bytes(value, "big")

    @property
    def is_request(self) -> bool:
        return 1 <= self.code <= 31

    @property
    def is_empty(self) -> bool:
        return self.code == 0


def code_text(code: int) -> str:
    """A code as RFC 7252 §3 writes it: ``c.dd`` (``"2.05"``)."""
    return f"{code >> 5}.{code & 0x1F:02d}"


def encode_uint(value: int) -> bytes:
    """A uint option value: shortest big-endian bytes, 0 as empty (RFC 7252 §3.2)."""
    return b"" if value == 0 else value.to_bytes((value.bit_length() + 7) >> 3, "big")


def path_options(path: str) -> list[Option]:
    """Uri-Path options for an absolute path such as ``/a/b`` (RFC 7252 §6.5)."""
    return [(OptionNumber.URI_PATH, s.encode("utf-8")) for s in path.split("/") if s]


def _ext(n: int) -> tuple[int, bytes]:
    """Option delta/length nibble and extended bytes (RFC 7252 §3.1)."""
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes((n - 13,))
    return 14, (n - 269).to_bytes(2, "big")


def encode(msg: CoapMessage) -> bytes:
    """Serialize ``msg`` (RFC 7252 §3). Options must be sorted by number."""
    token = msg.token
    if len(token) > 8:
        raise ValueError("CoAP token longer than 8 bytes")
    parts = [
        bytes((0x40 | (msg.mtype << 4) | len(token), msg.code, msg.mid >> 8, msg.mid & 0xFF)),
        token,
    ]
    last = 0
    for number, value in msg.options:
        delta = number - last
        if delta < 0:
            raise ValueError("options must be in ascending order")
        last = number
        d, dext = _ext(delta)
        n, lext = _ext(len(value))
        parts.append(bytes(((d << 4) | n,)))
        if dext:
            parts.append(dext)
        if lext:
            parts.append(lext)
        parts.append(value)
    if msg.payload:
        parts.append(b"\xff")
        parts.append(msg.payload)
    return b"".join(parts)


def decode(data: bytes) -> CoapMessage:
    """Parse one CoAP message (RFC 7252 §3); :class:`CoapFormatError` when it
    is not well-formed (version, token length, option encoding, empty payload
    after the marker, or an empty message with content)."""
    n = len(data)
    if n < 4:
        raise CoapFormatError("shorter than the CoAP header")
    first = data[0]
    if first >> 6 != 1:
        raise CoapFormatError("unknown CoAP version")
    tkl = first & 0x0F
    if tkl > 8:
        raise CoapFormatError("token length above 8")
    code = data[1]
    i = 4 + tkl
    if i > n:
        raise CoapFormatError("truncated token")
    msg = CoapMessage((first >> 4) & 3, code, (data[2] << 8) | data[3], bytes(data[4:i]))
    if code == 0:
        if n != 4 or tkl:
            raise CoapFormatError("empty message with content")
        return msg
    options = msg.options
    number = 0
    while i < n:
        byte = data[i]
        if byte == 0xFF:
            if i + 1 == n:
                raise CoapFormatError("payload marker without payload")
            msg.payload = bytes(data[i + 1 :])
            return msg
        i += 1
        delta, length = byte >> 4, byte & 0x0F
        try:
            if delta == 13:
                delta = data[i] + 13
                i += 1
            elif delta == 14:
                delta = ((data[i] << 8) | data[i + 1]) + 269
                i += 2
            elif delta == 15:
                raise CoapFormatError("reserved option delta")
            if length == 13:
                length = data[i] + 13
                i += 1
            elif length == 14:
                length = ((data[i] << 8) | data[i + 1]) + 269
                i += 2
            elif length == 15:
                raise CoapFormatError("reserved option length")
        except IndexError:
            raise CoapFormatError("truncated option header") from None
        if i + length > n:
            raise CoapFormatError("truncated option value")
        number += delta
        options.append((number, bytes(data[i : i + length])))
        i += length
    return msg


@dataclass(frozen=True, slots=True)
class TransmissionParameters:
    """RFC 7252 §4.8 transmission parameters (defaults as there).

    ``nstart`` is fixed at 1 by the device model (one outstanding exchange per
    device, RFC 7252 §4.7)."""

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4

    def initial_timeout(self, rng: random.Random) -> float:
        """A random initial timeout in [ACK_TIMEOUT, ACK_TIMEOUT *
        ACK_RANDOM_FACTOR] (RFC 7252 §4.2)."""
        return self.ack_timeout * (1.0 + rng.random() * (self.ack_random_factor - 1.0))

    @property
    def max_transmit_span(self) -> float:
        """MAX_TRANSMIT_SPAN (RFC 7252 §4.8.2)."""
        return float(self.ack_timeout * (2**self.max_retransmit - 1) * self.ack_random_factor)

    @property
    def max_transmit_wait(self) -> float:
        """MAX_TRANSMIT_WAIT (RFC 7252 §4.8.2): when a CON sender gives up."""
        return float(
            self.ack_timeout * (2 ** (self.max_retransmit + 1) - 1) * self.ack_random_factor
        )
