"""DTLS record triage (gateway.dtls.records) on records made by tinydtls
itself and on arbitrary bytes (RFC 6347 §4.1, §4.2.1, §4.2.2)."""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st

from gateway.dtls import records
from gateway.dtls.records import HandshakeType

from .conftest import DtlsRawPeer


@functools.cache
def _client_hello() -> bytes:
    peer = DtlsRawPeer(("127.0.0.1", 9), b"dev-1", b"k")
    try:
        return peer.client_hello()
    finally:
        peer.close()


def _with_cookie(hello: bytes, cookie: bytes) -> bytes:
    """Rebuild a ClientHello with ``cookie`` (lengths fixed up)."""
    body_at = records.RECORD_HEADER_LENGTH + records.HANDSHAKE_HEADER_LENGTH
    sid_at = body_at + 34
    cookie_at = sid_at + 1 + hello[sid_at]
    old = hello[cookie_at]
    body = hello[body_at:cookie_at] + bytes([len(cookie)]) + cookie + hello[cookie_at + 1 + old :]
    length = len(body).to_bytes(3, "big")
    handshake = hello[13:14] + length + hello[17:19] + bytes(3) + length + body
    return hello[:11] + len(handshake).to_bytes(2, "big") + handshake


def test_tinydtls_client_hello_is_recognized_without_cookie() -> None:
    hello = _client_hello()
    assert records.record_header(hello) == (records.ContentType.HANDSHAKE, 0)
    assert records.first_handshake_type(hello) == HandshakeType.CLIENT_HELLO
    assert records.client_hello_cookie_length(hello) == 0
    assert not records.is_encrypted_handshake(hello)


def test_cookie_length_is_read_from_the_client_hello() -> None:
    hello = _with_cookie(_client_hello(), b"C" * 16)
    assert records.client_hello_cookie_length(hello) == 16


def test_truncated_client_hello_is_not_a_client_hello() -> None:
    hello = _with_cookie(_client_hello(), b"C" * 16)
    cookie_end = hello.index(b"C" * 16) + 16
    # Header lengths still claim the full message: the record check fails.
    assert records.client_hello_cookie_length(hello[: cookie_end - 1]) is None


def test_other_content_types_and_epochs() -> None:
    app_data = b"\x17\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x03abc"
    assert records.record_header(app_data) == (records.ContentType.APPLICATION_DATA, 1)
    assert records.first_handshake_type(app_data) is None
    assert records.client_hello_cookie_length(app_data) is None
    finished = b"\x16\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x03xyz"
    assert records.is_encrypted_handshake(app_data + finished)
    assert not records.is_encrypted_handshake(app_data)


def test_wrong_version_or_overlong_length_is_no_record() -> None:
    assert records.record_header(b"\x16\x03\x03" + bytes(10)) is None  # TLS, not DTLS
    assert records.record_header(b"\x16\xfe\xfd" + bytes(8) + b"\x00\x05ab") is None
    assert records.record_header(b"\x63\xfe\xfd" + bytes(10)) is None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    header = records.record_header(data)
    assert header is None or header[0] in {20, 21, 22, 23}
    cookie = records.client_hello_cookie_length(data)
    assert cookie is None or 0 <= cookie <= 255
    assert records.first_handshake_type(data) in (None, *range(256))
    assert records.is_encrypted_handshake(data) in (True, False)


@given(st.binary(max_size=64))
def test_any_cookie_round_trips(cookie: bytes) -> None:
    assert records.client_hello_cookie_length(_with_cookie(_client_hello(), cookie)) == len(cookie)
