"""Tokens accepted by /authz-info shared through PostgreSQL: a device that
uploaded its token at one instance and moves to another continues after one
new DTLS handshake and at most one Echo round, with no new token and no new
upload; so does a device whose handshake names its token by an RFC 9202
§3.3 kid identity (the handshake waits for the lookup, with no alert); a
flood of unknown kids, in proofs or in handshakes, costs a bounded number of
store queries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import aiocoap

from gateway.dtls.probe import DtlsProbe, ProbeError
from gateway.registry.masterkey import load_master_key
from gateway.registry.postgres import PostgresStore
from gateway.registry.registry import Registry
from gateway.registry.shared_tokens import SharedTokens
from tests.fleet.conftest import start_instances
from tests.ops.conftest import ProofClient, Samples, init_state, value
from tokens.cnf import psk_identity_for_kid

#: The moved kid device's first retransmission comes after this: the gateway
#: must resume its held handshake by itself before (a lookup takes milliseconds,
#: bounded at 1 s).
RESUME_BOUND_S = 2.5


def continued_from_store(samples: Samples, devices: int) -> None:
    """The instance a number of devices moved to issued no token, got no
    upload, and took each device's token from the shared store with one
    query."""
    assert value(samples, "acegw_tokens_issued_total") == 0  # no new /token
    assert value(samples, "acegw_tokens_accepted_total", via="authz-info") == 0
    assert value(samples, "acegw_tokens_accepted_total", via="shared_store") == devices
    assert value(samples, "acegw_shared_token_lookups_total", outcome="found") == devices
    assert value(samples, "acegw_shared_token_queries_total") == devices


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

        continued_from_store(await b.served.scrape(), 1)
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


async def test_refused_and_queried_absent_kids_share_one_bounded_negative_cache(pg_url):
    """A kid whose token was refused here and kids a query found absent go
    to the same negative cache: newest last, the oldest trimmed beyond
    ``max_negative``, each answered ``negative`` without a query until
    ``negative_ttl`` passes (injected clock)."""
    store = CountingStore(pg_url)
    clock = [1000.0]
    shared = SharedTokens(store, monotonic=lambda: clock[0], negative_ttl=5.0, max_negative=3)
    shared.start()
    try:
        refused = [b"refused-" + bytes([i]) for i in range(3)]
        for kid in refused:
            shared.refused(kid)
        assert list(shared._absent) == refused
        shared.refused(refused[0])  # again: moves to the newest end, no growth
        assert list(shared._absent) == [refused[1], refused[2], refused[0]]

        unknown = [os.urandom(8), os.urandom(8)]
        assert await asyncio.gather(*(shared.find(k) for k in unknown)) == [None, None]
        assert store.lookups == 1 and shared.lookups["absent"] == 2
        assert list(shared._absent) == [refused[0], *unknown]  # two oldest trimmed
        assert all(until == 1005.0 for until in shared._absent.values())

        assert await shared.find(refused[0]) is None
        assert await shared.find(unknown[1]) is None
        assert store.lookups == 1 and shared.lookups["negative"] == 2
        assert await shared.find(refused[1]) is None  # trimmed: asked again
        assert store.lookups == 2

        clock[0] = 1005.0  # the negative answers end: asked again
        assert await shared.find(refused[0]) is None
        assert store.lookups == 3 and shared.lookups["negative"] == 2
    finally:
        await shared.stop()
        store.close()


async def test_store_queries_keep_to_burst_and_rate_on_an_injected_clock(pg_url):
    """Queries of the shared store take from a budget of ``query_burst``,
    refilled at ``query_rate`` a second: the query beyond it waits the
    seconds until the next one, and the budget never grows beyond the burst
    (injected clock; the lookups task is not started)."""
    store = PostgresStore(pg_url)
    clock = [1000.0]
    shared = SharedTokens(store, monotonic=lambda: clock[0], query_rate=4.0, query_burst=3.0)
    try:
        assert [shared._take_query() for _ in range(3)] == [0.0, 0.0, 0.0]
        assert shared._take_query() == 0.25  # 1 query / 4 a second
        clock[0] += 0.125
        assert shared._take_query() == 0.125  # half refilled
        clock[0] += 0.125
        assert shared._take_query() == 0.0
        clock[0] += 3600.0  # an idle hour refills the burst, no more
        assert [shared._take_query() for _ in range(4)] == [0.0, 0.0, 0.0, 0.25]
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


async def wait_written(served, count: int) -> None:  # type: ignore[no-untyped-def]
    """Until ``served`` wrote ``count`` accepted tokens to the shared store."""
    deadline = time.monotonic() + 10
    while value(await served.scrape(), "acegw_shared_tokens_written_total") < count:
        assert time.monotonic() < deadline, "the instance never wrote the accepted tokens"
        await asyncio.sleep(0.05)


async def test_a_device_with_a_kid_identity_moves_without_a_new_token_or_upload(
    tmp_path: Path, pg_url
):
    """RFC 9202 §3.3: the device names its uploaded token's PoP key in the
    handshake. At the instance it moved to, the handshake waits (no alert)
    while the token is looked up, then completes; the session is token-bound
    (no Proof option, no Echo round). Once with the engine's client (it
    counts its retransmissions), once with tinydtls."""
    state = init_state(tmp_path / "state")
    key = load_master_key(state / "master.key", env={})
    with Registry(pg_url, key) as registry:
        devices = registry.bulk_add(2, "dev-", "/whoami:GET", psk_bytes=16)
    async with contextlib.AsyncExitStack() as stack:
        a, b = await start_instances(stack, state, pg_url, tmp_path)
        probe_a, probe_b = DtlsProbe(a.target), DtlsProbe(b.target)
        stack.push_async_callback(probe_a.close)
        stack.push_async_callback(probe_b.close)
        enrolled = []
        for device, psk in devices:
            at_a = await ProofClient.enroll(await probe_a.connect(device.encode(), psk))
            assert (await at_a.call()).code == aiocoap.CONTENT
            enrolled.append(at_a)
        await wait_written(a.served, 2)

        measured = []
        for n, at_a in enumerate(enrolled):
            from_b: list[bytes] = []
            started = time.monotonic()
            moved = await probe_b.connect(
                psk_identity_for_kid(at_a.key.kid),
                at_a.key.secret,
                connection_id=n == 0,  # the engine's client; tinydtls where it fits
                on_datagram=lambda d, seen=from_b: seen.append(d) or True,
                # a first retransmission later than the lookup takes: the
                # handshake completes only if the gateway resumes it itself
                retransmit_after=RESUME_BOUND_S,
            )
            took = time.monotonic() - started
            # HelloVerifyRequest, ServerHello..Done, CCS + Finished: no alert
            assert len(from_b) == 3 and all(d[0] in (20, 22) for d in from_b[:2]), from_b
            response = await moved.request(aiocoap.Message(code=aiocoap.GET, uri_path=["whoami"]))
            assert response.code == aiocoap.CONTENT, (response.code, response.payload[:80])
            engine_client = moved._client
            measured.append(
                {
                    "client": "engine" if engine_client is not None else "tinydtls",
                    "handshake_s": round(took, 3),
                    "retransmissions": engine_client.retransmissions if engine_client else None,
                }
            )
            if engine_client is not None:
                # resumed by the gateway once the token was held, not by the
                # client's retransmitted flight (which would also complete it)
                assert engine_client.retransmissions == 0 and took < RESUME_BOUND_S, measured

        samples_b = await b.served.scrape()
        continued_from_store(samples_b, 2)
        assert value(samples_b, "acegw_dtls_handshakes_total", outcome="ok") == 2
        failed = value(samples_b, "acegw_dtls_handshakes_total") - 2
        assert failed == 0
        # both handshakes were held while the token was fetched, none to the end of the hold
        assert value(samples_b, "acegw_dtls_handshakes_held_total", hold="started") == 2
        assert value(samples_b, "acegw_dtls_handshakes_held_total", hold="expired") == 0
        print({"moved_kid_identity_devices": measured})


async def test_a_flood_of_made_up_kid_identities_costs_bounded_queries(tmp_path: Path, pg_url):
    """2,000 handshakes naming made-up kids (RFC 9202 §3.3) at one instance,
    from four addresses (the per-address lockout raised so that the store's
    bounds are what is measured): the store queries stay within burst + rate
    x time, every such handshake fails (bad_record_mac, as an unknown
    identity), and meanwhile a device with its client PSK and a device
    moving with its kid identity both complete their handshake and an
    authorized request at that instance."""
    state = init_state(tmp_path / "state")
    key = load_master_key(state / "master.key", env={})
    with Registry(pg_url, key) as registry:
        (honest, honest_psk), (mover, mover_psk) = registry.bulk_add(
            2, "dev-", "/whoami:GET", psk_bytes=16
        )
    async with contextlib.AsyncExitStack() as stack:
        a, b = await start_instances(
            stack, state, pg_url, tmp_path, ACEGW_LIMITS_LOCKOUT_IDENTITIES="1000000"
        )
        probe_a = DtlsProbe(a.target)
        stack.push_async_callback(probe_a.close)
        at_a = await ProofClient.enroll(await probe_a.connect(mover.encode(), mover_psk))
        await wait_written(a.served, 1)

        floods = [DtlsProbe(b.target, source=f"127.0.0.{10 + i}") for i in range(4)]
        for probe in floods:
            stack.push_async_callback(probe.close)
        refused = 0

        async def one(probe: DtlsProbe) -> None:
            nonlocal refused
            try:
                session = await probe.connect(
                    psk_identity_for_kid(os.urandom(8)), os.urandom(16), connection_id=True
                )
            except ProbeError:
                refused += 1
                return
            await session.close()
            raise AssertionError("a made-up kid completed a handshake")

        total, per_wave = 2000, 200
        probe_b = DtlsProbe(b.target)
        stack.push_async_callback(probe_b.close)
        took: dict[str, float] = {}

        async def honest_devices() -> None:
            """Run inside a wave of the flood (same gather)."""
            at = time.monotonic()
            fresh = await ProofClient.enroll(await probe_b.connect(honest.encode(), honest_psk))
            assert (await fresh.call()).code == aiocoap.CONTENT
            took["honest_enroll_and_request_s"] = round(time.monotonic() - at, 3)
            at = time.monotonic()
            moved = await probe_b.connect(
                psk_identity_for_kid(at_a.key.kid), at_a.key.secret, connection_id=True
            )
            response = await moved.request(aiocoap.Message(code=aiocoap.GET, uri_path=["whoami"]))
            assert response.code == aiocoap.CONTENT
            took["moved_kid_handshake_and_request_s"] = round(time.monotonic() - at, 3)

        started = time.monotonic()
        for wave in range(total // per_wave):
            extra = [honest_devices()] if wave == 3 else []
            await asyncio.gather(*(one(floods[i % len(floods)]) for i in range(per_wave)), *extra)
        samples_b = await b.served.scrape()
        elapsed = time.monotonic() - started  # after the count: every query was before
        queries = value(samples_b, "acegw_shared_token_queries_total")
        assert refused == total
        assert queries <= 10 + 20 * elapsed + 1, (queries, elapsed)  # burst + rate * t
        lookups = {
            outcome: value(samples_b, "acegw_shared_token_lookups_total", outcome=outcome)
            for outcome in ("found", "absent", "negative", "over_limit", "timeout", "error")
        }
        assert lookups["found"] == 1 and lookups["error"] == 0
        # each made-up kid was looked up once (a held handshake does not fetch twice)
        assert sum(lookups.values()) - lookups["found"] == total
        assert value(samples_b, "acegw_dtls_handshakes_total", outcome="unknown_identity") == total
        print(
            {
                "flood_handshakes": total,
                "queries": queries,
                "elapsed_s": round(elapsed, 1),
                "lookups": lookups,
                **took,
            }
        )
