"""Fixtures for the simulator's tests: a real gateway on 127.0.0.1 (temp
state dir, ACE limits raised unless a test asks for the defaults) with
registered devices, and the permissive fake gateway."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from device_sim.scenario import DeviceSpec
from gateway.config import load_config
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway


def make_devices(n: int, scope: str = "/whoami:GET", prefix: str = "sim") -> list[DeviceSpec]:
    return [
        DeviceSpec(i, f"{prefix}{i:04d}", os.urandom(8).hex().encode(), scope) for i in range(n)
    ]


def write_devices_csv(path: Path, devices: list[DeviceSpec]) -> Path:
    lines = ["id,psk_hex,scope"] + [f"{d.client_id},{d.psk.hex()},{d.scope}" for d in devices]
    path.write_text("\n".join(lines) + "\n")
    return path


def audit_records(gw: Gateway) -> list[dict[str, Any]]:
    text = (gw.config.base_dir / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line]


GatewayFactory = Callable[..., Any]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> GatewayFactory:
    """``async with gateway_factory(devices, lifetime=..) as gw``: a started
    gateway with ``devices`` registered."""

    @asynccontextmanager
    async def factory(
        devices: list[DeviceSpec],
        *,
        lifetime: int = 3600,
        env: dict[str, str] | None = None,
        routes: str = "",
    ) -> AsyncIterator[Gateway]:
        state = tmp_path / "state"
        assert cli_main(["init", "--dir", str(state)], out=io.StringIO()) == 0
        if routes:
            config = state / "acegw.toml"
            config.write_text(config.read_text() + routes)
        base = {
            "ACEGW_SERVER_BIND": "127.0.0.1",
            "ACEGW_SERVER_PORT": "0",
            "ACEGW_METRICS_LISTEN": "off",
            "ACEGW_AUDIT_PATH": str(state / "audit.log"),
            "ACEGW_LOGGING_LEVEL": "WARNING",
            "ACEGW_AS_TOKEN_LIFETIME": str(lifetime),
            "ACEGW_RS_LEEWAY": "0",
            "ACEGW_LIMITS_ACE_RATE": "100000",
            "ACEGW_LIMITS_ACE_BURST": "100000",
            **(env or {}),
        }
        gw = Gateway(load_config(state / "acegw.toml", env=base))
        for d in devices:
            gw.registry.add(d.client_id, psk=d.psk, scope=d.scope)
        await gw.start()
        try:
            yield gw
        finally:
            await gw.stop()
            gw.registry.close()

    return factory


SIM = [sys.executable, "-m", "device_sim.cli"]


@asynccontextmanager
async def sim_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``acegw-sim ARGS`` running (output piped), killed on the way out if
    it has not ended."""
    proc = await asyncio.create_subprocess_exec(
        *SIM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def run_sim(*args: str, timeout: float = 90) -> tuple[int, str]:
    """``acegw-sim ARGS`` to its end: exit status and output."""
    async with sim_process(*args) as proc:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def until_progress(proc: asyncio.subprocess.Process) -> bytes:
    """Read a running acegw-sim's output up to its first progress line (the
    run is under way) and return that line."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, "acegw-sim ended before its first progress line"
        if line.startswith(b"t="):
            return line
