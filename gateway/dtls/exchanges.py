"""Message deduplication with a compact memory of recent exchanges.

RFC 7252 §4.5: a server remembers the Message ID of every request it
received from a peer for EXCHANGE_LIFETIME, and answers a duplicate CON with
the response it sent the first time. aiocoap 0.4.17's message manager keeps,
for that whole lifetime, the response :class:`aiocoap.Message` (and through
it the request, their option objects and the endpoint) plus a timer handle
and a context per exchange: dozens of garbage-collected objects per request,
millions at a high request rate, and long collector pauses over them
(figures in BENCHMARKS.md, "Figures from module docstrings").

:class:`ExchangeMemory` keeps per exchange only its key, the encoded
response bytes and one expiry entry (two tracked tuples; bytes are not
tracked), expired in arrival order without a timer per exchange. Sans-I/O:
``now`` is passed in. :class:`CompactMessageManager` is aiocoap's message
manager using it; :func:`adopt` switches a manager built by aiocoap to it.

The rest of each request's garbage comes from aiocoap's token manager, whose
per-request closures reference each other: every request leaves objects
(its message, options, pipe) in a cycle that only the collector frees.
:class:`CompactTokenManager` handles incoming requests without the cycle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from aiocoap.messagemanager import MessageManager
from aiocoap.numbers.types import Type
from aiocoap.pipe import Pipe
from aiocoap.tokenmanager import TokenManager

__all__ = ["CompactMessageManager", "CompactTokenManager", "ExchangeMemory", "adopt"]

Key = tuple[Hashable, int]


class ExchangeMemory:
    """``(remote, message id)`` of requests received within their exchange
    lifetime, each with the encoded response sent for it (or ``None`` while
    there is none yet). Entries are expired in the order they were added;
    with one lifetime for all of them (the transport's), that is expiry
    order."""

    __slots__ = ("_entries", "_expiry")

    def __init__(self) -> None:
        self._entries: dict[Key, bytes | None] = {}
        self._expiry: deque[tuple[float, Key]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def remember(self, key: Key, now: float, lifetime: float) -> None:
        """Record a new request's key until ``now + lifetime`` (RFC 7252 §4.5);
        expires older entries first."""
        self.expire(now)
        self._entries[key] = None
        self._expiry.append((now + lifetime, key))

    def store_response(self, key: Key, data: bytes) -> None:
        """Keep ``data``, the encoded message sent for ``key``, for duplicates;
        ignored when the key is not remembered (it is not a response to a
        received request)."""
        if key in self._entries:
            self._entries[key] = data

    def response(self, key: Key) -> bytes | None:
        """The encoded response sent for ``key``, if any yet."""
        return self._entries.get(key)

    def expire(self, now: float) -> int:
        """Forget the entries whose lifetime ended at or before ``now``;
        returns how many."""
        expiry, entries = self._expiry, self._entries
        n = 0
        while expiry and expiry[0][0] <= now:
            _, key = expiry.popleft()
            entries.pop(key, None)
            n += 1
        return n


class CompactMessageManager(MessageManager):  # type: ignore[misc]
    """aiocoap's message manager with deduplication on an
    :class:`ExchangeMemory`; everything else (retransmission, ACKs, RSTs)
    unchanged. Its message interface must return the encoded bytes from
    ``send`` (``None`` when nothing was sent) and offer
    ``send_encoded(remote, data)``, as :class:`gateway.dtls.server.DtlsServer`
    does."""

    exchanges: ExchangeMemory

    def _deduplicate_message(self, message: Any) -> bool:
        """True for a duplicate (RFC 7252 §4.5): a duplicate CON gets the
        response sent the first time again, anything else is dropped."""
        key = (message.remote, message.mid)
        exchanges = self.exchanges
        if key in exchanges:
            if message.mtype is Type.CON:
                data = exchanges.response(key)
                if data is not None:
                    self.log.info("Duplicate CON received, sending old response again")
                    self.message_interface.send_encoded(message.remote, data)
                else:
                    self.log.info("Duplicate CON received, no response to send yet")
            else:
                self.log.info("Duplicate NON, ACK or RST received")
            return True
        exchanges.remember(key, self.loop.time(), message.transport_tuning.EXCHANGE_LIFETIME)
        return False

    def _store_response_for_duplicates(self, message: Any) -> None:
        # done in _send_via_transport, where the encoded bytes are at hand
        return None

    def _send_via_transport(self, message: Any) -> None:
        data = self.message_interface.send(message)
        if data is not None:
            # also called for each retransmission: it stores the same bytes again (idempotent)
            self.exchanges.store_response((message.remote, message.mid), data)


def adopt(manager: MessageManager) -> CompactMessageManager:
    """Switch a message manager that aiocoap built (and that has no exchange
    remembered yet) to :class:`CompactMessageManager`, and its token manager
    to :class:`CompactTokenManager`. aiocoap 0.4.17 builds both inside
    ``Context``; they are plain classes, so the switch changes methods only."""
    if manager._recent_messages or manager.token_manager.incoming_requests:
        raise RuntimeError("message manager already in use")
    manager.__class__ = CompactMessageManager
    manager.exchanges = ExchangeMemory()
    manager.token_manager.__class__ = CompactTokenManager
    return manager  # type: ignore[return-value]


class _IncomingRequest:
    """One request received: passes the responses rendered into its pipe to
    the message layer, stamped with the request's token and endpoint. It
    keeps its own unregistering handle and drops it when the pipe ends, so
    that nothing of the request is left in a reference cycle (aiocoap's
    closures form one per request, freed only by the garbage collector)."""

    __slots__ = ("key", "manager", "pipe", "request", "stop")

    def __init__(self, manager: TokenManager, request: Any, key: tuple[bytes, Any]) -> None:
        self.manager = manager
        self.request = request
        self.key = key
        self.pipe = Pipe(request, manager.log)
        self.stop: Callable[[], None] | None = self.pipe.on_event(self.on_event)
        self.pipe.on_interest_end(self.on_end)

    def on_event(self, event: Any) -> bool:
        message = event.message
        if message is not None:
            request = self.request
            message.token = request.token
            message.remote = request.remote.as_response_address()
            message.request = request
            self.manager.token_interface.send_message(message, self.stop)
        else:
            self.manager.log.error("request pipe got an error event: %s", event)
        return not event.is_last

    def on_end(self) -> None:
        incoming = self.manager.incoming_requests
        entry = incoming.get(self.key)
        if entry is not None and entry[0] is self.pipe:
            del incoming[self.key]
        self.stop = None  # the cycle: stop -> on_event -> self -> stop


class CompactTokenManager(TokenManager):  # type: ignore[misc]
    """aiocoap's token manager with incoming requests handled by
    :class:`_IncomingRequest` (no per-request garbage cycle); outgoing
    requests unchanged."""

    def process_request(self, request: Any) -> None:
        """Start rendering a request (RFC 7252 §5.3.1: token and endpoint
        identify the exchange; a new request on a live token replaces it)."""
        key = (request.token, request.remote)
        previous = self.incoming_requests.pop(key, None)
        if previous is not None:
            self.log.debug("Incoming request overrides existing request")
            previous[1]()
        handler = _IncomingRequest(self, request, key)
        self.incoming_requests[key] = (handler.pipe, handler.stop)
        self.context.render_to_pipe(handler.pipe)
