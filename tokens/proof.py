"""The per-request Proof option: a COSE proof of possession over the CoAP
request as received (docs/design.md "Wire formats").

Every request to a protected resource carries option 65001 whose value is an
untagged COSE_Mac0 (RFC 9052 §6.2) or COSE_Sign1 (RFC 9052 §4.2)::

    [ << {1: alg} >>, {4: kid, 6: piv}, nil, tag_or_signature ]

with a *detached* payload (RFC 9052 §2), the CBOR array built by
:func:`detached_content` from the request, and ``external_aad = h''``.
``kid`` names the token's PoP key; ``piv`` is the device's sequence number as
a Partial IV (RFC 9052 §3.1 label 6): shortest big-endian bytes, 0 as
``h'00'``, at most 5 bytes (the rule of RFC 8613 §6.1 and of OSCORE's
``2**40 - 1`` sequence number limit). The integer piv is also inside the
detached content, so the unprotected header cannot be changed without
breaking the MAC/signature.

Device side: :func:`build_proof`. Gateway side, split so that the gateway can
interleave its own look-ups in the verification order of docs/authorization.md (parse -> token by
kid -> MAC/signature -> replay window -> exp/revocation -> scope):
:func:`parse_proof` (4.00 on garbage), then :meth:`ParsedProof.verify`
(4.01), then the replay window of :mod:`tokens.replay`.

The gateway path is hot: the common canonical layout is parsed by hand;
everything else goes through :mod:`tokens.cbor` / :mod:`tokens.cose` with the
same header rules (``alg`` protected only, no label in both buckets, ``crit``
only of understood labels), so both paths accept exactly the same proofs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from hmac import compare_digest
from typing import TYPE_CHECKING, Any, NamedTuple

import cbor2

from . import cbor, cose
from .errors import AlgorithmMismatch, MalformedError
from .keys import MAC_TAG_LENGTH, CoseKey, SymmetricKey
from .params import (
    CONTENT_FORMAT_OPTION,
    ECHO_OPTION,
    URI_QUERY_OPTION,
    CoseTag,
    HeaderLabel,
)

if TYPE_CHECKING:
    from ._mac0 import MacCheck

try:
    from . import _mac0
except ImportError:  # built by `pip install` (setup.py); the Python check stands in
    _mac0 = None  # type: ignore[assignment]

#: Whether :func:`mac_proof_check` returns the C check (``tokens._mac0``).
ACCELERATED = _mac0 is not None

__all__ = [
    "ACCELERATED",
    "MAX_PIV",
    "MAX_PROOF_SIZE",
    "MacProofVerifier",
    "ParsedProof",
    "ProofedRequest",
    "build_proof",
    "covered",
    "detached_content",
    "encode_piv",
    "mac_proof_check",
    "parse_proof",
]

#: Largest sequence number (5-byte Partial IV, as OSCORE, RFC 8613 §7.2.1).
MAX_PIV = 2**40 - 1
#: Upper bound on a Proof option value; a Sign1 with a 16-byte kid is ~90 bytes.
MAX_PROOF_SIZE = 512
_DIGEST_LEN = 16
_NULL = b"\xf6"
_EMPTY_BSTR = b"\x40"


@dataclass(frozen=True, slots=True)
class ProofedRequest:
    """The parts of a CoAP request (RFC 7252 §5) that a Proof covers, as
    received: method code (1..7, RFC 7252 §12.1.1 / RFC 8132), Uri-Path
    segments, Uri-Query items, Content-Format (``None`` when absent) and the
    payload. The Echo option is passed separately to the proof functions."""

    code: int
    path: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    content_format: int | None = None
    payload: bytes = b""


# Preferred-form heads for small arguments (RFC 8949 §3: argument < 24).
_SMALL_UINT = [bytes((n,)) for n in range(24)]
_SMALL_ARRAY = [bytes((0x80 | n,)) for n in range(24)]
_SMALL_TEXT = [bytes((0x60 | n,)) for n in range(24)]


def detached_content(request: ProofedRequest, piv: int, echo: bytes | None) -> bytes:
    """The Proof's detached payload (docs/design.md "Wire formats"): the CBOR array
    ``[1, code, [path...], [query...], content_format / null,
    sha256(payload)[:16] / h'', piv, echo / null]`` (the leading 1 is the
    layout version), hand-encoded so that it is
    byte-identical to ``cbor2.dumps`` of the same array (RFC 8949 §4.2.1
    preferred serialization). An empty payload contributes ``h''``.

    Raises :class:`MalformedError` for a method code outside 1..7, a path or
    query item that is not encodable as UTF-8, or a piv outside 0..2**40-1.
    """
    return _detached(
        request.code,
        request.path,
        request.query,
        request.content_format,
        request.payload,
        piv,
        echo,
    )


def _detached(
    code: int,
    path: Sequence[str],
    query: Sequence[str],
    content_format: int | None,
    payload: bytes,
    piv: int,
    echo: bytes | None,
) -> bytes:
    """:func:`detached_content` from the request's parts (the gateway's hot
    path passes them without building a :class:`ProofedRequest`)."""
    shape = _shape(code, path, query, content_format)
    if not 0 <= piv <= MAX_PIV:
        raise MalformedError("proof: piv out of range")
    return shape + _tail(payload, piv, echo)


def _shape(
    code: int, path: Sequence[str], query: Sequence[str], content_format: int | None
) -> bytes:
    """The detached content up to the payload digest: the array head, layout
    version, method code, Uri-Path and Uri-Query arrays, Content-Format. The
    same for every request of one shape (:class:`MacProofVerifier` keeps
    them)."""
    if not 0 < code < 8:
        raise MalformedError("proof: request method code must be 1..7")
    parts = [b"\x88\x01", _SMALL_UINT[code]]
    append = parts.append
    try:
        for items in (path, query):
            n = len(items)
            append(_SMALL_ARRAY[n] if n < 24 else cbor.head(4, n))
            for item in items:
                raw = item.encode("utf-8")
                n = len(raw)
                append(_SMALL_TEXT[n] if n < 24 else cbor.head(3, n))
                append(raw)
    except UnicodeEncodeError:
        raise MalformedError("proof: Uri-Path/Uri-Query is not valid UTF-8") from None
    cf = content_format
    if cf is None:
        append(_NULL)
    else:
        append(_SMALL_UINT[cf] if 0 <= cf < 24 else cbor.head(0, cf))
    return b"".join(parts)


def _tail(payload: bytes, piv: int, echo: bytes | None) -> bytes:
    """The detached content from the payload digest on (``piv`` in range)."""
    return (
        (b"\x50" + hashlib.sha256(payload).digest()[:_DIGEST_LEN] if payload else _EMPTY_BSTR)
        + (_SMALL_UINT[piv] if piv < 24 else cbor.head(0, piv))
        + (_NULL if echo is None else cbor.bstr(echo))
    )


def covered(
    code: int, options: dict[int, list[Any]], payload: bytes
) -> tuple[int, tuple[str, ...], int | None, bytes, bytes | None]:
    """What a proof covers besides the path (docs/design.md "Wire formats"), as
    received: method code, Uri-Query, Content-Format, payload; and the Echo
    value (RFC 9175 §2.3). ``options``: option number -> the request's
    options of that number, each with a ``value`` (aiocoap's option dict)."""
    query = options.get(URI_QUERY_OPTION)
    cf = options.get(CONTENT_FORMAT_OPTION)
    echo = options.get(ECHO_OPTION)
    return (
        int(code),
        () if query is None else tuple([o.value for o in query]),
        None if cf is None else int(cf[0].value),
        payload,
        None if echo is None else echo[0].value,
    )


def encode_piv(piv: int) -> bytes:
    """A sequence number as a Partial IV: shortest big-endian bytes, 0 as one
    zero byte (RFC 8613 §6.1 rule; at most 5 bytes)."""
    if not 0 <= piv <= MAX_PIV:
        raise ValueError("piv must be in 0..2**40-1")
    return piv.to_bytes(max(1, (piv.bit_length() + 7) >> 3), "big")


def _protected_for(alg: int) -> bytes:
    """Encoded protected bucket ``{1: alg}`` (RFC 9052 §3)."""
    return b"\xa1\x01" + cbor.uint_or_nint(alg)


def build_proof(
    key: CoseKey, request: ProofedRequest, piv: int, echo: bytes | None = None
) -> bytes:
    """Device side: the Proof option value for ``request`` with sequence number
    ``piv`` and, when the gateway asked for one, the Echo value it sent
    (RFC 9175 §2.3: the Echo goes back in the repeated request and, here, into
    the detached content).

    A COSE_Mac0 for an HMAC key (RFC 9052 §6.3), a COSE_Sign1 for an ES256 or
    EdDSA key (RFC 9052 §4.4); untagged, detached payload, ``external_aad``
    empty. ``key`` must carry the kid that names it in the token.
    """
    if not key.kid:
        raise ValueError("the proof key needs a kid")
    piv_bytes = encode_piv(piv)
    protected = _protected_for(int(key.alg))
    content = detached_content(request, piv, echo)
    if key.alg in MAC_TAG_LENGTH:
        tag = key.mac(cose.mac_structure(protected, b"", content))
    else:
        tag = key.sign(cose.sig_structure(protected, b"", content))
    return b"".join(
        (
            b"\x84",
            cbor.bstr(protected),
            b"\xa2\x04",
            cbor.bstr(key.kid),
            b"\x06",
            cbor.bstr(piv_bytes),
            _NULL,
            cbor.bstr(tag),
        )
    )


class ParsedProof(NamedTuple):
    """A Proof option value that parsed but is not verified yet.

    ``tag`` is the MAC tag (COSE_Mac0) or the signature (COSE_Sign1); which of
    the two it is follows from the key the kid selects, whose algorithm must
    equal ``alg`` (algorithms are pinned by the key). Immutable (a tuple: one
    is parsed per request on the gateway's hot path).
    """

    kid: bytes
    piv: int
    alg: int
    protected: bytes
    tag: bytes

    def __repr__(self) -> str:
        return f"ParsedProof(kid={self.kid.hex()}, piv={self.piv}, alg={self.alg})"

    def verify(self, key: CoseKey, request: ProofedRequest, echo: bytes | None) -> None:
        """Check the MAC (RFC 9052 §6.3) or signature (RFC 9052 §4.4) over the
        detached content of ``request`` as received.

        ``echo`` is the Echo option value of the request as received
        (RFC 9175 §2.3), ``None`` when the request has none. Raises
        :class:`AlgorithmMismatch` when the proof's ``alg`` is not the key's,
        :class:`BadSignature` when it does not verify (both 4.01).
        """
        self.verify_parts(
            key,
            request.code,
            request.path,
            request.query,
            request.content_format,
            request.payload,
            echo,
        )

    def verify_parts(
        self,
        key: CoseKey,
        code: int,
        path: Sequence[str],
        query: Sequence[str],
        content_format: int | None,
        payload: bytes,
        echo: bytes | None,
    ) -> None:
        """:meth:`verify` with the request's parts passed one by one (the
        gateway's hot path: no :class:`ProofedRequest` built per request)."""
        alg = key.alg
        if self.alg != alg:
            raise AlgorithmMismatch("proof alg does not match the key's algorithm")
        content = _detached(code, path, query, content_format, payload, self.piv, echo)
        if alg in MAC_TAG_LENGTH:
            prefix = _MAC_PREFIXES.get(self.protected)
            if prefix is None:
                prefix = _mac_prefix(self.protected)
            key.verify_mac(prefix + cbor.bstr(content), self.tag)
        else:
            key.verify(cose.sig_structure(self.protected, b"", content), self.tag)


class MacProofVerifier:
    """One HMAC PoP key's check of a Proof in the canonical layout, parse and
    MAC in one call: the reference of the gateway's per-request check, whose
    C twin :func:`mac_proof_check` returns when it is built. It accepts exactly
    what :func:`parse_proof` then :meth:`ParsedProof.verify` accept for this
    key in that layout; anything else (another layout, kid or alg, a bad MAC)
    gets ``None`` and the caller takes the general path, which says why.

    Everything that is the same from one request to the next is prepared
    once: the proof's bytes up to the piv, the MAC_structure up to the
    content, and, for each request shape seen (method, path, query,
    Content-Format), the detached content up to the payload digest, shared
    by all verifiers. The MAC is the key's own (HMAC from its pad states)."""

    __slots__ = (
        "_head",
        "_mac",
        "_piv_at",
        "_prefix",
        "_tag_at",
        "_tag_head",
        "_tag_len",
        "_trailer",
    )

    def __init__(self, key: SymmetricKey) -> None:
        if key.alg not in MAC_TAG_LENGTH or not key.kid:
            raise ValueError("a MAC proof verifier needs an HMAC key with a kid")
        protected = _protected_for(int(key.alg))
        self._head = b"\x84" + cbor.bstr(protected) + b"\xa2\x04" + cbor.bstr(key.kid) + b"\x06"
        self._piv_at = len(self._head)
        self._prefix = _mac_prefix(protected)
        self._tag_len = MAC_TAG_LENGTH[key.alg]
        # after the piv: nil payload, then the tag as a byte string
        self._tag_head = _NULL + cbor.head(2, self._tag_len)
        self._tag_at = len(self._tag_head)
        self._trailer = self._tag_at + self._tag_len
        self._mac = key.mac

    def check(
        self,
        option_value: bytes,
        code: int,
        path: tuple[str, ...],
        query: tuple[str, ...],
        content_format: int | None,
        payload: bytes,
        echo: bytes | None,
    ) -> int | None:
        """The proof's piv when ``option_value`` is this key's canonical
        proof for the request as received and its MAC verifies (RFC 9052
        §6.3); ``None`` otherwise."""
        if not option_value.startswith(self._head):
            return None
        h = self._piv_at
        end = len(option_value) - self._trailer
        n = end - h - 1  # piv length, from the total length
        if (
            not 0 < n < 6
            or option_value[h] != 0x40 + n
            or option_value[end : end + self._tag_at] != self._tag_head
            or (n > 1 and option_value[h + 1] == 0)
        ):
            return None
        piv = int.from_bytes(option_value[h + 1 : end], "big")
        shape_key = (code, path, query, content_format)
        shape = _SHAPES.get(shape_key) or _new_shape(shape_key)
        if shape is None:
            return None
        content = shape + _tail(payload, piv, echo)
        tag = option_value[end + self._tag_at :]
        if not compare_digest(self._mac(self._prefix + cbor.bstr(content)), tag):
            return None
        return piv

    def check_options(
        self, option_value: bytes, code: int, path: tuple[str, ...], options: Any, payload: bytes
    ) -> int | None:
        """:meth:`check` with the other covered parts read from ``options``
        as :func:`covered` reads them."""
        code, query, content_format, payload, echo = covered(code, options, payload)
        return self.check(option_value, code, path, query, content_format, payload, echo)


def mac_proof_check(key: SymmetricKey) -> MacProofVerifier | MacCheck:
    """The canonical Mac0 proof check (RFC 9052 §6.3) for ``key``:
    :meth:`MacProofVerifier.check_options`, in C when ``tokens._mac0`` is
    built (it is by ``pip install``; :data:`ACCELERATED` says which). Both accept the
    same proofs, byte for byte (tests/tokens/test_proof.py); the C one
    parses, builds the detached content's tail and computes the HMAC from
    the key's two padded-key SHA-256 states without a Python call, except
    on the first request of a new shape."""
    verifier = MacProofVerifier(key)
    if _mac0 is None:
        return verifier
    return _mac0.MacCheck(
        key.secret,
        verifier._head,
        verifier._prefix,
        verifier._tag_head,
        verifier._tag_len,
        _SHAPES,
        _new_shape,
    )


#: Detached-content shapes by (code, path, query, Content-Format); cleared
#: when full (a gateway sees few distinct shapes).
_ShapeKey = tuple[int, tuple[str, ...], tuple[str, ...], int | None]
_SHAPES: dict[_ShapeKey, bytes] = {}
_MAX_SHAPES = 4096


def _new_shape(key: _ShapeKey) -> bytes | None:
    """:func:`_shape` of ``key`` remembered in ``_SHAPES``; ``None`` for a
    request that has no detached content (method outside 1..7, Uri-Path or
    Uri-Query not UTF-8). Both checks' miss path."""
    try:
        shape = _shape(*key)
    except MalformedError:
        return None
    if len(_SHAPES) >= _MAX_SHAPES:
        _SHAPES.clear()
    _SHAPES[key] = shape
    return shape


#: MAC_structure (RFC 9052 §6.3) up to its payload, by protected bucket.
_MAC_PREFIXES: dict[bytes, bytes] = {}


def _mac_prefix(protected: bytes) -> bytes:
    """``["MAC0", protected, h'',`` of a MAC_structure; remembered for the
    short buckets of the canonical layout (at most a few dozen of them)."""
    prefix = cose.mac_structure(protected, b"", b"")[:-1]
    if len(protected) <= 4 and len(_MAC_PREFIXES) < 256:
        _MAC_PREFIXES[protected] = prefix
    return prefix


def _bstr_at(data: bytes, i: int) -> tuple[int, int] | None:
    """Start and end of a definite-length byte string in preferred form at
    ``i`` (lengths below 256 only), or ``None``."""
    b = data[i]
    if 0x40 <= b < 0x58:
        return i + 1, i + 1 + (b - 0x40)
    if b == 0x58:
        n = data[i + 1]
        if n >= 24:
            return i + 2, i + 2 + n
    return None


def _parse_canonical(data: bytes) -> ParsedProof | None:
    """The layout :func:`build_proof` emits, read by hand::

        84 | 43 a1 01 <alg> | a2 04 <bstr kid> 06 <bstr piv> | f6 | <bstr tag>

    Returns ``None`` for any other layout (the general parser decides then).
    What it accepts, the general parser accepts with the same result (tests
    check this exhaustively for single-byte changes).
    """
    try:
        if data[0] != 0x84 or data[1] != 0x43 or data[2] != 0xA1 or data[3] != 0x01:
            return None
        a = data[4]
        if a < 0x18:
            alg = a
        elif 0x20 <= a < 0x38:
            alg = 0x1F - a
        else:
            return None
        if data[5] != 0xA2 or data[6] != 0x04:
            return None
        span = _bstr_at(data, 7)
        if span is None:
            return None
        kid_start, kid_end = span
        i = kid_end
        if data[i] != 0x06:
            return None
        n = data[i + 1] - 0x40
        if not 0 < n < 6:
            return None
        piv_bytes = data[i + 2 : i + 2 + n]
        i += 2 + n
        if len(piv_bytes) != n or (piv_bytes[0] == 0 and n > 1):
            return None
        if data[i] != 0xF6:
            return None
        span = _bstr_at(data, i + 1)
        if span is None or span[1] != len(data):
            return None
    except IndexError:
        return None
    return ParsedProof(
        data[kid_start:kid_end],
        int.from_bytes(piv_bytes, "big"),
        alg,
        data[2:5],
        data[span[0] : span[1]],
    )


def _decode_piv(value: Any) -> int:
    piv = cbor.as_bytes(value, "proof piv")
    if not 0 < len(piv) < 6:
        raise MalformedError("proof: piv must be 1 to 5 bytes")
    if len(piv) > 1 and piv[0] == 0:
        raise MalformedError("proof: piv must be in shortest form")
    return int.from_bytes(piv, "big")


def _parse_general(data: bytes) -> ParsedProof:
    """Any CBOR layout of the Proof, with the header rules of RFC 9052 §3."""
    value = cbor.decode(data, what="proof", limit=MAX_PROOF_SIZE)
    if isinstance(value, cbor2.CBORTag):
        raise MalformedError("proof: must be an untagged COSE_Mac0 or COSE_Sign1")
    # Mac0 and Sign1 have the same shape; the key fixes which one it is.
    msg = cose.decode(value, CoseTag.MAC0, what="proof")
    if msg.payload is not None:
        raise MalformedError("proof: payload must be detached (nil)")
    alg = cbor.as_int(msg.alg, "proof alg")
    kid = msg.header(HeaderLabel.KID)
    if kid is None:
        raise MalformedError("proof: no kid")
    kid = cbor.as_bytes(kid, "proof kid")
    piv_value = msg.header(HeaderLabel.PARTIAL_IV)
    if piv_value is None:
        raise MalformedError("proof: no piv")
    return ParsedProof(kid, _decode_piv(piv_value), alg, msg.protected_bytes, msg.last)


def parse_proof(option_value: bytes) -> ParsedProof:
    """Parse a Proof option value (untagged COSE_Mac0 / COSE_Sign1, RFC 9052
    §6.2 / §4.2, with detached payload) without verifying it.

    Raises :class:`MalformedError` (4.00) when it is not that shape, has no
    ``kid`` or ``piv``, the piv is not 1..5 bytes in shortest form, the payload
    is not nil, or a header rule of RFC 9052 §3 is broken (``alg`` only in the
    unprotected bucket raises :class:`AlgorithmMismatch`, 4.01, as
    :mod:`tokens.cose` does; an unknown ``crit`` label raises
    :class:`~tokens.errors.CriticalHeaderError`).
    """
    if not isinstance(option_value, bytes):
        raise MalformedError("proof: expected bytes")
    if len(option_value) > MAX_PROOF_SIZE:
        raise MalformedError("proof: option value too long")
    parsed = _parse_canonical(option_value)
    if parsed is not None:
        return parsed
    return _parse_general(option_value)
