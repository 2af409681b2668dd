"""The lockout's trusted pairs outlive a restart: devices that had been
getting in from an address stay admitted when, right after the restart,
a few stale devices behind the same address fail often enough to ban it
(a real gateway, restarted on the same state directory, real DTLS)."""

from __future__ import annotations

import io

import pytest

from gateway.dtls.probe import DtlsProbe, ProbeError
from gateway.resource_server import trust_file
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway

from .conftest import gateway_config

HONEST = ("honest-1", b"honest-1-psk-abc")
STALE = [(f"stale-{n}", f"stale-{n}-psk-abcd".encode()) for n in range(5)]


async def _handshake(gw: Gateway, identity: str, psk: bytes) -> bool:
    probe = DtlsProbe(gw.address)
    try:
        await probe.connect(identity.encode(), psk, timeout=5)
        return True
    except ProbeError:
        return False
    finally:
        await probe.close()


async def _restarted(state_dir, *, keep_trust: bool) -> bool:
    """Whether the honest device gets in after the restart and the stale
    devices' failures; ``keep_trust`` False removes the kept pairs."""
    gw = Gateway(gateway_config(state_dir))
    gw.registry.add(HONEST[0], psk=HONEST[1], scope="/whoami:GET")
    for identity, psk in STALE:
        gw.registry.add(identity, psk=psk, scope="/whoami:GET")
    await gw.start()
    try:
        assert await _handshake(gw, *HONEST)  # trusted at 127.0.0.1 from now
    finally:
        await gw.stop()
        gw.registry.close()
    kept = list(state_dir.glob(f"{trust_file.PREFIX}*.json"))
    assert kept and all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
    if not keep_trust:
        for path in kept:
            path.unlink()

    gw = Gateway(gateway_config(state_dir))
    await gw.start()
    try:
        for identity, _ in STALE:  # their keys changed; the devices did not
            assert not await _handshake(gw, identity, b"an-old-psk-value")
        assert gw.lockout.active_bans(gw.clock())
        return await _handshake(gw, *HONEST)
    finally:
        await gw.stop()
        gw.registry.close()


@pytest.mark.parametrize("keep_trust", [True, False])
async def test_a_device_trusted_before_a_restart_is_not_locked_out_by_stale_neighbours(
    tmp_path, keep_trust
):
    state_dir = tmp_path / "state"

    assert cli_main(["init", "--dir", str(state_dir)], out=io.StringIO()) == 0
    # without the kept pairs the address ban refuses it: what the file prevents
    assert await _restarted(state_dir, keep_trust=keep_trust) is keep_trust
