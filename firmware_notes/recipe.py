"""The device side of the gateway's wire formats, written the way firmware
writes them: hand-encoded CBOR, HMAC-SHA-256 from the standard library, no
CBOR or COSE library and nothing from this project's ``tokens`` package.

It is the executable form of the recipe in ``firmware_notes/proof.md`` (the
pseudo-C there follows these functions step by step), it is checked byte for
byte against the generated vectors (``tests/firmware/``), and the libcoap
walk-through (:mod:`firmware_notes.walkthrough`) uses it to make its token
request and Proof options, so the recipe is also exercised against a live
gateway.

Formats (docs/design.md "Wire formats", RFC 9052, RFC 9200):

* token request ``{33: 2, 9: scope}`` (RFC 9200 §5.8.1, abbreviations §8.10);
* Proof option 65001: untagged COSE_Mac0 / COSE_Sign1
  ``[<< {1: alg} >>, {4: kid, 6: piv}, null, tag]`` with the detached payload
  ``[1, code, [path], [query], cf/null, sha256(payload)[:16]/h'', piv, echo/null]``
  and ``external_aad = h''``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALG_EDDSA",
    "ALG_ES256",
    "ALG_HMAC_256_64",
    "ECHO_OPTION",
    "PROOF_OPTION",
    "TokenResponseFields",
    "aif_scope",
    "cbor_bstr",
    "cbor_head",
    "cbor_int",
    "cbor_tstr",
    "coap_option_header",
    "decode",
    "detached_content",
    "hmac_proof",
    "mac_structure",
    "parse_token_response",
    "piv_bytes",
    "proof_option",
    "protected_header",
    "sig_structure",
    "token_request",
]

PROOF_OPTION = 65001
ECHO_OPTION = 252  # RFC 9175 §2.2
ALG_HMAC_256_64 = 4
ALG_ES256 = -7
ALG_EDDSA = -8
_HMAC_TAG_LEN = 8  # HMAC 256/64: SHA-256 output truncated to 64 bits


# --- CBOR encoding, RFC 8949 §3 (preferred serialization: shortest heads) ---


def cbor_head(major: int, n: int) -> bytes:
    """Initial byte plus argument: ``major << 5 | n`` for n < 24, else
    24/25/26/27 followed by 1/2/4/8 big-endian bytes."""
    if n < 24:
        return bytes((major << 5 | n,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes((major << 5 | info,)) + n.to_bytes(size, "big")
    raise ValueError("argument too large")


def cbor_int(v: int) -> bytes:
    """Unsigned (major 0) or negative (major 1, argument -1 - v) integer."""
    return cbor_head(0, v) if v >= 0 else cbor_head(1, -1 - v)


def cbor_bstr(b: bytes) -> bytes:
    return cbor_head(2, len(b)) + b


def cbor_tstr(s: str) -> bytes:
    raw = s.encode("utf-8")
    return cbor_head(3, len(raw)) + raw


_NULL = b"\xf6"


# --- scope and token request (RFC 9237, RFC 9200 §5.8.1) ---------------------

_METHOD_BITS = {"GET": 1, "POST": 2, "PUT": 4, "DELETE": 8, "FETCH": 16, "PATCH": 32, "IPATCH": 64}


def aif_scope(text: str) -> bytes:
    """An AIF scope (RFC 9237 §3, REST-specific model) from the text form
    ``"/temp:GET /cfg:GET,PUT"``: ``[["/temp", 1], ["/cfg", 5]]`` in the
    order given (the method mask has bit ``code - 1`` set per method)."""
    entries = []
    for item in text.split():
        path, _, methods = item.partition(":")
        mask = 0
        for m in methods.split(","):
            mask |= _METHOD_BITS[m.upper()]
        entries.append(cbor_head(4, 2) + cbor_tstr(path) + cbor_int(mask))
    return cbor_head(4, len(entries)) + b"".join(entries)


def token_request(scope: bytes | str | None = None, req_cnf_cose_key: bytes | None = None) -> bytes:
    """``{33: 2, 9: scope, 4: {1: COSE_Key}}`` with keys in ascending order
    (the order does not matter to the gateway; this one is the canonical
    RFC 8949 §4.2.1 order). ``scope``: AIF bytes (RFC 9237) or text
    (``"/temp:GET"``); ``req_cnf_cose_key``: an encoded public COSE_Key for
    an ES256/EdDSA device (omit it for a symmetric PoP key)."""
    items = [(b"\x04", None), (b"\x09", None), (b"\x18\x21", b"\x02")]  # req_cnf, scope, grant
    if req_cnf_cose_key is not None:
        items[0] = (b"\x04", b"\xa1\x01" + req_cnf_cose_key)
    if scope is not None:
        items[1] = (b"\x09", cbor_bstr(scope) if isinstance(scope, bytes) else cbor_tstr(scope))
    present = [(k, v) for k, v in items if v is not None]
    return cbor_head(5, len(present)) + b"".join(k + v for k, v in present)


# --- a minimal CBOR decoder (definite lengths only), for the token response --


def decode(data: bytes) -> Any:
    """Decode one CBOR data item that must fill ``data`` exactly: unsigned and
    negative integers, byte and text strings, arrays, maps, false/true/null.
    Anything else (indefinite lengths, floats, tags) raises ValueError: the
    gateway never sends it."""
    value, end = _item(data, 0, 0)
    if end != len(data):
        raise ValueError("trailing bytes")
    return value


def _item(data: bytes, i: int, depth: int) -> tuple[Any, int]:
    if depth > 8:
        raise ValueError("nested too deeply")
    ib = data[i]
    major, info = ib >> 5, ib & 0x1F
    i += 1
    if info < 24:
        n = info
    elif info <= 27:
        size = 1 << (info - 24)
        if i + size > len(data):
            raise ValueError("truncated")
        n = int.from_bytes(data[i : i + size], "big")
        i += size
    else:
        raise ValueError("indefinite lengths are not used here")
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major in (2, 3):
        if i + n > len(data):
            raise ValueError("truncated")
        raw = data[i : i + n]
        return (bytes(raw) if major == 2 else raw.decode("utf-8")), i + n
    if major == 4:
        out = []
        for _ in range(n):
            v, i = _item(data, i, depth + 1)
            out.append(v)
        return out, i
    if major == 5:
        m: dict[Any, Any] = {}
        for _ in range(n):
            k, i = _item(data, i, depth + 1)
            v, i = _item(data, i, depth + 1)
            m[k] = v
        return m, i
    if major == 7 and info in (20, 21, 22):
        return {20: False, 21: True, 22: None}[info], i
    raise ValueError("unsupported CBOR item")


@dataclass(frozen=True)
class TokenResponseFields:
    """What a device keeps from a token response (RFC 9200 §5.8.2)."""

    access_token: bytes
    expires_in: int | None
    #: PoP key id and secret from ``cnf`` (symmetric PoP); None for an
    #: asymmetric token, whose kid the device chose itself
    kid: bytes | None
    k: bytes | None
    alg: int | None


def parse_token_response(data: bytes) -> TokenResponseFields:
    """Pick ``access_token`` (1), ``expires_in`` (2) and ``cnf`` (8) ->
    ``{1: COSE_Key}`` -> kid (2), k (-1), alg (3) out of the response map."""
    m = decode(data)
    if not isinstance(m, dict) or not isinstance(m.get(1), bytes):
        raise ValueError("not a token response")
    kid = k = alg = None
    cnf = m.get(8)
    if isinstance(cnf, dict) and isinstance(cnf.get(1), dict):
        key = cnf[1]
        kid, k, alg = key.get(2), key.get(-1), key.get(3)
    return TokenResponseFields(m[1], m.get(2), kid, k, alg)


# --- the Proof option ------------------------------------------------------


def piv_bytes(piv: int) -> bytes:
    """Partial IV: the sequence number as shortest big-endian bytes, 0 as
    ``00`` (RFC 8613 §6.1 rule), at most 5 bytes."""
    if not 0 <= piv < 1 << 40:
        raise ValueError("piv out of range")
    return piv.to_bytes(max(1, (piv.bit_length() + 7) // 8), "big")


def detached_content(
    code: int,
    path: list[str] | tuple[str, ...],
    query: list[str] | tuple[str, ...] = (),
    content_format: int | None = None,
    payload: bytes = b"",
    piv: int = 0,
    echo: bytes | None = None,
) -> bytes:
    """The CBOR array the proof covers, in the order its bytes are produced:
    ``88`` (array of 8), ``01`` (layout version), the method code, the
    Uri-Path segments and the Uri-Query items as arrays of text strings (as
    they are in the CoAP options, not percent-decoded), the Content-Format
    or null, the first 16 bytes of SHA-256 over the payload or ``h''`` for no
    payload, the piv as an unsigned integer, the Echo value or null."""
    out = bytearray(b"\x88\x01")
    out += cbor_int(code)
    out += cbor_head(4, len(path)) + b"".join(cbor_tstr(s) for s in path)
    out += cbor_head(4, len(query)) + b"".join(cbor_tstr(s) for s in query)
    out += _NULL if content_format is None else cbor_int(content_format)
    out += cbor_bstr(hashlib.sha256(payload).digest()[:16]) if payload else b"\x40"
    out += cbor_int(piv)
    out += _NULL if echo is None else cbor_bstr(echo)
    return bytes(out)


def protected_header(alg: int) -> bytes:
    """Encoded protected bucket ``{1: alg}`` (3 bytes: ``a1 01 04`` for
    HMAC 256/64, ``a1 01 26`` for ES256, ``a1 01 27`` for EdDSA)."""
    return b"\xa1\x01" + cbor_int(alg)


def mac_structure(protected: bytes, content: bytes) -> bytes:
    """``["MAC0", protected, h'', content]`` (RFC 9052 §6.3): the HMAC input."""
    return b"\x84\x64MAC0" + cbor_bstr(protected) + b"\x40" + cbor_bstr(content)


def sig_structure(protected: bytes, content: bytes) -> bytes:
    """``["Signature1", protected, h'', content]`` (RFC 9052 §4.4): the
    ECDSA/EdDSA input (ES256 signs its SHA-256)."""
    return b"\x84\x6aSignature1" + cbor_bstr(protected) + b"\x40" + cbor_bstr(content)


def proof_option(protected: bytes, kid: bytes, piv: int, tag: bytes) -> bytes:
    """The option value ``[protected, {4: kid, 6: piv}, null, tag]``."""
    return (
        b"\x84"
        + cbor_bstr(protected)
        + b"\xa2\x04"
        + cbor_bstr(kid)
        + b"\x06"
        + cbor_bstr(piv_bytes(piv))
        + _NULL
        + cbor_bstr(tag)
    )


def hmac_proof(
    kid: bytes,
    k: bytes,
    code: int,
    path: list[str] | tuple[str, ...],
    query: list[str] | tuple[str, ...] = (),
    content_format: int | None = None,
    payload: bytes = b"",
    piv: int = 0,
    echo: bytes | None = None,
) -> bytes:
    """A COSE_Mac0 Proof option value with HMAC 256/64 under the PoP key."""
    protected = protected_header(ALG_HMAC_256_64)
    content = detached_content(code, path, query, content_format, payload, piv, echo)
    tag = hmac.new(k, mac_structure(protected, content), hashlib.sha256).digest()
    return proof_option(protected, kid, piv, tag[:_HMAC_TAG_LEN])


# --- CoAP option header (RFC 7252 §3.1) -----------------------------------


def coap_option_header(delta: int, length: int) -> bytes:
    """Option header for an option ``delta`` above the previous option's
    number carrying ``length`` value bytes: nibbles 0..12 inline, 13 = one
    extra byte (value - 13), 14 = two extra bytes (value - 269)."""

    def nibble(v: int) -> tuple[int, bytes]:
        if v < 13:
            return v, b""
        if v < 269:
            return 13, bytes((v - 13,))
        return 14, (v - 269).to_bytes(2, "big")

    d, dx = nibble(delta)
    n, lx = nibble(length)
    return bytes((d << 4 | n,)) + dx + lx
