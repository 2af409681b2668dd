"""The server's UDP socket on the asyncio event loop (RFC 768; RFC 3542 §6
IPV6_PKTINFO and Linux IP_PKTINFO for wildcard binds).

Bound exactly where configured; on ``::`` / ``0.0.0.0`` every datagram's
destination address is recorded so the reply leaves from it. Reads are
batched per readiness callback; writes that find the socket buffer full wait
in a bounded queue.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Callable

from aiocoap.util import hostportjoin

from .config import DtlsServerConfig
from .stats import Counters

log = logging.getLogger(__name__)

#: Ancillary data choosing a reply's source address: (level, type, data).
Cmsg = tuple[int, int, bytes]
SockAddr = tuple[object, ...]
#: ``on_datagram(data, peer address, reply ancillary data or None)``.
DatagramHandler = Callable[[bytes, SockAddr, Cmsg | None], None]

# Linux value; the socket module does not export it.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
_RECV_SIZE = 2048
_RECV_BATCH = 256
_ANCILLARY_SIZE = socket.CMSG_SPACE(32)


class UdpEndpoint:
    """One non-blocking UDP socket driven by ``loop.add_reader``."""

    def __init__(
        self, config: DtlsServerConfig, on_datagram: DatagramHandler, counters: Counters
    ) -> None:
        self._config = config
        self._on_datagram = on_datagram
        self._counters = counters
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._pktinfo = False
        self.address: tuple[str, int] = (config.host, config.port)
        self._send_queue: deque[tuple[bytes, SockAddr, Cmsg | None]] = deque()
        self._writer_registered = False

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    @property
    def pktinfo(self) -> bool:
        """True on a wildcard bind: each datagram records our address."""
        return self._pktinfo

    def open(self) -> None:
        """Bind (the real port lands in :attr:`address`) and start reading."""
        config = self._config
        ip = ipaddress.ip_address(config.host)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if config.inherited_fd is not None:
            sock = socket.socket(fileno=os.dup(config.inherited_fd))
            family = sock.family
        else:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if config.reuse_port and config.inherited_fd is None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if config.receive_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.receive_buffer)
            if family == socket.AF_INET6 and config.inherited_fd is None:
                # '::' serves IPv4 too (IPv4-mapped addresses).
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if config.is_wildcard:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
                self._pktinfo = True
            if config.inherited_fd is None:
                sock.bind((config.host, config.port))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.address = (str(host), int(port))
        self._loop.add_reader(sock.fileno(), self._on_readable)
        log.info("DTLS server listening on %s", hostportjoin(*self.address))

    def close(self) -> None:
        """Try to send what is queued, then close the socket."""
        self.flush()
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            if self._writer_registered:
                self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._send_queue.clear()

    def local_host(self, local: Cmsg | None) -> str:
        """Our address as the peer sees it (the bound one unless a wildcard
        bind recorded the datagram's destination)."""
        if local is None:
            return self.address[0]
        level, _, data = local
        if level == socket.IPPROTO_IPV6:
            return socket.inet_ntop(socket.AF_INET6, data[:16])
        return socket.inet_ntop(socket.AF_INET, data[4:8])

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_RECV_BATCH):
            local: Cmsg | None = None
            try:
                if self._pktinfo:
                    data, ancillary, _flags, sockaddr = sock.recvmsg(_RECV_SIZE, _ANCILLARY_SIZE)
                    local = _reply_pktinfo(ancillary)
                else:
                    data, sockaddr = sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                # ICMP errors for earlier sends surface here on some systems.
                log.debug("receive error ignored: %s", e)
                continue
            self._counters.datagrams_received += 1
            try:
                self._on_datagram(data, sockaddr, local)
            except Exception:
                log.exception("internal error handling a datagram from %s", sockaddr)
            if self._sock is None:  # closed meanwhile (by a hook)
                return
        self.flush()

    def send(self, data: bytes, sockaddr: SockAddr, local: Cmsg | None) -> None:
        """Send one datagram now, or queue it if the socket buffer is full."""
        sock = self._sock
        if sock is None:
            return
        if self._send_queue:
            self._queue(data, sockaddr, local)
            return
        try:
            _send(sock, data, sockaddr, local)
        except (BlockingIOError, InterruptedError):
            self._queue(data, sockaddr, local)
            return
        except OSError as e:
            self._counters.dropped["send_error"] += 1
            log.debug("send to %s failed: %s", sockaddr, e)
            return
        self._counters.datagrams_sent += 1

    def _queue(self, data: bytes, sockaddr: SockAddr, local: Cmsg | None) -> None:
        if len(self._send_queue) >= self._config.send_queue_limit:
            self._counters.dropped["send_queue"] += 1
            return
        self._send_queue.append((data, sockaddr, local))
        if not self._writer_registered and self._sock is not None:
            self._loop.add_writer(self._sock.fileno(), self.flush)
            self._writer_registered = True

    def flush(self) -> None:
        """Send queued datagrams until the socket buffer is full again."""
        sock = self._sock
        while self._send_queue and sock is not None:
            data, sockaddr, local = self._send_queue[0]
            try:
                _send(sock, data, sockaddr, local)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._counters.dropped["send_error"] += 1
                log.debug("send to %s failed: %s", sockaddr, e)
            else:
                self._counters.datagrams_sent += 1
            self._send_queue.popleft()
        if self._writer_registered and sock is not None:
            self._loop.remove_writer(sock.fileno())
            self._writer_registered = False


def _send(sock: socket.socket, data: bytes, sockaddr: SockAddr, local: Cmsg | None) -> None:
    """One datagram, from the local address ``local`` names when given
    (PKTINFO, so that replies leave from the address they were sent to)."""
    if local is not None:
        sock.sendmsg([data], [local], 0, sockaddr)
    else:
        sock.sendto(data, sockaddr)


def _reply_pktinfo(ancillary: list[tuple[int, int, bytes]]) -> Cmsg | None:
    """The ancillary data that makes a reply leave from the address a
    datagram was sent to (RFC 3542 §6 IPV6_PKTINFO; Linux IP_PKTINFO)."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            return (level, kind, bytes(data[:20]))
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            _ifindex, _spec_dst, addr = _IN_PKTINFO.unpack_from(data)
            return (level, kind, _IN_PKTINFO.pack(0, addr, bytes(4)))
    return None
