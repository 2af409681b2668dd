"""The engine alone, with an injected clock: cookie exchange, flights and
their retransmission (RFC 6347 §4.2.4), final-flight hold, reordered and
duplicated flights, epochs, Connection ID (RFC 9146), replay window, alerts."""

from __future__ import annotations

import os

import pytest

from dtls12 import (
    AddressChanged,
    ApplicationData,
    CloseReason,
    EngineConfig,
    HandshakeFailed,
    HandshakeFailure,
    SessionClosed,
    wire,
)
from dtls12.client import DtlsClient
from dtls12.crypto import TLS_PSK_WITH_AES_128_CCM, TLS_PSK_WITH_AES_128_CCM_8
from dtls12.errors import AlertDescription

from .conftest import ADDRESS, PSK, PSKS, Pair


def split(datagram: bytes) -> list[bytes]:
    """The records of a datagram, each as its own datagram."""
    records, truncated = wire.parse_records(datagram, 0)
    assert not truncated
    return [r.header + r.fragment for r in records]


def flight_five(pair: Pair) -> list[bytes]:
    """Run the handshake up to the client's ClientKeyExchange..Finished
    flight and return it (not yet delivered)."""
    pair.to_server(pair.client.connect(pair.now))
    pair.to_server(pair.deliver())  # ClientHello with cookie
    out = pair.deliver()  # ServerHello, ServerHelloDone -> CKE, CCS, Finished
    assert len(out) == 1
    return out


def test_first_client_hello_gets_a_smaller_stateless_hello_verify_request(make_pair) -> None:
    pair = make_pair()
    hello = pair.client.connect(0.0)[0]
    pair.to_server([hello])
    assert pair.engine.session_count == 0 and pair.engine.next_deadline() is None
    [reply] = pair.to_client
    assert (
        wire.parse_handshake_fragments(wire.parse_records(reply, 0)[0][0].fragment)[0].msg_type
        == wire.HandshakeType.HELLO_VERIFY_REQUEST
    )
    assert len(reply) < len(hello)
    # The reply echoes the ClientHello's record sequence number (RFC 6347 §4.2.1).
    assert reply[5:11] == hello[5:11]


@pytest.mark.parametrize("suite", [TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_CCM])
@pytest.mark.parametrize("cid", [None, b"", b"\x01\x02\x03\x04"])
def test_handshake_and_application_data_each_suite_with_and_without_cid(
    make_pair, suite, cid
) -> None:
    pair = make_pair(cipher_suites=(suite.code,), cid=cid)
    pair.handshake()
    [established] = pair.established()
    session = established.session
    assert session.identity == pair.client._identity and session.cipher_suite is suite
    assert (len(pair.client.server_cid) == 6) == (cid is not None)
    pair.to_server([pair.client.send(b"ping")])
    assert [e.data for e in pair.of_type(ApplicationData)] == [b"ping"]
    assert pair.engine.send(session, b"pong")
    pair.collect()
    if cid:
        assert all(d[0] == wire.ContentType.TLS12_CID for d in pair.to_client)
    pair.deliver()
    assert pair.client.received == [b"pong"]


def test_cid_turned_off_ignores_the_client_offer(make_pair) -> None:
    pair = make_pair(EngineConfig(cid_length=0), cid=b"abcd")
    pair.handshake()
    assert pair.client.server_cid == b"" and pair.established()[0].session.cid == b""


def test_server_flight_is_retransmitted_on_a_doubling_timer_then_the_handshake_times_out(
    make_pair,
) -> None:
    config = EngineConfig(initial_retransmit=1.0, max_retransmit=4.0, handshake_timeout=20.0)
    pair = make_pair(config)
    pair.to_server(pair.client.connect(0.0))
    pair.to_server(pair.deliver())
    pair.to_client.clear()  # ServerHello flight lost
    sent_at = []
    for _ in range(7):
        deadline = pair.engine.next_deadline()
        assert deadline is not None
        pair.tick(deadline - 0.001)
        assert not pair.to_client  # nothing before the deadline
        pair.tick(deadline)
        if pair.to_client:
            sent_at.append(deadline)
        pair.to_client.clear()
    # 1 s, doubled to the 4 s ceiling (RFC 6347 §4.2.4.1), until 20 s passed.
    assert sent_at == [1.0, 3.0, 7.0, 11.0, 15.0, 19.0]
    [failed] = pair.of_type(HandshakeFailed)
    assert failed.reason is HandshakeFailure.TIMEOUT and pair.now == 20.0
    assert pair.engine.session_count == 0 and pair.engine.handshaking_count == 0


def test_a_retransmitted_client_hello_gets_the_server_flight_again(make_pair) -> None:
    pair = make_pair()
    pair.to_server(pair.client.connect(0.0))
    second_hello = pair.deliver()
    pair.to_server(second_hello)
    first = pair.to_client[:]
    pair.to_client.clear()
    pair.to_server(second_hello)  # duplicate
    assert len(pair.to_client) == 1 and len(pair.to_client[0]) == len(first[0])
    assert pair.engine.session_count == 1
    pair.to_client = first
    pair.to_server(pair.deliver())
    pair.deliver()
    assert pair.client.established and len(pair.established()) == 1


def test_final_flight_is_held_for_a_retransmitted_finished(make_pair) -> None:
    pair = make_pair()
    pair.to_server(flight_five(pair))
    assert len(pair.established()) == 1
    pair.to_client.clear()  # our ChangeCipherSpec + Finished lost
    pair.now = 1.5
    retransmitted = pair.client.handle_timer(1.5)
    assert retransmitted
    pair.to_server(retransmitted)
    assert pair.to_client, "final flight not resent"
    pair.deliver()
    assert pair.client.established and len(pair.established()) == 1
    session = pair.established()[0].session
    assert session.final_flight is not None
    pair.to_server([pair.client.send(b"x")])
    assert session.final_flight is None  # the peer has our Finished


def test_final_flight_is_released_after_the_hold_time(make_pair) -> None:
    pair = make_pair(EngineConfig(final_flight_hold=10.0))
    pair.to_server(flight_five(pair))
    session = pair.established()[0].session
    pair.to_client.clear()
    pair.tick(10.0)
    assert session.final_flight is None
    pair.now = 11.0
    pair.to_server(pair.client.handle_timer(11.0))
    assert not pair.to_client and session.established


def test_reordered_flight_finished_first_then_ccs_then_key_exchange(make_pair) -> None:
    pair = make_pair()
    [datagram] = flight_five(pair)
    key_exchange, ccs, finished = split(datagram)
    pair.to_server([finished, ccs])
    assert not pair.established() and not pair.of_type(HandshakeFailed)
    pair.to_server([key_exchange])
    assert len(pair.established()) == 1
    pair.deliver()
    assert pair.client.established


def test_duplicated_flight_five_establishes_once(make_pair) -> None:
    pair = make_pair()
    [datagram] = flight_five(pair)
    pair.to_server([datagram, datagram])
    assert len(pair.established()) == 1
    assert pair.engine.counters["replayed"] == 1


def test_fragmented_key_exchange_is_reassembled_out_of_order(make_pair) -> None:
    pair = make_pair()
    [datagram] = flight_five(pair)
    key_exchange, ccs, finished = split(datagram)
    [fragment] = wire.parse_handshake_fragments(key_exchange[13:])
    body = fragment.body
    pieces = []
    for start, end in [(50, len(body)), (0, 20), (10, 60)]:
        handshake = (
            bytes((fragment.msg_type,))
            + fragment.length.to_bytes(3, "big")
            + fragment.message_seq.to_bytes(2, "big")
            + start.to_bytes(3, "big")
            + (end - start).to_bytes(3, "big")
            + body[start:end]
        )
        pieces.append(wire.plaintext_record(22, 0, 100 + len(pieces), handshake))
    pair.to_server([*pieces[:2], ccs, finished])
    assert not pair.established()
    pair.to_server(pieces[2:])
    assert len(pair.established()) == 1


def test_reassembly_is_bounded(make_pair) -> None:
    pair = make_pair(EngineConfig(max_reassembly_bytes=256, max_identity_length=100))
    flight_five(pair)
    session = next(iter(pair.engine._by_address.values()))
    far = wire.handshake_message(16, 50, b"x" * 10)  # message_seq far ahead: ignored
    pair.to_server([wire.plaintext_record(22, 0, 90, far)])
    assert session._hs.reassembler.buffered_bytes == 0
    # A fragment of a 200-byte message fits the budget, a 300-byte one not.
    header = bytes((16,)) + (200).to_bytes(3, "big") + (3).to_bytes(2, "big")
    pair.to_server(
        [wire.plaintext_record(22, 0, 91, header + bytes(3) + (10).to_bytes(3, "big") + bytes(10))]
    )
    assert session._hs.reassembler.buffered_bytes == 200
    header = bytes((16,)) + (300).to_bytes(3, "big") + (4).to_bytes(2, "big")
    pair.to_server(
        [wire.plaintext_record(22, 0, 92, header + bytes(3) + (10).to_bytes(3, "big") + bytes(10))]
    )
    assert session._hs.reassembler.buffered_bytes == 200
    # Longer than any PSK handshake message, ahead of the next one: dropped.
    header = bytes((16,)) + (5000).to_bytes(3, "big") + (3).to_bytes(2, "big")
    pair.to_server(
        [wire.plaintext_record(22, 0, 93, header + bytes(3) + (10).to_bytes(3, "big") + bytes(10))]
    )
    assert not pair.of_type(HandshakeFailed)
    counters = pair.engine.counters
    assert (counters["handshake_window"], counters["handshake_bytes"]) == (1, 2)
    # ... and as the next expected one: handshake_failure.
    header = bytes((16,)) + (5000).to_bytes(3, "big") + (2).to_bytes(2, "big")
    pair.to_server(
        [wire.plaintext_record(22, 0, 94, header + bytes(3) + (10).to_bytes(3, "big") + bytes(10))]
    )
    [failed] = pair.of_type(HandshakeFailed)
    assert failed.reason is HandshakeFailure.PROTOCOL
    assert pair.to_client[-1][-2:] == bytes((2, AlertDescription.HANDSHAKE_FAILURE))


def test_records_of_an_unknown_epoch_are_dropped(make_pair) -> None:
    pair = make_pair()
    pair.handshake()
    record = pair.client.send(b"x")
    bumped = record[:3] + (2).to_bytes(2, "big") + record[5:]
    pair.to_server([bumped])
    assert not pair.of_type(ApplicationData) and pair.engine.counters["wrong_epoch"] == 1


def test_replay_window_takes_a_huge_sequence_gap_and_refuses_replays(make_pair) -> None:
    pair = make_pair()
    pair.handshake()
    old = pair.client.send(b"old")
    pair.client.jump_sequence(wire.MAX_SEQUENCE - 1)
    pair.to_server([pair.client.send(b"far"), pair.client.send(b"last")])
    pair.to_server([old, old])  # 2^48 behind the window: refused
    assert [e.data for e in pair.of_type(ApplicationData)] == [b"far", b"last"]
    assert pair.engine.counters["replayed"] == 2


def test_unknown_identity_and_wrong_psk_look_the_same_on_the_wire(make_pair) -> None:
    answers = []
    reasons = []
    for identity, psk in [(b"nobody", PSK), (b"dev-1", b"w" * 32)]:
        pair = make_pair(identity=identity, psk=psk)
        pair.to_server(flight_five(pair))
        [failed] = pair.of_type(HandshakeFailed)
        reasons.append(failed.reason)
        [answer] = pair.to_client
        answers.append((answer[:3], answer[11:]))  # all but epoch+sequence
        assert pair.engine.session_count == 0
    assert reasons == [HandshakeFailure.UNKNOWN_IDENTITY, HandshakeFailure.BAD_FINISHED]
    assert (
        answers[0]
        == answers[1]
        == (
            b"\x15\xfe\xfd",
            b"\x00\x02" + bytes((2, AlertDescription.BAD_RECORD_MAC)),
        )
    )


@pytest.mark.parametrize(("length", "ok"), [(1, True), (64, True), (65, False)])
def test_psk_lengths_up_to_64_bytes(make_pair, length, ok) -> None:
    key = os.urandom(length)
    PSKS[b"len-test"] = key
    try:
        pair = make_pair(identity=b"len-test", psk=key)
        pair.to_server(flight_five(pair))
        assert bool(pair.established()) is ok
    finally:
        del PSKS[b"len-test"]


def test_a_512_byte_identity_is_looked_up_whole(make_pair) -> None:
    token = os.urandom(512)
    seen = []
    pair = make_pair(identity=token, psk=PSK)
    pair.engine._psk_lookup = lambda identity: seen.append(identity) or PSK
    pair.handshake()
    assert seen == [token] and pair.established()[0].session.identity == token


def test_renegotiation_is_refused_with_a_warning(make_pair) -> None:
    pair = make_pair()
    pair.handshake()
    hello = wire.handshake_message(1, 5, b"\xfe\xfd" + bytes(40))
    pair.to_server([pair.client._seal(22, hello)])
    pair.deliver()
    assert pair.client.alerts == [(1, AlertDescription.NO_RENEGOTIATION)]
    assert pair.established()[0].session.established


def test_close_notify_from_the_peer_is_answered(make_pair) -> None:
    pair = make_pair()
    pair.handshake()
    pair.to_server([pair.client.close()])
    [closed] = pair.of_type(SessionClosed)
    assert closed.reason is CloseReason.PEER_CLOSED and pair.engine.session_count == 0
    pair.deliver()
    assert pair.client.alerts == [(1, 0)]


def test_server_close_sends_close_notify(make_pair) -> None:
    pair = make_pair()
    pair.handshake()
    session = pair.established()[0].session
    pair.engine.close(session)
    pair.collect()
    pair.deliver()
    assert pair.client.alerts == [(1, 0)] and pair.client.closed
    assert not pair.engine.send(session, b"late")


def test_session_id_longer_than_32_bytes_is_refused_without_state(make_pair) -> None:
    pair = make_pair()
    [hello] = pair.client.connect(0.0)
    records, _ = wire.parse_records(hello, 0)
    [fragment] = wire.parse_handshake_fragments(records[0].fragment)
    body = fragment.body[:34] + bytes((33,)) + bytes(33) + fragment.body[35:]
    message = wire.handshake_message(1, 0, body)
    pair.to_server([wire.plaintext_record(22, 0, 0, message)])
    assert not pair.to_client and pair.engine.counters["malformed_client_hello"] == 1


def test_no_extended_master_secret_gets_handshake_failure(make_pair) -> None:
    pair = make_pair(extended_master_secret=False)
    pair.to_server(pair.client.connect(0.0))
    pair.to_server(pair.deliver())
    [failed] = pair.of_type(HandshakeFailed)
    assert failed.reason is HandshakeFailure.PROTOCOL
    assert pair.to_client[-1][-2:] == bytes((2, AlertDescription.HANDSHAKE_FAILURE))
    assert pair.engine.session_count == 0


def test_cookie_expires_after_two_rotations(make_pair) -> None:
    pair = make_pair(EngineConfig(cookie_rotation=10.0))
    pair.to_server(pair.client.connect(0.0))
    second = pair.deliver()
    pair.now = 25.0
    pair.to_server(second)
    assert pair.engine.session_count == 0 and pair.engine.counters["hello_verify_requests"] == 2


def test_cid_moves_the_session_only_for_the_newest_authenticated_record(make_pair) -> None:
    pair = make_pair(cid=b"")
    pair.handshake()
    session = pair.established()[0].session
    first, second = pair.client.send(b"1"), pair.client.send(b"2")
    new = ("198.51.100.7", 50000)
    other = ("203.0.113.9", 1234)
    pair.to_server([second], address=new)
    [moved] = pair.of_type(AddressChanged)
    assert (moved.old_address, moved.new_address) == (ADDRESS, new) and session.address == new
    pair.to_server([first], address=other)  # authentic, in the window, but older
    assert session.address == new and pair.engine.counters["stale_address"] == 1
    forged = bytearray(pair.client.send(b"3"))
    forged[-1] ^= 1
    pair.to_server([bytes(forged)], address=other)
    assert session.address == new
    assert [e.data for e in pair.of_type(ApplicationData)] == [b"2", b"1"]
    pair.engine.send(session, b"reply")
    assert [a for _, a in pair.engine.datagrams_to_send()] == [new]


def test_without_cid_a_new_address_is_a_stranger(make_pair) -> None:
    pair = make_pair()
    pair.handshake()
    pair.to_server([pair.client.send(b"1")], address=("198.51.100.7", 50000))
    assert not pair.of_type(ApplicationData) and pair.engine.counters["unknown_peer"] == 1


def test_cid_records_are_required_once_negotiated(make_pair) -> None:
    pair = make_pair(cid=b"")
    pair.handshake()
    cid = pair.client.server_cid
    pair.client.server_cid = b""
    pair.to_server([pair.client.send(b"plain")])
    pair.client.server_cid = cid
    assert not pair.of_type(ApplicationData) and pair.engine.counters["missing_cid"] == 1


def test_cid_owner_byte_and_foreign_cids(make_pair) -> None:
    pair = make_pair(EngineConfig(cid_length=6, cid_owner=3), cid=b"")
    pair.handshake()
    assert pair.client.server_cid[0] == 3
    pair.client.server_cid = b"\x07" + pair.client.server_cid[1:]
    record = pair.client.send(b"elsewhere")
    pair.to_server([record])
    [foreign] = [e for e in pair.events if type(e).__name__ == "ForeignConnectionId"]
    assert foreign.owner == 7 and foreign.datagram == record


def test_a_new_handshake_from_the_same_address_replaces_the_session_when_done(make_pair) -> None:
    pair = make_pair()
    pair.handshake()
    old_client = pair.client
    old = pair.established()[0].session
    pair.client = DtlsClient(b"dev-1", PSKS[b"dev-1"])
    pair.to_server(pair.client.connect(pair.now))
    pair.to_server(pair.deliver())
    pair.to_server([old_client.send(b"still here")])  # old session serves on
    assert [e.data for e in pair.of_type(ApplicationData)] == [b"still here"]
    pair.to_server(pair.deliver())
    pair.deliver()
    assert pair.client.established
    [closed] = pair.of_type(SessionClosed)
    assert closed.session is old and closed.reason is CloseReason.REHANDSHAKE
    assert pair.engine.session_count == 1


def test_idle_sessions_are_closed(make_pair) -> None:
    pair = make_pair(EngineConfig(idle_timeout=50.0, final_flight_hold=5.0))
    pair.handshake()
    pair.now = 30.0
    pair.to_server([pair.client.send(b"x")])
    pair.tick(79.0)
    assert not pair.of_type(SessionClosed)
    pair.tick(pair.engine.next_deadline())
    assert pair.now == 80.0
    [closed] = pair.of_type(SessionClosed)
    assert closed.reason is CloseReason.IDLE_TIMEOUT and pair.engine.next_deadline() is None


def test_handshake_caps(make_pair) -> None:
    pair = make_pair(EngineConfig(max_handshakes=3, max_handshakes_per_host=1))
    for host, port in [(50, 1), (50, 2), (51, 1), (52, 1), (53, 1)]:
        client = DtlsClient(b"dev-1", PSK)
        address = (f"192.0.2.{host}", port)
        pair.engine.receive_datagram(client.connect(0.0)[0], address, 0.0)
        [(hvr, _)] = pair.engine.datagrams_to_send()
        for datagram in client.receive(hvr, 0.0):
            pair.engine.receive_datagram(datagram, address, 0.0)
        pair.engine.datagrams_to_send()
    assert pair.engine.handshaking_count == 3
    assert pair.engine.counters["host_handshake_cap"] == 1
    assert pair.engine.counters["handshake_cap"] == 1


def test_a_handshake_started_before_an_unknown_cid_record_still_gets_its_timer(
    make_pair,
) -> None:
    """A cookie-bearing ClientHello and, in the same datagram, a tls12_cid
    record with a CID nobody holds: the rest of the datagram is dropped, but
    the new handshake is scheduled (flight retransmission, RFC 6347 §4.2.4)."""
    pair = make_pair()
    pair.to_server(pair.client.connect(pair.now))
    [hello] = pair.deliver()  # ClientHello with cookie
    stray = b"\x19\xfe\xfd\x00\x01" + bytes(6) + b"\xaa" * 6 + b"\x00\x10" + bytes(16)
    pair.to_server([hello + stray])
    assert pair.engine.handshaking_count == 1
    assert pair.engine.counters["unknown_cid"] == 1
    deadline = pair.engine.next_deadline()
    assert deadline is not None and 0.0 < deadline <= EngineConfig().initial_retransmit
    pair.to_client.clear()
    pair.tick(deadline)
    assert pair.to_client, "the server flight was not retransmitted"
