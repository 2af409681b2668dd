"""What the gateway's DTLS transports share: the hooks they call, the outcome
of a handshake, the CoAP transmission parameters of messages received over
DTLS, and the aiocoap context around a transport (RFC 7252 §9)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiocoap
import aiocoap.numbers
from aiocoap import interfaces
from aiocoap.message import Message

from dtls12 import PskPending
from gateway.coap.aiocoap_adapter import ServerContext, append_transport

from .codec import decode_message
from .exchanges import adopt
from .remote import DtlsRemote, DtlsSessionClosed
from .session import CloseReason, HandshakeFailure
from .stats import Counters
from .udp import UdpEndpoint

log = logging.getLogger(__name__)

#: A socket address as the UDP layer reports it.
SockAddr = tuple[object, ...]


class GatewayTuning(aiocoap.numbers.TransportTuning):  # type: ignore[misc]
    """RFC 7252 §4.8 parameters for messages received here, with MAX_LATENCY
    5 s instead of 100 s: EXCHANGE_LIFETIME (how long aiocoap remembers every
    exchange for deduplication) becomes 57 s instead of 247 s. A client stops
    retransmitting after MAX_TRANSMIT_SPAN (45 s), so duplicates still arrive
    within it on any network under 12 s of latency; and a proof-bearing
    request processed twice is refused by the replay window anyway. Four
    times fewer remembered exchanges keep the heap, and so the garbage
    collector's full passes, four times smaller."""

    MAX_LATENCY = 5.0


TUNING = GatewayTuning()

#: ``psk_lookup(identity) -> psk, None, or PSK_PENDING`` (the key is being
#: fetched: the engine holds the handshake, :class:`dtls12.PskPending`):
#: synchronous, supplied by the gateway.
PskLookup = Callable[[bytes], bytes | PskPending | None]
#: Called once for every established session that ends.
SessionClosedHook = Callable[[DtlsRemote, CloseReason], None]
#: ``admit_identity(identity, address)``: False refuses a handshake naming
#: ``identity`` from ``address`` before its PSK is looked up (lockout).
IdentityCheck = Callable[[bytes, SockAddr], bool]


@dataclass(frozen=True)
class HandshakeOutcome:
    """One finished handshake, for audit records (no secret in it)."""

    address: SockAddr
    #: The identity presented (None if the handshake failed before it).
    identity: bytes | None
    #: None on success.
    failure: HandshakeFailure | None

    @property
    def ok(self) -> bool:
        return self.failure is None


#: Called once for every handshake that completes or fails.
HandshakeHook = Callable[[HandshakeOutcome], None]


class DtlsTransport(interfaces.MessageInterface):  # type: ignore[misc]
    """What both DTLS server transports do alike below aiocoap's message
    layer: send on a remote's session, decode and dispatch a received CoAP
    message (RFC 7252 §9.1), report ended sessions and handshakes to the
    hooks. A subclass sets the attributes below and implements
    :meth:`_write` and :meth:`_remote_is_current`."""

    _mman: interfaces.MessageManager | None
    _counters: Counters
    _udp: UdpEndpoint
    _closing: bool
    _on_session_closed: SessionClosedHook | None
    _on_handshake: HandshakeHook | None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (the port is the real one for port 0)."""
        return self._udp.address

    def send(self, message: Message) -> bytes | None:
        """Encode and send ``message`` on its remote's session; returns the
        encoded bytes, or ``None`` when the session has ended (nothing sent)."""
        data: bytes = message.encode()
        return data if self._write(message.remote, data) else None

    def send_encoded(self, remote: object, data: bytes) -> None:
        """Send an already encoded message (a response repeated for a
        duplicate request, RFC 7252 §4.5) on ``remote``'s session."""
        self._write(remote, data)

    def _write(self, remote: object, data: bytes) -> bool:
        """Send ``data`` on ``remote``'s session (True), or count it dropped
        as ``closed_session`` when that session has ended (False)."""
        raise NotImplementedError

    def _remote_is_current(self, remote: DtlsRemote) -> bool:
        raise NotImplementedError

    def _session_ended(self, remote: object, data: bytes) -> bool:
        """``_write``'s answer for a remote whose session has ended: counted
        as dropped ``closed_session``, nothing sent (False)."""
        self._counters.dropped["closed_session"] += 1
        log.debug("not sending %d bytes to %s: its DTLS session has ended", len(data), remote)
        return False

    async def determine_remote(self, message: Message) -> None:
        # A DTLS server does not initiate sessions.
        return None

    async def recognize_remote(self, remote: object) -> bool:
        return isinstance(remote, DtlsRemote) and self._remote_is_current(remote)

    def _deliver(self, remote: DtlsRemote, plaintext: bytes) -> None:
        """Decode one CoAP message received on ``remote``'s session and hand
        it to aiocoap (an unparsable one is counted as ``coap_unparsable``)."""
        mman = self._mman
        if mman is None:
            return
        try:
            message = decode_message(plaintext, remote, TUNING)
        except Exception:
            self._counters.dropped["coap_unparsable"] += 1
            log.debug("unparsable CoAP message from %s", remote)
            return
        try:
            mman.dispatch_message(message)
        except Exception:
            log.exception("aiocoap failed to dispatch a message from %s", remote)

    def _closed(self, remote: DtlsRemote, reason: CloseReason) -> None:
        """An established session ended: count it, tell aiocoap and the hook."""
        self._counters.sessions_closed[reason.value] += 1
        log.debug("DTLS session %s ended: %s", remote, reason.value)
        if self._mman is not None and not self._closing:
            self._mman.dispatch_error(DtlsSessionClosed(reason), remote)
        if self._on_session_closed is not None:
            try:
                self._on_session_closed(remote, reason)
            except Exception:
                log.exception("on_session_closed hook failed")

    def _report(self, outcome: HandshakeOutcome) -> None:
        """A handshake completed or failed: tell the hook."""
        if self._on_handshake is not None:
            try:
                self._on_handshake(outcome)
            except Exception:
                log.exception("on_handshake hook failed")


Transport = TypeVar("Transport", bound=interfaces.MessageInterface)


async def server_context(
    site: interfaces.Resource | None,
    build: Callable[[interfaces.MessageManager], Awaitable[Transport]],
    *,
    loggername: str = "coap-server",
) -> tuple[aiocoap.Context, Transport]:
    """An aiocoap server context whose only transport is the one ``build``
    makes (given the message manager) serving ``site``. Shut it down with
    ``await context.shutdown()``.

    aiocoap 0.4.17 has no public hook for a custom transport: the adapter's
    :func:`~gateway.coap.aiocoap_adapter.append_transport` takes the path its
    own ``create_server_context`` takes for built-in transports; the context
    is the adapter's :class:`~gateway.coap.aiocoap_adapter.ServerContext`.
    """
    context = ServerContext(loop=asyncio.get_running_loop(), serversite=site, loggername=loggername)
    built: list[Transport] = []

    async def make(mman: interfaces.MessageManager) -> Transport:
        transport = await build(adopt(mman))
        built.append(transport)
        return transport

    await append_transport(context, make)
    return context, built[0]
