"""Tokens accepted by /authz-info shared through PostgreSQL: a device that
uploaded its token at one instance and moves to another continues after one
new DTLS handshake and at most one Echo round, with no new token and no new
upload; a flood of unknown kids costs a bounded number of store queries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import aiocoap

from gateway.dtls.probe import DtlsProbe
from gateway.registry.masterkey import load_master_key
from gateway.registry.postgres import PostgresStore
from gateway.registry.registry import Registry
from gateway.registry.shared_tokens import SharedTokens
from tests.fleet.conftest import start_instances
from tests.ops.conftest import ProofClient, init_state, value


async def test_a_moved_device_continues_without_a_new_token_or_upload(tmp_path: Path, pg_url):
    state = init_state(tmp_path / "state")
    key = load_master_key(state / "master.key", env={})
    with Registry(pg_url, key) as registry:
        ((device, psk),) = registry.bulk_add(1, "dev-", "/whoami:GET", psk_bytes=16)
    async with contextlib.AsyncExitStack() as stack:
        a, b = await start_instances(stack, state, pg_url, tmp_path)
        probe_a, probe_b = DtlsProbe(a.target), DtlsProbe(b.target)
        stack.push_async_callback(probe_a.close)
        stack.push_async_callback(probe_b.close)
        at_a = await ProofClient.enroll(await probe_a.connect(device.encode(), psk))
        assert (await at_a.call()).code == aiocoap.CONTENT

        # A writes accepted tokens off the request path, at its next round
        async def written() -> float:
            return value(await a.served.scrape(), "acegw_shared_tokens_written_total")

        deadline = time.monotonic() + 10
        while await written() < 1:
            assert time.monotonic() < deadline, "A never wrote the accepted token"
            await asyncio.sleep(0.05)

        # the device's traffic now reaches B: one new handshake, same token, same key
        moved = ProofClient(await probe_b.connect(device.encode(), psk), at_a.key, at_a.token)
        moved.piv = at_a.piv
        first = await moved.call()
        assert first.code == aiocoap.CONTENT, (first.code, first.payload[:80])
        assert moved.echoes <= 1
        again = await moved.call()
        assert again.code == aiocoap.CONTENT
        assert moved.echoes <= 1

        samples_b = await b.served.scrape()
        assert value(samples_b, "acegw_tokens_issued_total") == 0  # no new /token
        assert value(samples_b, "acegw_tokens_accepted_total", via="authz-info") == 0
        assert value(samples_b, "acegw_tokens_accepted_total", via="shared_store") == 1
        assert value(samples_b, "acegw_shared_token_lookups_total", outcome="found") == 1
        assert value(samples_b, "acegw_shared_token_queries_total") == 1
        print({"echo_rounds_at_b": moved.echoes})


class CountingStore(PostgresStore):
    """The real store, counting the held-token queries it runs."""

    lookups = 0

    def held_tokens(self, kids, *, now):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return super().held_tokens(kids, now=now)


async def test_a_flood_of_unknown_kids_costs_a_bounded_number_of_queries(pg_url):
    store = CountingStore(pg_url)
    shared = SharedTokens(store, query_rate=20.0, query_burst=10.0, max_pending=256, batch=64)
    shared.start()
    try:
        known = os.urandom(8)
        shared.publish(known, b"\x84token", time.time() + 600)
        assert await shared.flush() == 1

        started = time.monotonic()
        kids = [os.urandom(8) for _ in range(3000)]
        for wave in range(0, len(kids), 500):  # 6 waves of 500 distinct unknown kids
            found = await asyncio.gather(*(shared.find(k) for k in kids[wave : wave + 500]))
            assert not any(found)
        queries = shared.queries
        elapsed = time.monotonic() - started  # read after the count: every query was before
        assert store.lookups == queries
        assert queries <= 10 + 20 * elapsed + 1, (queries, elapsed)  # burst + rate * t
        assert shared.lookups["over_limit"] > 0  # the pending bound answered at once
        asked = shared.lookups["absent"]
        assert asked <= shared.queries * 64

        # the kids found absent are not asked again while cached
        before = shared.queries
        answered_absent = [k for k in kids if k in shared._absent]
        assert len(answered_absent) == asked
        again = await asyncio.gather(*(shared.find(k) for k in answered_absent))
        assert not any(again)
        assert shared.queries == before
        assert shared.lookups["negative"] == asked

        # a real held token is still found after the flood
        assert await shared.find(known) == b"\x84token"
        print({"kids": len(kids), "queries": shared.queries, "elapsed_s": round(elapsed, 2)})
    finally:
        await shared.stop()
        store.close()


def test_held_tokens_by_kid_on_postgres(pg_url):
    """A newer token for a kid replaces the older; expired ones are not
    returned and are purged with the revocations."""
    store = PostgresStore(pg_url)
    try:
        now = time.time()
        assert store.hold_tokens([(b"k1", b"old", now + 60), (b"k2", b"t2", now - 1)], at=now) == 2
        store.hold_tokens([(b"k1", b"new", now + 120)], at=now)
        assert store.held_tokens([b"k1", b"k2", b"k3"], now=now) == {b"k1": b"new"}
        store.purge(now, retention=3600)
        assert store.held_tokens([b"k2"], now=now - 10) == {}
    finally:
        store.close()
