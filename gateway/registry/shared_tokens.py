"""Tokens accepted by /authz-info, shared by the instances of one PostgreSQL
registry (RFC 9200 §5.10.1: the RS keeps the token by its PoP key id).

A device whose traffic moves to another instance (a balancer's rehash, a
failed instance, NAT rebinding) handshakes there again with its client PSK
and sends its next proof; that instance does not hold the token the proof
names. :class:`SharedTokens` keeps both directions off the request path:

- writes: :meth:`publish` only queues ``(kid, token, exp)`` in memory; a
  task writes the queue in batches from a worker thread every
  :data:`FLUSH_INTERVAL` seconds (bounded queue: beyond it tokens are
  counted dropped, their devices re-upload after a move as before);
- reads: :meth:`find` is awaited by a request whose proof names an unknown
  kid (a handshake naming one by an RFC 9202 §3.3 kid identity, which
  cannot wait, starts it with :meth:`ask` and is held meanwhile). The
  query runs in a worker thread, batched (up to ``batch`` kids per query),
  at most ``query_rate`` queries a second (burst ``query_burst``), at most
  ``max_pending`` kids waiting; a kid found absent is not asked
  again for ``negative_ttl`` seconds. A flood of unknown kids therefore
  costs at most ``query_burst + query_rate * t`` queries, and the requests
  beyond the bounds get the usual 4.01 at once.

The database being unreachable makes :meth:`find` answer None (4.01, as
before sharing) and leaves queued writes for the next round.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.resource_server.rate_limits import TokenBucket

log = logging.getLogger(__name__)

#: Seconds between writes of the queued tokens.
FLUSH_INTERVAL = 0.25
#: Tokens written per statement batch.
WRITE_BATCH = 500


class HeldTokenStore(Protocol):
    """What :class:`SharedTokens` needs of a store
    (:class:`gateway.registry.postgres.PostgresStore`)."""

    def hold_tokens(self, rows: Sequence[tuple[bytes, bytes, float]], *, at: float) -> int: ...

    def held_tokens(self, kids: Sequence[bytes], *, now: float) -> dict[bytes, bytes]: ...


def shares_tokens(store: object) -> bool:
    """Whether ``store`` keeps held tokens for other instances."""
    return callable(getattr(store, "hold_tokens", None)) and callable(
        getattr(store, "held_tokens", None)
    )


class SharedTokens:
    """Queued writes and bounded, batched, negatively cached lookups of held
    tokens (see the module docstring). ``monotonic``: the clock of the
    bounds; ``clock``: wall time for token expiry."""

    def __init__(
        self,
        store: HeldTokenStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        batch: int = 64,
        max_pending: int = 256,
        query_rate: float = 20.0,
        query_burst: float = 10.0,
        negative_ttl: float = 5.0,
        max_negative: int = 65_536,
        max_queued: int = 100_000,
        wait: float = 1.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.batch = batch
        self.max_pending = max_pending
        self.query_rate = query_rate
        self.query_burst = query_burst
        self.negative_ttl = negative_ttl
        self.max_negative = max_negative
        self.max_queued = max_queued
        self.wait = wait
        #: kid -> (token, exp), written at the next flush (a newer token replaces)
        self._queued: dict[bytes, tuple[bytes, float]] = {}
        #: kid -> the future its waiting requests share
        self._pending: dict[bytes, asyncio.Future[bytes | None]] = {}
        #: kids not asked yet, in order
        self._unasked: OrderedDict[bytes, None] = OrderedDict()
        #: kid -> monotonic time until which it is known absent
        self._absent: OrderedDict[bytes, float] = OrderedDict()
        #: the query budget: ``query_rate`` a second, at most ``query_burst``
        self._queries = TokenBucket(query_burst, monotonic())
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="acegw-held-tokens"
        )
        #: counters: lookups by outcome, queries, rows written, writes dropped
        self.lookups: dict[str, int] = dict.fromkeys(
            ("found", "absent", "negative", "over_limit", "timeout", "error"), 0
        )
        self.queries = 0
        self.written = 0
        self.dropped = 0
        self.write_errors = 0

    # --- life cycle -------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._lookups(), name="held-token-lookups"),
            asyncio.create_task(self._writes(), name="held-token-writes"),
        ]

    async def stop(self) -> None:
        """Write what is queued (best effort), stop the tasks."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(GatewayError):
            await self.flush()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result(None)
        self._pending.clear()
        self._executor.shutdown(wait=False)

    # --- writes -----------------------------------------------------------------

    def publish(self, kid: bytes, token: bytes, exp: float) -> None:
        """Queue a token this instance accepted (memory only)."""
        if kid not in self._queued and len(self._queued) >= self.max_queued:
            self.dropped += 1
            return
        self._queued[kid] = (token, exp)
        self._absent.pop(kid, None)

    async def flush(self) -> int:
        """Write the queued tokens (in the worker thread); how many. On a
        database error they stay queued for the next round."""
        if not self._queued:
            return 0
        rows = [(kid, token, exp) for kid, (token, exp) in self._queued.items()]
        self._queued = {}
        loop = asyncio.get_running_loop()
        written = 0
        try:
            for i in range(0, len(rows), WRITE_BATCH):
                part = rows[i : i + WRITE_BATCH]
                written += await loop.run_in_executor(
                    self._executor, lambda p=part: self.store.hold_tokens(p, at=self.clock())
                )
        except GatewayError:
            self.write_errors += 1
            now = self.clock()
            for kid, token, exp in rows[written:]:
                if exp > now:
                    self._queued.setdefault(kid, (token, exp))
            raise
        finally:
            self.written += written
        return written

    async def _writes(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except GatewayError as exc:
                log.debug("held tokens not written yet: %s", exc.reason)

    # --- lookups ----------------------------------------------------------------

    async def find(self, kid: bytes) -> bytes | None:
        """The token another instance holds for ``kid``, or None (absent,
        known absent, over the bounds, timed out, database unreachable)."""
        asked = self.ask(kid)
        return None if asked is None else await self.answer(asked)

    def ask(self, kid: bytes) -> asyncio.Future[bytes | None] | None:
        """Start (or join) the lookup of ``kid`` without waiting (on the
        event loop): the future :meth:`answer` waits for, or None when it is
        not asked (known absent: counted ``negative``; ``max_pending`` kids
        waiting: counted ``over_limit``). For a caller that cannot wait, such
        as a handshake naming the kid (RFC 9202 §3.3)."""
        now = self.monotonic()
        until = self._absent.get(kid)
        if until is not None:
            if until > now:
                self.lookups["negative"] += 1
                return None
            del self._absent[kid]
        fut = self._pending.get(kid)
        if fut is None:
            if len(self._pending) >= self.max_pending:
                self.lookups["over_limit"] += 1
                return None
            fut = self._pending[kid] = asyncio.get_running_loop().create_future()
            self._unasked[kid] = None
            self._wake.set()
        return fut

    async def answer(self, asked: asyncio.Future[bytes | None]) -> bytes | None:
        """What a lookup from :meth:`ask` found, waiting at most ``wait``
        seconds (None: absent, timed out, database unreachable); counts the
        outcome."""
        try:
            token = await asyncio.wait_for(asyncio.shield(asked), self.wait)
        except TimeoutError:
            self.lookups["timeout"] += 1
            return None
        except GatewayError:
            self.lookups["error"] += 1
            return None
        self.lookups["found" if token is not None else "absent"] += 1
        return token

    def refused(self, kid: bytes) -> None:
        """The token found for ``kid`` was refused here (revoked, client
        disabled, cut off, expired): treat the kid as absent for
        ``negative_ttl`` rather than query it again."""
        self._mark_absent([kid])

    def _mark_absent(self, kids: Sequence[bytes]) -> None:
        """Cache ``kids`` as absent for ``negative_ttl`` (newest last), then
        trim the oldest beyond ``max_negative``."""
        until = self.monotonic() + self.negative_ttl
        for kid in kids:
            self._absent[kid] = until
            self._absent.move_to_end(kid)
        while len(self._absent) > self.max_negative:
            self._absent.popitem(last=False)

    def _take_query(self) -> float:
        """0 when a query may run now (and counts it), else seconds to wait."""
        return self._queries.take(self.monotonic(), self.query_rate, self.query_burst)

    async def _lookups(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._unasked:
                delay = self._take_query()
                if delay:
                    await asyncio.sleep(delay)
                    continue
                kids = []
                while self._unasked and len(kids) < self.batch:
                    kids.append(self._unasked.popitem(last=False)[0])
                self.queries += 1
                try:
                    found = await loop.run_in_executor(
                        self._executor,
                        lambda k=kids: self.store.held_tokens(k, now=self.clock()),
                    )
                except GatewayError as exc:
                    log.debug("held token lookup failed: %s", exc.reason)
                    self._settle(kids, None, exc)
                    continue
                self._settle(kids, found, None)

    def _settle(
        self, kids: list[bytes], found: dict[bytes, bytes] | None, error: Exception | None
    ) -> None:
        if found is not None:
            self._mark_absent([kid for kid in kids if kid not in found])
        for kid in kids:
            fut = self._pending.pop(kid, None)
            if fut is None or fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
                fut.exception()  # retrieved: no "never retrieved" warning without waiters
            else:
                fut.set_result(None if found is None else found.get(kid))

    # --- metrics ----------------------------------------------------------------

    def families(self, const: dict[str, str]) -> list[Any]:
        from gateway.operations import metrics as m

        return [
            m.family(
                "acegw_shared_token_lookups_total",
                "counter",
                "Proofs and handshakes naming a kid not held here, looked up in the shared store, "
                "by outcome.",
                [({**const, "outcome": k}, float(v)) for k, v in self.lookups.items()],
            ),
            m.family(
                "acegw_shared_token_queries_total",
                "counter",
                "Queries of the shared token store (each covers up to a batch of kids).",
                [(const, float(self.queries))],
            ),
            m.family(
                "acegw_shared_tokens_written_total",
                "counter",
                "Accepted tokens written to the shared token store.",
                [(const, float(self.written))],
            ),
            m.family(
                "acegw_shared_tokens_dropped_total",
                "counter",
                "Accepted tokens not shared because the write queue was full.",
                [(const, float(self.dropped))],
            ),
        ]


__all__ = ["FLUSH_INTERVAL", "HeldTokenStore", "SharedTokens", "shares_tokens"]
