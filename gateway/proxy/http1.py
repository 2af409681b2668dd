"""HTTP/1.1 on the wire, client side, sans-I/O (RFC 9112).

:func:`encode_request` turns a request into bytes; :class:`ResponseParser`
turns the bytes an upstream sends back into one :class:`RawResponse`, with
the message framing of RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304;
else ``Transfer-Encoding: chunked`` (§7.1, trailers read and dropped), else
``Content-Length`` (one valid value, §6.3 items 4-5), else the body runs to
the end of the connection (§6.3 item 8). Interim 1xx responses other than
101 are skipped (RFC 9110 §15.2).

Everything is bounded: the header block (:data:`MAX_HEAD`), the body
(``max_body``: :class:`BodyTooLarge` as soon as it is exceeded, before the
bytes are kept) and chunk-size lines. Anything that is not a well-formed
HTTP/1.x response raises :class:`ProtocolError`. Neither exception carries
bytes of the response in its message.

The parser never does I/O: the connection (:mod:`gateway.proxy.pool`) feeds
it what it receives and asks it whether the connection can be reused.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "MAX_HEAD",
    "BodyTooLarge",
    "ProtocolError",
    "RawResponse",
    "ResponseParser",
    "encode_request",
]

#: Largest status line + header block accepted (bytes).
MAX_HEAD = 64 * 1024
#: Longest chunk-size line (with extensions) accepted.
_MAX_CHUNK_LINE = 1024
#: Methods whose request carries Content-Length even when the body is empty
#: (RFC 9110 §8.6: a user agent SHOULD send it when the method defines a meaning
#: for the content).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Header field names (RFC 9110 §5.1: a token).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: What may not appear in a field value (header injection, RFC 9110 §5.5).
_BAD_VALUE = re.compile(r"[\r\n\0]")
_BAD_TARGET = re.compile(r"[\r\n\0 ]")
#: Headers this module writes itself: never taken from the caller.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
#: One header field line (RFC 9110 §5.1 token name, RFC 9112 §5), from the
#: start of a line to its CRLF; the value without leading blanks.
_FIELD = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n\0]*)\r\n", re.MULTILINE)


class ProtocolError(Exception):
    """The upstream's bytes are not a well-formed HTTP/1.x response."""


class BodyTooLarge(Exception):
    """The response body exceeds the limit given to the parser."""


class RawResponse(NamedTuple):
    """A complete response: status, headers (case-insensitive, repeatable)
    and body; ``keep_alive``: whether the connection may carry another
    request (RFC 9112 §9.3)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    keep_alive: bool


def encode_request(
    method: str, target: str, host: str, headers: dict[str, str], body: bytes
) -> bytes:
    """The request line, ``Host``, ``headers`` and ``body`` (RFC 9112 §3, §6).
    ``target`` is the origin-form (path and query, already percent-encoded).
    Adds ``Content-Length`` when there is a body or the method defines one;
    never sends ``Transfer-Encoding``. Raises :class:`ValueError` for a CR, LF
    or NUL in the target, a name or a value (header injection)."""
    if _TOKEN.fullmatch(method) is None:
        raise ValueError("invalid method")
    if not target.startswith("/") or _BAD_TARGET.search(target):
        raise ValueError("invalid request target")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if _TOKEN.fullmatch(name) is None:
            raise ValueError("invalid header name")
        if _BAD_VALUE.search(value):
            raise ValueError("invalid header value")
        if name.lower() in _OWN_HEADERS:
            continue
        lines.append(f"{name}: {value}")
    if body or method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1") + body


class ResponseParser:
    """Reads one response to a request with ``method``. Feed it bytes with
    :meth:`feed` until it returns the response; at the end of the connection
    call :meth:`eof` (which returns the response when its body ran to the end
    of the connection, and raises :class:`ProtocolError` when the response
    was cut short)."""

    __slots__ = (
        "_body",
        "_buf",
        "_chunk_left",
        "_head_only",
        "_headers",
        "_keep_alive",
        "_length",
        "_max_body",
        "_state",
        "_status",
        "done",
        "started",
    )

    def __init__(self, method: str, *, max_body: int) -> None:
        self._head_only = method == "HEAD"
        self._max_body = max_body
        self._buf = bytearray()
        self._body = bytearray()
        self._state = "head"
        self._status = 0
        self._headers: CIMultiDictProxy[str] | None = None
        self._length = 0
        self._chunk_left = 0
        self._keep_alive = True
        #: True once the response is complete.
        self.done = False
        #: True once any byte arrived (an interim 1xx response included).
        self.started = False

    def feed(self, data: bytes) -> RawResponse | None:
        """Take received bytes; the response once it is complete. Bytes after
        the end of the response make the connection unusable (no pipelining
        here: its ``keep_alive`` is False), not the response invalid. Once
        the response was returned, the parser takes nothing more (``None``)."""
        if self.done:
            return None
        if data:
            self.started = True
        self._buf += data
        while True:
            state = self._state
            if state == "head":
                if not self._read_head():
                    return None
            elif state == "length":
                return self._read_length()
            elif state == "chunked":
                if not self._read_chunked():
                    return None
            elif state == "eof":
                self._take(len(self._buf))
                return None
            else:  # "complete"
                return self._finish()

    def eof(self) -> RawResponse:
        """The connection ended before :meth:`feed` returned a response: the
        response if its body ran to the end of the connection (RFC 9112 §6.3
        item 8, ``keep_alive`` False); else :class:`ProtocolError`."""
        if self._state == "eof":
            return self._finish()
        raise ProtocolError("upstream closed the connection before a complete response")

    # --- the head ---------------------------------------------------------------

    def _read_head(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise ProtocolError("response header block too large")
            if buf and not buf.startswith(b"HTTP/"[: len(buf)]):
                raise ProtocolError("not an HTTP response")
            return False
        if end > MAX_HEAD:
            raise ProtocolError("response header block too large")
        text = buf[: end + 2].decode("latin-1")
        del buf[: end + 4]
        line_end = text.index("\r\n")
        version, status = _status_line(text[:line_end])
        fields = text[line_end + 2 :]
        # every line a field (RFC 9112 §5: no whitespace before the colon,
        # no obs-fold continuation lines): one match per line
        pairs = _FIELD.findall(fields)
        if len(pairs) != fields.count("\n"):
            raise ProtocolError("malformed header line")
        if " \r\n" in fields or "\t\r\n" in fields:
            pairs = [(name, value.rstrip(" \t")) for name, value in pairs]
        headers: CIMultiDict[str] = CIMultiDict(pairs)
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("upstream switched protocols")
            return True  # interim response: the real one follows
        self._status = status
        self._headers = CIMultiDictProxy(headers)
        connection = headers.get("Connection")
        if connection is None:
            self._keep_alive = version != "HTTP/1.0"
        else:
            tokens = {t.strip().lower() for t in ",".join(headers.getall("Connection")).split(",")}
            self._keep_alive = (
                "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
            )
        self._frame(status, headers)
        return True

    def _frame(self, status: int, headers: CIMultiDict[str]) -> None:
        """RFC 9112 §6.3: how the body is delimited."""
        if self._head_only or status in (204, 304):
            self._state = "complete"
            return
        if "Transfer-Encoding" in headers:
            encodings = ",".join(headers.getall("Transfer-Encoding"))
            codings = [c.strip().lower() for c in encodings.split(",")]
            if codings[-1] != "chunked" or any(c not in ("chunked", "identity") for c in codings):
                raise ProtocolError("unsupported transfer coding")
            if "Content-Length" in headers:  # §6.3 item 3: a smuggling sign
                raise ProtocolError("both Transfer-Encoding and Content-Length")
            self._state = "chunked"
            self._chunk_left = -1
            return
        value = headers.get("Content-Length")
        if value is not None:
            if "," in value or len(headers.getall("Content-Length")) > 1:
                values = {v.strip() for v in ",".join(headers.getall("Content-Length")).split(",")}
                if len(values) != 1:
                    raise ProtocolError("conflicting Content-Length")
                (value,) = values
            if not value.isdigit() or not value.isascii() or len(value) > 18:
                raise ProtocolError("invalid Content-Length")
            length = int(value)
            if length > self._max_body:
                raise BodyTooLarge("response body above the limit")
            self._length = length
            self._state = "length"
            return
        self._keep_alive = False
        self._state = "eof"

    # --- bodies ----------------------------------------------------------------

    def _take(self, n: int) -> None:
        if len(self._body) + n > self._max_body:
            raise BodyTooLarge("response body above the limit")
        self._body += self._buf[:n]
        del self._buf[:n]

    def _read_length(self) -> RawResponse | None:
        buf = self._buf
        if not self._body and len(buf) == self._length:  # the usual case: all here
            self._body, self._buf = buf, bytearray()
        else:
            need = self._length - len(self._body)
            if len(buf) < need:
                self._take(len(buf))
                return None
            self._take(need)
        self._state = "complete"
        return self._finish()

    def _read_chunked(self) -> bool:
        """Consume what is buffered of a chunked body; True once the last
        chunk and the trailers are in (state ``complete``)."""
        buf = self._buf
        while True:
            if self._chunk_left > 0:
                n = min(self._chunk_left, len(buf))
                self._take(n)
                self._chunk_left -= n
                if self._chunk_left:
                    return False
                self._chunk_left = -2  # the CRLF after the data
            if self._chunk_left == -2:
                if len(buf) < 2:
                    return False
                if buf[:2] != b"\r\n":
                    raise ProtocolError("malformed chunk")
                del buf[:2]
                self._chunk_left = -1
            if self._chunk_left == -1:  # a chunk-size line
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        raise ProtocolError("chunk size line too long")
                    return False
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(size_text, 16) if size_text else -1
                except ValueError:
                    size = -1
                if size < 0 or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                    raise ProtocolError("malformed chunk size")
                if len(self._body) + size > self._max_body:
                    raise BodyTooLarge("response body above the limit")
                if size == 0:
                    self._chunk_left = -3
                else:
                    self._chunk_left = size
                    continue
            if self._chunk_left == -3:  # trailer section, ends with an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolError("trailer section too large")
                    return False
                del buf[: end + 2]
                if end == 0:
                    self._state = "complete"
                    return True

    def _finish(self) -> RawResponse:
        assert self._headers is not None
        self.done = True
        self._state = "done"
        if self._buf:
            self._keep_alive = False
        return RawResponse(self._status, self._headers, bytes(self._body), self._keep_alive)


_STATUS = re.compile(r"(HTTP/1\.[01]) ([1-9][0-9][0-9])(?: [^\r\n\0]*)?")


def _status_line(line: str) -> tuple[str, int]:
    """``HTTP/1.x SP 3DIGIT [SP reason]`` (RFC 9112 §4): version and status."""
    match = _STATUS.fullmatch(line)
    if match is None:
        raise ProtocolError("malformed status line")
    return match[1], int(match[2])
