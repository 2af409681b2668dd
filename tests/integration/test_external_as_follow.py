"""Two gateways on loopback over real DTLS: one with the embedded AS (its
TRL at /revoke/trl, RFC 9770), one in external-AS mode following it as a
registered resource server (TRL observed, key set fetched)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import aiocoap

from gateway.runtime.cli import main as cli_main
from tokens import cnf as cnf_mod
from tokens.aif import Scope
from tokens.cwt import Claims, mint
from tokens.keys import SymmetricKey

from .conftest import DEVICE_ID, DEVICE_PSK, ProofDevice, device
from .external_as import RS_ID, as_and_rs, token_from, until


async def test_revocation_and_rotation_reach_the_following_rs(tmp_path: Path) -> None:
    async with as_and_rs(tmp_path, "max_staleness = 2\n") as p:
        gw_as, gw_rs, follower, as_dir = p.gw_as, p.gw_rs, p.follower, p.as_dir
        await until(
            lambda: follower.state.following and follower.state.key_fetches > 0,
            state=follower.state,
        )

        # a token of the AS works at the RS
        token, pop = await token_from(gw_as)
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
            took = await until(lambda: gw_rs.tokens.peek(pop.kid) is None, timeout=5)
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
            await until(lambda: follower.state.key_fetches > fetches, state=follower.state)
            resp = await dev.post("/authz-info", token2)
            assert resp.code == aiocoap.CREATED, resp.payload
            pd = ProofDevice(dev, pop2, token2)
            assert (await pd.call()).code == aiocoap.CONTENT

        # the AS goes away: fail-closed past max_staleness refuses, /readyz says why
        await gw_as.stop()
        await until(lambda: not follower.state.following)
        await until(lambda: follower.stale(gw_rs.clock()), timeout=10)
        gw_rs.housekeeping(gw_rs.clock())
        ready, detail = gw_rs.readiness()
        assert not ready
        assert "not followed" in detail["issuers"][gw_as.config.as_.issuer]["why"]
        assert gw_rs.tokens.peek(pop2.kid) is None
        text = await gw_rs.metrics_text()
        assert 'acegw_issuer_trl_stale{worker="0",issuer="acegw"} 1' in text
