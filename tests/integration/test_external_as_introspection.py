"""Introspection at a followed AS when its revocation list cannot be
followed (RFC 9200 §5.9 as the fallback of RFC 9770), and the staleness
rules: two gateways on loopback over real DTLS."""

from __future__ import annotations

from pathlib import Path

import aiocoap
import pytest

from gateway.runtime.gateway import Gateway

from .conftest import DEVICE_ID, DEVICE_PSK, ProofDevice, device
from .external_as import as_and_rs, cti_of, revoke, token_from, until


async def test_trl_unreachable_tokens_are_introspected_on_first_use(tmp_path: Path) -> None:
    # the AS answers, but not at the TRL path the RS was given (an error code)
    async with as_and_rs(tmp_path, 'trl_path = "/no-trl"\nmax_staleness = 1\n') as p:
        f = p.follower
        await until(
            lambda: f.state.key_fetches > 0 and "TRL answered" in f.state.last_error,
            state=f.state,
        )
        assert not f.state.following
        await until(lambda: f.stale(p.gw_rs.clock()), state=f.state)

        token, pop = await token_from(p.gw_as)
        async with device(p.gw_rs, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            # first use: introspected, active, accepted (fail-closed and stale otherwise)
            assert (await dev.post("/authz-info", token)).code == aiocoap.CREATED
            assert f.state.introspections == 1
            assert (await ProofDevice(dev, pop, token).call()).code == aiocoap.CONTENT
            # the result is cached by token hash: no second introspection
            assert (await dev.post("/authz-info", token)).code == aiocoap.CREATED
            assert f.state.introspections == 1

            # a token revoked at the AS before its first use here: refused
            token2, _ = await token_from(p.gw_as)
            cti2 = cti_of(p.as_dir, token2)
            revoke(p.as_dir, cti2)
            await until(lambda: p.gw_as.registry.is_revoked(bytes.fromhex(cti2)))
            resp = await dev.post("/authz-info", token2)
            assert resp.code == aiocoap.UNAUTHORIZED
            assert f.state.introspections == 2
            text = await p.gw_rs.metrics_text()
            assert 'acegw_issuer_introspections_total{worker="0",issuer="acegw"} 2' in text
            # the same audit reason as a local revocation
            assert '"event":"authz-info","decision":"deny","reason":"revoked"' in _audit(p.gw_rs)


def _audit(gw: Gateway) -> str:
    return Path(gw.config.audit.path).read_text()


async def test_trl_without_observe_is_polled_and_tokens_introspected(tmp_path: Path) -> None:
    def no_observe(gw_as: Gateway) -> None:
        assert gw_as.root is not None
        gw_as.root.observable = None  # the TRL answers, without Observe

    async with as_and_rs(tmp_path, "max_staleness = 3\n", before_rs=no_observe) as p:
        f = p.follower
        await until(lambda: f.state.polls > 0, state=f.state)
        assert not f.state.following
        assert "Observe" in f.state.last_error
        assert not f.stale(p.gw_rs.clock())  # polled: the view is recent

        token, pop = await token_from(p.gw_as)
        async with device(p.gw_rs, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            assert (await dev.post("/authz-info", token)).code == aiocoap.CREATED
            assert f.state.introspections == 1
            pd = ProofDevice(dev, pop, token)
            assert (await pd.call()).code == aiocoap.CONTENT
            # revoked at the AS: the next poll (every max_staleness / 3) drops it
            cti = cti_of(p.as_dir, token)
            revoke(p.as_dir, cti)
            took = await until(lambda: p.gw_rs.tokens.peek(pop.kid) is None, timeout=8)
            assert took < 3.0 + 1.0, took
            assert (await pd.call()).code == aiocoap.UNAUTHORIZED


@pytest.mark.parametrize("on_stale", ["fail-open", "fail-closed"])
async def test_stale_trl_fail_open_accepts_and_reports(tmp_path: Path, on_stale: str) -> None:
    extra = f'max_staleness = 1\non_stale = "{on_stale}"\n'
    async with as_and_rs(tmp_path, extra) as p:
        f = p.follower
        await until(lambda: f.state.following, state=f.state)
        token, pop = await token_from(p.gw_as)
        await p.gw_as.stop()  # the AS goes away: no TRL, no introspection
        await until(lambda: f.stale(p.gw_rs.clock()) and not f.may_introspect(p.gw_rs.clock()))
        async with device(p.gw_rs, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            resp = await dev.post("/authz-info", token)
            ready, detail = p.gw_rs.readiness()
            why = detail["issuers"]["acegw"]["why"]
            text = await p.gw_rs.metrics_text()
            assert 'acegw_issuer_trl_stale{worker="0",issuer="acegw"} 1' in text
            assert 'acegw_issuer_trl_following{worker="0",issuer="acegw"} 0' in text
            assert "not followed for more than 1 s" in why
            if on_stale == "fail-open":
                assert resp.code == aiocoap.CREATED, resp.payload
                assert (await ProofDevice(dev, pop, token).call()).code == aiocoap.CONTENT
                assert ready  # serving, and saying the list is stale
                assert "its tokens are accepted" in why
            else:
                assert resp.code == aiocoap.UNAUTHORIZED
                assert not ready
                assert "its tokens are refused" in why
            assert f.state.introspections == 0
