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

The loop over the options is :func:`parse_options`, or its C twin
``gateway.dtls._codec.parse_options`` when ``pip install`` built it
(:data:`ACCELERATED`); both are tested against aiocoap's decoder and each
other. The C one builds the common option objects (opaque, string, uint)
without running Python code, which the per-request Proof option also needs.

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

from gateway.coap.aiocoap_adapter import options_from

__all__ = ["ACCELERATED", "decode_message", "parse_options", "spec_of"]

_TYPES = (Type.CON, Type.NON, Type.ACK, Type.RST)
_CODES = [Code(n) for n in range(256)]
_PAYLOAD_MARKER = 0xFF

#: how an option is built from its raw value (see :func:`spec_of`)
_OPAQUE, _STRING, _UINT, _CALL = 0, 1, 2, 3
_KINDS = {
    optiontypes.OpaqueOption: _OPAQUE,
    optiontypes.StringOption: _STRING,
    optiontypes.UintOption: _UINT,
}
#: option number -> its spec, filled on first use
_SPECS: dict[int, tuple[int, Any, Any]] = {}


def spec_of(number: int) -> tuple[int, Any, Any]:
    """How aiocoap would decode option ``number`` (its option number object
    and format class), remembered: ``(kind, cls, number)`` for the common
    formats, whose objects are ``cls(number, value)`` with the value decoded
    here; else ``(3, make, None)``, whose objects are ``make(raw)``."""
    opt = OptionNumber(number)
    cls = opt.format
    kind = _KINDS.get(cls)
    spec: tuple[int, Any, Any]
    if kind is None:

        def make(raw: bytes) -> Any:
            return opt.create_option(decode=raw)

        spec = (_CALL, make, None)
    else:
        spec = (kind, cls, opt)
    if len(_SPECS) < 4096:
        _SPECS[number] = spec
    return spec


def _extended(nibble: int, data: bytes, i: int) -> tuple[int, int]:
    """An option delta or length nibble of 13-15 with its extended bytes at
    ``i`` (RFC 7252 §3.1): the value and the index after them."""
    if nibble == 13:
        return data[i] + 13, i + 1
    if nibble == 14:
        return (data[i] << 8 | data[i + 1]) + 269, i + 2
    raise UnparsableMessage("Option contained partial payload marker.")


def parse_options(
    data: bytes,
    i: int,
    specs: dict[int, tuple[int, Any, Any]],
    spec_of: Callable[[int], tuple[int, Any, Any]],
) -> tuple[dict[Any, list[Any]], bytes]:
    """The options from ``data[i:]`` (option number -> option objects, keyed
    by aiocoap's option number objects) and the payload after them
    (RFC 7252 §3.1); :class:`~aiocoap.error.UnparsableMessage` for a message
    format error. The reference of its C twin ``gateway.dtls._codec``, which
    :func:`decode_message` uses when it is built."""
    n = len(data)
    options: dict[Any, list[Any]] = {}
    number = 0
    try:
        while i < n:
            byte = data[i]
            if byte == _PAYLOAD_MARKER:
                if i + 1 == n:
                    raise UnparsableMessage("Payload marker with no payload")
                return options, data[i + 1 :]
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
            spec = specs.get(number)
            if spec is None:
                spec = spec_of(number)
            kind, cls, opt = spec
            raw = data[i:end]
            if kind == _OPAQUE:
                option = cls(opt, raw)
            elif kind == _STRING:
                option = cls(opt, raw.decode("utf-8"))
            elif kind == _UINT:
                option = cls(opt, int.from_bytes(raw, "big"))
            else:
                option = cls(raw)
            i = end
            same = options.get(option.number)
            if same is None:
                options[option.number] = [option]
            else:
                same.append(option)
    except IndexError:
        raise UnparsableMessage("Option ended prematurely") from None
    return options, b""


try:
    from ._codec import parse_options as _parse_options
except ImportError:  # built by `pip install` (setup.py); the Python loop stands in
    _parse_options = parse_options

#: Whether :func:`decode_message` parses options in C (``gateway.dtls._codec``).
ACCELERATED = _parse_options is not parse_options


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
    options, payload = _parse_options(data, i, _SPECS, spec_of)
    message: Message = Message.__new__(Message)
    message.version = 1
    message.mtype = _TYPES[(first >> 4) & 0x03]
    message.mid = data[2] << 8 | data[3]
    message.code = _CODES[data[1]]
    message.token = data[4 : 4 + tkl]
    message.payload = payload
    message.opt = options_from(options)
    message.remote = remote
    message.direction = Direction.INCOMING
    message.transport_tuning = transport_tuning
    return message
