"""Two gateways on loopback over real DTLS: one with the embedded AS (its
TRL at /revoke/trl, RFC 9770), one in external-AS mode following it as a
registered resource server (TRL observed, key set fetched)."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import aiocoap

from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.aif import Scope
from tokens.cwt import Claims, mint
from tokens.keys import SymmetricKey

from .conftest import DEVICE_ID, DEVICE_PSK, ProofDevice, device, gateway_config

RS_ID = "rs-b"
RS_PSK = os.urandom(32)  # above tinydtls's 16: the engine's client carries it


def _init(d: Path) -> Path:
    assert cli_main(["init", "--dir", str(d)], out=io.StringIO()) == 0
    return d


async def _until(predicate, timeout: float = 10.0, state: object = None) -> float:
    """Poll ``predicate`` (bounded); returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not reached in time ({state})")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def _token(gw_as: Gateway) -> tuple[bytes, object, bytes]:
    async with device(gw_as, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        resp = await dev.post("/token", TokenRequest(audience=RS_ID).encode())
        assert resp.code == aiocoap.CREATED, resp.payload
    tr = TokenResponse.decode(resp.payload)
    return tr.access_token, cnf_mod.decode(tr.cnf).key, resp.payload


async def test_revocation_and_rotation_reach_the_following_rs(tmp_path: Path) -> None:
    as_dir = _init(tmp_path / "as")
    gw_as = Gateway(gateway_config(as_dir, ACEGW_AS_AUDIENCES=f"acegw,{RS_ID}"))
    gw_as.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET", audiences=[RS_ID])
    gw_as.registry.add(RS_ID, psk=RS_PSK, scope="/introspect:POST", audiences=[RS_ID])
    await gw_as.start()
    gw_rs = None
    try:
        rs_dir = _init(tmp_path / "rs")
        psk_file = rs_dir / "as.psk"
        psk_file.write_text(RS_PSK.hex())
        os.chmod(psk_file, 0o600)
        # the AS-RS key of its encrypted tokens comes by file (never in a public key set)
        keys_file = rs_dir / "as-rs.cbor"
        keys_file.write_bytes(gw_as.keystore.export_for_rs())
        os.chmod(keys_file, 0o600)
        host, port = gw_as.address
        with open(rs_dir / "acegw.toml", "a") as f:
            f.write(
                "\n[[rs.issuers]]\n"
                f'name = "{gw_as.config.as_.issuer}"\n'
                f'as_uri = "coaps://{host}:{port}"\n'
                f'identity = "{RS_ID}"\n'
                f'psk_file = "{psk_file}"\n'
                f'keys_file = "{keys_file}"\n'
                "max_staleness = 2\n"
            )
        gw_rs = Gateway(gateway_config(rs_dir, ACEGW_AS_ENABLED="false", ACEGW_RS_AUDIENCE=RS_ID))
        # the device's DTLS PSK at the RS (its access rights come from the AS's tokens)
        gw_rs.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
        await gw_rs.start()
        follower = gw_rs.followed.followers[gw_as.config.as_.issuer]
        await _until(
            lambda: follower.state.following and follower.state.key_fetches > 0,
            state=follower.state,
        )

        # a token of the AS works at the RS
        token, pop, _ = await _token(gw_as)
        async with device(gw_rs, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            resp = await dev.post("/authz-info", token)
            assert resp.code == aiocoap.CREATED, resp.payload
            pd = ProofDevice(dev, pop, token)
            assert (await pd.call()).code == aiocoap.CONTENT

            # revoked at the AS (the CLI, another registry connection)
            cti = gw_rs.tokens.peek(pop.kid).cti
            notes = follower.state.notifications
            assert (
                cli_main(["tokens", "revoke", "--dir", str(as_dir), cti.hex()], out=io.StringIO())
                == 0
            )
            took = await _until(lambda: gw_rs.tokens.peek(pop.kid) is None, timeout=5)
            assert took < 1.0, f"revocation took {took:.3f} s to reach the RS"
            assert follower.state.notifications == notes + 1
            resp = await pd.call()
            assert resp.code == aiocoap.UNAUTHORIZED
            # uploading it again is refused: its hash is on the TRL
            assert (await dev.post("/authz-info", token)).code == aiocoap.UNAUTHORIZED

        # the AS rotates its signing key: a token under the new kid is accepted
        fetches = follower.state.key_fetches
        gw_as.keystore.rotate("signing")
        gw_as.housekeeping(gw_as.clock())
        now = int(gw_as.clock())
        pop2 = SymmetricKey(b"rot-pop1", os.urandom(16))
        claims = Claims(
            iss=gw_as.config.as_.issuer,
            sub=DEVICE_ID,
            aud=RS_ID,
            exp=now + 600,
            iat=now,
            cti=os.urandom(8),
            cnf=cnf_mod.CnfKey(pop2),
            scope=Scope.parse("/whoami:GET").encode(),
        )
        token2 = mint(claims, gw_as.keystore.signing_key())
        async with device(gw_rs, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            resp = await dev.post("/authz-info", token2)
            assert resp.code == aiocoap.UNAUTHORIZED  # unknown kid: a fetch is started
            await _until(lambda: follower.state.key_fetches > fetches, state=follower.state)
            resp = await dev.post("/authz-info", token2)
            assert resp.code == aiocoap.CREATED, resp.payload
            pd = ProofDevice(dev, pop2, token2)
            assert (await pd.call()).code == aiocoap.CONTENT

        # the AS goes away: fail-closed past max_staleness refuses, /readyz says why
        await gw_as.stop()
        await _until(lambda: not follower.state.following)
        await _until(lambda: follower.stale(gw_rs.clock()), timeout=10)
        gw_rs.housekeeping(gw_rs.clock())
        ready, detail = gw_rs.readiness()
        assert not ready
        assert "not followed" in detail["issuers"][gw_as.config.as_.issuer]["why"]
        assert gw_rs.tokens.peek(pop2.kid) is None
        text = await gw_rs.metrics_text()
        assert 'acegw_issuer_trl_stale{worker="0",issuer="acegw"} 1' in text
    finally:
        if gw_rs is not None:
            await gw_rs.stop()
            gw_rs.registry.close()
        await gw_as.stop()
        gw_as.registry.close()
