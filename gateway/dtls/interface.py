"""What the gateway's DTLS transports share: the hooks they call, the outcome
of a handshake, the CoAP transmission parameters of messages received over
DTLS, and the aiocoap context around a transport (RFC 7252 §9)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiocoap
import aiocoap.numbers
from aiocoap import interfaces

from gateway.coap.aiocoap_adapter import append_transport

from .exchanges import adopt
from .remote import DtlsRemote
from .session import CloseReason, HandshakeFailure

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

#: ``psk_lookup(identity) -> psk or None``: synchronous, supplied by the gateway.
PskLookup = Callable[[bytes], bytes | None]
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
    own ``create_server_context`` takes for built-in transports.
    """
    context = aiocoap.Context(
        loop=asyncio.get_running_loop(), serversite=site, loggername=loggername
    )
    built: list[Transport] = []

    async def make(mman: interfaces.MessageManager) -> Transport:
        transport = await build(adopt(mman))
        built.append(transport)
        return transport

    await append_transport(context, make)
    return context, built[0]
