"""Authorization scopes in the AIF REST-specific data model (RFC 9237).

A :class:`Scope` is what a token lets its holder do: a set of
``(resource, methods)`` pairs, ``AIF-REST = [* [toid: tstr, tperm: uint]]``
(RFC 9237 §2, §3), where ``toid`` is the local part of a URI (a path starting
with ``/``) and ``tperm`` is a bitmask of CoAP methods, bit ``code - 1``
(GET=1, POST=2, PUT=4, DELETE=8, FETCH=16, PATCH=32, iPATCH=64; RFC 9237 §2.3).

Decisions of this project, beyond RFC 9237:

* **Wire form of the ACE ``scope``.** RFC 9200 §5.8.1 lets ``scope`` be a text
  or byte string. On the wire this project sends the AIF array CBOR-encoded
  inside a byte string (as the ACE OSCORE and group profiles do).
  :meth:`Scope.from_scope_param` also accepts a text string written in the
  text form below, so a hand-written client can ask for ``"/temp:GET"``; both
  forms compile to the same :class:`Scope` and the AS always answers in the
  byte-string form.
* **Text form** (configuration, text ``scope``): whitespace-separated
  ``toid:METHOD[,METHOD...]`` items, methods case-insensitive, ``*`` for all
  seven methods; e.g. ``"/temp:GET /cfg:GET,PUT /api/*:*"``. ``str(scope)``
  renders it back in canonical form.
* **Paths are compared as CoAP Uri-Path segments**, after percent-decoding
  (RFC 7252 §6.4/§6.5), so ``/a%2Fb`` (one segment ``a/b``) is never confused
  with ``/a/b`` (two segments). ``toid`` strings are normalized on input to the
  RFC 7252 §6.5 rendering of their segments, so equal scopes encode
  identically. A toid must be a path only: ``?``, ``#``, spaces and other
  characters outside RFC 3986 ``pchar`` are refused (a query could never be
  enforced here). ``/`` means the empty path (no Uri-Path option).
* **Wildcard extension.** RFC 9237 matches toids exactly. A toid whose last
  segment is a bare ``*`` (``/api/*``) is read here as "this prefix and
  everything below it": it matches ``/api``, ``/api/``, ``/api/x`` and
  ``/api/x/y``, but not ``/apix``. ``/*`` matches every path. A literal ``*``
  segment is written ``%2A``. A peer that follows RFC 9237 strictly would read
  ``/api/*`` as the one resource named ``*``; tokens from this project's AS are
  meant for this project's gateway, where the extension is defined.
* **Methods** outside the seven bits (RFC 9237 also defines "dynamic resource"
  bits 32 and up) are refused: they would grant something this gateway cannot
  enforce. An entry whose mask is 0 grants nothing and is refused. A toid that
  repeats is merged by OR-ing its masks. Permissions of all entries that match
  a path add up (RFC 9237 §2: the scope is the union of its entries).

Sizes are bounded (:data:`MAX_ENTRIES`, :data:`MAX_TOID_LENGTH`,
:data:`MAX_SCOPE_BYTES`). Every parse failure raises
:class:`~tokens.errors.InvalidScope` (4.00, ACE ``invalid_scope``, RFC 9200
§5.8.3) naming the part that is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote, unquote

from . import cbor
from .errors import InvalidScope, MalformedError, MethodNotAllowed, ScopeDenied
from .params import AIF_METHOD_BITS

#: Mask of all seven REST methods of RFC 9237 §2.3.
ALL_METHODS = 0x7F
#: Most entries a scope may have (after merging repeated toids).
MAX_ENTRIES = 64
#: Longest toid accepted, in characters (a valid toid is ASCII).
MAX_TOID_LENGTH = 255
#: Largest CBOR-encoded scope accepted.
MAX_SCOPE_BYTES = 4096

#: Method names in bit order, as the text form renders them.
METHOD_NAMES: tuple[str, ...] = tuple(sorted(AIF_METHOD_BITS, key=AIF_METHOD_BITS.__getitem__))
#: Bit for CoAP method code ``i`` (index 0 and codes above 7 have no bit).
_CODE_BITS = (0, 1, 2, 4, 8, 16, 32, 64)

# RFC 3986 pchar less "%": unreserved, sub-delims, ":" and "@".
_SEGMENT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*")
# Characters quote() must leave alone besides unreserved (RFC 7252 §6.5 step 8).
_SAFE = "!$&'()*+,;=:@"

Segments = tuple[str, ...]
# (segments, is_wildcard): the identity of an entry.
_Key = tuple[Segments, bool]


def _short(text: str) -> str:
    """A bounded rendering of peer-supplied text for an error message."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_toid(toid: Any) -> tuple[Segments, bool]:
    """Split a toid (RFC 9237 §2.1, a URI local part) into percent-decoded
    Uri-Path segments (RFC 7252 §6.4 step 8) and whether it is a wildcard
    (this project's ``/prefix/*`` extension, see the module docstring)."""
    if not isinstance(toid, str):
        raise InvalidScope("scope: toid must be a text string")
    if len(toid) > MAX_TOID_LENGTH:
        raise InvalidScope(f"scope: toid longer than {MAX_TOID_LENGTH} characters")
    if not toid.startswith("/"):
        raise InvalidScope(f"scope: toid {_short(toid)} must start with '/'")
    wildcard = toid.endswith("/*")
    base = toid[:-2] if wildcard else toid
    if base in ("", "/"):
        return (), wildcard
    segments = []
    for raw in base[1:].split("/"):
        if _SEGMENT.fullmatch(raw) is None:
            raise InvalidScope(f"scope: toid {_short(toid)} has a character not allowed in a path")
        if "%" not in raw:
            segments.append(raw)
            continue
        try:
            segments.append(unquote(raw, errors="strict"))
        except UnicodeDecodeError:
            raise InvalidScope(f"scope: toid {_short(toid)} is not UTF-8 when decoded") from None
    return tuple(segments), wildcard


def format_toid(segments: Sequence[str], *, wildcard: bool = False) -> str:
    """The canonical toid of a path given as Uri-Path segments (RFC 7252 §6.5
    step 8 percent-encoding); ``wildcard`` appends the ``/*`` extension. A last
    segment that is literally ``*`` is written ``%2A`` so it is not read as one."""
    parts = [quote(s, safe=_SAFE) for s in segments]
    if wildcard:
        parts.append("*")
    elif parts and parts[-1] == "*":
        parts[-1] = "%2A"
    return "/" + "/".join(parts)


def request_segments(path: str | Sequence[str]) -> Segments:
    """The canonical form of a request path for :meth:`Scope.check`: a tuple
    of Uri-Path segments. A string is split at ``/`` and percent-decoded
    (RFC 7252 §6.4); a path of one empty segment is the empty path (RFC 7252
    §6.5 renders both as ``/``)."""
    if isinstance(path, str):
        if not path.startswith("/"):
            raise MalformedError("request path must start with '/'")
        if path == "/":
            return ()
        if "%" not in path:
            return tuple(path[1:].split("/"))
        try:
            return tuple(unquote(s, errors="strict") for s in path[1:].split("/"))
        except UnicodeDecodeError:
            raise MalformedError("request path is not UTF-8 when decoded") from None
    segments = path if isinstance(path, tuple) else tuple(path)
    return () if segments == ("",) else segments


def method_bit(method: int | str) -> int:
    """The AIF bit of a CoAP method code (RFC 9237 §2.3: bit ``code - 1``) or
    method name (case-insensitive); 0 for anything that is not one of the seven."""
    if isinstance(method, str):
        return AIF_METHOD_BITS.get(method.upper(), 0)
    return _CODE_BITS[method] if 0 < method < len(_CODE_BITS) else 0


def _check_mask(mask: Any, toid: str) -> int:
    if isinstance(mask, bool) or not isinstance(mask, int):
        raise InvalidScope(f"scope: methods of {_short(toid)} must be an unsigned integer")
    if mask <= 0 or mask & ~ALL_METHODS:
        raise InvalidScope(f"scope: methods of {_short(toid)} must be a mask within 1..127")
    return mask


def _parse_methods(text: str, item: str) -> int:
    if text == "*":
        return ALL_METHODS
    mask = 0
    for name in text.split(","):
        bit = AIF_METHOD_BITS.get(name.upper(), 0)
        if not bit:
            raise InvalidScope(f"scope: unknown method {_short(name)} in {_short(item)}")
        mask |= bit
    return mask


def format_methods(mask: int) -> str:
    """The text form of a method mask: ``*`` for all, else names joined by ``,``."""
    if mask == ALL_METHODS:
        return "*"
    return ",".join(name for name in METHOD_NAMES if mask & AIF_METHOD_BITS[name])


def _is_prefix(prefix: Segments, path: Segments) -> bool:
    return path[: len(prefix)] == prefix


class Scope:
    """An immutable AIF-REST scope (RFC 9237 §2): toid -> method mask.

    Entries are kept in canonical order (by canonical toid), so equal scopes
    are equal, hash equally and :meth:`encode` to the same bytes. Lookups
    (:meth:`check`, called on every request) use a precomputed dict of exact
    paths and a short list of wildcard prefixes.
    """

    __slots__ = ("_encoded", "_entries", "_exact", "_hash", "_keys", "_prefixes")

    _entries: tuple[tuple[str, int], ...]
    _keys: tuple[tuple[Segments, bool, int], ...]
    _exact: dict[Segments, int]
    _prefixes: tuple[tuple[Segments, int, int], ...]
    _encoded: bytes | None

    def __init__(self, entries: Iterable[tuple[str, int]] = ()) -> None:
        """Build from ``(toid, mask)`` pairs; raises :class:`InvalidScope`."""
        merged: dict[_Key, int] = {}
        for n, item in enumerate(entries):
            if n >= MAX_ENTRIES:
                raise InvalidScope(f"scope: more than {MAX_ENTRIES} entries")
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise InvalidScope("scope: each entry must be a [toid, methods] pair")
            toid, mask = item
            key = parse_toid(toid)
            merged[key] = merged.get(key, 0) | _check_mask(mask, toid)
        self._build(merged)

    @classmethod
    def _from_keys(cls, merged: dict[_Key, int]) -> Scope:
        """A scope from already validated keys (no size bound: the result of
        combining two bounded scopes)."""
        scope = cls.__new__(cls)
        scope._build({key: mask for key, mask in merged.items() if mask})
        return scope

    def _build(self, merged: dict[_Key, int]) -> None:
        rows = sorted(
            (format_toid(segs, wildcard=wild), mask, segs, wild)
            for (segs, wild), mask in merged.items()
        )
        self._entries = tuple((toid, mask) for toid, mask, _, _ in rows)
        self._keys = tuple((segs, wild, mask) for _, mask, segs, wild in rows)
        self._prefixes = tuple((segs, len(segs), mask) for _, mask, segs, wild in rows if wild)
        exact: dict[Segments, int] = {}
        for _, mask, segs, wild in rows:
            if not wild:
                for prefix, _, pmask in self._prefixes:
                    if _is_prefix(prefix, segs):
                        mask |= pmask
                exact[segs] = mask
        self._exact = exact
        self._hash = hash(self._entries)
        self._encoded = None

    # --- construction from the wire and from text ----------------------------

    @classmethod
    def decode(cls, value: Any) -> Scope:
        """Decode an AIF-REST array (RFC 9237 §3), given as CBOR bytes or as an
        already decoded value. Raises :class:`InvalidScope`."""
        if isinstance(value, bytes | bytearray | memoryview):
            try:
                value = cbor.decode(bytes(value), what="scope", limit=MAX_SCOPE_BYTES)
            except MalformedError as exc:
                raise InvalidScope(exc.description) from None
        if not isinstance(value, list | tuple):
            raise InvalidScope("scope: expected an AIF array")
        if len(value) > MAX_ENTRIES:
            raise InvalidScope(f"scope: more than {MAX_ENTRIES} entries")
        return cls(value)

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse the text form ``"/temp:GET /cfg:GET,PUT /api/*:*"`` (see the
        module docstring). Raises :class:`InvalidScope` naming the bad item."""
        if not isinstance(text, str):
            raise InvalidScope("scope: text form must be a string")
        if len(text) > MAX_SCOPE_BYTES:
            raise InvalidScope(f"scope: text longer than {MAX_SCOPE_BYTES} characters")
        entries = []
        for item in text.split():
            toid, sep, methods = item.rpartition(":")
            if not sep or not toid:
                raise InvalidScope(f"scope: {_short(item)} is not of the form path:METHODS")
            entries.append((toid, _parse_methods(methods, item)))
        return cls(entries)

    @classmethod
    def from_scope_param(cls, value: Any) -> Scope:
        """Interpret an ACE ``scope`` parameter or claim (RFC 9200 §5.8.1: a byte
        or text string): a byte string holds the CBOR AIF array, a text string
        the text form. An empty scope is refused: it asks for nothing."""
        if isinstance(value, bytes):
            scope = cls.decode(value)
        elif isinstance(value, str):
            scope = cls.parse(value)
        else:
            raise InvalidScope("scope: expected a byte or text string")
        if not scope:
            raise InvalidScope("scope: empty")
        return scope

    # --- rendering ------------------------------------------------------------

    def to_cbor(self) -> list[list[str | int]]:
        """The AIF-REST array (RFC 9237 §3) as a CBOR-ready value."""
        return [[toid, mask] for toid, mask in self._entries]

    def encode(self) -> bytes:
        """The AIF-REST array encoded as CBOR; the ACE ``scope`` value is these
        bytes as a byte string."""
        if self._encoded is None:
            self._encoded = cbor.encode(self.to_cbor())
        return self._encoded

    def __str__(self) -> str:
        return " ".join(f"{toid}:{format_methods(mask)}" for toid, mask in self._entries)

    def __repr__(self) -> str:
        return f"Scope.parse({str(self)!r})"

    # --- value semantics ------------------------------------------------------

    @property
    def entries(self) -> tuple[tuple[str, int], ...]:
        """``(toid, mask)`` pairs in canonical order."""
        return self._entries

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scope):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        return self._hash

    # --- authorization --------------------------------------------------------

    def allowed_methods(self, path: str | Sequence[str]) -> int:
        """The union of the masks of all entries that match ``path`` (exact
        toids per RFC 9237 §2.1, plus wildcard prefixes); 0 if none."""
        segments = path if type(path) is tuple else request_segments(path)
        mask = self._exact.get(segments)
        if mask is not None:
            return mask
        if segments == ("",):
            return self.allowed_methods(())
        mask = 0
        for prefix, n, pmask in self._prefixes:
            if segments[:n] == prefix:
                mask |= pmask
        return mask

    def allows(self, path: str | Sequence[str], method: int | str) -> bool:
        """Whether ``method`` (CoAP code or name) on ``path`` is granted."""
        return bool(self.allowed_methods(path) & method_bit(method))

    def check(self, path: str | Sequence[str], method: int | str) -> None:
        """Authorize one request (RFC 9200 §5.10.2): :class:`ScopeDenied` (4.03)
        when no entry covers the path, :class:`MethodNotAllowed` (4.05) when
        one does but not for this method. ``path`` is canonically the tuple of
        Uri-Path segments; a string is split and percent-decoded."""
        mask = self.allowed_methods(path)
        if not mask:
            raise ScopeDenied("scope has no entry for this path")
        if not mask & method_bit(method):
            raise MethodNotAllowed(f"scope allows only {format_methods(mask)} on this path")

    def is_subset_of(self, allowed: Scope) -> bool:
        """Whether every (path, method) this scope grants is granted by
        ``allowed``. An exact entry needs its methods on that path in
        ``allowed``; a wildcard entry needs them from wildcard entries of
        ``allowed`` at the same or a shorter prefix (no finite set of exact
        entries covers everything below a prefix)."""
        for segs, wild, mask in self._keys:
            if wild:
                have = 0
                for prefix, _, pmask in allowed._prefixes:
                    if _is_prefix(prefix, segs):
                        have |= pmask
            else:
                have = allowed.allowed_methods(segs)
            if mask & ~have:
                return False
        return True

    def intersection(self, other: Scope) -> Scope:
        """The scope granting exactly what both grant: for an AS that issues
        "what was asked" ∩ "what the client may have" (RFC 9200 §5.8.1 lets the
        granted scope differ from the requested one). May be empty."""
        merged: dict[_Key, int] = {}

        def add(key: _Key, mask: int) -> None:
            merged[key] = merged.get(key, 0) | mask

        for a, b in ((self, other), (other, self)):
            for segs, wild, mask in a._keys:
                if not wild:
                    add((segs, False), mask & b.allowed_methods(segs))
        for p, _, pmask in self._prefixes:
            for q, _, qmask in other._prefixes:
                if _is_prefix(p, q):
                    add((q, True), pmask & qmask)
                elif _is_prefix(q, p):
                    add((p, True), pmask & qmask)
        return Scope._from_keys(merged)
