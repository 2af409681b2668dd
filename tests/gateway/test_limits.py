"""Rate limits and lockout (gateway/limits.py), on explicit times."""

from __future__ import annotations

import pytest

from gateway.limits import Lockout, RateLimiter, TooManyRequests


def test_bucket_spends_refills_and_says_how_long_to_wait():
    """Token bucket: ``burst`` at once, then ``rate`` per second; the 4.29
    carries the seconds until the next token, rounded up (RFC 8516 §2)."""
    limiter = RateLimiter(rate=0.5, burst=2)
    limiter.take("dev", 0.0)
    limiter.take("dev", 0.0)
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("dev", 0.5)
    assert refused.value.max_age == 2  # 0.25 token left: 1.5 s to the next
    limiter.take("dev", 2.0)  # refilled
    limiter.take("other", 0.5)  # buckets are per key
    with pytest.raises(TooManyRequests):
        limiter.take("dev", 2.0, rate=100.0)  # no time passed: no refill at any rate


def test_lockout_bans_after_failures_in_the_window_and_lifts():
    lockout = Lockout(max_failures=3, window=10.0, ban_seconds=60.0)
    key = ("address", "192.0.2.1")
    assert not lockout.failure(key, 0.0)
    assert not lockout.failure(key, 11.0)  # the first one is out of the window
    assert not lockout.failure(key, 12.0)
    assert lockout.failure(key, 13.0)  # three within 10 s: banned
    assert lockout.banned_until(key, 13.0) == 73.0
    assert lockout.banned_until(("address", "192.0.2.2"), 13.0) is None
    assert lockout.active_bans(72.9) == 1
    assert lockout.banned_until(key, 73.0) is None  # lifted by itself
    assert lockout.active_bans(73.0) == 0
    assert lockout.bans_total == 1


def test_ban_end_is_the_last_ban_to_lift():
    """``ban_end``: before it some key may be banned, from it on none is,
    whether or not anything looked the lifted bans up."""
    lockout = Lockout(max_failures=1, window=10.0, ban_seconds=60.0)
    assert lockout.ban_end < 0.0
    lockout.failure(("identity", b"a"), 100.0)
    lockout.failure(("identity", b"b"), 130.0)
    lockout.failure(("identity", b"a"), 140.0)  # still banned: no new ban
    assert lockout.ban_end == 190.0
    assert lockout.banned_until(("identity", b"a"), 189.0) is None  # a lifted at 160
    assert lockout.banned_until(("identity", b"b"), 189.0) == 190.0
