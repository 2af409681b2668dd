"""The asyncio UDP driver of :class:`dtls12.DtlsServerEngine`: one datagram socket,
one timer, events handed to a callback. All protocol decisions are the
engine's; this module only moves bytes and reads the loop's clock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from dtls12.config import EngineConfig
from dtls12.engine import DtlsServerEngine, PskLookup
from dtls12.events import Event
from dtls12.session import Session

log = logging.getLogger(__name__)

#: Called for every engine event, in order, from the event loop.
EventHandler = Callable[["DtlsEndpoint", Event], None]


class DtlsEndpoint(asyncio.DatagramProtocol):
    """A DTLS server socket. Build it with :meth:`serve`."""

    def __init__(self, engine: DtlsServerEngine, on_event: EventHandler) -> None:
        self.engine = engine
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False

    @classmethod
    async def serve(
        cls,
        config: EngineConfig,
        psk_lookup: PskLookup,
        on_event: EventHandler,
        *,
        host: str = "::",
        port: int = 0,
        reuse_port: bool = False,
    ) -> DtlsEndpoint:
        """Bind ``host``:``port`` and serve until :meth:`close`."""
        loop = asyncio.get_running_loop()
        engine = DtlsServerEngine(config, psk_lookup, now=loop.time())
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        _, protocol = await loop.create_datagram_endpoint(lambda: cls(engine, on_event), sock=sock)
        return protocol

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        assert self._transport is not None
        name = self._transport.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    # --- asyncio protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.engine.receive_datagram(data, addr, self._loop.time())
        self._pump()

    def error_received(self, exc: Exception) -> None:
        log.debug("DTLS socket error: %s", exc)

    # --- application interface -----------------------------------------------------------

    def send(self, session: Session, data: bytes) -> bool:
        """Send ``data`` on an established session (False: it has ended)."""
        sent = self.engine.send(session, data)
        self._pump()
        return sent

    def close_session(self, session: Session) -> None:
        """close_notify and forget the session."""
        self.engine.close(session)
        self._pump()

    def close(self) -> None:
        """Close every session, then the socket."""
        self.engine.shutdown()
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- internals --------------------------------------------------------------------------

    def _pump(self) -> None:
        """Flush datagrams, deliver events (handlers may send more), rearm
        the timer."""
        if self._pumping:
            return
        self._pumping = True
        try:
            engine = self.engine
            while True:
                datagrams = engine.datagrams_to_send()
                events = engine.events()
                if not datagrams and not events:
                    break
                transport = self._transport
                if transport is not None:
                    for datagram, address in datagrams:
                        transport.sendto(datagram, address)
                for event in events:
                    try:
                        self._on_event(self, event)
                    except Exception:
                        log.exception("DTLS event handler failed on %s", type(event).__name__)
        finally:
            self._pumping = False
        self._arm()

    def _arm(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is None or self._transport is None:
            return
        if self._timer is not None:
            if self._timer_at is not None and self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.engine.handle_timer(self._loop.time())
        self._pump()
