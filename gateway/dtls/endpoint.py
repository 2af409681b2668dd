"""Driving a :class:`dtls12.DtlsServerEngine` from asyncio: :class:`EnginePump`,
the one send loop and timer every engine-backed server uses (the gateway's
:class:`~gateway.dtls.server.DtlsServer` and :class:`DtlsEndpoint`), and
:class:`DtlsEndpoint`, a bare UDP socket around it with events handed to a
callback. All protocol decisions (retransmission of flights, RFC 6347
§4.2.4; timeouts; idle eviction) are the engine's; this module only moves
bytes and reads the clock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from dtls12.config import EngineConfig
from dtls12.engine import DtlsServerEngine, PskLookup
from dtls12.events import Event
from dtls12.session import Session

log = logging.getLogger(__name__)

#: Called for every engine event, in order, from the event loop.
EventHandler = Callable[["DtlsEndpoint", Event], None]


class Cancellable(Protocol):
    """What a scheduler returns for a timer (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


#: ``call_at(when, callback)``: run ``callback`` at ``when`` on ``clock``.
CallAt = Callable[[float, Callable[[], None]], Cancellable]


class EnginePump:
    """Moves an engine's output and keeps its one timer.

    :meth:`pump` sends every datagram the engine produced (``send(datagram,
    address)``) and hands every event to ``on_event``, again until both are
    empty (a handler may make the engine produce more, e.g. a response sent
    on an event; a nested call returns at once), then arms one timer at the
    engine's next deadline: an earlier deadline replaces the armed timer, a
    later one leaves it. When it fires the engine's timers run
    (``handle_timer(clock())``: retransmitted flights, expired handshakes
    and sessions), their output is pumped and ``after_timer`` runs.
    ``clock`` and ``call_at`` are the event loop's (``loop.time``,
    ``loop.call_at``) or a test's."""

    __slots__ = (
        "_after_timer",
        "_call_at",
        "_clock",
        "_engine",
        "_on_event",
        "_pumping",
        "_send",
        "_stopped",
        "_timer",
        "_timer_at",
    )

    def __init__(
        self,
        engine: DtlsServerEngine,
        send: Callable[[bytes, Any], object],
        on_event: Callable[[Event], object],
        *,
        clock: Callable[[], float],
        call_at: CallAt,
        after_timer: Callable[[], object] | None = None,
    ) -> None:
        self._engine = engine
        self._send = send
        self._on_event = on_event
        self._clock = clock
        self._call_at = call_at
        self._after_timer = after_timer
        self._timer: Cancellable | None = None
        self._timer_at = 0.0
        self._pumping = False
        self._stopped = False

    @property
    def timer_at(self) -> float | None:
        """When the armed timer fires (None: none is armed)."""
        return self._timer_at if self._timer is not None else None

    def pump(self) -> None:
        """Send what the engine produced, deliver its events, rearm the timer."""
        if self._pumping:
            return
        self._pumping = True
        try:
            engine = self._engine
            send = self._send
            while True:
                datagrams = engine.datagrams_to_send()
                events = engine.events()
                if not datagrams and not events:
                    break
                for datagram, address in datagrams:
                    send(datagram, address)
                for event in events:
                    try:
                        self._on_event(event)
                    except Exception:
                        log.exception("DTLS event handler failed on %s", type(event).__name__)
        finally:
            self._pumping = False
        self._arm()

    def stop(self) -> None:
        """Cancel the timer and arm no other (the server is closing)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._stopped:
            return
        deadline = self._engine.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._stopped:
            return
        self._engine.handle_timer(self._clock())
        self.pump()
        if self._after_timer is not None:
            self._after_timer()


class DtlsEndpoint(asyncio.DatagramProtocol):
    """A DTLS server socket. Build it with :meth:`serve`."""

    def __init__(self, engine: DtlsServerEngine, on_event: EventHandler) -> None:
        self.engine = engine
        self._on_event = on_event
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._transport: asyncio.DatagramTransport | None = None
        self._driver = EnginePump(
            engine, self._sendto, self._event, clock=loop.time, call_at=loop.call_at
        )
        self._pump = self._driver.pump

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
        self._driver.stop()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- internals --------------------------------------------------------------------------

    def _sendto(self, datagram: bytes, address: Hashable) -> None:
        if self._transport is not None:
            self._transport.sendto(datagram, address)  # type: ignore[arg-type]

    def _event(self, event: Event) -> None:
        self._on_event(self, event)
