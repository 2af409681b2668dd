"""CBOR at the trust boundary (RFC 8949).

``decode`` is the only way :mod:`tokens` turns untrusted bytes into values: it
rejects trailing bytes, bounds the input size and turns every decoder failure
into :class:`~tokens.errors.MalformedError`. The small typed accessors check
the shape of what came out, so validators never index into unchecked values.

``head`` and ``bstr`` hand-encode the few CBOR items the hot paths need
(COSE ``*_structure`` arrays, the Proof's detached content) without going
through a general encoder.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import cbor2

from .errors import MalformedError

#: Upper bound on any CBOR item this package decodes from a peer.
MAX_INPUT = 16 * 1024

# --- the strict decoder -------------------------------------------------------
#
# Speed without giving up strictness. Building a cbor2 decoder costs about as
# much as decoding a whole token, and a decoder that reads no more than each
# item needs (read_size 1, what a plain end-of-item position needs) pays a
# Python-level file read per item. So each thread keeps decoders for reuse,
# one per read-ahead size, and an ``n``-byte input is read by the one whose
# read-ahead is ``n - 1`` bytes. cbor2 asks its file for more bytes only when its buffer is empty,
# and its first refill takes ``n - 1`` bytes, so the file position reaches
# ``n`` exactly when the item needed the last byte: the item ends at the end
# of the input iff ``fp.tell() == n``. (A decoder that ignores read_size, like
# cbor2's pure-Python one, reads exactly what it needs, for which the same
# test holds.) ``_read_ahead_works`` checks all this, reuse included, at
# import time; if it does not hold, every read is exact (read_size 1): slower,
# still strict. cbor2 clears shared-reference state at the end of each
# top-level decode; after a failure the decoder is dropped anyway. A kept
# decoder keeps its last input referenced until its next use; the decoded
# values hold the same bytes anyway.

_BytesIO = io.BytesIO
_Decoder = cbor2.CBORDecoder
#: Decoders kept per thread (a gateway sees few distinct token and proof sizes),
#: and the largest input size one is kept for (its buffer is that large).
_MAX_DECODERS = 32
_MAX_KEPT_SIZE = 2048
_local = threading.local()


def _read_size(n: int) -> int:
    return n - 1 if n > 2 else 1


def _exact_end(data: bytes) -> int:
    """Where the first item of ``data`` ends, read byte-exactly (slow path:
    error messages and the import-time check only)."""
    fp = _BytesIO(data)
    _Decoder(fp).decode()
    return fp.tell()


def _read_ahead_works() -> bool:
    """Whether the end-of-item test above holds for this cbor2, on fresh and
    on reused decoders (the reused one first decodes another input of the
    same size and leaves bytes in its buffer)."""
    probes = (
        b"\x01",
        b"\x01\x02",
        b"\x82\x01\x02",
        b"\x43abc",
        b"\xa1\x01\x26",
        b"\x83\x43\xa1\x01\x0a\xa1\x04\x42ab\x44\x00\x01\x02\x03",
        b"\x9f\x01\x62ab\xff",
        b"\x59\x01\x00" + bytes(256),
    )
    try:
        for item in probes:
            for data in (item, item + b"\x00", item + b"\x01\x02", item + item):
                n = len(data)
                expected = _Decoder(_BytesIO(data)).decode()
                complete = _exact_end(data) == n
                fp = _BytesIO(data)
                fresh = _Decoder(fp, None, None, "strict", _read_size(n))
                if fresh.decode() != expected or (fp.tell() == n) != complete:
                    return False
                fresh.fp = fp = _BytesIO(data)
                fresh.decode()
                if (fp.tell() == n) != complete:
                    return False
                reused = _Decoder(_BytesIO(bytes(n)), None, None, "strict", _read_size(n))
                reused.decode()  # one zero byte of n: the rest stays in its buffer
                reused.fp = fp = _BytesIO(data)
                if reused.decode() != expected or (fp.tell() == n) != complete:
                    return False
    except Exception:
        return False
    return True


_READ_AHEAD = _read_ahead_works()


def _new_decoder(fp: io.BytesIO, read_size: int) -> Any:
    if _READ_AHEAD:  # positional: cbor2's keyword parsing costs more than the decode
        return _Decoder(fp, None, None, "strict", read_size)
    return _Decoder(fp)


def decode(data: bytes, *, what: str = "CBOR item", limit: int = MAX_INPUT) -> Any:
    """Decode exactly one CBOR data item (RFC 8949 §5.1: a well-formed item
    followed by nothing). Raises :class:`MalformedError` for anything else."""
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedError(f"{what}: expected bytes")
        if isinstance(data, memoryview) and data.nbytes > limit:
            raise MalformedError(f"{what}: {data.nbytes} bytes exceed the limit of {limit}")
        data = bytes(data)
    n = len(data)
    if n == 0:
        raise MalformedError(f"{what}: empty")
    if n > limit:
        raise MalformedError(f"{what}: {n} bytes exceed the limit of {limit}")
    try:
        decoders = _local.decoders
    except AttributeError:
        decoders = _local.decoders = {}
    size = n - 1 if n > 2 and _READ_AHEAD else 1  # _read_size(n), inlined
    fp = _BytesIO(data)
    dec = decoders.get(size)
    try:
        if dec is None:
            dec = _new_decoder(fp, size)
            if size <= _MAX_KEPT_SIZE:
                if len(decoders) >= _MAX_DECODERS:
                    decoders.clear()
                decoders[size] = dec
        else:
            dec.fp = fp
        value = dec.decode()
    except Exception as exc:  # the decoder's own failures, all of them
        decoders.pop(size, None)  # its state is not worth trusting now
        raise MalformedError(f"{what}: not well-formed CBOR") from exc
    if fp.tell() != n:
        raise MalformedError(f"{what}: {_trailing(data)} trailing bytes")
    return value


def _trailing(data: bytes) -> str:
    """How many bytes follow the first item (for the error message only)."""
    try:
        return str(len(data) - _exact_end(data))
    except Exception:  # cannot happen after a successful decode; stay an error message
        return "some"


def encode(value: Any) -> bytes:
    """Encode with cbor2 in canonical form (deterministic map key order)."""
    return cbor2.dumps(value, canonical=True)


def head(major: int, n: int) -> bytes:
    """The initial bytes of a CBOR item of major type ``major`` with argument
    ``n`` (RFC 8949 §3), shortest form."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    return bytes((mt | 27,)) + n.to_bytes(8, "big")


_BSTR_HEADS = tuple(head(2, n) for n in range(256))


def bstr(value: bytes) -> bytes:
    """A CBOR byte string (major type 2)."""
    n = len(value)
    if n < 256:
        return _BSTR_HEADS[n] + value
    return head(2, n) + value


def tstr(value: str) -> bytes:
    """A CBOR text string (major type 3)."""
    raw = value.encode("utf-8")
    return head(3, len(raw)) + raw


def uint_or_nint(value: int) -> bytes:
    """A CBOR integer (major type 0 or 1)."""
    if value >= 0:
        return head(0, value)
    return head(1, -1 - value)


# --- typed accessors for decoded values -------------------------------------


def as_map(value: Any, what: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise MalformedError(f"{what}: expected a map")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedError(f"{what}: expected an array")
    return value


def as_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedError(f"{what}: expected a byte string")
    return value


def as_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedError(f"{what}: expected a text string")
    return value


def as_int(value: Any, what: str) -> int:
    # bool is a subclass of int in Python but a distinct CBOR simple value.
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedError(f"{what}: expected an integer")
    return value


def as_uint(value: Any, what: str) -> int:
    n = as_int(value, what)
    if n < 0:
        raise MalformedError(f"{what}: expected an unsigned integer")
    return n


def as_number(value: Any, what: str) -> int | float:
    """A NumericDate (RFC 8392 §2): integer or floating-point seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedError(f"{what}: expected a number")
    if isinstance(value, float) and value != value:  # NaN
        raise MalformedError(f"{what}: NaN")
    return value
