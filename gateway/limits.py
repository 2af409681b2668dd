"""Rate limits and lockout, sans-I/O (``now`` passed in).

* :class:`RateLimiter`: a token bucket per key (device, peer address),
  answered with 4.29 Too Many Requests and Max-Age = seconds until the next
  token (RFC 8516 §2). Memory is bounded: when a key beyond ``max_keys``
  comes, the oldest key not used since it was last passed over goes (a
  second chance, "CLOCK": least-recently-used eviction without reordering
  anything per request).
* :class:`Lockout`: repeated failures (bad handshakes, bad proofs) by one key
  within a window lead to a temporary ban that lifts by itself.

:class:`TokenBucket` and :class:`Limiter` (the buckets by key, the base of
:class:`RateLimiter`) have C twins in ``gateway._bucket``, built by ``pip
install`` (:data:`ACCELERATED` says which run) and held by the tests to the
same answers: the device limit is taken on every authorized request.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import TYPE_CHECKING

from tokens.params import CoapCode

from .errors import GatewayError, RateLimited


class TooManyRequests(RateLimited):
    """4.29 with the Max-Age the peer should wait (RFC 8516 §2)."""

    reason = "rate_limited"

    def __init__(self, retry_after: float, description: str = "rate limit exceeded") -> None:
        super().__init__(description)
        self.max_age = max(1, math.ceil(retry_after))


class LockedOut(GatewayError):
    """The identity or address is temporarily banned after repeated failures."""

    coap_code = CoapCode.UNAUTHORIZED
    reason = "locked_out"


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
    ``gateway._bucket.Limiter`` is its C twin."""

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
        from ._bucket import Limiter as _Limiter
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


class Lockout:
    """Bans a key for ``ban_seconds`` after ``max_failures`` failures within
    ``window`` seconds. Bans lift automatically."""

    __slots__ = (
        "_bans",
        "_failures",
        "ban_end",
        "ban_seconds",
        "bans_total",
        "max_failures",
        "max_keys",
        "window",
    )

    def __init__(
        self,
        *,
        max_failures: int = 10,
        window: float = 60.0,
        ban_seconds: float = 300.0,
        max_keys: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.ban_seconds = ban_seconds
        self.max_keys = max_keys
        self._failures: OrderedDict[Hashable, deque[float]] = OrderedDict()
        #: key -> end of its ban (some may have lifted)
        self._bans: dict[Hashable, float] = {}
        #: the end of the last ban to lift: from then on no key is banned and
        #: none needs :meth:`check` (one comparison on every request's path)
        self.ban_end = float("-inf")
        self.bans_total = 0

    def banned_until(self, key: Hashable, now: float) -> float | None:
        """The end of ``key``'s ban, or None if it is not banned now."""
        until = self._bans.get(key)
        if until is None:
            return None
        if until <= now:
            del self._bans[key]
            return None
        return until

    def check(self, key: Hashable, now: float) -> None:
        if self.banned_until(key, now) is not None:
            raise LockedOut("temporarily locked out after repeated failures")

    def failure(self, key: Hashable, now: float) -> bool:
        """Record a failure; True if it started a ban."""
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self.max_keys:
                self._failures.popitem(last=False)
            times = self._failures[key] = deque()
        else:
            self._failures.move_to_end(key)
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures and self.banned_until(key, now) is None:
            until = self._bans[key] = now + self.ban_seconds
            self.ban_end = max(self.ban_end, until)
            times.clear()
            self.bans_total += 1
            return True
        return False

    def active_bans(self, now: float) -> int:
        for key in [k for k, until in self._bans.items() if until <= now]:
            del self._bans[key]
        return len(self._bans)
