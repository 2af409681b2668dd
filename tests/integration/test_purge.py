"""What has expired leaves the registry and the issued-token ledger: worker
0's housekeeping purges every PURGE_INTERVAL, in a thread, on the injected
clock (a real gateway, a real SQLite registry and ledger file)."""

from __future__ import annotations

import sqlite3

from aiocoap.numbers.codes import Code

from gateway.authorization_server.issued_tokens import LEDGER_FILE
from gateway.runtime.gateway import PURGE_INTERVAL, Gateway

from .conftest import DEVICE_ID, DEVICE_PSK, FakeClock, ProofDevice, device, gateway_config


def _ledger_rows(gw: Gateway) -> int:
    path = gw.config.registry.path.with_name(LEDGER_FILE)
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM issued").fetchone()[0])


async def _housekeep(gw: Gateway, now: float) -> None:
    gw.housekeeping(now)
    if gw._purging is not None:
        await gw._purging


async def test_expired_revocations_and_ledger_rows_are_purged(state_dir):
    clock = FakeClock()
    gw = Gateway(gateway_config(state_dir), clock=clock)
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    try:
        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            pd = await ProofDevice.enroll(dev)
            assert (await pd.call()).code == Code.CONTENT
        lifetime = gw.config.as_.token_lifetime
        gw.registry.revoke(b"soon-gone", clock.now + 60)
        gw.registry.revoke(b"still-valid", clock.now + lifetime + PURGE_INTERVAL * 3)
        await _housekeep(gw, clock.now)  # schedules the first purge one interval on
        assert _ledger_rows(gw) == 1

        # due, but the token has not expired: only the short revocation goes
        await _housekeep(gw, clock.now + PURGE_INTERVAL)
        assert gw._purging is not None and gw._purging.result() == (1, 0)
        assert [cti for cti, _ in gw.registry.revoked()] == [b"still-valid"]
        assert _ledger_rows(gw) == 1

        # not due again before another interval has passed
        gw._purging = None
        gw.housekeeping(clock.now + PURGE_INTERVAL + 1)
        assert gw._purging is None

        # the token expired: its ledger row goes too
        later = clock.now + max(lifetime + 1, PURGE_INTERVAL * 2)
        await _housekeep(gw, later)
        assert gw._purging is not None and gw._purging.result() == (0, 1)
        assert _ledger_rows(gw) == 0
        assert gw.registry.is_revoked(b"still-valid")
    finally:
        await gw.stop()
        gw.registry.close()


async def test_only_worker_zero_purges(state_dir):
    gw = Gateway(gateway_config(state_dir), clock=FakeClock(), worker=1)
    gw.registry.revoke(b"gone", 1.0)
    await gw.start()
    try:
        for step in range(3):
            gw.housekeeping(gw.clock() + step * PURGE_INTERVAL)
        assert gw._purging is None
        assert gw.registry.is_revoked(b"gone")
    finally:
        await gw.stop()
        gw.registry.close()
