"""One ``acegw serve`` per UDP port.

Workers of one supervisor share the port through ``SO_REUSEPORT``; so could
a second, unrelated ``acegw serve`` (same user), which would silently take
part of the first one's traffic and its devices' sessions. Before binding,
the serving process therefore claims the port:

1. an abstract Unix socket named after the port (Linux; it lives exactly as
   long as the process holding it, whatever way it ends): a second instance
   cannot bind the same name, and learns the holder's pid from it
   (``SO_PEERCRED``);
2. a probe bind of the configured address *without* ``SO_REUSEPORT``: it
   fails while any other socket (another program, or a gateway started
   without the claim) holds the port.

Either refusal is :class:`~gateway.errors.PortInUse` (exit status 2, one
line). Port 0 (any free port) claims nothing.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
from types import TracebackType

from gateway.errors import PortInUse

#: Abstract socket name prefix (the leading NUL makes it abstract).
_NAME = "\0acegw-coaps-udp-{port}"


class PortClaim:
    """The claim on a UDP port; :meth:`release` (or leaving the ``with``
    block) gives it up. Dropped anyway when the process ends."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._lock: socket.socket | None = None
        if port == 0:
            return
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(_NAME.format(port=port))
            lock.listen(8)
        except OSError as exc:
            lock.close()
            if exc.errno != errno.EADDRINUSE:
                raise PortInUse(f"cannot claim UDP port {port}: {exc.strerror}") from None
            holder = _holder(port)
            raise PortInUse(
                f"UDP port {port} is already served by another acegw"
                f"{f' (pid {holder})' if holder else ''}; stop it or choose another server.port"
            ) from None
        self._lock = lock
        try:
            _probe(host, port)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> PortClaim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _probe(host: str, port: int) -> None:
    """Bind ``host:port`` without SO_REUSEPORT and let go at once."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind((host, port))
        except OSError as exc:
            shown = f"[{host}]" if ":" in host else host
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"UDP port {port} on {shown} is already in use by another process; "
                    "stop it or choose another server.port"
                ) from None
            raise PortInUse(f"cannot bind UDP {shown} port {port}: {exc.strerror}") from None


def _holder(port: int) -> int | None:
    """The pid holding the claim on ``port``, if it answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(_NAME.format(port=port))
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
    pid: int = struct.unpack("3i", creds)[0]
    return pid or None


__all__ = ["PortClaim"]
