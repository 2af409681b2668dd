"""Rate limits (gateway/resource_server/rate_limits.py), on explicit times."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.resource_server.rate_limits import (
    ACCELERATED,
    Limiter,
    RateLimiter,
    TokenBucket,
    TooManyRequests,
)

try:
    from gateway.resource_server import _bucket
except ImportError:  # test_the_c_buckets_are_built says so
    _bucket = None  # type: ignore[assignment]


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


def test_the_c_buckets_are_built():
    """`pip install` builds gateway.resource_server._bucket; without it every request's rate
    limit would run the Python reference."""
    assert ACCELERATED
    assert RateLimiter.__mro__[1] is _bucket.Limiter
    limiter = RateLimiter(rate=1.0, burst=3)
    limiter.take("dev", 0.0)
    assert type(limiter._buckets["dev"]) is _bucket.Bucket


_TIMES = st.floats(0.0, 50.0, allow_nan=False)
_RATES = st.one_of(st.none(), st.floats(0.01, 100.0, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(
    max_keys=st.integers(1, 4),
    burst=st.integers(1, 5),
    steps=st.lists(st.tuples(st.integers(0, 6), _TIMES, _RATES), max_size=100),
)
def test_c_limiter_answers_as_the_reference(max_keys, burst, steps):
    """RateLimiter's base and its buckets: the same keys at the same times
    (time also going back a little) give the same waits, the same buckets
    to the last bit and the same order, keys beyond ``max_keys`` evicted
    the same way."""
    ours, ref = _bucket.Limiter(), Limiter()
    for limiter in (ours, ref):
        limiter.rate, limiter.burst, limiter.max_keys = 2.0, burst, max_keys
    now = 0.0
    for key, step, rate in steps:
        now += step / 10 if step < 40.0 else -step / 100
        assert ours.wait(key, now, rate) == ref.wait(key, now, rate)
        assert list(ours._buckets) == list(ref._buckets)
        assert [(b.tokens, b.at, b.used, repr(b)) for b in ours._buckets.values()] == [
            (b.tokens, b.at, b.used, repr(b)) for b in ref._buckets.values()
        ]
        assert len(ours._buckets) <= max_keys


def test_limits_changed_on_a_running_limiter_apply_to_the_next_take():
    """A configuration reload sets rate and burst on the live limiters."""
    limiter = RateLimiter(rate=1.0, burst=1)
    limiter.take("dev", 0.0)
    with pytest.raises(TooManyRequests):
        limiter.take("dev", 0.5)
    limiter.rate, limiter.burst = 10.0, 5
    for _ in range(5):  # 0.5 + 0.5 s at 10/s, capped at the new burst: 5
        limiter.take("dev", 1.0)
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("dev", 1.0)
    assert refused.value.max_age == 1


def test_limiter_arguments_are_checked():
    for rate, burst, keys in ((0.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)):
        with pytest.raises(ValueError):
            RateLimiter(rate=rate, burst=burst, max_keys=keys)


def test_c_limiter_refuses_wrong_arguments():
    ours = _bucket.Limiter()
    with pytest.raises(TypeError):
        ours.wait("k")
    with pytest.raises(TypeError):
        ours.wait("k", "now")
    ours._buckets["k"] = TokenBucket(1.0, 0.0)
    with pytest.raises(TypeError):
        ours.wait("k", 1.0)


def test_keys_beyond_max_keys_evict_the_oldest_unused_first():
    """Takes reorder nothing; a new key beyond ``max_keys`` evicts the oldest
    key not taken from since last passed over (a second chance, CLOCK), and
    an evicted key comes back with a full bucket."""
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=3)
    for key in "abc":
        limiter.take(key, 0.0)
    for bucket in limiter._buckets.values():
        bucket.used = False  # as after a pass
    limiter.take("a", 0.0)
    limiter.take("d", 0.0)  # b is the oldest unused: gone
    assert list(limiter._buckets) == ["c", "a", "d"]
    limiter.take("c", 0.0)  # c is empty now
    with pytest.raises(TooManyRequests):
        limiter.take("c", 0.0)
    limiter.take("e", 0.0)  # c used since: passed over; a not since its pass: gone
    assert list(limiter._buckets) == ["d", "c", "e"]
    limiter.take("a", 0.0)  # back, full
    limiter.take("a", 0.0)
