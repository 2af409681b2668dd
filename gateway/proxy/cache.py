"""The optional response cache of a route (GET only): a bounded LRU of 2.05
responses that honours the upstream's freshness (Max-Age, RFC 7252 §5.6.1)
and revalidates stale entries with their ETag (RFC 7252 §5.6.2, RFC 9111
§4.3).

Keys: the route's rest of the path, the query, the Accept option and who is
asking — the client's scope always (two clients whose scopes differ never
share an entry), and the client id as well when the route's upstream request
names the device (a per-device JWT, or a header template with
``{client_id}``/``{sub}``/``{cti}``/``{kid}``), since the upstream may then
answer per device. An unsafe request (POST, PUT, DELETE, PATCH, iPATCH) that
succeeds drops every entry of its path (RFC 9111 §4.4).

Size is bounded in bytes: each entry costs its payload plus
:data:`ENTRY_OVERHEAD`, so the entry count is bounded too. The clock is
monotonic and injected.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Segments = tuple[str, ...]
#: (path, query, accept, identity)
CacheKey = tuple[Segments, Segments, int | None, tuple[str, ...]]

#: Bookkeeping bytes charged per entry besides its payload.
ENTRY_OVERHEAD = 256


@dataclass
class CacheEntry:
    """One stored 2.05 response."""

    payload: bytes
    content_format: int | None
    #: CoAP ETag sent to devices, and the upstream's entity-tag it stands for.
    etag: bytes | None
    entity_tag: str | None
    stored_at: float
    max_age: int

    def remaining(self, now: float) -> int:
        """Whole seconds of freshness left (0 when stale)."""
        return max(0, math.floor(self.stored_at + self.max_age - now))

    def fresh(self, now: float) -> bool:
        return now < self.stored_at + self.max_age


def _cost(key: CacheKey, entry: CacheEntry) -> int:
    path, query, _accept, who = key
    return (
        len(entry.payload)
        + ENTRY_OVERHEAD
        + sum(len(s) for s in path)
        + sum(len(s) for s in query)
        + sum(len(s) for s in who)
    )


class ResponseCache:
    """A bounded LRU of :class:`CacheEntry` by :data:`CacheKey`."""

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self._by_path: dict[Segments, set[CacheKey]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> CacheEntry | None:
        """The entry for ``key``, fresh or stale-but-revalidatable; stale
        entries without an ETag are dropped."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if not entry.fresh(self.clock()) and entry.entity_tag is None:
            self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: CacheKey, entry: CacheEntry) -> bool:
        """Store ``entry`` (replacing any for ``key``), evicting the least
        recently used; an entry larger than the whole cache is not stored."""
        if key in self._entries:
            self._drop(key)
        cost = _cost(key, entry)
        if cost > self.max_bytes:
            return False
        while self.bytes + cost > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))
        self._entries[key] = entry
        self._by_path.setdefault(key[0], set()).add(key)
        self.bytes += cost
        return True

    def invalidate_path(self, path: Segments) -> int:
        """Drop every entry for ``path`` (any query, scope, client)."""
        keys = list(self._by_path.get(path, ()))
        for key in keys:
            self._drop(key)
        return len(keys)

    def _drop(self, key: CacheKey) -> None:
        entry = self._entries.pop(key)
        self.bytes -= _cost(key, entry)
        same_path = self._by_path.get(key[0])
        if same_path is not None:
            same_path.discard(key)
            if not same_path:
                del self._by_path[key[0]]
