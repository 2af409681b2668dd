"""The DTLS-PSK server transport on real loopback sockets: handshakes, identity
in ``request.remote``, failures, timeouts, limits, closing, hostile input."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiocoap
import pytest

from gateway.dtls import CloseReason, DtlsServerConfig, HandshakeFailure, PskIdentityClaim
from gateway.dtls.probe import ProbeError
from gateway.dtls.records import HandshakeType, first_handshake_type
from gateway.errors import ConfigError

from .conftest import DTLS_PSKS, DtlsBlob, DtlsHarnessFactory, dtls_get, dtls_wait_for

PSK1 = DTLS_PSKS[b"dev-1"]
PSK2 = DTLS_PSKS[b"dev-2"]


def _free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- the happy path -------------------------------------------------------------------


async def test_aiocoap_client_gets_a_response_and_the_resource_sees_the_identity(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness()
    client = await aiocoap.Context.create_client_context(transports=["tinydtls"])
    try:
        client.client_credentials.load_from_dict(
            {f"coaps://127.0.0.1:{h.port}/*": {"dtls": {"psk": PSK1, "client-identity": b"dev-1"}}}
        )
        base = f"coaps://127.0.0.1:{h.port}"
        request = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/whoami")
        response = await asyncio.wait_for(client.request(request).response, 10)
        # Block-wise both ways (RFC 7959) fits DTLS records.
        blob = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/blob")
        big_response = await asyncio.wait_for(client.request(blob).response, 10)
        upload = aiocoap.Message(code=aiocoap.POST, uri=f"{base}/blob", payload=b"u" * 5000)
        upload_response = await asyncio.wait_for(client.request(upload).response, 10)
    finally:
        await client.shutdown()
    assert big_response.payload == DtlsBlob.BODY
    assert upload_response.payload == b"5000"
    assert response.code == aiocoap.CONTENT
    identity, _hostinfo, local = response.payload.split(b"|")
    assert identity == b"dev-1"
    assert local == f"127.0.0.1:{h.port}".encode()
    (remote,) = h.whoami.remotes
    assert remote.scheme == "coaps" and remote.is_secure and not remote.is_multicast
    assert remote.psk_identity == b"dev-1"
    assert remote.authenticated_claims == (PskIdentityClaim(b"dev-1"),)
    assert remote.address[0] == "127.0.0.1"
    assert remote.uri_base == "coaps://" + remote.hostinfo
    assert remote.blockwise_key is remote
    assert [(o.identity, o.ok) for o in h.handshakes] == [(b"dev-1", True)]


async def test_probe_sessions_are_told_apart_by_identity(dtls_harness: DtlsHarnessFactory) -> None:
    h = await dtls_harness()
    probe = h.probe()
    one = await probe.connect(b"dev-1", PSK1)
    two = await probe.connect(b"dev-2", PSK2)
    first = await one.request(dtls_get())
    second = await two.request(dtls_get())
    assert first.payload.split(b"|")[0] == b"dev-1"
    assert second.payload.split(b"|")[0] == b"dev-2"
    assert f":{one.local_port}".encode() in first.payload.split(b"|")[1]
    stats = h.server.stats()
    assert (stats.sessions, stats.handshaking, stats.handshakes_ok) == (2, 0, 2)
    assert sorted(r.psk_identity for r in h.server.remotes()) == [b"dev-1", b"dev-2"]


async def test_binds_exactly_the_configured_port(dtls_harness: DtlsHarnessFactory) -> None:
    port = _free_port()
    h = await dtls_harness(port=port)
    assert h.server.address == ("127.0.0.1", port)
    session = await h.probe().connect(b"dev-1", PSK1)
    assert (await session.request(dtls_get())).code == aiocoap.CONTENT


async def test_reuse_port_lets_two_servers_share_the_port(dtls_harness: DtlsHarnessFactory) -> None:
    port = _free_port()
    first = await dtls_harness(port=port, reuse_port=True)
    second = await dtls_harness(port=port, reuse_port=True)
    assert first.port == second.port == port
    with pytest.raises(OSError):
        await dtls_harness(port=port)


@pytest.mark.parametrize(
    ("bind", "target", "local"),
    [
        ("::", "127.0.0.1", "127.0.0.1"),
        ("::", "::1", "[::1]"),
        ("0.0.0.0", "127.0.0.1", "127.0.0.1"),
        ("::1", "::1", "[::1]"),
    ],
)
async def test_wildcard_and_ipv6_binds_answer_from_the_address_asked(
    dtls_harness: DtlsHarnessFactory, bind: str, target: str, local: str
) -> None:
    h = await dtls_harness(host=bind)
    session = await h.probe(target).connect(b"dev-1", PSK1)
    response = await session.request(dtls_get())
    identity, hostinfo, hostinfo_local = response.payload.split(b"|")
    assert identity == b"dev-1"
    assert hostinfo_local == f"{local}:{h.port}".encode()
    assert hostinfo == f"{local}:{session.local_port}".encode()


async def test_long_identities_and_32_byte_psks(dtls_harness: DtlsHarnessFactory) -> None:
    """RFC 4279 §5.3 sizes and beyond: a 128-byte identity with a 32-byte
    PSK, and a 600-byte identity (an RFC 9202 access token is 120-260 bytes)
    with a 64-byte binary one; the identity reaches the resource whole and
    never a log line in full."""
    long_identities = {
        b"device-" + b"i" * 121: b"0123456789abcdef" * 2,
        b"t" * 600: bytes(range(64)),
    }
    h = await dtls_harness(psk_lookup=lambda i: {**long_identities, **DTLS_PSKS}.get(i))
    probe = h.probe()
    for identity, psk in long_identities.items():
        session = await probe.connect(identity, psk)
        response = await session.request(dtls_get())
        assert response.payload.split(b"|")[0] == identity
        assert identity.decode() not in repr(h.whoami.remotes[-1])
    assert h.server.stats().handshakes_ok == 2


async def test_with_a_connection_id_a_moved_peer_keeps_its_session_and_remote(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    """RFC 9146: the device's source port changes three times (NAT
    rebinding); no new handshake, the resource sees one remote throughout,
    whose address follows the device."""
    h = await dtls_harness()
    session = await h.probe().connect(b"dev-1", PSK1, connection_id=True)
    assert len(session.server_cid) == 6
    ports = []
    for _ in range(4):
        ports.append(session.local_port)
        response = await session.request(dtls_get())
        assert response.payload.split(b"|")[1].endswith(b":%d" % session.local_port)
        session.rebind()
    assert len(set(ports)) == 4
    assert len({id(r) for r in h.whoami.remotes}) == 1
    assert h.whoami.remotes[0].address[1] == ports[-1]
    stats = h.server.stats()
    assert (stats.handshakes_ok, stats.address_changes, stats.sessions) == (1, 3, 1)


async def test_a_locked_out_identity_fails_like_a_wrong_psk(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    """The admission check sees (identity, address) before the PSK lookup;
    a refused pair fails at the Finished (the peer cannot tell it from a
    wrong PSK) and is reported as locked_out."""
    seen: list[tuple[bytes, object]] = []

    def admit(identity: bytes, address: tuple[object, ...]) -> bool:
        seen.append((identity, address[0]))
        return identity != b"dev-2"

    h = await dtls_harness(admit_identity=admit)
    probe = h.probe()
    with pytest.raises(ProbeError):
        await probe.connect(b"dev-2", PSK2, timeout=5.0)
    session = await probe.connect(b"dev-1", PSK1)
    assert (await session.request(dtls_get())).code == aiocoap.CONTENT
    assert seen == [(b"dev-2", "127.0.0.1"), (b"dev-1", "127.0.0.1")]
    await dtls_wait_for(lambda: h.server.stats().handshakes_failed == 1)
    assert h.server.stats().handshake_failures == {"locked_out": 1}
    assert h.handshakes[0].failure is HandshakeFailure.LOCKED_OUT


# --- failed handshakes ------------------------------------------------------------------


async def test_wrong_psk_fails_fast_and_others_are_still_served(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness(handshake_timeout=30.0)
    probe = h.probe()
    with pytest.raises(ProbeError):
        await probe.connect(b"dev-1", b"not-the-psk-1234", timeout=5.0)
    # Detected at the peer's Finished, not by the 30 s handshake timeout.
    await dtls_wait_for(lambda: h.server.stats().handshakes_failed == 1, timeout=1.0)
    assert h.server.stats().handshake_failures == {"bad_finished": 1}
    assert [(o.identity, o.failure) for o in h.handshakes] == [
        (b"dev-1", HandshakeFailure.BAD_FINISHED)
    ]
    assert h.whoami.remotes == []
    session = await probe.connect(b"dev-2", PSK2)
    assert (await session.request(dtls_get())).payload.startswith(b"dev-2|")
    assert h.server.stats().handshaking == 0


async def test_unknown_identity_fails(dtls_harness: DtlsHarnessFactory) -> None:
    h = await dtls_harness()
    with pytest.raises(ProbeError):
        await h.probe().connect(b"nobody", b"whatever", timeout=5.0)
    await dtls_wait_for(lambda: h.server.stats().handshakes_failed == 1)
    assert h.server.stats().handshake_failures == {"unknown_identity": 1}
    assert h.handshakes[-1].identity == b"nobody"
    assert h.server.stats().handshaking == 0


async def test_psk_lookup_errors_and_overlong_psks_are_refused_without_leaking_them(
    dtls_harness: DtlsHarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    long_psk = b"k" * 65  # RFC 4279 §5.3 asks for up to 64 bytes

    def lookup(identity: bytes) -> bytes | None:
        if identity == b"broken":
            raise RuntimeError("registry down")
        return {b"long": long_psk, **DTLS_PSKS}.get(identity)

    caplog.set_level(logging.DEBUG)
    h = await dtls_harness(psk_lookup=lookup)
    probe = h.probe()
    for identity in (b"long", b"broken"):
        with pytest.raises(ProbeError):
            await probe.connect(identity, b"0123456789abcdef", timeout=5.0)
    with pytest.raises(ProbeError):
        await probe.connect(b"dev-1", b"0123456789abcdef", timeout=5.0)
    session = await probe.connect(b"dev-2", PSK2)
    await session.request(dtls_get())
    await dtls_wait_for(lambda: h.server.stats().handshakes_failed == 3)
    assert h.server.stats().handshake_failures == {"unknown_identity": 2, "bad_finished": 1}
    assert "the PSK of long is not 1..64 bytes" in caplog.text
    assert "psk_lookup failed for broken" in caplog.text
    for secret in (long_psk, PSK1, PSK2):
        for form in (secret.decode(), secret.hex(), repr(secret)):
            assert form not in caplog.text


# --- timeouts -----------------------------------------------------------------------------


async def test_idle_session_is_closed_with_close_notify(dtls_harness: DtlsHarnessFactory) -> None:
    h = await dtls_harness(idle_timeout=0.5)
    probe = h.probe()
    idle = await probe.connect(b"dev-1", PSK1)
    busy = await probe.connect(b"dev-2", PSK2)
    await idle.request(dtls_get())
    remote = h.whoami.remotes[-1]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not idle.closed_by_peer.is_set() and loop.time() < deadline:
        await busy.request(dtls_get())  # traffic every 0.1 s keeps "busy" alive
        await asyncio.sleep(0.1)
    assert idle.closed_by_peer.is_set()
    assert idle.alert == (1, 0)  # close_notify
    assert not busy.closed_by_peer.is_set()
    assert h.closed == [(remote, CloseReason.IDLE_TIMEOUT)]
    assert not remote.is_open
    assert h.server.stats().sessions_closed == {"idle_timeout": 1}


async def test_peer_that_vanishes_mid_handshake_is_timed_out(
    dtls_harness: DtlsHarnessFactory, dtls_raw_peers
) -> None:
    h = await dtls_harness(handshake_timeout=1.0)
    peer = dtls_raw_peers(h.target())
    await peer.until_server_hello_done()
    assert h.server.stats().handshaking == 1
    await dtls_wait_for(lambda: h.server.stats().handshaking == 0, timeout=3.0)
    assert h.server.stats().handshake_failures == {"timeout": 1}
    assert h.handshakes[-1].failure is HandshakeFailure.TIMEOUT


async def test_server_retransmits_its_flight_to_a_silent_client(
    dtls_harness: DtlsHarnessFactory, dtls_raw_peers
) -> None:
    h = await dtls_harness(handshake_timeout=10.0)
    peer = dtls_raw_peers(h.target())
    await peer.until_server_hello_done()
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    datagram = await peer.receive(timeout=5.0)
    assert datagram is not None, "no retransmission"
    assert first_handshake_type(datagram) == HandshakeType.SERVER_HELLO
    assert loop.time() - sent_at > 0.5  # on the retransmission timer, not at once
    assert h.server.stats().handshaking == 1


# --- limits ---------------------------------------------------------------------------------


async def test_half_open_cap_drops_cookie_hellos_until_handshakes_time_out(
    dtls_harness: DtlsHarnessFactory, dtls_raw_peers
) -> None:
    h = await dtls_harness(
        max_handshakes=2, handshake_timeout=0.5, address_handshake_share=1.0, handshake_stall=60.0
    )
    for _ in range(2):
        await dtls_raw_peers(h.target()).until_server_hello_done()
    assert h.server.stats().handshaking == 2
    third = dtls_raw_peers(h.target())
    third.send(third.client_hello())
    hello_verify = await third.receive(2.0)  # cookie exchange is stateless: answered
    assert hello_verify is not None
    for datagram in third.feed(hello_verify):
        third.send(datagram)
    assert await third.receive(0.2) is None  # the cookie hello was dropped
    assert h.server.stats().dropped["handshake_cap"] == 1
    assert h.server.stats().handshaking == 2
    await dtls_wait_for(lambda: h.server.stats().handshaking == 0, timeout=3.0)
    session = await h.probe().connect(b"dev-3", DTLS_PSKS[b"dev-3"])
    assert (await session.request(dtls_get())).code == aiocoap.CONTENT


async def test_full_table_evicts_the_longest_idle_session(dtls_harness: DtlsHarnessFactory) -> None:
    h = await dtls_harness(max_sessions=3, max_handshakes=3)
    probe = h.probe()
    sessions = [await probe.connect(b"dev-%d" % i, DTLS_PSKS[b"dev-%d" % i]) for i in (1, 2, 3)]
    for session in sessions:
        await session.request(dtls_get())
    remotes = {r.psk_identity: r for r in h.whoami.remotes}
    await sessions[0].request(dtls_get())  # dev-2 is now the longest idle
    newcomer = await probe.connect(b"dev-4", DTLS_PSKS[b"dev-4"])
    await dtls_wait_for(sessions[1].closed_by_peer.is_set)
    assert h.closed == [(remotes[b"dev-2"], CloseReason.EVICTED)]
    for session in (sessions[0], sessions[2], newcomer):
        assert (await session.request(dtls_get())).code == aiocoap.CONTENT
    assert h.server.stats().sessions == 3


# --- closing ------------------------------------------------------------------------------------


async def test_close_identity_closes_all_its_sessions(dtls_harness: DtlsHarnessFactory) -> None:
    h = await dtls_harness()
    probe = h.probe()
    a = await probe.connect(b"dev-1", PSK1)
    b = await probe.connect(b"dev-1", PSK1)
    other = await probe.connect(b"dev-2", PSK2)
    for session in (a, b, other):
        await session.request(dtls_get())
    dev1_remotes = h.server.remotes(b"dev-1")
    assert len(dev1_remotes) == 2
    assert h.server.close_identity(b"dev-1") == 2
    assert h.server.close_identity(b"dev-1") == 0
    await dtls_wait_for(lambda: a.closed_by_peer.is_set() and b.closed_by_peer.is_set())
    assert a.alert == b.alert == (1, 0)
    assert sorted(id(r) for r, _ in h.closed) == sorted(id(r) for r in dev1_remotes)
    assert {reason for _, reason in h.closed} == {CloseReason.CLOSED}
    assert not any(r.is_open for r in dev1_remotes)
    assert h.server.remotes(b"dev-1") == []
    assert (await other.request(dtls_get())).payload.startswith(b"dev-2|")


async def test_close_session_closes_one_session(dtls_harness: DtlsHarnessFactory) -> None:
    h = await dtls_harness()
    probe = h.probe()
    a = await probe.connect(b"dev-1", PSK1)
    b = await probe.connect(b"dev-1", PSK1)
    await a.request(dtls_get())
    remote_a = h.whoami.remotes[-1]
    assert h.server.close_session(remote_a)
    assert not h.server.close_session(remote_a)
    await dtls_wait_for(a.closed_by_peer.is_set)
    assert (await b.request(dtls_get())).code == aiocoap.CONTENT
    assert h.closed == [(remote_a, CloseReason.CLOSED)]


async def test_close_notify_from_the_peer_ends_the_session(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness()
    session = await h.probe().connect(b"dev-1", PSK1)
    await session.request(dtls_get())
    remote = h.whoami.remotes[-1]
    await session.close()
    await dtls_wait_for(lambda: h.server.stats().sessions == 0)
    assert h.closed == [(remote, CloseReason.PEER_CLOSED)]
    assert h.server.stats().sessions_closed == {"peer_closed": 1}


async def test_new_handshake_from_the_same_address_replaces_the_session(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness()
    probe = h.probe()
    old = await probe.connect(b"dev-1", PSK1)
    await old.request(dtls_get())
    old_remote = h.whoami.remotes[-1]
    port = old.local_port
    await old.close(notify=False)  # the device rebooted
    new = await probe.connect(b"dev-2", PSK2, local_port=port)
    response = await new.request(dtls_get())
    assert response.payload.startswith(b"dev-2|")
    assert h.closed == [(old_remote, CloseReason.REHANDSHAKE)]
    assert h.whoami.remotes[-1].psk_identity == b"dev-2"
    assert h.whoami.remotes[-1] is not old_remote
    assert h.server.stats().sessions == 1


async def test_response_for_a_session_closed_meanwhile_is_dropped(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness()
    session = await h.probe().connect(b"dev-1", PSK1)
    pending = asyncio.create_task(session.request(dtls_get("slow"), timeout=5.0))
    await asyncio.wait_for(h.slow.entered.wait(), 5.0)
    assert h.server.close_identity(b"dev-1") == 1
    sent = h.server.stats().datagrams_sent  # the close_notify included
    h.slow.release.set()
    with pytest.raises(ProbeError):
        await pending
    # aiocoap hands the late response to the server, which drops it
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not h.server.stats().dropped.get("closed_session") and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert h.server.stats().dropped.get("closed_session") == 1
    assert h.server.stats().datagrams_sent == sent  # the late response never left
    assert h.server.stats().sessions == 0
    assert h.closed[0][1] is CloseReason.CLOSED


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError) as bad_host:
        DtlsServerConfig(host="localhost")
    assert bad_host.value.key == "server.bind"
    with pytest.raises(ConfigError) as bad_cap:
        DtlsServerConfig(max_sessions=10, max_handshakes=11)
    assert bad_cap.value.key == "dtls.max_handshakes"
    assert DtlsServerConfig(host="::").is_wildcard
    assert not DtlsServerConfig(host="127.0.0.1").is_wildcard


async def test_shutdown_sends_close_notify_and_frees_the_port(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness()
    session = await h.probe().connect(b"dev-1", PSK1)
    await session.request(dtls_get())
    await h.shutdown()
    await dtls_wait_for(session.closed_by_peer.is_set)
    assert [reason for _, reason in h.closed] == [CloseReason.SHUTDOWN]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", h.port))


# --- hostile traffic ------------------------------------------------------------------------


async def test_datagrams_from_unknown_peers_that_are_not_client_hello_are_dropped(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness()
    junk = [
        b"",
        b"garbage",
        b"\x17\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x05hello",  # application data
        b"\x15\xfe\xfd" + bytes(8) + b"\x00\x02\x01\x00",  # close_notify
        b"\x16\xfe\xfd" + bytes(8) + b"\x00\x0c\x10" + bytes(11),  # ClientKeyExchange
        b"\x16\xfe\xfd" + bytes(8) + b"\x00\x20\x01" + bytes(31),  # truncated hello
    ]
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.connect(h.target())
        for datagram in junk:
            s.send(datagram)
        await dtls_wait_for(lambda: h.server.stats().datagrams_received == len(junk))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(s, 2048), 0.2)
    stats = h.server.stats()
    # Unparsable datagrams and the truncated hello are malformed; the
    # well-formed records without a session come from an unknown peer.
    assert stats.dropped == {"malformed": 3, "unknown_peer": 3}
    assert (stats.datagrams_sent, stats.handshaking, stats.sessions) == (0, 0, 0)
    session = await h.probe().connect(b"dev-1", PSK1)
    assert (await session.request(dtls_get())).code == aiocoap.CONTENT


async def test_garbage_on_an_established_session_is_ignored(
    dtls_harness: DtlsHarnessFactory,
) -> None:
    h = await dtls_harness()
    session = await h.probe().connect(b"dev-1", PSK1)
    for datagram in (
        b"\x00",
        b"\x17\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x20" + bytes(32),  # fails to decrypt
        b"\x15\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x02\x02\x28",  # forged fatal alert
    ):
        session.send_raw(datagram)
    assert (await session.request(dtls_get())).payload.startswith(b"dev-1|")
    assert h.server.stats().sessions == 1
    assert h.closed == []


async def test_client_hello_flood_allocates_no_state(
    dtls_harness: DtlsHarnessFactory, dtls_raw_peers
) -> None:
    h = await dtls_harness()
    template = dtls_raw_peers(h.target())
    hello = template.client_hello()
    senders = [dtls_raw_peers(h.target()) for _ in range(40)]
    for sender in senders:
        sender.send(hello)
    answers = [await sender.receive(2.0) for sender in senders]
    assert all(
        a is not None and first_handshake_type(a) == HandshakeType.HELLO_VERIFY_REQUEST
        for a in answers
    )
    # A cookie made for another address creates no state either.
    template.send(hello)
    hello_verify = await template.receive(2.0)
    assert hello_verify is not None
    (cookie_hello,) = template.feed(hello_verify)
    for sender in senders:
        sender.send(cookie_hello)
    replies = [await sender.receive(2.0) for sender in senders]
    assert all(
        r is not None and first_handshake_type(r) == HandshakeType.HELLO_VERIFY_REQUEST
        for r in replies
    )
    stats = h.server.stats()
    assert (stats.handshaking, stats.sessions, stats.handshakes_failed) == (0, 0, 0)
