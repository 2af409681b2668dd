"""The authorization layer over real DTLS (docs/design.md "Wire formats"):
every rejection path with its exact code, Echo recovery, restarts, rate
limits, lockout, revocation and disabling clients with live sessions."""

from __future__ import annotations

import asyncio
import json
import time

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import OpaqueOption

from gateway.registry.registry import Registry
from gateway.runtime.gateway import Gateway
from tokens.ace import CreationHints
from tokens.keys import SymmetricKey
from tokens.params import PROOF_OPTION

from .conftest import DEVICE_ID, DEVICE_PSK, FakeClock, ProofDevice, device, gateway_config


async def enrolled(gw, identity=DEVICE_ID, psk=DEVICE_PSK):
    ctx = device(gw, identity.encode(), psk)
    dev = await ctx.__aenter__()
    pd = await ProofDevice.enroll(dev)
    return ctx, pd


def audit_records(gw) -> list[dict]:
    path = gw.config.base_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_echo_then_whoami(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        first = await dev.request(pd.message())
        assert first.code == Code.UNAUTHORIZED and first.opt.echo  # no window yet
        resp = await dev.request(pd.message(echo=first.opt.echo))
        assert resp.code == Code.CONTENT, resp.payload
        body = json.loads(resp.payload)
        assert body["client_id"] == DEVICE_ID and body["via"] == "proof"
        assert "/whoami:GET" in body["scope"]
        # the window is open: the next piv needs no Echo
        assert (await dev.request(pd.message())).code == Code.CONTENT
    allowed = [r for r in audit_records(gateway) if r["event"] == "request"]
    assert [r["decision"] for r in allowed] == ["deny", "allow", "allow"]
    assert allowed[0]["reason"] == "echo_required"
    assert pd.key.secret.hex() not in (gateway.config.base_dir / "audit.log").read_text()


async def open_window(pd: ProofDevice) -> None:
    resp = await pd.call()
    assert resp.code == Code.CONTENT, resp


async def test_rejection_paths_with_exact_codes(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        await open_window(pd)

        # no proof: 4.01 with AS Request Creation Hints
        resp = await dev.request(aiocoap.Message(code=Code.GET, uri=dev.base + "/whoami"))
        assert resp.code == Code.UNAUTHORIZED and resp.opt.content_format == 19
        hints = CreationHints.decode(resp.payload)
        assert hints.audience == gateway.config.rs.audience and hints.as_uri.endswith("/token")

        # garbage proof: 4.00
        msg = aiocoap.Message(code=Code.GET, uri=dev.base + "/whoami")
        msg.opt.add_option(OpaqueOption(PROOF_OPTION, b"\x84\x01\x02"))
        assert (await dev.request(msg)).code == Code.BAD_REQUEST

        # unknown kid: 4.01 with hints
        stranger = SymmetricKey(b"nobody-k", b"k" * 16)
        resp = await dev.request(pd.message(key=stranger))
        assert resp.code == Code.UNAUTHORIZED and CreationHints.decode(resp.payload).audience

        # wrong key under the right kid
        forged = SymmetricKey(pd.key.kid, b"f" * 16)
        assert (await dev.request(pd.message(key=forged))).code == Code.UNAUTHORIZED

        # the proof covers method, path, query, payload and content-format
        tampered = [
            {"code": int(Code.PUT)},
            {"path": ("temp",)},
            {"query": ("a=1",)},
            {"payload": b"x"},
            {"content_format": 60},
        ]
        for override in tampered:
            resp = await dev.request(pd.message(proofed_as=override))
            assert resp.code == Code.UNAUTHORIZED, override

        # replayed piv, and a piv far below the window
        ok = pd.message()
        assert (await dev.request(ok)).code == Code.CONTENT
        assert (await dev.request(pd.message(piv=pd.piv))).code == Code.UNAUTHORIZED
        pd.piv += 200
        assert (await dev.request(pd.message())).code == Code.CONTENT
        assert (await dev.request(pd.message(piv=3))).code == Code.UNAUTHORIZED

        # scope: path not in scope 4.03, method not in scope 4.05
        assert (await dev.request(pd.message(path="/admin"))).code == Code.FORBIDDEN
        assert (await dev.request(pd.message(Code.PUT, "/whoami"))).code == Code.METHOD_NOT_ALLOWED
        # a path in scope that does not exist is authorized, then 4.04
        assert (await dev.request(pd.message(path="/temp"))).code == Code.NOT_FOUND

    reasons = [r["reason"] for r in audit_records(gateway) if r.get("decision") == "deny"]
    for reason in ("no_token", "malformed", "unknown_kid", "bad_signature", "replay"):
        assert reason in reasons, reason


async def test_warm_requests_skip_the_general_path_and_decide_the_same(gateway, monkeypatch):
    """Once a device's proofs verified on its session, its canonical Mac0
    requests are decided in one step (no general proof parse); anything
    unusual still gets the general path's exact answer."""
    from gateway.resource_server.authorizer import Authorizer

    parses = []  # Proof options the general path authenticated
    general = Authorizer._authenticate

    def counting(self, view, now):
        parses.extend(view.proofs)
        return general(self, view, now)

    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        await open_window(pd)
        monkeypatch.setattr(Authorizer, "_authenticate", counting)
        for _ in range(5):
            assert (await dev.request(pd.message())).code == Code.CONTENT
        assert parses == []
        tampered = pd.message(proofed_as={"payload": b"x"})
        assert (await dev.request(tampered)).code == Code.UNAUTHORIZED
        assert (await dev.request(pd.message())).code == Code.CONTENT
        replayed = pd.message(piv=pd.piv)
        assert (await dev.request(replayed)).code == Code.UNAUTHORIZED
        refused = {m.opt.get_option(PROOF_OPTION)[0].value for m in (tampered, replayed)}
        assert set(parses) == refused  # only the refused ones took the general path
        assert (await dev.request(pd.message(path="/admin"))).code == Code.FORBIDDEN
        assert set(parses) == refused  # scope is checked after the one-step verification
        # every covered part read on the one-step path: query, Content-Format,
        # payload, an Echo (a window is open: it is only covered, not needed)
        full = {"query": ("a=1", "b"), "payload": b"\x01\x02", "content_format": 60}
        put = pd.message(Code.PUT, "/whoami", **full)
        assert (await dev.request(put)).code == Code.METHOD_NOT_ALLOWED
        assert (await dev.request(pd.message(echo=b"\x00\x07old"))).code == Code.CONTENT
        assert set(parses) == refused
        for change in ({"query": ("a=2", "b")}, {"payload": b"\x01"}, {"content_format": 0}):
            wrong = pd.message(Code.PUT, "/whoami", **full, proofed_as=change)
            assert (await dev.request(wrong)).code == Code.UNAUTHORIZED, change
        assert len(parses) == len(refused) + 3
    reasons = [r["reason"] for r in audit_records(gateway) if r.get("decision") == "deny"]
    assert reasons[-7:] == [
        "bad_signature",
        "replay",
        "scope_path",
        "scope_method",
        *["bad_signature"] * 3,
    ]


async def test_a_ban_elsewhere_and_its_lifting_keep_warm_requests_on_the_one_step_path(
    state_dir, monkeypatch
):
    """A ban on another peer's pair does not send this device's warm requests
    down the general path (the fast path checks only the requester's own
    pair), and neither does the ban lifting later."""
    from gateway.resource_server.authorizer import Authorizer

    clock = FakeClock()
    gw = Gateway(gateway_config(state_dir), clock=clock)
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    parses = []
    general = Authorizer._authenticate

    def counting(self, view, now):
        parses.append(now)
        return general(self, view, now)

    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            pd = await ProofDevice.enroll(dev)
            await open_window(pd)
            monkeypatch.setattr(Authorizer, "_authenticate", counting)
            assert (await dev.request(pd.message())).code == Code.CONTENT
            assert parses == []
            for _ in range(gw.lockout.max_failures):  # another peer gets banned
                gw.lockout.failure(b"other", "192.0.2.9", clock.now)
            assert gw.lockout.ban_end > clock.now  # a ban is in force
            assert (await dev.request(pd.message())).code == Code.CONTENT
            assert parses == []
            clock.now += gw.lockout.ban_seconds + 1
            assert (await dev.request(pd.message())).code == Code.CONTENT
            assert parses == []
    finally:
        await gw.stop()
        gw.registry.close()


async def test_expired_revoked_and_disabled(state_dir):
    clock = FakeClock()
    gw = Gateway(gateway_config(state_dir), clock=clock)
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            pd = await ProofDevice.enroll(dev)
            await open_window(pd)
            clock.now += gw.config.as_.token_lifetime + 1  # expired
            assert (await dev.request(pd.message())).code == Code.UNAUTHORIZED
            clock.now -= gw.config.as_.token_lifetime + 1
            pd2 = await ProofDevice.enroll(dev)
            await open_window(pd2)
            gw.registry.revoke(pd2_cti(gw, pd2), clock.now + 3600)
            assert (await dev.request(pd2.message())).code == Code.UNAUTHORIZED
            pd3 = await ProofDevice.enroll(dev)
            await open_window(pd3)
            gw.registry.disable(DEVICE_ID)  # in flight: not yet housekept
            assert (await dev.request(pd3.message())).code == Code.UNAUTHORIZED
    finally:
        await gw.stop()
        gw.registry.close()
    reasons = [r["reason"] for r in audit_records(gw) if r.get("decision") == "deny"]
    assert reasons.count("expired") == 1 and reasons.count("revoked") == 1
    assert reasons.count("client_disabled") == 1


def pd2_cti(gw, pd: ProofDevice) -> bytes:
    return gw.tokens.peek(pd.key.kid).cti


async def test_token_theft_across_sessions(gateway):
    gateway.registry.add("sensor-2", psk=b"sensor-2-psk-abc", scope="/whoami:GET")
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as victim_dev:
        victim = await ProofDevice.enroll(victim_dev)
        await open_window(victim)
        async with device(gateway, b"sensor-2", b"sensor-2-psk-abc") as thief_dev:
            # the thief has the victim's token and PoP key, but its own session
            stolen = ProofDevice(thief_dev, victim.key, victim.token)
            stolen.piv = 1000
            assert (await thief_dev.request(stolen.message())).code == Code.UNAUTHORIZED
    denies = [r for r in audit_records(gateway) if r.get("reason") == "token_not_bound_to_session"]
    assert len(denies) == 1 and denies[0]["client_id"] == "sensor-2"


async def test_rate_limit_answers_4_29_with_max_age(state_dir):
    gw = Gateway(
        gateway_config(state_dir, ACEGW_LIMITS_DEVICE_BURST="3", ACEGW_LIMITS_DEVICE_RATE="0.01")
    )
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            pd = await ProofDevice.enroll(dev)
            codes = [(await pd.call()).code for _ in range(4)]
            assert codes[:3] == [Code.CONTENT] * 3
            last = await dev.request(pd.message())
            assert last.code == Code.TOO_MANY_REQUESTS and last.opt.max_age >= 1
    finally:
        await gw.stop()
        gw.registry.close()


async def test_ace_endpoints_rate_limited_per_peer(state_dir):
    gw = Gateway(
        gateway_config(state_dir, ACEGW_LIMITS_ACE_BURST="2", ACEGW_LIMITS_ACE_RATE="0.01")
    )
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            codes = [(await dev.post("/authz-info", b"\x01")).code for _ in range(3)]
            assert codes == [Code.BAD_REQUEST, Code.BAD_REQUEST, Code.TOO_MANY_REQUESTS]
    finally:
        await gw.stop()
        gw.registry.close()


async def test_non_request_failing_security_gets_no_response(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        await open_window(pd)
        with pytest.raises(asyncio.TimeoutError):
            await dev.request(pd.message(piv=1, mtype=Type.NON), timeout=2)
        ok = await dev.request(pd.message(mtype=Type.NON), timeout=5)
        assert ok.code == Code.CONTENT


async def test_restart_refuses_captured_proof_and_device_recovers(state_dir):
    config = gateway_config(state_dir)
    gw = Gateway(config)
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        await open_window(pd)
        captured = pd.message()  # a valid request, captured on the wire
        assert (await dev.request(captured)).code == Code.CONTENT
        captured_value = captured.opt.get_option(PROOF_OPTION)[0].value
    await gw.stop()
    gw.registry.close()

    gw = Gateway(config)  # restart: no counters on disk
    await gw.start()
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            # an attacker re-uploads the (non-secret) token and replays the proof
            assert (await dev.post("/authz-info", pd.token)).code == Code.CREATED
            replay = aiocoap.Message(code=Code.GET, uri=dev.base + "/whoami")
            replay.opt.add_option(OpaqueOption(PROOF_OPTION, captured_value))
            refused = await dev.request(replay)
            assert refused.code == Code.UNAUTHORIZED and refused.opt.echo
            # the honest device recovers through Echo, with no operator action
            pd.dev = dev
            assert (await pd.call()).code == Code.CONTENT
            assert (await dev.request(replay)).code == Code.UNAUTHORIZED
    finally:
        await gw.stop()
        gw.registry.close()


async def test_lockout_after_repeated_bad_proofs(state_dir):
    gw = Gateway(
        gateway_config(
            state_dir, ACEGW_LIMITS_LOCKOUT_FAILURES="3", ACEGW_LIMITS_LOCKOUT_SECONDS="60"
        )
    )
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            pd = await ProofDevice.enroll(dev)
            await open_window(pd)
            forged = SymmetricKey(pd.key.kid, b"f" * 16)
            for _ in range(3):
                assert (await dev.request(pd.message(key=forged))).code == Code.UNAUTHORIZED
            # banned now: even a valid proof is refused
            assert (await dev.request(pd.message())).code == Code.UNAUTHORIZED
        assert sum(gw.lockout.active_bans(gw.clock()).values()) >= 1
        # handshakes naming it from that address are refused too; from others not
        assert not gw.admit_identity(DEVICE_ID.encode(), ("127.0.0.1", 40000))
        assert gw.admit_identity(DEVICE_ID.encode(), ("127.0.0.2", 40000))
        # the ban lifts by itself
        assert sum(gw.lockout.active_bans(gw.clock() + 61).values()) == 0
    finally:
        await gw.stop()
        gw.registry.close()
    bans = [r for r in audit_records(gw) if r["event"] == "lockout"]
    assert bans and bans[0]["client_id"] == DEVICE_ID


async def test_disable_cuts_off_100_live_sessions_within_a_second(gateway, state_dir):
    gateway.registry.add("fleet-1", psk=b"fleet-1-psk-abcd", scope="/whoami:GET")
    contexts = [device(gateway, b"fleet-1", b"fleet-1-psk-abcd") for _ in range(100)]
    devices = []
    try:
        for ctx in contexts:
            devices.append(await ctx.__aenter__())
        results = await asyncio.gather(
            *(d.post("/authz-info", b"\x01", timeout=30) for d in devices)
        )
        assert all(r.code == Code.BAD_REQUEST for r in results)
        assert len(gateway.dtls.remotes(b"fleet-1")) == 100
        # the operator disables the client from another process (the CLI)
        other = Registry.from_config(gateway.config)
        started = time.monotonic()
        other.disable("fleet-1")
        other.close()
        while gateway.dtls.remotes(b"fleet-1") and time.monotonic() - started < 5:
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        assert gateway.dtls.remotes(b"fleet-1") == []
        print(f"100 sessions cut off {elapsed * 1000:.0f} ms after disable")
        assert elapsed < 1.0, f"took {elapsed:.2f} s"
    finally:
        for ctx in contexts[: len(devices)]:
            await ctx.__aexit__(None, None, None)


async def test_a_change_polled_by_a_request_still_ends_sessions(gateway):
    """The registry's caches are refreshed by whichever call polls first (a
    request's freshness check, a handshake's PSK lookup); housekeeping reads
    the change log from its own cursor, so a disable polled that way still
    cuts the client's sessions off and drops its tokens."""
    gateway.registry.add("fleet-2", psk=b"fleet-2-psk-abcd", scope="/whoami:GET")
    async with device(gateway, b"fleet-2", b"fleet-2-psk-abcd") as dev:
        assert (await dev.post("/authz-info", b"\x01")).code == Code.BAD_REQUEST
        gateway.housekeeping(gateway.clock())
        assert len(gateway.dtls.remotes(b"fleet-2")) == 1  # an added client goes on
        other = Registry.from_config(gateway.config)
        other.disable("fleet-2")
        other.close()
        gateway.registry.refresh()  # as a request's poll would, first
        gateway.housekeeping(gateway.clock())
        assert gateway.dtls.remotes(b"fleet-2") == []


async def test_bodies_above_the_limit_are_refused_before_assembly(state_dir):
    gateway = Gateway(gateway_config(state_dir, ACEGW_LIMITS_MAX_BODY="4096"))
    gateway.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gateway.start()
    try:
        await _bodies_above_the_limit(gateway)
    finally:
        await gateway.stop()
        gateway.registry.close()


async def _bodies_above_the_limit(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        pd = await ProofDevice.enroll(dev)
        await open_window(pd)
        resp = await dev.request(pd.message(Code.POST, "/whoami", payload=b"x" * 6000))
        assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE
        assert resp.opt.size1 == 4096
        # within the limit, the body is assembled and the proof checked as usual
        ok = await dev.request(pd.message(Code.POST, "/whoami", payload=b"x" * 3000))
        assert ok.code == Code.METHOD_NOT_ALLOWED  # scope has GET only


async def test_echo_repeats_with_a_stale_proof_do_not_lock_out(state_dir):
    """libcoap repeats a 4.01 + Echo by itself with the old proof: those MAC
    failures carry an Echo we issued for the kid and do not count."""
    gw = Gateway(gateway_config(state_dir, ACEGW_LIMITS_LOCKOUT_FAILURES="3"))
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            pd = await ProofDevice.enroll(dev)
            first = await dev.request(pd.message(piv=1))
            assert first.code == Code.UNAUTHORIZED and first.opt.echo
            for _ in range(4):  # the Echo option added, the proof left as it was
                stale = pd.message(piv=1)
                stale.opt.echo = first.opt.echo
                assert (await dev.request(stale)).code == Code.UNAUTHORIZED
            assert sum(gw.lockout.active_bans(gw.clock()).values()) == 0
            ok = await dev.request(pd.message(echo=first.opt.echo))
            assert ok.code == Code.CONTENT
            # a forged Echo is no way around the lockout
            forged = SymmetricKey(pd.key.kid, b"f" * 16)
            for _ in range(3):
                bad = pd.message(key=forged)
                bad.opt.echo = b"not-ours"
                assert (await dev.request(bad)).code == Code.UNAUTHORIZED
            assert sum(gw.lockout.active_bans(gw.clock()).values()) >= 1
    finally:
        await gw.stop()
        gw.registry.close()
