"""The lockout model (gateway/resource_server/lockout.py) on explicit times, the port claim
(gateway/runtime/port_claim.py), the screening of half-open peers
(gateway/dtls/records.py) and the half-open share of one address
(gateway/dtls/session.py)."""

from __future__ import annotations

import os
import socket

import pytest

from gateway.dtls import records
from gateway.dtls.session import Session, SessionTable
from gateway.errors import PortInUse
from gateway.resource_server.lockout import BanScope, LockedOut, Lockout
from gateway.runtime.port_claim import PortClaim

DEVICE = b"acc-0001"
HOME, ATTACKER = "192.0.2.1", "198.51.100.7"


def test_failures_naming_a_device_from_elsewhere_ban_only_that_pair():
    lockout = Lockout(max_failures=3, window=10.0, ban_seconds=60.0)
    lockout.success(DEVICE, HOME, 0.0)
    assert lockout.failure(DEVICE, ATTACKER, 1.0) == []
    assert lockout.failure(DEVICE, ATTACKER, 2.0) == []
    [ban] = lockout.failure(DEVICE, ATTACKER, 3.0)
    assert (ban.scope, ban.address, ban.identity, ban.until) == (
        BanScope.PAIR,
        ATTACKER,
        DEVICE,
        63.0,
    )
    assert lockout.refuses(DEVICE, ATTACKER, 4.0) == ban
    assert lockout.refuses(DEVICE, HOME, 4.0) is None  # the device itself
    assert lockout.refuses(DEVICE, "203.0.113.9", 4.0) is None  # and from anywhere else
    assert lockout.refuses(b"acc-0002", ATTACKER, 4.0) is None  # one identity spread no ban
    assert lockout.refuses(DEVICE, ATTACKER, 63.0) is None  # lifted by itself
    assert lockout.bans_total == {BanScope.PAIR: 1, BanScope.ADDRESS: 0}


def test_failures_outside_the_window_do_not_add_up():
    lockout = Lockout(max_failures=3, window=10.0)
    assert lockout.failure(DEVICE, ATTACKER, 0.0) == []
    assert lockout.failure(DEVICE, ATTACKER, 11.0) == []
    assert lockout.failure(DEVICE, ATTACKER, 12.0) == []
    assert lockout.failure(DEVICE, ATTACKER, 13.0)  # three within 10 s


def test_credential_stuffing_bans_the_address_but_not_trusted_devices_behind_it():
    lockout = Lockout(max_failures=10, max_identities=3, window=10.0, ban_seconds=60.0)
    nat = "203.0.113.5"
    lockout.success(DEVICE, nat, 0.0)  # a device behind that NAT authenticated
    assert lockout.failure(b"x-1", nat, 1.0) == []
    assert lockout.failure(b"x-2", nat, 2.0) == []
    [ban] = lockout.failure(b"x-3", nat, 3.0)
    assert (ban.scope, ban.identity) == (BanScope.ADDRESS, None)
    assert lockout.refuses(b"x-4", nat, 4.0) == ban  # an unknown identity
    assert lockout.refuses(DEVICE, nat, 4.0) is None  # the trusted device
    assert lockout.refuses(b"x-4", HOME, 4.0) is None  # other addresses


def test_a_trusted_device_failing_does_not_count_towards_its_address():
    """A device with a stale key behind a NAT is no credential stuffing."""
    lockout = Lockout(max_failures=10, max_identities=2, window=10.0)
    for name in (b"a", b"b", b"c"):
        lockout.success(name, HOME, 0.0)
        assert lockout.failure(name, HOME, 1.0) == []
    assert lockout.refuses(b"new", HOME, 2.0) is None


def test_identities_spread_over_more_than_the_window_do_not_ban_the_address():
    lockout = Lockout(max_identities=3, window=10.0)
    lockout.failure(b"a", HOME, 0.0)
    lockout.failure(b"b", HOME, 5.0)
    assert lockout.failure(b"c", HOME, 11.0) == []  # "a" is out of the window
    assert lockout.failure(b"d", HOME, 12.0)


def test_trust_expires():
    lockout = Lockout(max_identities=1, trust_seconds=100.0)
    lockout.success(DEVICE, HOME, 0.0)
    lockout.failure(b"other", HOME, 150.0)  # bans HOME for untrusted identities
    assert lockout.refuses(DEVICE, HOME, 150.0) is not None


def test_requests_inside_a_session_are_refused_only_for_a_banned_pair():
    lockout = Lockout(max_failures=1, max_identities=1)
    lockout.failure(DEVICE, ATTACKER, 0.0)  # the pair and (one identity) the address
    with pytest.raises(LockedOut) as refused:
        lockout.check(DEVICE, ATTACKER, 1.0)
    assert refused.value.reason == "locked_out"
    lockout.check(b"acc-0002", ATTACKER, 1.0)  # a session proves its pair: no address ban
    lockout.check(DEVICE, HOME, 1.0)


def test_lift_by_identity_address_or_all():
    lockout = Lockout(max_failures=1, max_identities=2)
    lockout.failure(DEVICE, ATTACKER, 0.0)
    lockout.failure(b"acc-0002", ATTACKER, 0.0)  # second identity: address ban too
    lockout.failure(DEVICE, "203.0.113.9", 0.0)
    assert len(lockout.bans(1.0)) == 4
    lifted = lockout.lift(1.0, identity=DEVICE, address=ATTACKER)
    assert [(b.scope, b.address) for b in lifted] == [(BanScope.PAIR, ATTACKER)]
    assert {b.address for b in lockout.lift(1.0, identity=DEVICE)} == {"203.0.113.9"}
    assert {b.scope for b in lockout.lift(1.0, address=ATTACKER)} == {
        BanScope.PAIR,
        BanScope.ADDRESS,
    }
    assert lockout.bans(1.0) == [] and lockout.ban_end == float("-inf")
    # a lifted pair starts counting afresh
    assert lockout.failure(DEVICE, ATTACKER, 2.0)


def test_ban_end_is_the_last_ban_to_lift():
    lockout = Lockout(max_failures=1, ban_seconds=60.0)
    assert lockout.ban_end < 0.0
    lockout.failure(b"a", HOME, 100.0)
    lockout.failure(b"b", HOME, 130.0)
    assert lockout.failure(b"a", HOME, 140.0) == []  # still banned: no new ban
    assert lockout.ban_end == 190.0
    assert lockout.refuses(b"a", HOME, 189.0) is None
    assert lockout.refuses(b"b", HOME, 189.0) is not None


def test_memory_is_bounded_by_max_keys():
    lockout = Lockout(max_failures=2, max_identities=1000, max_keys=50)
    for i in range(500):
        lockout.failure(b"id-%d" % i, f"10.0.{i // 250}.{i % 250}", float(i))
        lockout.success(b"ok-%d" % i, HOME, float(i))
    assert len(lockout._failures) <= 50
    assert len(lockout._spread) <= 50
    assert len(lockout._trusted) <= 50


def test_thresholds_are_checked():
    with pytest.raises(ValueError):
        Lockout(max_failures=0)


# --- the half-open share of one address --------------------------------------------------


def _session(host: str, port: int, now: float = 0.0) -> Session:
    return Session((host, port), now)


def test_one_address_holds_at_most_its_share_of_the_half_open_table():
    table = SessionTable(
        max_sessions=100,
        max_handshakes=10,
        max_handshakes_per_address=3,
        idle_timeout=60.0,
        handshake_timeout=10.0,
        stall_after=60.0,
    )
    for port in range(3):
        assert table.admission(HOME, 0.0) is None
        table.add(_session(HOME, port))
    assert table.admission(HOME, 0.0) == "address_handshake_cap"
    assert table.admission(ATTACKER, 0.0) is None  # others are not affected
    established = table.get((HOME, 0))
    assert established is not None
    table.establish(established, b"dev", 1.0)
    assert table.half_open(HOME) == 2
    assert table.admission(HOME, 1.0) is None
    table.restart_handshake(established, 2.0)  # a rehandshake is half-open again
    assert table.half_open(HOME) == 3
    table.remove(established)
    assert table.half_open(HOME) == 2


def test_at_the_cap_only_a_stalled_handshake_makes_room():
    table = SessionTable(
        max_sessions=100,
        max_handshakes=2,
        idle_timeout=60.0,
        handshake_timeout=10.0,
        stall_after=2.5,
    )
    first, second = _session("192.0.2.1", 1, 0.0), _session("192.0.2.2", 1, 1.0)
    table.add(first)
    table.add(second)
    assert table.admission("192.0.2.3", 2.0) == "handshake_cap"
    first.progressed = True  # its ClientKeyExchange arrived: under way
    assert table.admission("192.0.2.3", 5.0) == "handshake_cap"
    table.remove(first)
    table.add(first)  # now second is the oldest, and it never progressed
    assert table.admission("192.0.2.3", 3.4) == "handshake_cap"  # not stalled long enough
    assert table.admission("192.0.2.3", 3.5) is None
    table.add(_session("192.0.2.3", 1, 3.5))
    assert table.handshake_victim(3.5) is second


# --- screening half-open peers -------------------------------------------------------------


def _hello(
    session_id: bytes = b"", cookie: bytes = b"", seq: int = 0, suites: bytes = b"\xc0\xa8"
) -> bytes:
    body = (
        b"\xfe\xfd"
        + os.urandom(32)
        + bytes([len(session_id)])
        + session_id
        + bytes([len(cookie)])
        + cookie
        + len(suites).to_bytes(2, "big")
        + suites
        + b"\x01\x00"
    )
    return _handshake(records.HandshakeType.CLIENT_HELLO, body, seq)


def _handshake(msg_type: int, body: bytes, seq: int) -> bytes:
    length = len(body).to_bytes(3, "big")
    message = bytes([msg_type]) + length + seq.to_bytes(2, "big") + b"\0\0\0" + length + body
    return b"\x16\xfe\xfd" + bytes(8) + len(message).to_bytes(2, "big") + message


@pytest.mark.parametrize("length", [0, 1, 32])
def test_a_client_hello_with_a_session_id_of_up_to_32_bytes_is_triaged(length):
    assert records.client_hello_cookie_length(_hello(b"s" * length, b"c" * 16)) == 16


@pytest.mark.parametrize("length", [33, 255])
def test_a_client_hello_with_a_longer_session_id_is_refused(length):
    """RFC 5246 §7.4.1.2: SessionID<0..32>; tinydtls 0.8.6 accepts more."""
    assert records.client_hello_cookie_length(_hello(b"s" * length)) is None


@pytest.mark.parametrize("suites", [b"", b"\xc0", b"\xc0\xa8\x00"])
def test_a_client_hello_without_whole_cipher_suites_is_refused(suites):
    assert records.client_hello_cookie_length(_hello(suites=suites)) is None


def test_a_truncated_client_hello_is_refused():
    hello = _hello(cookie=b"c" * 16)
    short = bytearray(hello[:-4])
    short[11:13] = (len(short) - 13).to_bytes(2, "big")
    assert records.client_hello_cookie_length(bytes(short)) is None


def test_half_open_screen_keeps_a_window_of_message_seq():
    key_exchange = records.HandshakeType.CLIENT_KEY_EXCHANGE
    assert records.screen_half_open(_handshake(key_exchange, b"k" * 20, 2), 2) == (None, 3)
    assert records.screen_half_open(_handshake(key_exchange, b"k" * 20, 5), 2) == (None, 2)
    assert records.screen_half_open(_handshake(key_exchange, b"k" * 20, 6), 2) == (
        "handshake_window",
        2,
    )
    assert records.screen_half_open(_hello(cookie=b"c" * 8, seq=1), 2) == (None, 2)  # repeated


def test_half_open_screen_refuses_what_a_psk_server_never_gets_in_plaintext():
    certificate = _handshake(11, b"x" * 40, 2)  # a Certificate (tinydtls report #244)
    assert records.screen_half_open(certificate, 2)[0] == "malformed"
    fragment = bytearray(_handshake(records.HandshakeType.CLIENT_KEY_EXCHANGE, b"k" * 20, 2))
    fragment[13 + 9 : 13 + 12] = (10).to_bytes(3, "big")  # fragment_length != length
    assert records.screen_half_open(bytes(fragment), 2)[0] == "malformed"
    long_sid = _hello(b"s" * 40, b"c" * 8, seq=1)
    assert records.screen_half_open(long_sid, 2)[0] == "malformed"
    assert records.screen_half_open(b"\x16\xfe\xfd" + bytes(5), 2)[0] == "malformed"


@pytest.mark.parametrize(
    "body,verdict", [(b"\x02\x28", None), (b"\x02", "malformed"), (b"\x02\x28\x00", "malformed")]
)
def test_plaintext_alerts_must_be_two_bytes(body, verdict):
    """RFC 5246 §7.2; tinydtls upstream 431079d, not in the bundled copy."""
    alert = b"\x15\xfe\xfd" + bytes(8) + len(body).to_bytes(2, "big") + body
    assert records.screen_half_open(alert, 2)[0] == verdict


def test_encrypted_records_pass_the_screen():
    finished = b"\x16\xfe\xfd\x00\x01" + bytes(6) + (40).to_bytes(2, "big") + os.urandom(40)
    assert records.screen_half_open(finished, 3) == (None, 3)


# --- one instance per port --------------------------------------------------------------


def test_a_claimed_port_cannot_be_claimed_again():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with PortClaim("127.0.0.1", port):
        with pytest.raises(PortInUse) as refused:
            PortClaim("127.0.0.1", port)
        assert f"pid {os.getpid()}" in refused.value.description
        assert refused.value.exit_status == 2
    PortClaim("127.0.0.1", port).release()  # released: claimable again


def test_a_port_bound_by_another_socket_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        with pytest.raises(PortInUse, match="already in use by another process"):
            PortClaim("127.0.0.1", s.getsockname()[1])


def test_port_zero_claims_nothing():
    with PortClaim("127.0.0.1", 0), PortClaim("127.0.0.1", 0):
        pass


def test_trusted_pairs_are_kept_across_a_restart(tmp_path):
    from gateway.resource_server import trust_file

    before = Lockout(max_identities=2, trust_seconds=100.0)
    before.success(b"dev-1", "10.0.0.1", 1000.0)
    before.success(b"old", "10.0.0.1", 850.0)  # past trust_seconds by 1000
    pairs = before.trusted_pairs(1000.0)
    assert pairs == [(b"dev-1", "10.0.0.1", 1000.0)]
    trust_file.save(trust_file.trust_path(tmp_path, 0), pairs)
    (tmp_path / f"{trust_file.PREFIX}1.json").write_text("{not json")  # ignored, not fatal

    after = Lockout(max_identities=2, trust_seconds=100.0)
    loaded = trust_file.load_all(tmp_path)
    assert loaded == pairs
    future = [(b"later", "10.0.0.1", 5000.0)]
    assert after.restore_trust(loaded + future, 1010.0) == 1  # the future entry is left out
    for name in (b"x", b"y"):  # credential stuffing from the address: banned
        after.failure(name, "10.0.0.1", 1011.0)
    assert after.refuses(b"z", "10.0.0.1", 1012.0) is not None
    assert after.refuses(b"dev-1", "10.0.0.1", 1012.0) is None  # trusted before the restart
    assert after.refuses(b"later", "10.0.0.1", 1012.0) is not None
