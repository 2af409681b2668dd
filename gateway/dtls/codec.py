"""Decoding a CoAP message from a datagram's plaintext (RFC 7252 §3) into
an aiocoap :class:`~aiocoap.message.Message`, the object the rest of the
stack works with.

It builds the same message aiocoap 0.4.17's ``Message.decode`` builds (same
attributes, option objects of the classes aiocoap's option numbers name,
values decoded as aiocoap decodes them), in one pass over the bytes and
without aiocoap's per-option arithmetic on enum objects: the gateway decodes
every request it serves, so this is on every request's path. It is stricter
than aiocoap where RFC 7252 says "MUST be processed as a message format
error": a token length of 9-15 and a payload marker followed by no payload
(§3), and an Empty message (code 0.00) with anything after the Message ID
(§4.1), are refused (:class:`~aiocoap.error.UnparsableMessage`), as are
truncated headers and options (aiocoap refuses those too).

The simulator has its own codec (``device_sim/coap.py``) on purpose: a
conformance tool that shared the gateway's decoder could not catch its
mistakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiocoap import optiontypes
from aiocoap.error import UnparsableMessage
from aiocoap.message import Direction, Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type
from aiocoap.options import Options

__all__ = ["decode_message"]

_TYPES = (Type.CON, Type.NON, Type.ACK, Type.RST)
_CODES = [Code(n) for n in range(256)]
_PAYLOAD_MARKER = 0xFF

#: option number -> function(raw value) -> option object, filled on first use
_MAKERS: dict[int, Callable[[bytes], Any]] = {}


def _maker(number: int) -> Callable[[bytes], Any]:
    """How aiocoap would decode option ``number``: its option number object
    and format class; the common formats built directly with their value."""
    opt = OptionNumber(number)
    cls = opt.format
    make: Callable[[bytes], Any]
    if cls is optiontypes.OpaqueOption:

        def make(raw: bytes) -> Any:
            return cls(opt, raw)

    elif cls is optiontypes.StringOption:

        def make(raw: bytes) -> Any:
            return cls(opt, raw.decode("utf-8"))

    elif cls is optiontypes.UintOption:

        def make(raw: bytes) -> Any:
            return cls(opt, int.from_bytes(raw, "big"))

    else:

        def make(raw: bytes) -> Any:
            return opt.create_option(decode=raw)

    if len(_MAKERS) < 4096:
        _MAKERS[number] = make
    return make


def _extended(nibble: int, data: bytes, i: int) -> tuple[int, int]:
    """An option delta or length nibble of 13-15 with its extended bytes at
    ``i`` (RFC 7252 §3.1): the value and the index after them."""
    if nibble == 13:
        return data[i] + 13, i + 1
    if nibble == 14:
        return (data[i] << 8 | data[i + 1]) + 269, i + 2
    raise UnparsableMessage("Option contained partial payload marker.")


def decode_message(data: bytes, remote: Any, transport_tuning: Any) -> Message:
    """The message encoded in ``data`` (RFC 7252 §3), received from ``remote``.

    Raises :class:`~aiocoap.error.UnparsableMessage` for a message format
    error, :class:`UnicodeDecodeError` for a string option that is not UTF-8
    (as aiocoap does)."""
    n = len(data)
    if n < 4:
        raise UnparsableMessage("Incoming message too short for CoAP")
    first = data[0]
    if first >> 6 != 1:
        raise UnparsableMessage("Fatal Error: Protocol Version must be 1")
    tkl = first & 0x0F
    if tkl > 8:
        raise UnparsableMessage("Token length 9-15 is reserved")
    i = 4 + tkl
    if i > n:
        raise UnparsableMessage("Token announced but absent")
    if data[1] == 0 and n != 4:
        raise UnparsableMessage("Empty message with content")
    options: dict[int, list[Any]] = {}
    payload = b""
    number = 0
    makers = _MAKERS
    try:
        while i < n:
            byte = data[i]
            if byte == _PAYLOAD_MARKER:
                if i + 1 == n:
                    raise UnparsableMessage("Payload marker with no payload")
                payload = data[i + 1 :]
                break
            delta = byte >> 4
            length = byte & 0x0F
            i += 1
            if delta >= 13:
                delta, i = _extended(delta, data, i)
            if length >= 13:
                length, i = _extended(length, data, i)
            number += delta
            end = i + length
            if end > n:
                raise UnparsableMessage("Option announced but absent")
            make = makers.get(number)
            if make is None:
                make = _maker(number)
            option = make(data[i:end])
            i = end
            same = options.get(number)
            if same is None:
                options[option.number] = [option]
            else:
                same.append(option)
    except IndexError:
        raise UnparsableMessage("Option ended prematurely") from None
    message: Message = Message.__new__(Message)
    message.version = 1
    message.mtype = _TYPES[(first >> 4) & 0x03]
    message.mid = data[2] << 8 | data[3]
    message.code = _CODES[data[1]]
    message.token = data[4 : 4 + tkl]
    message.payload = payload
    opt = Options.__new__(Options)
    opt._options = options
    message.opt = opt
    message.remote = remote
    message.direction = Direction.INCOMING
    message.transport_tuning = transport_tuning
    return message
