"""The DTLS session table (gateway.dtls.session) with an explicit clock: limits,
eviction order, deadlines, identity index. No sockets, no sleeping."""

from __future__ import annotations

import pytest

from gateway.dtls.session import Expiry, Session, SessionState, SessionTable


def _table(**overrides: float) -> SessionTable:
    settings: dict[str, float] = {
        "max_sessions": 3,
        "max_handshakes": 2,
        "idle_timeout": 100.0,
        "handshake_timeout": 10.0,
    }
    settings.update(overrides)
    return SessionTable(
        max_sessions=int(settings["max_sessions"]),
        max_handshakes=int(settings["max_handshakes"]),
        idle_timeout=settings["idle_timeout"],
        handshake_timeout=settings["handshake_timeout"],
    )


def _established(table: SessionTable, peer: str, identity: bytes, now: float) -> Session:
    session = Session(peer, now)
    table.add(session)
    table.establish(session, identity, now)
    return session


def test_handshake_cap_counts_only_half_open_sessions() -> None:
    table = _table()
    a, b = Session("a", 0.0), Session("b", 0.0)
    table.add(a)
    assert table.may_start_handshake()
    table.add(b)
    assert not table.may_start_handshake()
    table.establish(a, b"dev-1", 1.0)
    assert table.may_start_handshake()
    assert (table.handshaking_count, table.established_count, len(table)) == (1, 1, 2)


def test_adding_a_known_peer_is_refused() -> None:
    table = _table()
    table.add(Session("a", 0.0))
    with pytest.raises(ValueError):
        table.add(Session("a", 1.0))


def test_eviction_victim_is_the_longest_idle_established_session() -> None:
    table = _table()
    one = _established(table, "one", b"dev-1", 0.0)
    two = _established(table, "two", b"dev-2", 1.0)
    three = _established(table, "three", b"dev-3", 2.0)
    table.touch(one, 5.0)  # one is now the most recently active
    assert table.eviction_victim() is None  # not over the limit yet
    table.add(Session("four", 6.0))  # half-open: never a victim
    assert table.eviction_victim() is two
    table.remove(two)
    assert table.eviction_victim() is None
    table.touch(three, 7.0)
    table.add(Session("five", 8.0))
    assert table.eviction_victim() is one


def test_handshakes_and_idle_sessions_expire_at_their_deadlines() -> None:
    table = _table()
    old = _established(table, "old", b"dev-1", 0.0)
    fresh = _established(table, "fresh", b"dev-2", 50.0)
    half = Session("half", 60.0)
    table.add(half)
    assert table.next_deadline() == 70.0  # half-open first
    assert table.expired(69.9) == []
    assert table.expired(70.0) == [(half, Expiry.HANDSHAKE)]
    table.remove(half)
    assert table.next_deadline() == 100.0
    assert table.expired(100.0) == [(old, Expiry.IDLE)]
    table.touch(old, 100.0)
    assert table.next_deadline() == 150.0
    assert table.expired(150.0) == [(fresh, Expiry.IDLE)]
    table.remove(fresh)
    table.remove(old)
    assert table.next_deadline() is None


def test_touch_only_reorders_established_sessions() -> None:
    table = _table(idle_timeout=10.0)
    half = Session("half", 0.0)
    table.add(half)
    table.touch(half, 9.0)
    # A handshake's deadline runs from its start, whatever arrives.
    assert table.expired(10.0) == [(half, Expiry.HANDSHAKE)]


def test_identity_index_follows_establish_restart_and_remove() -> None:
    table = _table(max_sessions=10)
    a = _established(table, "a", b"dev-1", 0.0)
    b = _established(table, "b", b"dev-1", 0.0)
    c = _established(table, "c", b"dev-2", 0.0)
    pending = Session("p", 0.0)
    table.add(pending)
    pending.pending_identity = b"dev-1"
    assert set(map(id, table.with_identity(b"dev-1"))) == {id(a), id(b), id(pending)}
    table.restart_handshake(b, 5.0)
    assert b.state is SessionState.HANDSHAKING and b.identity is None
    assert set(map(id, table.with_identity(b"dev-1"))) == {id(a), id(pending)}
    table.establish(b, b"dev-3", 6.0)
    assert table.with_identity(b"dev-3") == [b]
    table.remove(a)
    table.remove(a)  # idempotent
    table.remove(pending)
    assert table.with_identity(b"dev-1") == []
    assert table.with_identity(b"dev-2") == [c]
    assert table.get("a") is None and table.get("c") is c


def test_restarted_handshake_gets_a_fresh_deadline_and_leaves_idle_order() -> None:
    table = _table()
    a = _established(table, "a", b"dev-1", 0.0)
    table.restart_handshake(a, 90.0)
    assert table.handshaking_count == 1 and table.established_count == 0
    assert table.next_deadline() == 100.0
    assert table.expired(100.0) == [(a, Expiry.HANDSHAKE)]


def test_remove_of_a_stale_object_for_the_same_peer_keeps_the_current_one() -> None:
    table = _table()
    current = _established(table, "a", b"dev-1", 0.0)
    table.remove(Session("a", 0.0))
    assert table.get("a") is current
