"""The half-open handshake flood (``half_open_flood``): cookie-completing
ClientHellos from one source address, each from a fresh port and abandoned
after the cookie exchange.

For every handshake: a cookie-less ClientHello (RFC 6347 §4.2.1), the
HelloVerifyRequest's cookie sent back in a second ClientHello (the address
is now proven, so a server keeps handshake state for it), then the socket is
closed: the server's flight goes nowhere and its state lingers until its
handshake timeout. ``rate`` handshakes per second are started, at most
:data:`MAX_OPEN` sockets at a time. The honest handshakes that judge the
attack are the device's own (``device_sim.device``); this module only
floods.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from .dtls_client import (
    HS_HELLO_VERIFY_REQUEST,
    client_hello,
    handshake_messages,
    hello_verify_cookie,
)
from .stats import Recorder

__all__ = ["MAX_OPEN", "HalfOpenFlood"]

#: Sockets one flood holds at most (added to the worker's open-files need).
MAX_OPEN = 128
#: Seconds a flood socket waits for its HelloVerifyRequest.
_WAIT = 1.0
_TICK = 0.01


class HalfOpenFlood:
    """One flooding address (see module doc); ``server`` is the gateway's
    socket address, ``bind`` the local address to flood from."""

    def __init__(
        self, server: Any, family: int, bind: str | None, rate: float, rec: Recorder
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.server = server
        self.family = family
        self.bind = bind
        self.rate = rate
        self.rec = rec
        self._open: dict[int, tuple[socket.socket, float]] = {}
        self._timer: asyncio.Handle | None = None
        self._started = 0.0
        self._sent = 0

    def start(self) -> None:
        if self._timer is None:
            self._started = self._loop.time()
            self._sent = 0
            self._timer = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fd in list(self._open):
            self._drop(fd)

    def _tick(self) -> None:
        now = self._loop.time()
        for fd, (_sock, since) in list(self._open.items()):
            if now - since > _WAIT:
                self.rec.count("half_open_unanswered")
                self._drop(fd)
        due = int((now - self._started) * self.rate) - self._sent
        for _ in range(max(0, min(due, MAX_OPEN - len(self._open)))):
            self._sent += 1
            self._hello(now)
        self._timer = self._loop.call_later(_TICK, self._tick)

    def _hello(self, now: float) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self.bind is not None:
                sock.bind((self.bind, 0))
            sock.connect(self.server)
            sock.send(client_hello())
        except OSError:
            sock.close()
            self.rec.count("half_open_socket_errors")
            return
        fd = sock.fileno()
        self._open[fd] = (sock, now)
        self._loop.add_reader(fd, self._readable, fd)
        self.rec.count("half_open_hellos")

    def _readable(self, fd: int) -> None:
        entry = self._open.get(fd)
        if entry is None:
            return
        sock = entry[0]
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        for htype, body in handshake_messages(data):
            if htype == HS_HELLO_VERIFY_REQUEST:
                cookie = hello_verify_cookie(body) or b""
                with contextlib.suppress(OSError):
                    sock.send(client_hello(cookie, sequence=1))
                    self.rec.count("half_open_cookies_returned")
                break
        self._drop(fd)  # abandon the handshake either way

    def _drop(self, fd: int) -> None:
        entry = self._open.pop(fd, None)
        if entry is None:
            return
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(fd)
        entry[0].close()
