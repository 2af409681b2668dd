"""AS key rotation under load (``acegw keys rotate`` / ``retire``): tokens
signed before and after a rotation both verify, new tokens use the new key,
the published key set follows, and after ``retire`` the old tokens are
refused with 4.01; devices on other keys never notice."""

from __future__ import annotations

import asyncio
import io
import time

import aiocoap
import pytest

from gateway.config import load_config
from gateway.dtls.probe import DtlsProbe
from gateway.operations.metrics import parse, render
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from tokens import cbor
from tokens.cwt import decode_unverified

from .conftest import ProofClient, init_state, value

LOAD_DEVICES = 4


@pytest.fixture
async def gateway(tmp_path):
    state = init_state(tmp_path / "state")
    env = {
        "ACEGW_SERVER_BIND": "127.0.0.1",
        "ACEGW_SERVER_PORT": "0",
        "ACEGW_AUDIT_PATH": "off",
        "ACEGW_LIMITS_DEVICE_RATE": "100000",
        "ACEGW_LIMITS_DEVICE_BURST": "100000",
        "ACEGW_LIMITS_ACE_BURST": "1000",
    }
    gw = Gateway(load_config(state / "acegw.toml", env=env))
    devices = [gw.registry.add(f"rot-{i}", scope="/whoami:GET") for i in range(LOAD_DEVICES + 3)]
    devices = [(f"rot-{i}", psk) for i, psk in enumerate(devices)]
    await gw.start()
    probe = DtlsProbe(gw.address)
    try:
        yield gw, state, probe, devices
    finally:
        await probe.close()
        await gw.stop()
        gw.registry.close()


def _keys(state, *args: str) -> str:
    out = io.StringIO()
    assert cli_main(["keys", *args, "--dir", str(state)], out=out) == 0
    return out.getvalue()


async def _followed(gw: Gateway, check, what: str) -> None:
    """Wait for the gateway's housekeeping (every 0.25 s) to see a key change."""
    deadline = time.monotonic() + 2.0
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _published(session) -> set[bytes]:
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=(".well-known", "ace-keys"))
    resp = await session.request(msg)
    assert resp.code == aiocoap.CONTENT
    return {k[2] for k in cbor.decode(resp.payload, what="COSE_KeySet")}


async def test_tokens_verify_across_a_rotation_until_the_old_key_is_retired(gateway):
    gw, state, probe, devices = gateway
    sessions = [await probe.connect(i.encode(), psk, timeout=10) for i, psk in devices]
    load = [await ProofClient.enroll(s) for s in sessions[:LOAD_DEVICES]]
    results: list[aiocoap.numbers.codes.Code] = []
    stop = asyncio.Event()

    async def traffic(device: ProofClient) -> None:
        for _ in range(2000):  # bounded; stopped much earlier
            if stop.is_set():
                return
            results.append((await device.call()).code)

    loaders = [asyncio.create_task(traffic(d)) for d in load]
    try:
        old_kid = gw.keystore.signing_key().kid
        before = await ProofClient.enroll(sessions[-3], asymmetric=True)
        assert decode_unverified(before.token).kid == old_kid
        assert (await before.call()).code == aiocoap.CONTENT

        _keys(state, "rotate")
        await _followed(gw, lambda: gw.keystore.signing_key().kid != old_kid, "rotation")
        new_kid = gw.keystore.signing_key().kid
        after = await ProofClient.enroll(sessions[-2], asymmetric=True)
        assert decode_unverified(after.token).kid == new_kid
        assert (await after.call()).code == aiocoap.CONTENT
        assert (await before.call()).code == aiocoap.CONTENT  # old token still verifies
        assert (await before.upload()).code == aiocoap.CREATED  # and is still accepted
        assert await _published(sessions[-1]) == {old_kid, new_kid}

        _keys(state, "retire", old_kid.hex(), "--yes")
        await _followed(gw, lambda: old_kid not in _kids(gw), "retirement")
        resp = await before.call()
        assert resp.code == aiocoap.UNAUTHORIZED and resp.opt.echo is None
        assert (await before.upload()).code == aiocoap.UNAUTHORIZED
        assert (await after.call()).code == aiocoap.CONTENT
        assert await _published(sessions[-1]) == {new_kid}
        samples = parse(render(gw.collect()))
        dropped = value(samples, "acegw_tokens_dropped_total", cause="key_retired")
        assert dropped == 1
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    assert len(results) > 20 and set(results) == {aiocoap.CONTENT}  # the load never noticed

    # the AS-RS key (symmetric PoP tokens are COSE_Encrypt0 under it) likewise
    old_asrs = gw.keystore.as_rs_key().kid
    _keys(state, "rotate", "--as-rs")
    await _followed(gw, lambda: gw.keystore.as_rs_key().kid != old_asrs, "AS-RS rotation")
    fresh = await ProofClient.enroll(sessions[-1])
    assert decode_unverified(fresh.token).kid == gw.keystore.as_rs_key().kid
    assert (await load[0].call()).code == aiocoap.CONTENT
    _keys(state, "retire", old_asrs.hex(), "--yes")
    await _followed(
        gw, lambda: old_asrs not in {k.kid for k in gw.keystore.decryption_keys()}, "retire"
    )
    assert (await load[0].call()).code == aiocoap.UNAUTHORIZED
    assert (await fresh.call()).code == aiocoap.CONTENT


def _kids(gw: Gateway) -> set[bytes]:
    return {k.kid for k in gw.keystore.verification_keys()}
