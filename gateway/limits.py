"""Rate limits and lockout, sans-I/O (``now`` passed in).

* :class:`RateLimiter`: a token bucket per key (device, peer address),
  answered with 4.29 Too Many Requests and Max-Age = seconds until the next
  token (RFC 8516 §2). Memory is bounded: least recently used keys go first.
* :class:`Lockout`: repeated failures (bad handshakes, bad proofs) by one key
  within a window lead to a temporary ban that lifts by itself.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Hashable

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


class RateLimiter:
    """Token buckets by key: ``rate`` tokens per second, at most ``burst``."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable, now: float, *, rate: float | None = None) -> None:
        """Spend one token for ``key`` or raise :class:`TooManyRequests`."""
        if rate is None:
            rate = self.rate
        buckets = self._buckets
        entry = buckets.get(key)
        if entry is None:
            tokens = float(self.burst)
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
        else:
            tokens, at = entry
            if now > at:
                tokens += (now - at) * rate
                if tokens > self.burst:
                    tokens = float(self.burst)
            buckets.move_to_end(key)
        if tokens < 1.0:
            buckets[key] = (tokens, now)
            raise TooManyRequests((1.0 - tokens) / rate)
        buckets[key] = (tokens - 1.0, now)


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
