"""The events an operator reads from a running ``acegw serve`` (from ``acegw
init``), each caused for real and seen exactly once with its JSON fields:
ClientHellos dropped at a DTLS table cap (per cap and source address), a
request flood from one device, a route's circuit breaker open -> half-open
-> closed around a real loopback HTTP upstream, a configuration reload
refused, and a client deleted, re-keyed and updated with the CLI. No secret
in any line."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import aiocoap

from gateway.dtls.hostile import half_open_flood
from gateway.dtls.probe import DtlsProbe

from .conftest import (
    ACEGW,
    ProofClient,
    Served,
    add_devices,
    events,
    free_port,
    gateway_env,
    init_state,
    serving,
    until,
    value,
)

#: Seconds after which a silent half-open handshake may be displaced (a
#: quarter of dtls.handshake_timeout).
STALL = 1.5


def _no_secret(served: Served, secrets: list[bytes]) -> None:
    log = served.output()
    for secret in secrets:
        for shown in (secret.hex(), secret.hex().upper(), repr(secret)):
            assert shown not in log


@contextlib.asynccontextmanager
async def _gateway(tmp_path: Path, devices: int, scope: str, extra_config: str = "", **env: str):
    """``acegw serve`` from ``acegw init`` with ``devices`` registered; yields
    (served, devices, env, the --dir arguments)."""
    state = init_state(tmp_path / "state")
    fleet = add_devices(state, devices, "ev-", scope)
    if extra_config:
        with (state / "acegw.toml").open("a") as f:
            f.write(extra_config)
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    environ = gateway_env(udp, http, ACEGW_LOGGING_LEVEL="INFO", **env)
    d = ("--dir", str(state))
    async with serving([*ACEGW, "serve", *d], environ, tmp_path / "gw.log", udp, http) as served:
        await until(lambda: events(served, "gateway_started"), "start")
        yield served, fleet, environ, d


async def test_dtls_caps_reached_once_per_cap_with_the_source_address(tmp_path):
    """A table of 10 half-open handshakes, 5 per address: 20 cookie-completing
    ClientHellos from 127.0.0.10 leave 15 dropped at the address's share,
    then 20 from 127.0.0.11 fill the table (5 more) and 15 are dropped at the
    table cap: one ``dtls_cap_reached`` line each, naming cap and address; an
    honest device from 127.0.0.1 still gets its session once the flood's
    handshakes have stalled (it displaces one)."""
    async with _gateway(
        tmp_path,
        1,
        "/whoami:GET",
        ACEGW_DTLS_MAX_HANDSHAKES="10",
        ACEGW_DTLS_ADDRESS_HANDSHAKE_SHARE="0.5",
        ACEGW_DTLS_HANDSHAKE_TIMEOUT=str(STALL * 4),
    ) as (served, fleet, _, _d):
        for source in ("127.0.0.10", "127.0.0.11"):  # both within STALL seconds
            sent = await asyncio.to_thread(
                half_open_flood, served.target, source, sockets=20, rounds=1, duration=0.3
            )
            assert sent == 20, sent
        flooded = time.monotonic()
        caps = await until(
            lambda: (
                len(events(served, "dtls_cap_reached")) >= 2 and events(served, "dtls_cap_reached")
            ),
            "two caps",
        )
        samples = await served.scrape()
        dropped = {
            cap: value(samples, "acegw_dtls_datagrams_dropped_total", worker="0", reason=cap)
            for cap in ("address_handshake_cap", "handshake_cap")
        }
        assert dropped == {"address_handshake_cap": 15, "handshake_cap": 15}
        by_cap = {e["cap"]: e for e in caps}
        assert set(by_cap) == {"address_handshake_cap", "handshake_cap"}
        for cap, address in (
            ("address_handshake_cap", "127.0.0.10"),
            ("handshake_cap", "127.0.0.11"),
        ):
            line = by_cap[cap]
            assert line["level"] == "WARNING" and line["phase"] == "started"
            assert line["address"] == address and line["count"] == 15
            assert f"from {address}" in line["msg"]
        await asyncio.sleep(max(0.0, flooded + STALL + 0.2 - time.monotonic()))
        identity, psk = fleet[0]
        probe = DtlsProbe(served.target)
        try:
            device = await ProofClient.enroll(
                await probe.connect(identity.encode(), psk, timeout=10)
            )
            assert (await device.call()).code == aiocoap.CONTENT
        finally:
            await probe.close()
        assert await served.stop() == 0
    assert len(events(served, "dtls_cap_reached")) == 2
    _no_secret(served, [psk])
