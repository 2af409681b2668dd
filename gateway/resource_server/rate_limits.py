"""Rate limits, sans-I/O (``now`` passed in).

* :class:`RateLimiter`: a token bucket per key (device, identity),
  answered with 4.29 Too Many Requests and Max-Age = seconds until the next
  token (RFC 8516 §2). Memory is bounded: when a key beyond ``max_keys``
  comes, the oldest key not used since it was last passed over goes (a
  second chance, "CLOCK": least-recently-used eviction without reordering
  anything per request).

Lockout after repeated failures is :mod:`gateway.resource_server.lockout`.

:class:`TokenBucket` and :class:`Limiter` (the buckets by key, the base of
:class:`RateLimiter`) have C twins in ``gateway.resource_server._bucket``, built by ``pip
install`` (:data:`ACCELERATED` says which run) and held by the tests to the
same answers: the device limit is taken on every authorized request.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING

from gateway.errors import RateLimited


class TooManyRequests(RateLimited):
    """4.29 with the Max-Age the peer should wait (RFC 8516 §2)."""

    reason = "rate_limited"

    def __init__(self, retry_after: float, description: str = "rate limit exceeded") -> None:
        super().__init__(description)
        self.max_age = max(1, math.ceil(retry_after))


class TokenBucket:
    """One key's bucket: ``tokens`` left as of time ``at``."""

    __slots__ = ("at", "tokens", "used")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at
        #: taken from since the limiter last passed over it
        self.used = False

    def __repr__(self) -> str:
        return f"<TokenBucket tokens={self.tokens!r} at={self.at!r}>"

    def take(self, now: float, rate: float, burst: float) -> float:
        """Refill ``rate`` per second since the last take (at most ``burst``
        tokens), then spend one: 0.0; or, with less than one token, spend
        nothing and return the seconds until there is one."""
        self.used = True
        tokens = self.tokens
        if now > self.at:
            tokens += (now - self.at) * rate
            if tokens > burst:
                tokens = burst
        self.at = now
        if tokens < 1.0:
            self.tokens = tokens
            return (1.0 - tokens) / rate
        self.tokens = tokens - 1.0
        return 0.0


class Limiter:
    """Token buckets by key, oldest first, and the one step a
    request needs (:meth:`wait`): the base of :class:`RateLimiter`.
    ``gateway.resource_server._bucket.Limiter`` is its C twin."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self) -> None:
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self.rate = 1.0
        self.burst = 1.0
        self.max_keys = 1

    def wait(self, key: Hashable, now: float, rate: float | None = None) -> float:
        """Take one token from ``key``'s bucket at ``rate`` tokens per second
        (the limiter's when None): 0.0; or, with less than one token, the
        seconds until there is one, spending nothing. A key not held gets a
        full bucket; when ``max_keys`` are held, the oldest not taken from
        since last passed over goes first (see the module docstring)."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            while len(buckets) >= self.max_keys and buckets:
                old_key, old = buckets.popitem(last=False)
                if old.used:  # taken from since last passed over: a second chance
                    old.used = False
                    buckets[old_key] = old
            bucket = buckets[key] = TokenBucket(float(self.burst), now)
        return bucket.take(now, self.rate if rate is None else rate, self.burst)


if TYPE_CHECKING:
    _Limiter = Limiter
else:
    try:
        from gateway.resource_server._bucket import Limiter as _Limiter
    except ImportError:  # built by `pip install` (setup.py); Python stands in
        _Limiter = Limiter

#: Whether :class:`RateLimiter` is built on the C twin of :class:`Limiter`.
ACCELERATED = _Limiter is not Limiter


class RateLimiter(_Limiter):
    """Token buckets by key: ``rate`` tokens per second, at most ``burst``;
    at most ``max_keys`` keys."""

    __slots__ = ()

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        super().__init__()
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys

    def take(self, key: Hashable, now: float, *, rate: float | None = None) -> None:
        """Spend one token for ``key`` or raise :class:`TooManyRequests`
        (RFC 8516 §2): :meth:`wait` with the answer raised."""
        wait = self.wait(key, now, rate)
        if wait:
            raise TooManyRequests(wait)
