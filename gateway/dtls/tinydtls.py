"""What the server needs to know about DTLSSocket 0.2.3 and the tinydtls 0.8.6
it bundles (behaviour found by testing the library), and thin helpers around it.

- One ``dtls.DTLS`` context serves any number of peers: tinydtls keys its
  peers by address (a uthash table), and ``handleMessage`` / ``write`` /
  ``resetPeer`` take the peer's address as a ``dtls.Session``.
- The ``event`` callback gets ``(level, code)`` but not the peer, and the PSK
  store is asked ``identity in store`` / ``store[identity]`` without the peer;
  both are only ever called synchronously from inside a call into the context
  for one peer, so the caller knows the peer.
- ``write`` to an address without an established peer makes tinydtls start a
  *client* handshake towards it; ``close`` of an unknown address prints to
  stdout and raises. ``resetPeer`` on an established peer sends close_notify
  and frees it (on an unknown address it does nothing).
- A peer's close_notify arrives as event ``(1, 0)``; tinydtls answers it and
  frees the peer itself. An unknown identity makes ``handleMessage`` return
  < 0 after tinydtls sent a fatal alert. A wrong PSK makes the peer's Finished
  fail silently: no event, no alert.
- The server retransmits its own handshake flight; nothing happens unless
  ``checkRetransmit()`` (``dtls_check_retransmit``) is called, which performs
  due retransmissions and returns the tinydtls tick of the next one (0: none).
  Ticks are milliseconds since ``dtls_clock_offset``, which every new
  ``dtls.DTLS`` (any client in the same process too) resets to the current
  second; :class:`TickClock` reads the library's own clock so deadlines stay
  consistent.
- PSKs longer than 16 bytes (``DTLS_PSK_MAX_KEY_LEN``) overflow a stack buffer
  in tinydtls (DTLSSocket copies without a bound check): 17-18 bytes happen to
  work, 19+ fail, 200 segfaults. Identities longer than 32 bytes
  (``DTLS_PSK_MAX_CLIENT_IDENTITY_LEN``) are rejected by tinydtls itself.
- A ClientHello from the address of an established peer starts a new
  handshake (after a fresh cookie exchange) that replaces the old epoch; the
  identity may change. Plaintext (epoch 0) alerts for an established peer
  are ignored.
- The cookie secret is drawn once per context and never rotated.
- ``DTLS.connect`` returns a ``Connection`` whose finalizer closes the
  session when it is garbage collected; ``write(session, b"")`` to an unknown
  address starts the same client handshake without that object.
- Exceptions raised in callbacks are swallowed by Cython; callbacks must not
  raise. DTLSSocket prints to stdout on some error paths (``close`` of an
  unknown peer, ``connect`` to a known one); the server avoids them.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from DTLSSocket import dtls

log = logging.getLogger(__name__)

#: tinydtls event codes (level 0, "no alert").
EVENT_CONNECT = 0x01DC
EVENT_CONNECTED = 0x01DE
LEVEL_NOALERT = 0

#: Largest PSK tinydtls 0.8.6 handles without memory corruption.
MAX_PSK_LENGTH = 16
#: Largest PSK identity tinydtls 0.8.6 accepts.
MAX_IDENTITY_LENGTH = 32

#: tinydtls clock resolution (``DTLS_TICKS_PER_SECOND``).
TICKS_PER_SECOND = 1000

_TICK_MODULUS = 1 << 32
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"

_T = TypeVar("_T")


def weak_callback(method: Callable[..., _T], dead: _T) -> Callable[..., _T]:
    """Wrap a bound method for use as a tinydtls callback without keeping its
    object alive. ``dtls.DTLS`` frees its context (and calls ``write`` for
    every remaining peer) when it is deallocated; with weak callbacks that
    happens after the owner is gone and reaches nothing half torn down."""
    ref = weakref.WeakMethod(method)

    def callback(*args: Any) -> _T:
        bound = ref()
        return dead if bound is None else bound(*args)

    return callback


def dtls_address(sockaddr: tuple[object, ...]) -> tuple[str, int]:
    """The ``(ipv6 text, port)`` under which tinydtls knows a socket peer:
    IPv4 becomes IPv4-mapped IPv6, a zone suffix is dropped."""
    host = str(sockaddr[0]).split("%", 1)[0]
    port = int(str(sockaddr[1]))
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        packed = _V4_MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, host)
    # inet_ntop is what DTLSSocket uses in its callbacks; match it exactly.
    return socket.inet_ntop(socket.AF_INET6, packed), port


def new_session(sockaddr: tuple[object, ...]) -> tuple[dtls.Session, tuple[str, int]]:
    """A ``dtls.Session`` for a socket peer and the address tinydtls will
    report for it in callbacks."""
    host, port = dtls_address(sockaddr)
    scope_id = int(str(sockaddr[3])) if len(sockaddr) >= 4 else 0
    session = dtls.Session(host, port, 0, scope_id)
    return session, (session.addr, session.port)


class TickClock:
    """tinydtls' own clock (``dtls_ticks``), read through ctypes from the
    already loaded extension module, to turn ``checkRetransmit()`` results into
    delays. Falls back to None (caller polls) if the symbol is unavailable."""

    def __init__(self) -> None:
        self._ticks: Callable[..., object] | None
        try:
            library = ctypes.CDLL(dtls.__file__)
            self._ticks = library.dtls_ticks
        except (OSError, AttributeError):
            log.info("tinydtls clock not reachable; polling handshake retransmissions")
            self._ticks = None
        self._buffer = ctypes.c_uint64(0)

    def now(self) -> int | None:
        """Current tinydtls tick, or None if unknown."""
        if self._ticks is None:
            return None
        self._buffer.value = 0
        self._ticks(ctypes.byref(self._buffer))
        # clock_time_t is 32 bits wide on POSIX; the upper half stays zero.
        return int(self._buffer.value) % _TICK_MODULUS

    def seconds_until(self, tick: int) -> float | None:
        """Seconds from now until ``tick`` (>= 0), or None if unknown."""
        now = self.now()
        if now is None:
            return None
        delta = (tick - now) % _TICK_MODULUS
        if delta >= _TICK_MODULUS // 2:  # in the past
            return 0.0
        return delta / TICKS_PER_SECOND


class PskStore:
    """The dict-like PSK store DTLSSocket expects (``keys()``, ``in``, ``[]``),
    backed by a lookup function. DTLSSocket asks ``identity in store`` and then
    ``store[identity]`` twice within one call; the answer of ``in`` is kept
    for the ``[]`` that follow and dropped with :meth:`forget`."""

    __slots__ = ("_identity", "_lookup", "_psk")

    def __init__(self, lookup: Callable[[bytes], bytes | None]) -> None:
        self._lookup = lookup
        self._identity: bytes | None = None
        self._psk: bytes | None = None

    def keys(self) -> PskStore:
        return self

    def __contains__(self, identity: object) -> bool:
        self.forget()
        if not isinstance(identity, bytes):
            return False
        psk = self._lookup(identity)
        if psk is None:
            return False
        self._identity, self._psk = identity, psk
        return True

    def __getitem__(self, identity: bytes) -> bytes:
        if identity == self._identity and self._psk is not None:
            return self._psk
        # Never raise into Cython; a random key nobody holds fails the handshake.
        return os.urandom(MAX_PSK_LENGTH)

    def forget(self) -> None:
        """Drop the cached key."""
        self._identity = None
        self._psk = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
