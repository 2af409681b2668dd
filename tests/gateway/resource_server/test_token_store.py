"""The tokens the RS holds: by PoP kid, superseded per key, capped per
client, expired by time (RFC 9200 §5.10.1)."""

from __future__ import annotations

import pytest

from gateway.resource_server.token_store import AccessToken, TokenStore
from tokens.aif import Scope
from tokens.cwt import Claims
from tokens.errors import Expired, UnknownKey
from tokens.keys import SymmetricKey

NOW = 1_800_000_000.0


def token(
    kid: bytes, client_id: str = "sensor-1", exp: float = NOW + 60, cti: bytes = b""
) -> AccessToken:
    return AccessToken(
        kid=kid,
        pop_key=SymmetricKey(kid, bytes(32)),
        client_id=client_id,
        scope=Scope.parse("/temp:GET"),
        exp=exp,
        cti=cti or b"cti-" + kid,
        issuer="as",
        claims=Claims(sub=client_id),
    )


def test_held_by_kid_until_expiry():
    store = TokenStore()
    held = token(b"k1")
    assert store.add(held) == []
    assert b"k1" in store and len(store) == 1
    assert store.get(b"k1", NOW) is held and store.peek(b"k1") is held
    assert store.next_expiry() == held.exp
    with pytest.raises(UnknownKey):
        store.get(b"nope", NOW)
    assert store.expire(NOW) == []
    assert store.expire(held.exp + 1) == [held]
    assert len(store) == 0 and store.next_expiry() is None
    store.add(held)
    with pytest.raises(Expired):
        store.get(b"k1", held.exp)


def test_a_new_token_for_the_same_key_supersedes_the_old():
    store = TokenStore()
    old, new = token(b"k1", cti=b"old"), token(b"k1", cti=b"new", exp=NOW + 120)
    store.add(old)
    assert store.add(new) == [old]
    assert store.peek(b"k1") is new and len(store) == 1
    assert store.expire(NOW + 61) == []  # the old token's expiry no longer applies


def test_per_client_cap_drops_the_oldest_first():
    store = TokenStore(max_per_client=2)
    first, second, third = (token(k) for k in (b"k1", b"k2", b"k3"))
    store.add(first)
    store.add(second)
    assert store.add(third) == [first]
    assert [t.kid for t in store.for_client("sensor-1")] == [b"k2", b"k3"]
    store.add(token(b"other", client_id="sensor-2"))  # another client's quota
    assert len(store) == 3


def test_remove_by_client_and_by_cti():
    store = TokenStore()
    a, b = token(b"k1"), token(b"k2", client_id="sensor-2")
    store.add(a)
    store.add(b)
    assert store.remove_cti(a.cti) == [a]
    assert store.remove_client("sensor-2") == [b]
    assert store.all() == [] and store.remove_client("sensor-2") == []


def test_the_total_is_bounded():
    store = TokenStore(max_per_client=10, max_tokens=3)
    for i in range(5):
        store.add(token(b"k%d" % i, client_id=f"c{i}"))
    assert len(store) <= 3
