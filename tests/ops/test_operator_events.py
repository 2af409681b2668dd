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
import signal
import socket
import time
from pathlib import Path

import aiocoap
import pytest
from aiohttp import web

from gateway.dtls.hostile import half_open_flood
from gateway.dtls.probe import DtlsProbe

from .conftest import (
    ACEGW,
    ProofClient,
    Served,
    acegw,
    add_devices,
    events,
    free_port,
    gateway_env,
    init_state,
    refused_handshake,
    serving,
    until,
    value,
)

#: Seconds after which a silent half-open handshake may be displaced (a
#: quarter of dtls.handshake_timeout, 10 s by default).
STALL = 2.5


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
    ) as (served, fleet, _, _d):
        for source in ("127.0.0.10", "127.0.0.11"):  # both within STALL seconds
            sent = await asyncio.to_thread(
                half_open_flood, served.target, source, sockets=20, rounds=1, duration=0.5
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


async def test_a_request_flood_from_one_device_is_one_line(tmp_path):
    """A device limited to a burst of 5 requests keeps asking: its first 20
    4.29 answers make one ``request_flood`` line naming its address; nothing
    more while the window lasts."""
    async with _gateway(
        tmp_path,
        1,
        "/whoami:GET",
        ACEGW_LIMITS_DEVICE_RATE="0.001",
        ACEGW_LIMITS_DEVICE_BURST="5",
    ) as (served, fleet, _, _d):
        identity, psk = fleet[0]
        probe = DtlsProbe(served.target)
        try:
            device = await ProofClient.enroll(await probe.connect(identity.encode(), psk))
            codes = []
            while codes.count(aiocoap.TOO_MANY_REQUESTS) < 20:
                assert len(codes) < 60, codes
                codes.append((await device.call()).code)
            secrets = [psk, device.key.secret, device.token]  # type: ignore[attr-defined]
        finally:
            await probe.close()
        assert codes.count(aiocoap.CONTENT) >= 1
        (flood,) = await until(lambda: events(served, "request_flood"), "request flood")
        assert flood["level"] == "WARNING" and flood["phase"] == "started"
        assert flood["address"] == "127.0.0.1" and flood["count"] == 20
        assert flood["reasons"] == {"rate_limited": 20}
        assert flood["msg"].startswith("20 refused requests from 127.0.0.1 in ")
        assert await served.stop() == 0
    assert len(events(served, "request_flood")) == 1
    _no_secret(served, secrets)


async def test_upstream_breaker_opens_half_opens_and_closes_once_each(tmp_path):
    """A route to a loopback port nothing listens on, breaker after 2
    failures, 1 s reset: two requests open it, it half-opens by itself, an
    HTTP server is started on that port and the probe request closes it; one
    ``upstream_breaker`` line per transition with route, state and previous."""
    port = free_port(socket.SOCK_STREAM)
    route = (
        f'\n[[routes]]\nprefix = "/up"\nupstream = "http://127.0.0.1:{port}"\n'
        "breaker_failures = 2\nbreaker_reset = 1.0\ntimeout = 3.0\n"
    )
    async with _gateway(tmp_path, 1, "/up:GET", route) as (served, fleet, _, _d):
        identity, psk = fleet[0]
        probe = DtlsProbe(served.target)
        runner: web.AppRunner | None = None
        try:
            device = await ProofClient.enroll(await probe.connect(identity.encode(), psk))
            for _ in range(2):
                assert (await device.call(("up",))).code == aiocoap.BAD_GATEWAY

            def breaker(state: str) -> list:
                return [e for e in events(served, "upstream_breaker") if e["state"] == state]

            (opened,) = await until(lambda: breaker("open"), "open")
            assert (opened["route"], opened["previous"], opened["level"]) == (
                "/up",
                "closed",
                "WARNING",
            )
            (half,) = await until(lambda: breaker("half_open"), "half-open")
            assert (half["route"], half["previous"]) == ("/up", "open")

            async def hello(request: web.Request) -> web.Response:
                return web.json_response({"up": True})

            app = web.Application()
            app.router.add_get("/{tail:.*}", hello)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            assert (await device.call(("up",))).code == aiocoap.CONTENT
            (closed,) = await until(lambda: breaker("closed"), "closed")
            assert (closed["route"], closed["previous"]) == ("/up", "half_open")
            assert (await device.call(("up",))).code == aiocoap.CONTENT
        finally:
            await probe.close()
            if runner is not None:
                await runner.cleanup()
        assert await served.stop() == 0
    assert [e["state"] for e in events(served, "upstream_breaker")] == [
        "open",
        "half_open",
        "closed",
    ]
    _no_secret(served, [psk])


SECRET_HEADER = "Bearer upstream-secret-7f3a9c"


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_bad_configuration_is_refused_once_then_a_good_one_applied(tmp_path, workers):
    """SIGHUP with a route whose upstream is not http(s) (and a secret header
    value): one ``config_reload_refused`` naming the field, not the secret,
    from the process that read it (the supervisor with 2 workers); the file
    fixed, the next SIGHUP is applied (``config_reloaded`` per worker)."""
    async with _gateway(tmp_path, 1, "/whoami:GET", ACEGW_SERVER_WORKERS=str(workers)) as (
        served,
        fleet,
        _,
        d,
    ):
        if workers > 1:  # a worker takes SIGHUP once it said it is ready
            await until(
                lambda: all(f'"worker {i} ready"' in served.output() for i in range(workers)),
                "workers ready",
            )
        config = Path(d[1]) / "acegw.toml"
        good = config.read_text()
        config.write_text(
            good
            + '\n[[routes]]\nprefix = "/bad"\nupstream = "ftp://127.0.0.1/x"\n'
            + f'headers = {{ "Authorization" = "{SECRET_HEADER}" }}\n'
        )
        served.send(signal.SIGHUP)
        (refused,) = await until(lambda: events(served, "config_reload_refused"), "refused")
        assert refused["level"] == "ERROR" and "upstream" in refused["error"]
        assert refused["error"] in refused["msg"]
        config.write_text(good + '\n[[routes]]\nprefix = "/ok"\nupstream = "http://127.0.0.1:9"\n')
        served.send(signal.SIGHUP)
        applied = await until(
            lambda: (
                len(events(served, "config_reloaded")) == workers
                and events(served, "config_reloaded")
            ),
            "reloaded",
        )
        assert all(e["routes"] == 1 and "routes" in e["applied"] for e in applied)
        identity, psk = fleet[0]
        probe = DtlsProbe(served.target)
        try:  # still serving
            device = await ProofClient.enroll(await probe.connect(identity.encode(), psk))
            assert (await device.call()).code == aiocoap.CONTENT
        finally:
            await probe.close()
        assert await served.stop() == 0
    assert len(events(served, "config_reload_refused")) == 1
    assert len(events(served, "config_reloaded")) == workers
    assert "upstream-secret" not in served.output()
    _no_secret(served, [psk])


async def test_client_deleted_rekeyed_updated_with_the_cli_once_each(tmp_path):
    """Three devices each with a session and a token; ``clients update``
    (scope), ``clients rotate-psk`` and ``clients delete`` from the CLI: one
    event each naming the client, its sessions closed and tokens dropped; the
    re-keyed device gets in with its new PSK only, the deleted one not at
    all. Neither PSK is in the log."""
    async with _gateway(tmp_path, 3, "/whoami:GET") as (served, fleet, env, d):
        (upd, upd_psk), (rek, rek_psk), (dele, dele_psk) = fleet
        probe = DtlsProbe(served.target)
        secrets = [upd_psk, rek_psk, dele_psk]
        try:
            for identity, psk in fleet:
                device = await ProofClient.enroll(await probe.connect(identity.encode(), psk))
                assert (await device.call()).code == aiocoap.CONTENT
                secrets += [device.key.secret, device.token]  # type: ignore[attr-defined]

            rc, _, err = await acegw(env, "clients", "update", upd, "--scope", "/other:GET", *d)
            assert rc == 0, err
            (updated,) = await until(lambda: events(served, "client_updated"), "update")
            rc, _, err = await acegw(env, "clients", "rotate-psk", rek, "--psk-hex", "ab" * 16, *d)
            assert rc == 0, err
            new_psk = bytes.fromhex("ab" * 16)
            (rekeyed,) = await until(lambda: events(served, "client_rekeyed"), "rotate")
            rc, _, err = await acegw(env, "clients", "delete", dele, *d)
            assert rc == 0, err
            (deleted,) = await until(lambda: events(served, "client_deleted"), "delete")
            for event, client in ((updated, upd), (rekeyed, rek), (deleted, dele)):
                assert event["level"] == "INFO" and event["client_id"] == client, event
            # the update takes /whoami away: the token issued under it is cut off
            assert [(e["sessions_closed"], e["tokens_dropped"]) for e in (updated, rekeyed)] == [
                (1, 1),
                (1, 0),
            ]
            assert (deleted["sessions_closed"], deleted["tokens_dropped"]) == (1, 1)

            assert await refused_handshake(served.target, dele.encode(), dele_psk)
            assert await refused_handshake(served.target, rek.encode(), rek_psk)
            assert not await refused_handshake(served.target, rek.encode(), new_psk)
        finally:
            await probe.close()
        assert await served.stop() == 0
    for name in ("client_updated", "client_rekeyed", "client_deleted"):
        assert len(events(served, name)) == 1, name
    _no_secret(served, secrets)
