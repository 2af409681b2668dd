"""The gateway's datagram decoder builds the message aiocoap builds (RFC 7252
§3), and refuses what RFC 7252 calls message format errors."""

from __future__ import annotations

from unittest import mock

import pytest
from aiocoap import Message
from aiocoap.error import UnparsableMessage
from aiocoap.numbers import TransportTuning
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import BlockOption, OpaqueOption
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dtls import codec
from gateway.dtls.codec import decode_message
from tokens.params import PROOF_OPTION

TUNING = TransportTuning()
REMOTE = object()


def _python_decode(data: bytes, remote: object, tuning: TransportTuning) -> Message:
    """decode_message with the Python options loop (the C one's reference)."""
    with mock.patch.object(codec, "_parse_options", codec.parse_options):
        return decode_message(data, remote, tuning)


#: the gateway's decoder (C options loop) and its Python reference
DECODERS = [pytest.param(decode_message, id="c"), pytest.param(_python_decode, id="python")]


def _theirs(data: bytes) -> Message:
    message = Message.decode(data, remote=REMOTE)
    message.transport_tuning = TUNING
    return message


def _same(ours: Message, theirs: Message) -> None:
    assert sorted(vars(ours)) == sorted(vars(theirs))
    for name, value in vars(theirs).items():
        if name != "opt":
            assert getattr(ours, name) == value, name
    assert type(ours.code) is type(theirs.code) and type(ours.mtype) is type(theirs.mtype)
    mine = [(type(o), o.number, o.value) for o in ours.opt.option_list()]
    assert mine == [(type(o), o.number, o.value) for o in theirs.opt.option_list()]
    # the views resources read, and the dict keys aiocoap's own code uses
    assert ours.opt.uri_path == theirs.opt.uri_path
    assert ours.opt.content_format == theirs.opt.content_format
    assert all(type(k) is OptionNumber for k in ours.opt._options)


_TEXT = st.text(max_size=20)
_BYTES = st.binary(max_size=40)
_UINT = st.integers(0, 2**32 - 1)
_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "uri_path": st.lists(_TEXT, max_size=4).map(tuple),
        "uri_query": st.lists(_TEXT, max_size=3).map(tuple),
        "uri_host": _TEXT,
        "content_format": st.integers(0, 65535),
        "accept": st.integers(0, 65535),
        "observe": st.integers(0, 2**24 - 1),
        "max_age": _UINT,
        "size1": _UINT,
        "echo": _BYTES,
        "etag": st.binary(min_size=1, max_size=8),
        "block1": st.tuples(st.integers(0, 2**20 - 1), st.booleans(), st.integers(0, 6)),
        "block2": st.tuples(st.integers(0, 2**20 - 1), st.booleans(), st.integers(0, 6)),
    },
)


@pytest.mark.parametrize("decode", DECODERS)
@settings(max_examples=400, deadline=None)
@given(
    code=st.integers(0, 255),
    mtype=st.sampled_from(list(Type)),
    mid=st.integers(0, 0xFFFF),
    token=st.binary(max_size=8),
    options=_OPTIONS,
    proof=st.lists(st.binary(max_size=300), max_size=2),
    payload=st.binary(max_size=300),
)
def test_decodes_what_aiocoap_decodes(decode, code, mtype, mid, token, options, proof, payload):
    message = Message(code=code, payload=payload)
    message.mtype, message.mid, message.token = mtype, mid, token
    for name, value in options.items():
        if name.startswith("block"):
            value = BlockOption.BlockwiseTuple(*value)
        setattr(message.opt, name, value)
    for value in proof:
        message.opt.add_option(OpaqueOption(PROOF_OPTION, value))
    data = message.encode()
    if code == 0 and len(data) > 4:  # an Empty message with content (RFC 7252 §4.1)
        with pytest.raises(UnparsableMessage):
            decode(data, REMOTE, TUNING)
        return
    _same(decode(data, REMOTE, TUNING), _theirs(data))


@pytest.mark.parametrize("decode", DECODERS)
@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=64).map(lambda b: b"\x40\x01\x00\x01" + b))
def test_any_bytes_decode_as_aiocoap_or_are_a_format_error(decode, data):
    try:
        ours = decode(data, REMOTE, TUNING)
    except (UnparsableMessage, UnicodeDecodeError):
        ours = None
    try:
        theirs = _theirs(data)
    except (UnparsableMessage, UnicodeDecodeError):
        assert ours is None  # what aiocoap refuses is refused
        return
    if ours is None:
        # refused only where RFC 7252 §3 says "message format error" and
        # aiocoap lets it pass: a payload marker with no payload
        assert data.endswith(b"\xff") and theirs.payload == b""
    else:
        _same(ours, theirs)


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x40\x01\x00",  # shorter than the header
        b"\x80\x01\x00\x01",  # version 2
        b"\x49\x01\x00\x01" + b"t" * 9,  # token length 9 (reserved)
        b"\x44\x01\x00\x01tok",  # token announced, not all there
        b"\x40\x01\x00\x01\xff",  # payload marker, no payload
        b"\x40\x01\x00\x01\xb3ab",  # option value cut short
        b"\x40\x01\x00\x01\xd1",  # extended delta byte missing
        b"\x40\x01\x00\x01\xe1\x01",  # 2-byte extended delta cut short
        b"\x40\x01\x00\x01\xf1",  # delta 15 outside the payload marker
        b"\x40\x01\x00\x01\x1f",  # length 15
        b"\x41\x00\x00\x01t",  # Empty message with a token
        b"\x40\x00\x00\x01\xffx",  # Empty message with a payload
    ],
)
def test_message_format_errors_are_refused(decode, data):
    with pytest.raises(UnparsableMessage):
        decode(data, REMOTE, TUNING)


@pytest.mark.parametrize("decode", DECODERS)
def test_an_empty_message_decodes(decode):
    message = decode(b"\x70\x00\x12\x34", REMOTE, TUNING)  # RST
    assert (message.mtype, message.code, message.mid) == (Type.RST, Code.EMPTY, 0x1234)
    assert message.token == b"" and message.payload == b"" and not message.opt._options


@pytest.mark.parametrize("decode", DECODERS)
def test_a_proofed_request_decodes_with_its_options_typed(decode):
    request = Message(code=Code.PUT, uri_path=("sensors", "t"), payload=b"{}", content_format=50)
    request.mtype, request.mid, request.token = Type.CON, 7, b"\x01\x02"
    request.opt.add_option(OpaqueOption(PROOF_OPTION, b"\x84" * 20))
    message = decode(request.encode(), REMOTE, TUNING)
    assert message.opt.uri_path == ("sensors", "t")
    assert message.opt.get_option(PROOF_OPTION)[0].value == b"\x84" * 20
    assert (message.code, message.mtype, message.mid, message.token) == (
        Code.PUT,
        Type.CON,
        7,
        b"\x01\x02",
    )
    assert message.remote is REMOTE and message.transport_tuning is TUNING
    assert "PUT" in repr(message)


def test_the_c_options_loop_is_built():
    """`pip install` builds gateway.dtls._codec; without it every request's
    options would be decoded by the Python loop."""
    assert codec.ACCELERATED
    assert codec._parse_options.__module__ == "gateway.dtls._codec"


def test_the_c_options_loop_refuses_bad_arguments():
    from gateway.dtls._codec import parse_options

    data = b"\x40\x01\x00\x01\xb1a"
    with pytest.raises(TypeError):
        parse_options(data, 4, {})
    with pytest.raises(TypeError):
        parse_options(bytearray(data), 4, {}, codec.spec_of)
    with pytest.raises(ValueError):
        parse_options(data, 7, {}, codec.spec_of)
    with pytest.raises(TypeError):
        parse_options(data, 4, {11: "not a spec"}, codec.spec_of)
    with pytest.raises(ValueError):
        parse_options(data, 4, {11: (9, str, 11)}, codec.spec_of)
    options, payload = parse_options(data, 4, {}, codec.spec_of)
    assert [o.value for o in options[OptionNumber.URI_PATH]] == ["a"] and payload == b""


def _outcome(parse: object, data: bytes, specs: dict) -> object:
    try:
        options, payload = parse(data, 4, specs, codec.spec_of)  # type: ignore[operator]
    except (UnparsableMessage, UnicodeDecodeError) as exc:
        return type(exc), str(exc)
    listed = [(type(o), o.number, o.value, vars(o)) for k in options for o in options[k]]
    return listed, [type(k) for k in options], payload


@settings(max_examples=1500, deadline=None)
@given(tail=st.binary(max_size=80), cached=st.booleans())
def test_the_c_options_loop_answers_as_the_reference(tail, cached):
    """Same options (class, number, value, attributes), same order, same
    payload, same error and message, for any bytes after the header."""
    from gateway.dtls._codec import parse_options

    data = b"\x40\x01\x00\x01" + tail
    specs = codec._SPECS if cached else {}
    assert _outcome(parse_options, data, specs) == _outcome(codec.parse_options, data, specs)


def test_aiocoap_private_names_stay_behind_the_adapter():
    """The option dict and the transport hook are reached through
    gateway.coap.aiocoap_adapter (checked at import), not from gateway/dtls."""
    from pathlib import Path

    import gateway.dtls

    for path in Path(gateway.dtls.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "._options" not in text, path.name
        assert "_append_tokenmanaged_messagemanaged_transport" not in text, path.name


def test_decoded_options_are_the_parsed_objects_themselves():
    data = Message(code=Code.GET, mtype=Type.CON, mid=9, uri_path=("a", "b")).encode()
    message = decode_message(data, None, TransportTuning())
    assert message.opt.uri_path == ("a", "b")
    assert [o.value for o in message.opt.get_option(OptionNumber.URI_PATH)] == ["a", "b"]
    assert message.mid == 9 and message.code == Code.GET
