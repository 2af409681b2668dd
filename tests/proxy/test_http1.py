"""The sans-I/O HTTP/1.1 client side (RFC 9112): request encoding and its
header-injection refusals, response framing (§6.3), keep-alive (§9.3), the
limits, and properties: feeding a response in pieces changes nothing, and no
input makes the parser raise anything but its own two exceptions."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.http1 import (
    MAX_HEAD,
    BodyTooLarge,
    ProtocolError,
    RawResponse,
    ResponseParser,
    encode_request,
)

LIMIT = 1 << 20


def parse(raw: bytes, method: str = "GET", max_body: int = LIMIT) -> RawResponse:
    """The response in ``raw`` fed at once; eof() when the body runs to the end
    of the connection."""
    parser = ResponseParser(method, max_body=max_body)
    response = parser.feed(raw)
    return response if response is not None else parser.eof()


def parse_pieces(pieces: list[bytes], method: str = "GET", max_body: int = LIMIT) -> RawResponse:
    """The same, fed piece by piece: the response comes back at most once."""
    parser = ResponseParser(method, max_body=max_body)
    got = [r for piece in pieces if (r := parser.feed(piece)) is not None]
    assert len(got) <= 1
    return got[0] if got else parser.eof()


def complete(raw: bytes, method: str = "GET", max_body: int = LIMIT) -> RawResponse:
    """The response in ``raw``, which must be complete without eof()."""
    parser = ResponseParser(method, max_body=max_body)
    response = parser.feed(raw)
    assert response is not None
    assert parser.done
    return response


# --- encode_request ------------------------------------------------------------------


def test_encode_get_without_body() -> None:
    data = encode_request("GET", "/a/b?x=1&y=%20", "example.org:8080", {"Accept": "*/*"}, b"")
    assert data == (b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.org:8080\r\nAccept: */*\r\n\r\n")


def test_encode_body_gets_content_length() -> None:
    data = encode_request("POST", "/p", "h", {"Content-Type": "text/plain"}, b"hello")
    assert data == (
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    )


@pytest.mark.parametrize(
    ("method", "body", "length"),
    [
        ("POST", b"", b"0"),
        ("PUT", b"", b"0"),
        ("PATCH", b"", b"0"),
        ("DELETE", b"xy", b"2"),
        ("GET", b"", None),
        ("DELETE", b"", None),
        ("HEAD", b"", None),
        ("OPTIONS", b"", None),
    ],
)
def test_encode_content_length_when_body_or_body_method(
    method: str, body: bytes, length: bytes | None
) -> None:
    data = encode_request(method, "/", "h", {}, body)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert rest == body
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    assert lengths == ([] if length is None else [b"Content-Length: " + length])


def test_encode_skips_the_callers_framing_headers() -> None:
    data = encode_request(
        "PUT",
        "/x",
        "real.example",
        {
            "host": "evil.example",
            "CONTENT-LENGTH": "999",
            "Transfer-Encoding": "chunked",
            "connection": "upgrade",
            "X-Kept": "1",
        },
        b"abc",
    )
    assert data == (
        b"PUT /x HTTP/1.1\r\nHost: real.example\r\nX-Kept: 1\r\nContent-Length: 3\r\n\r\nabc"
    )


@pytest.mark.parametrize(
    "target", ["/a\r\nX-Injected: 1", "/a\nb", "/a\rb", "/a\0", "/a b", "a/b", "", "*"]
)
def test_encode_refuses_bad_target(target: str) -> None:
    with pytest.raises(ValueError):
        encode_request("GET", target, "h", {}, b"")


@pytest.mark.parametrize(
    "name", ["X\r\nY", "X\nY", "X\0", "X Y", "X:", "", "Na\u00efve", "(x)", "X\tY"]
)
def test_encode_refuses_bad_header_name(name: str) -> None:
    with pytest.raises(ValueError):
        encode_request("GET", "/", "h", {name: "v"}, b"")


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b", "\r\n"])
def test_encode_refuses_bad_header_value(value: str) -> None:
    with pytest.raises(ValueError):
        encode_request("GET", "/", "h", {"X-V": value}, b"")


@pytest.mark.parametrize("name", ["Host", "Content-Length"])
def test_encode_refuses_injection_even_in_skipped_headers(name: str) -> None:
    with pytest.raises(ValueError):
        encode_request("GET", "/", "h", {name: "x\r\nX-Injected: 1"}, b"")


@settings(max_examples=200)
@given(
    headers=st.dictionaries(
        st.text(string.ascii_letters + "-\r\n :", min_size=1, max_size=8),
        st.text(st.characters(codec="latin-1"), max_size=12),
        max_size=4,
    ),
    body=st.binary(max_size=8),
)
def test_encode_never_lets_a_header_become_two(headers: dict[str, str], body: bytes) -> None:
    """Either ValueError, or one line per header kept, parsed back as sent."""
    try:
        data = encode_request("POST", "/", "h", headers, body)
    except ValueError:
        return
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and rest == body
    lines = head.decode("latin-1").split("\r\n")
    kept = [
        (n, v)
        for n, v in headers.items()
        if n.lower() not in {"host", "content-length", "transfer-encoding", "connection"}
    ]
    assert lines[0] == "POST / HTTP/1.1"
    assert lines[1] == "Host: h"
    assert lines[2:-1] == [f"{n}: {v}" for n, v in kept]
    assert lines[-1] == f"Content-Length: {len(body)}"


# --- framing (RFC 9112 §6.3) -----------------------------------------------------------


def test_content_length_body() -> None:
    r = complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello")
    assert (r.status, r.body, r.keep_alive) == (200, b"hello", True)
    assert r.headers["content-type"] == "text/plain"
    assert isinstance(r.headers, CIMultiDictProxy)


def test_content_length_zero() -> None:
    r = complete(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert (r.status, r.body, r.keep_alive) == (201, b"", True)


def test_content_length_waits_for_the_whole_body() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234") is None
    assert not parser.done
    assert parser.feed(b"5678") is None
    r = parser.feed(b"9")
    assert r is not None and (r.body, r.keep_alive) == (b"0123456789", True)


def test_chunked_body_with_extensions_and_trailers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n"
        b"6;name=value\r\n world\r\n"
        b"A \r\n0123456789\r\n"
        b"0\r\nX-Trailer: dropped\r\nX-Other: too\r\n\r\n"
    )
    r = complete(raw)
    assert (r.status, r.body, r.keep_alive) == (200, b"hello world0123456789", True)
    assert "X-Trailer" not in r.headers and "X-Other" not in r.headers


@pytest.mark.parametrize("coding", ["Chunked", "identity, chunked", "chunked, chunked"])
def test_chunked_coding_spellings(coding: str) -> None:
    raw = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n".encode()
    r = complete(raw + b"3\r\nabc\r\n0\r\n\r\n")
    assert (r.body, r.keep_alive) == (b"abc", True)


@pytest.mark.parametrize("coding", ["gzip, chunked", "chunked, gzip", "identity", "gzip", ""])
def test_unsupported_transfer_coding_refused(coding: str) -> None:
    raw = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n".encode()
    with pytest.raises(ProtocolError):
        parse(raw + b"3\r\nabc\r\n0\r\n\r\n")


def test_transfer_encoding_and_content_length_refused() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    with pytest.raises(ProtocolError):
        parse(raw)


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5, 6\r\n",
        b"Content-Length: 5,\r\n",
    ],
)
def test_conflicting_content_length_refused(fields: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nhello!")


@pytest.mark.parametrize(
    "fields", [b"Content-Length: 5\r\nContent-Length: 5\r\n", b"Content-Length: 5 , 5\r\n"]
)
def test_repeated_equal_content_length_accepted(fields: bytes) -> None:
    r = complete(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nhello")
    assert (r.body, r.keep_alive) == (b"hello", True)


@pytest.mark.parametrize(
    "value", [b"-1", b"+5", b"0x5", b"5.0", b"abc", b"", b"5 5", b"\xb2", b"1" * 19]
)
def test_invalid_content_length_refused(value: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nhello")


def test_body_to_end_of_connection() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome ") is None
    assert parser.feed(b"body") is None
    assert not parser.done
    r = parser.eof()
    assert (r.status, r.body, r.keep_alive) == (200, b"some body", False)
    assert parser.done


def test_body_to_end_of_connection_may_be_empty() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\n") is None
    r = parser.eof()
    assert (r.status, r.body, r.keep_alive) == (200, b"", False)


@pytest.mark.parametrize(
    ("method", "status"), [("HEAD", 200), ("HEAD", 404), ("GET", 204), ("GET", 304)]
)
def test_no_body_for_head_204_304(method: str, status: int) -> None:
    # the Content-Length describes the representation, not bytes that follow;
    # it may even exceed max_body
    raw = f"HTTP/1.1 {status} X\r\nContent-Length: 5000\r\n\r\n".encode()
    r = complete(raw, method=method, max_body=10)
    assert (r.status, r.body, r.keep_alive) == (status, b"", True)
    assert r.headers["Content-Length"] == "5000"


def test_no_body_for_head_even_with_chunked() -> None:
    r = complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", method="HEAD")
    assert (r.body, r.keep_alive) == (b"", True)


def test_interim_responses_skipped() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    r = complete(raw)
    assert (r.status, r.body, r.keep_alive) == (200, b"ok", True)
    assert "Link" not in r.headers


def test_interim_response_then_the_final_one_later() -> None:
    parser = ResponseParser("POST", max_body=LIMIT)
    assert parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n") is None
    assert not parser.done
    r = parser.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert r is not None and r.status == 201


def test_switching_protocols_refused() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    with pytest.raises(ProtocolError):  # not skipped like the other 1xx
        parser.feed(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        )


@pytest.mark.parametrize(
    "fields",
    [
        b"X-A: a\r\n continued\r\n",  # obs-fold
        b"X-A: a\r\n\tcontinued\r\n",
        b"X-A : a\r\n",  # whitespace before the colon
        b"X-A\t: a\r\n",
        b" X-A: a\r\n",
        b"NoColon\r\n",
        b": empty name\r\n",
        b"X(A): a\r\n",
        b"X-A: a\0b\r\n",
        b"X-A: a\rb\r\n",
        b"X-A: a\nX-B: b\r\n",  # a bare LF inside the header block
    ],
)
def test_malformed_header_lines_refused(fields: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n")


# --- keep-alive (RFC 9112 §9.3) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "keep-alive", True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.1", "x-foo, close", False),
        ("HTTP/1.1", "upgrade", True),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
        ("HTTP/1.0", "Keep-Alive", True),
        ("HTTP/1.0", "x-foo , keep-alive", True),
        ("HTTP/1.0", "close", False),
        ("HTTP/1.0", "x-foo", False),
    ],
)
def test_keep_alive(version: str, connection: str | None, keep_alive: bool) -> None:
    field = "" if connection is None else f"Connection: {connection}\r\n"
    raw = f"{version} 200 OK\r\n{field}Content-Length: 2\r\n\r\nok".encode()
    r = complete(raw)
    assert (r.status, r.body, r.keep_alive) == (200, b"ok", keep_alive)


def test_connection_close_in_a_repeated_field() -> None:
    r = complete(
        b"HTTP/1.1 200 OK\r\nConnection: x-foo\r\nconnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    assert r.keep_alive is False


def test_http10_keep_alive_without_length_still_ends_the_connection() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    assert parser.feed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nbody") is None
    r = parser.eof()
    assert (r.body, r.keep_alive) == (b"body", False)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nX",
        b"HTTP/1.1 204 No Content\r\n\r\nX",
    ],
)
def test_bytes_after_the_response_end_keep_alive(raw: bytes) -> None:
    r = complete(raw)
    assert r.keep_alive is False
    assert r.body == (b"" if b" 204 " in raw else b"ok")


def test_feed_after_done_returns_nothing() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") is not None
    assert parser.feed(b"more") is None
    with pytest.raises(ProtocolError):
        parser.eof()  # the response was already returned


# --- headers --------------------------------------------------------------------------


def test_headers_case_insensitive_and_repeatable() -> None:
    r = complete(
        b"HTTP/1.1 200 OK\r\n"
        b"Set-Cookie: a=1\r\n"
        b"X-Single: one\r\n"
        b"set-cookie: b=2\r\n"
        b"SET-COOKIE: c=3\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert r.headers.getall("Set-Cookie") == ["a=1", "b=2", "c=3"]
    assert r.headers.getall("SET-COOKIE") == ["a=1", "b=2", "c=3"]
    assert r.headers["x-single"] == r.headers["X-SINGLE"] == "one"


def test_header_value_whitespace_stripped_inner_kept() -> None:
    r = complete(
        b"HTTP/1.1 200 OK\r\n"
        b"X-A:   spaced  value \t \r\n"
        b"X-B:\tb\r\n"
        b"X-C:c\r\n"
        b"X-Empty:\r\n"
        b"X-Blank:   \r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert r.headers["X-A"] == "spaced  value"
    assert r.headers["X-B"] == "b"
    assert r.headers["X-C"] == "c"
    assert r.headers["X-Empty"] == ""
    assert r.headers["X-Blank"] == ""


def test_header_values_latin1() -> None:
    r = complete(b"HTTP/1.1 200 OK\r\nX-A: caf\xe9\r\nContent-Length: 0\r\n\r\n")
    assert r.headers["X-A"] == "caf\u00e9"


def test_status_line_reason_optional() -> None:
    assert complete(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n").status == 404
    assert complete(b"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n").status == 599
    assert complete(b"HTTP/1.1 200 Fine by me\r\nContent-Length: 0\r\n\r\n").status == 200


# --- limits ----------------------------------------------------------------------------


def test_head_over_max_head_refused_before_the_end_of_it() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    fed = 0
    with pytest.raises(ProtocolError):
        while fed < 2 * MAX_HEAD:
            parser.feed(line)
            fed += len(line)
    assert fed <= MAX_HEAD  # refused as soon as the limit was passed


def test_head_over_max_head_in_one_piece_refused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * MAX_HEAD + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ProtocolError):
        parse(raw)


def test_head_just_under_max_head_accepted() -> None:
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: "
    raw = start + b"a" * (MAX_HEAD - len(start) - 2) + b"\r\n\r\n"
    assert raw.find(b"\r\n\r\n") == MAX_HEAD - 2
    r = complete(raw)
    assert len(r.headers["X-Pad"]) == MAX_HEAD - len(start) - 2


def test_declared_content_length_over_max_body_refused_at_the_head() -> None:
    parser = ResponseParser("GET", max_body=10)
    with pytest.raises(BodyTooLarge):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")


def test_content_length_equal_to_max_body_accepted() -> None:
    r = complete(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", max_body=10)
    assert r.body == b"0123456789"


def test_huge_content_length_is_body_too_large() -> None:
    with pytest.raises(BodyTooLarge):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n", max_body=10)


def test_chunked_body_growing_over_max_body_refused() -> None:
    parser = ResponseParser("GET", max_body=10)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") is None
    assert parser.feed(b"4\r\naaaa\r\n4\r\nbbbb\r\n") is None
    with pytest.raises(BodyTooLarge):
        parser.feed(b"4\r\n")  # declared: 12 > 10, before any of its bytes


def test_chunked_body_at_max_body_accepted() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\naaaa\r\n6\r\nbbbbbb\r\n0\r\n\r\n"
    )
    assert complete(raw, max_body=10).body == b"aaaabbbbbb"


def test_chunk_size_over_max_body_refused() -> None:
    with pytest.raises(BodyTooLarge):
        parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
            max_body=10,
        )


def test_body_to_eof_growing_over_max_body_refused() -> None:
    parser = ResponseParser("GET", max_body=10)
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\n0123456") is None
    with pytest.raises(BodyTooLarge):
        parser.feed(b"7890")


def test_body_to_eof_at_max_body_accepted() -> None:
    parser = ResponseParser("GET", max_body=10)
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\n0123456789") is None
    assert parser.eof().body == b"0123456789"


def test_chunk_size_line_too_long_refused() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(ProtocolError):
        parser.feed(b"5;" + b"e" * 2000)


@pytest.mark.parametrize(
    "size", [b"", b" ", b"x", b"-1", b"+5", b"0x5", b"1_0", b"5 5", b"\xb2", b";ext"]
)
def test_malformed_chunk_size_refused(size: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nhello\r\n"
    with pytest.raises(ProtocolError):
        parse(raw + b"0\r\n\r\n")


@pytest.mark.parametrize("after", [b"XX0\r\n\r\n", b"\n\n0\r\n\r\n", b"\r\r0\r\n\r\n"])
def test_chunk_data_not_followed_by_crlf_refused(after: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello" + after
    parser = ResponseParser("GET", max_body=LIMIT)
    with pytest.raises(ProtocolError):
        parser.feed(raw)


# --- cut short, and not HTTP -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",  # bare LFs: never a complete head
    ],
)
def test_eof_before_a_complete_response_refused(raw: bytes) -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    assert parser.feed(raw) is None
    with pytest.raises(ProtocolError):
        parser.eof()
    assert not parser.done


def test_started() -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    assert not parser.started
    parser.feed(b"")
    assert not parser.started
    parser.feed(b"H")
    assert parser.started and not parser.done


def test_started_stays_true_after_an_interim_response() -> None:
    """A connection that ends after a 100 Continue was not idle-closed: the
    pool must not take it for a stale connection and repeat the request."""
    parser = ResponseParser("GET", max_body=LIMIT)
    assert parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n") is None
    assert parser.started
    with pytest.raises(ProtocolError):
        parser.eof()


@pytest.mark.parametrize("method", ["GET\r\nX: y", "GE T", "", "GET\n", "G\0T"])
def test_encode_refuses_bad_method(method: str) -> None:
    with pytest.raises(ValueError):
        encode_request(method, "/", "h", {}, b"")


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x02",
        b"\x16\x03\x01\x02\x00",  # a TLS record
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"<html>",
        b"http/1.1 200 OK\r\n",
        b"HTTQ",
    ],
)
def test_non_http_bytes_refused_at_once(raw: bytes) -> None:
    parser = ResponseParser("GET", max_body=LIMIT)
    with pytest.raises(ProtocolError):
        parser.feed(raw)  # without waiting for a header block's end


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/2 200",
        b"HTTP/1.2 200 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 abc OK",
        b"HTTP/1.1 099 Low",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1",
        b"HTTP/1.1 200OK",
        b"",
        b"\r\nHTTP/1.1 200 OK",
    ],
)
def test_malformed_status_line_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(line + b"\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("code", [b"\xb200", b"\xb9\xb2\xb3", b"2\xb30"])
def test_non_ascii_digits_in_status_code_refused(code: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(b"HTTP/1.1 " + code + b" OK\r\nContent-Length: 0\r\n\r\n")


def test_errors_do_not_carry_response_bytes() -> None:
    cases = [
        (b"HTTP/1.1 200 OK\r\nX-Secret : s3cr3t\r\n\r\n", ProtocolError),
        (b"s3cr3t\r\n\r\n", ProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: s3cr3t\r\n\r\n", ProtocolError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\ns3cr3t\r\n", ProtocolError),
        (b"HTTP/1.1 200 OK\r\n\r\ns3cr3t s3cr3t", BodyTooLarge),
    ]
    for raw, error in cases:
        with pytest.raises(error) as info:
            parse(raw, max_body=8)
        assert "s3cr3t" not in str(info.value)


# --- properties ---------------------------------------------------------------------------

tokens = st.from_regex(r"X-[A-Za-z0-9-]{1,10}", fullmatch=True)
# a field value without leading or trailing blanks, so it is parsed back as is
values = st.text(string.ascii_letters + string.digits + " ;=,/\t\x80\xff", max_size=16).map(
    lambda v: v.strip(" \t")
)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, str, RawResponse]:
    """A valid response on the wire, the request method, and what it parses to."""
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    framing = draw(st.sampled_from(["length", "chunked", "eof", "none"]))
    if framing == "none":
        method, status = draw(
            st.sampled_from([("HEAD", 200), ("HEAD", 404), ("GET", 204), ("GET", 304)])
        )
    else:
        method = "GET"
        status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    reason = draw(st.text(string.ascii_letters + " ", max_size=12))
    fields = draw(st.lists(st.tuples(tokens, values), max_size=4))
    connection = draw(st.sampled_from([None, "close", "keep-alive"]))
    if connection is not None:
        fields.append(("Connection", connection))
    body = draw(st.binary(max_size=300))
    head_fields = list(fields)
    if framing == "length":
        head_fields.append(("Content-Length", str(len(body))))
        wire_body = body
    elif framing == "chunked":
        head_fields.append(("Transfer-Encoding", "chunked"))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
        edges = [0, *cuts, len(body)]
        wire_body = b""
        for a, b in itertools.pairwise(edges):
            if a == b:
                continue  # a zero-size chunk is the last one
            size = format(b - a, draw(st.sampled_from(["x", "X"])))
            ext = draw(st.sampled_from(["", ";a=b", " ;x"]))
            wire_body += f"{size}{ext}\r\n".encode() + body[a:b] + b"\r\n"
        trailers = draw(st.lists(st.tuples(tokens, values), max_size=2))
        wire_body += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in trailers)
        wire_body += b"\r\n"
    elif framing == "eof":
        wire_body = body
    else:
        head_fields.append(("Content-Length", str(len(body))))
        wire_body, body = b"", b""
    interim = draw(st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n"]))
    head = f"{version} {status} {reason}\r\n".encode() + b"".join(
        f"{n}: {v}\r\n".encode("latin-1") for n, v in head_fields
    )
    raw = interim + head + b"\r\n" + wire_body
    if framing == "eof":
        keep_alive = False
    elif version == "HTTP/1.0":
        keep_alive = connection == "keep-alive"
    else:
        keep_alive = connection != "close"
    expected = RawResponse(status, CIMultiDictProxy(CIMultiDict(head_fields)), body, keep_alive)
    return raw, method, expected


def pieces_of(raw: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(c % (len(raw) + 1) for c in cuts), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(edges)]


def same(a: RawResponse, b: RawResponse) -> bool:
    return (a.status, list(a.headers.items()), a.body, a.keep_alive) == (
        b.status,
        list(b.headers.items()),
        b.body,
        b.keep_alive,
    )


@settings(max_examples=300)
@given(response=responses(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_pieces_parse_like_the_whole(
    response: tuple[bytes, str, RawResponse], cuts: list[int]
) -> None:
    raw, method, expected = response
    whole = parse(raw, method)
    assert same(whole, expected)
    assert same(parse_pieces(pieces_of(raw, cuts), method), whole)
    # and byte by byte
    assert same(parse_pieces([raw[i : i + 1] for i in range(len(raw))], method), whole)


fragments = st.sampled_from(
    [
        b"HTTP/1.1 ",
        b"HTTP/1.0 ",
        b"200 OK",
        b"100 Continue",
        b"101",
        b"204",
        b"\r\n",
        b"\r\n\r\n",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked",
        b"Connection: close",
        b"X-A: b",
        b" ",
        b":",
        b"5",
        b"ff",
        b"0",
        b";",
        b"abc",
    ]
)
garbage = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(fragments, st.binary(max_size=6)), max_size=24).map(b"".join),
)


@settings(max_examples=300)
@given(
    data=garbage,
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    method=st.sampled_from(["GET", "HEAD"]),
    max_body=st.sampled_from([0, 4, 64]),
)
def test_arbitrary_bytes_raise_only_parser_errors(
    data: bytes, cuts: list[int], method: str, max_body: int
) -> None:
    parser = ResponseParser(method, max_body=max_body)
    try:
        got = [r for piece in pieces_of(data, cuts) if (r := parser.feed(piece)) is not None]
        assert len(got) <= 1
        if not parser.done:
            got.append(parser.eof())
        response = got[0]
    except (ProtocolError, BodyTooLarge):
        return
    assert parser.done
    assert isinstance(response, RawResponse)
    assert 200 <= response.status <= 999
    assert len(response.body) <= max_body
