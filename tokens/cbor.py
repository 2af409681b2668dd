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
from typing import Any

import cbor2

from .errors import MalformedError

#: Upper bound on any CBOR item this package decodes from a peer.
MAX_INPUT = 16 * 1024


def decode(data: bytes, *, what: str = "CBOR item", limit: int = MAX_INPUT) -> Any:
    """Decode exactly one CBOR data item (RFC 8949 §5.1: a well-formed item
    followed by nothing). Raises :class:`MalformedError` for anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedError(f"{what}: expected bytes")
    if len(data) == 0:
        raise MalformedError(f"{what}: empty")
    if len(data) > limit:
        raise MalformedError(f"{what}: {len(data)} bytes exceed the limit of {limit}")
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # the decoder's own failures, all of them
        raise MalformedError(f"{what}: not well-formed CBOR") from exc
    if fp.tell() != len(data):
        raise MalformedError(f"{what}: {len(data) - fp.tell()} trailing bytes")
    return value


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


def bstr(value: bytes) -> bytes:
    """A CBOR byte string (major type 2)."""
    return head(2, len(value)) + value


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
