"""Message deduplication (RFC 7252 §4.5) on the compact exchange memory: the
memory itself with an injected clock, then duplicates over real DTLS."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import aiocoap
from aiocoap.numbers.types import Type

from gateway.dtls.exchanges import CompactMessageManager, ExchangeMemory
from gateway.dtls.server import TUNING

from .conftest import DTLS_PSKS, DtlsHarnessFactory, dtls_get, dtls_wait_for

LIFETIME = 57.0


def test_a_remembered_key_has_no_response_until_one_is_stored() -> None:
    memory = ExchangeMemory()
    memory.remember(("peer", 7), now=0.0, lifetime=LIFETIME)
    assert ("peer", 7) in memory and memory.response(("peer", 7)) is None
    memory.store_response(("peer", 7), b"\x60\x45\x00\x07")
    assert memory.response(("peer", 7)) == b"\x60\x45\x00\x07"


def test_responses_to_unremembered_keys_are_not_kept() -> None:
    memory = ExchangeMemory()
    memory.store_response(("peer", 8), b"separate response")
    assert ("peer", 8) not in memory and len(memory) == 0


def test_entries_expire_after_their_lifetime_in_arrival_order() -> None:
    memory = ExchangeMemory()
    memory.remember(("a", 1), now=0.0, lifetime=LIFETIME)
    memory.remember(("b", 1), now=10.0, lifetime=LIFETIME)
    assert memory.expire(LIFETIME - 0.001) == 0
    assert memory.expire(LIFETIME) == 1
    assert ("a", 1) not in memory and ("b", 1) in memory
    # remembering expires too: nothing older than its lifetime stays
    memory.remember(("c", 1), now=10.0 + LIFETIME, lifetime=LIFETIME)
    assert ("b", 1) not in memory and len(memory) == 1


def test_an_expired_key_can_be_remembered_again() -> None:
    memory = ExchangeMemory()
    memory.remember(("a", 1), now=0.0, lifetime=1.0)
    memory.store_response(("a", 1), b"old")
    memory.remember(("a", 1), now=2.0, lifetime=1.0)  # mid reused after the lifetime
    assert memory.response(("a", 1)) is None
    assert memory.expire(2.5) == 0 and ("a", 1) in memory


async def test_duplicate_con_gets_the_first_response_and_renders_once(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness()
    assert isinstance(h.server._mman, CompactMessageManager)
    probe = h.probe()
    try:
        session = await probe.connect(b"dev-1", DTLS_PSKS[b"dev-1"])
        request = dtls_get()
        first = await session.request(request)
        again = await session.repeat(request)
        assert again.code == aiocoap.CONTENT
        assert (again.mid, again.token, again.payload) == (first.mid, first.token, first.payload)
        assert len(h.whoami.remotes) == 1  # the duplicate was not rendered
        # a new Message ID is a new request
        await session.request(dtls_get())
        assert len(h.whoami.remotes) == 2
    finally:
        await probe.close()


class _RecordingRoot:
    """A root site in front of the harness's: keeps a weak reference to every
    request it is given (the request aiocoap decoded, as the token manager
    holds it), then renders it as before."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: list[weakref.ref[aiocoap.Message]] = []

    async def render_to_pipe(self, pipe: Any) -> None:
        self.requests.append(weakref.ref(pipe.request))
        await self.inner.render_to_pipe(pipe)


async def test_remembered_exchanges_hold_no_messages(dtls_harness: DtlsHarnessFactory) -> None:
    """What the memory keeps per exchange is the key and the response bytes:
    the request and response messages are freed once answered, by reference
    counting alone. The garbage collector is off while requests are served
    and is never run before the checks: a request left in a reference cycle
    (as aiocoap's own token manager leaves each one) would still be alive."""
    h = await dtls_harness()
    root = h.context.serversite = _RecordingRoot(h.context.serversite)
    probe = h.probe()
    gc.collect()  # garbage of earlier tests is not this test's
    gc.disable()
    try:
        session = await probe.connect(b"dev-2", DTLS_PSKS[b"dev-2"])
        for _ in range(20):
            await session.request(dtls_get())
        exchanges = h.server._mman.exchanges
        assert len(exchanges) == 20
        assert len(root.requests) == 20
        h.whoami.remotes.clear()
        # the rendering task ends just after the response is sent
        await dtls_wait_for(lambda: all(ref() is None for ref in root.requests), timeout=2.0)
        held = [o for o in gc.get_objects() if isinstance(o, aiocoap.Message)]
        assert not [m for m in held if m.code == aiocoap.CONTENT and m.mtype == Type.ACK]
    finally:
        gc.enable()
        await probe.close()


async def test_exchanges_are_remembered_for_the_transport_lifetime(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    """Received requests carry the gateway's tuning: they are remembered for
    EXCHANGE_LIFETIME (57 s) on the loop's clock, then forgotten (expiry
    driven with an explicit time, no waiting)."""
    h = await dtls_harness()
    probe = h.probe()
    try:
        session = await probe.connect(b"dev-3", DTLS_PSKS[b"dev-3"])
        before = asyncio.get_running_loop().time()
        for _ in range(3):
            await session.request(dtls_get())
        after = asyncio.get_running_loop().time()
        exchanges = h.server._mman.exchanges
        assert TUNING.EXCHANGE_LIFETIME == 57.0
        assert exchanges.expire(before + TUNING.EXCHANGE_LIFETIME - 0.001) == 0
        assert exchanges.expire(after + TUNING.EXCHANGE_LIFETIME) == 3
        assert len(exchanges) == 0
    finally:
        await probe.close()


async def test_the_message_interface_sends_nothing_on_an_ended_session(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    """``send`` returns the encoded bytes it sent (kept for duplicates) and
    ``None`` once the session has ended; ``send_encoded`` sends nothing then
    either. Every such drop is counted once as ``closed_session``."""
    h = await dtls_harness()
    probe = h.probe()
    try:
        session = await probe.connect(b"dev-4", DTLS_PSKS[b"dev-4"])
        await session.request(dtls_get())
        (remote,) = h.whoami.remotes
        message = aiocoap.Message(code=aiocoap.CONTENT, payload=b"late")
        message.mtype, message.mid, message.token, message.remote = Type.NON, 4711, b"tk", remote
        sent = h.server.stats().datagrams_sent
        assert h.server.send(message) == message.encode()
        assert h.server.stats().datagrams_sent == sent + 1
        assert h.server.stats().dropped.get("closed_session", 0) == 0
        assert h.server.close_session(remote)
        sent = h.server.stats().datagrams_sent
        assert h.server.send(message) is None
        h.server.send_encoded(remote, message.encode())
        h.server.send_encoded(("127.0.0.1", 5684), message.encode())  # not a DTLS remote
        stats = h.server.stats()
        assert stats.dropped["closed_session"] == 3
        assert stats.datagrams_sent == sent
    finally:
        await probe.close()
