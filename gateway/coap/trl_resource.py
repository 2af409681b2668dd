"""``GET /revoke/trl``: the TRL endpoint of the embedded AS (RFC 9770 §6).

Only over a DTLS session authenticated with a registered client's PSK
(RFC 9770 §6: registered devices and administrators only; §10); the
requester's kind comes from ``requester_for(identity)``. A GET with
Observe: 0 registers an observation (RFC 7641 §3.1, RFC 9770 §11); after a
TRL update the observers whose pertaining part changed get a notification
rendered for their own query (full or diff) (RFC 9770 §11, RFC 7641 §4.2).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiocoap
from aiocoap.numbers.codes import Code

from gateway.authorization_server.revocation_list import (
    CONTENT_FORMAT_ACE_TRL_CBOR,
    CONTENT_FORMAT_PROBLEM_DETAILS,
    TRL_PATH,
    Entry,
    Query,
    Requester,
    RevocationList,
    TrlError,
    parse_query,
)
from gateway.coap.authorizing_site import peer_of

log = logging.getLogger(__name__)

#: Observations kept at once (each one a requester's session).
MAX_OBSERVERS = 20_000


@dataclass(eq=False)
class _Observer:
    pipe: Any
    requester: Requester
    query: Query
    number: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class TrlResource:
    """The TRL endpoint; :meth:`changed` notifies the observers concerned."""

    path = TRL_PATH

    def __init__(
        self,
        trl: RevocationList,
        requester_for: Callable[[bytes], Requester | None],
        audit: Callable[..., None],
    ) -> None:
        self.trl = trl
        self._requester_for = requester_for
        self._audit = audit
        self._observers: set[_Observer] = set()
        self._closed = False

    @property
    def observers(self) -> int:
        return len(self._observers)

    def _answer(self, request: aiocoap.Message) -> tuple[aiocoap.Message, Requester | None, Query]:
        identity = getattr(request.remote, "psk_identity", None)
        requester = self._requester_for(identity) if identity else None
        if requester is None:
            self._audit(
                event="trl", decision="deny", reason="not_authenticated", peer=peer_of(request)
            )
            return aiocoap.Message(code=Code.UNAUTHORIZED), None, Query()
        if request.code != Code.GET:
            return aiocoap.Message(code=Code.METHOD_NOT_ALLOWED), None, Query()
        try:
            query = parse_query(request.opt.uri_query)
            payload = self.trl.respond(requester, query)
        except TrlError as exc:
            self._audit(
                event="trl",
                decision="deny",
                reason=exc.reason,
                peer=peer_of(request),
                client_id=requester.client_id,
            )
            return (
                aiocoap.Message(
                    code=Code.BAD_REQUEST,
                    payload=exc.problem_details(),
                    content_format=CONTENT_FORMAT_PROBLEM_DETAILS,
                ),
                None,
                Query(),
            )
        return (
            aiocoap.Message(
                code=Code.CONTENT, payload=payload, content_format=CONTENT_FORMAT_ACE_TRL_CBOR
            ),
            requester,
            query,
        )

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        return self._answer(request)[0]

    async def render_to_pipe(self, pipe: Any) -> None:
        """An Observe registration (RFC 7641 §3.1): the first response, then
        a notification each time this requester's part of the TRL changes."""
        response, requester, query = self._answer(pipe.request)
        if requester is None or len(self._observers) >= MAX_OBSERVERS:
            pipe.add_response(response, is_last=True)
            return
        observer = _Observer(pipe, requester, query)
        ended = asyncio.Event()
        pipe.on_interest_end(ended.set)
        response.opt.observe = 0
        pipe.add_response(response, is_last=False)
        self._observers.add(observer)
        self._audit(
            event="trl",
            decision="observe",
            reason="ok",
            peer=peer_of(pipe.request),
            client_id=requester.client_id,
            kind=requester.kind,
        )
        ender = asyncio.ensure_future(ended.wait())
        try:
            while not ended.is_set() and not self._closed:
                waker = asyncio.ensure_future(observer.wake.wait())
                await asyncio.wait({waker, ender}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if ended.is_set() or self._closed:
                    break
                observer.wake.clear()
                try:
                    payload = self.trl.respond(requester, query)
                except TrlError:
                    continue
                observer.number = (observer.number + 1) & 0xFFFFFF
                note = aiocoap.Message(
                    code=Code.CONTENT, payload=payload, content_format=CONTENT_FORMAT_ACE_TRL_CBOR
                )
                note.opt.observe = observer.number
                pipe.add_response(note, is_last=False)
        finally:
            ender.cancel()
            self._observers.discard(observer)
            if self._closed and not ended.is_set():
                pipe.add_response(aiocoap.Message(code=Code.SERVICE_UNAVAILABLE), is_last=True)

    def close(self) -> None:
        """End every observation (the gateway stops)."""
        self._closed = True
        for observer in self._observers:
            observer.wake.set()

    def changed(self, removed: list[Entry], added: list[Entry]) -> int:
        """Wake the observers whose pertaining part changed; returns how many."""
        woken = 0
        for observer in self._observers:
            if any(observer.requester.pertains(e) for e in (*removed, *added)):
                observer.wake.set()
                woken += 1
        return woken


__all__ = ["TrlResource"]
