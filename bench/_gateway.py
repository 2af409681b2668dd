"""The gateway under test for the authorization and proxy benchmarks: a state
directory with registered devices, the gateway in its own process, and the
device side (token, upload, Echo, Proof option) on
:class:`gateway.dtls.probe.DtlsProbe` sessions.

The gateway process (``python -m bench._gateway STATE``) is the real
:class:`gateway.runtime.gateway.Gateway` (registry, key store, authorization layer,
proxy routes from the configuration) plus two trivial 32-byte resources:
``/bench`` behind the authorization layer and ``/bench-open`` without it,
plus ``/bench-cpu``, the process's CPU time in nanoseconds (finer than the
10 ms ticks of /proc, so that short interleaved rounds can be measured). It
prints ``READY <port>`` and runs until its standard input is closed.

The device flow follows docs/design.md: ``POST /token`` (RFC 9200 §5.8),
``POST /authz-info`` (§5.10.1), then a first proofed request answered 4.01
with an Echo option (RFC 9175 §2.4), repeated with the Echo inside the proof.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource
from aiocoap.optiontypes import OpaqueOption

from bench.gateway_dtls import _cpu_seconds as cpu_seconds
from bench.gateway_dtls import _pool as pool
from bench.gateway_dtls import _rss as rss
from bench.gateway_dtls import _stop as stop
from gateway.dtls.probe import ProbeError, ProbeSession
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.keys import CoseKey, Ec2Key
from tokens.params import PROOF_OPTION
from tokens.proof import ProofedRequest, build_proof

__all__ = [
    "PAYLOAD",
    "Device",
    "cpu_seconds",
    "enroll",
    "median_ratio",
    "pool",
    "post",
    "prepare",
    "proofed",
    "rss",
    "server_cpu",
    "start_gateway",
    "start_ready",
    "stop",
    "with_proof",
]

#: Body of the trivial resources.
PAYLOAD = b"x" * 32
#: Rate limits lifted for load generation: every probe session comes from
#: 127.0.0.1 and sends far more than a device would.
LIFTED_LIMITS = {
    "ACEGW_LIMITS_DEVICE_BURST": "1000000",
    "ACEGW_LIMITS_DEVICE_RATE": "1000000",
    "ACEGW_LIMITS_ACE_BURST": "1000000",
    "ACEGW_LIMITS_ACE_RATE": "1000000",
    "ACEGW_LIMITS_MAX_IN_FLIGHT": "100000",
}


# --- the gateway process ------------------------------------------------------------------


def serve(state: Path) -> None:
    """Run the bench gateway on ``state`` until stdin is closed."""
    from gateway.coap.resource_tree import ResourceTree
    from gateway.config import load_config
    from gateway.resource_server.authorizer import UNPROTECTED
    from gateway.runtime.gateway import Gateway
    from gateway.runtime.serve import tune_gc

    class Trivial(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=PAYLOAD)

    class ProcessCpu(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(
                code=aiocoap.CONTENT, payload=str(time.process_time_ns()).encode()
            )

    class BenchGateway(Gateway):
        unprotected = UNPROTECTED | {("bench-open",), ("bench-cpu",)}

        def resource_tree(self) -> ResourceTree:
            site = super().resource_tree()
            site.add_resource(["bench"], Trivial())
            site.add_resource(["bench-open"], Trivial())
            site.add_resource(["bench-cpu"], ProcessCpu())
            return site

    async def main() -> None:
        logging.basicConfig(level=logging.ERROR)
        config = load_config(state / "acegw.toml")
        gateway = BenchGateway(config)
        await gateway.start()
        # as `acegw serve` does: measure the gateway as deployed
        tune_gc(config.server.gc_threshold)
        print(f"READY {gateway.address[1]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await gateway.stop()

    asyncio.run(main())


def prepare(
    state: Path, devices: int, scope: str = "/bench:GET", extra_config: str = ""
) -> list[tuple[str, bytes]]:
    """``acegw init`` a state dir (loopback, any port, no audit log), append
    ``extra_config`` (e.g. ``[[routes]]`` tables) to its configuration, lift
    the rate limits (environment, inherited by the gateway process) and
    register ``devices`` devices with ``scope``; returns ``(client_id, psk)``."""
    from gateway.config import load_config
    from gateway.registry.registry import Registry
    from gateway.runtime.cli import main as cli_main

    if cli_main(["init", "--dir", str(state)], out=io.StringIO()) != 0:
        raise RuntimeError("acegw init failed")
    config_path = state / "acegw.toml"
    text = config_path.read_text()
    text = text.replace('bind = "::"', 'bind = "127.0.0.1"').replace("port = 5684", "port = 0")
    text = text.replace('path = "stdout"', 'path = "off"')
    config_path.write_text(text + extra_config)
    os.environ.update(LIFTED_LIMITS)
    config = load_config(config_path)
    with Registry.from_config(config) as registry:
        return registry.bulk_add(devices, "bench-", scope)


async def start_gateway(state: Path) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``python -m bench._gateway STATE``, pinned (:func:`pin`); returns
    it and its port."""
    process, port = await start_ready(["-m", "bench._gateway", str(state)], "gateway", 60)
    pin(process.pid)
    return process, port


async def start_ready(
    args: list[str], what: str, timeout: float
) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``python ARGS``, a process that prints ``READY <port>`` and runs
    until its standard input is closed; returns it and the port. Stopped
    again if it does not say READY within ``timeout`` seconds."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
    except TimeoutError:
        line = b""
    if not line.startswith(b"READY"):
        await stop(process)
        raise RuntimeError(f"{what} did not start")
    return process, int(line.split()[1])


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median over rounds of ``numerator / denominator`` of the same round
    (rounds with a zero or a non-finite value, e.g. NaN when no request was
    done, are left out)."""
    pairs = [
        n / d
        for n, d in zip(numerators, denominators, strict=True)
        if d and math.isfinite(n) and math.isfinite(d)
    ]
    return statistics.median(pairs) if pairs else math.nan


def pin(server_pid: int) -> None:
    """Give the server process the last CPU and this process (the load
    generator) the others, when there are at least two: on a shared machine
    the scheduler otherwise moves both between cores and the figures drift
    with where they happen to run."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    os.sched_setaffinity(server_pid, {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))


# --- the devices --------------------------------------------------------------------------


@dataclass
class Device:
    """One enrolled device: its session, PoP key and last sequence number."""

    session: ProbeSession
    key: CoseKey
    piv: int = 0


async def server_cpu(session: ProbeSession) -> float:
    """The bench gateway's CPU time so far, in seconds (``GET /bench-cpu``)."""
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=("bench-cpu",))
    resp = await session.request(msg, timeout=30)
    if resp.code != aiocoap.CONTENT:
        raise ProbeError(f"/bench-cpu answered {resp.code}")
    return int(resp.payload) / 1e9


async def post(session: ProbeSession, path: str, payload: bytes) -> aiocoap.Message:
    msg = aiocoap.Message(code=aiocoap.POST, uri_path=(path,), payload=payload, content_format=19)
    return await session.request(msg, timeout=30)


def proofed(device: Device, path: tuple[str, ...] = ("bench",)) -> aiocoap.Message:
    """A GET of ``path`` with the device's next proof."""
    device.piv += 1
    return with_proof(device, device.piv, None, path)


def with_proof(
    device: Device, piv: int, echo: bytes | None, path: tuple[str, ...] = ("bench",)
) -> aiocoap.Message:
    """A GET of ``path`` carrying the Proof option (docs/design.md "Wire formats") for ``piv``."""
    proof = build_proof(device.key, ProofedRequest(code=1, path=path), piv, echo)
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=path)
    if echo is not None:
        msg.opt.echo = echo
    msg.opt.add_option(OpaqueOption(PROOF_OPTION, proof))
    return msg


async def enroll(
    session: ProbeSession, asymmetric: bool, path: tuple[str, ...] = ("bench",)
) -> Device:
    """Token, upload and Echo round on ``session``; the replay window is open
    afterwards (checked with a GET of ``path``)."""
    if asymmetric:
        key: CoseKey = Ec2Key.generate(os.urandom(8))
        request = TokenRequest(req_cnf=cnf_mod.CnfKey(key.public()).to_cbor())
    else:
        request = TokenRequest()
    resp = await post(session, "token", request.encode())
    if resp.code != aiocoap.CREATED:
        raise ProbeError(f"/token answered {resp.code}")
    tr = TokenResponse.decode(resp.payload)
    if not asymmetric:
        key = cnf_mod.decode(tr.cnf).key  # type: ignore[union-attr]
    resp = await post(session, "authz-info", tr.access_token)
    if resp.code != aiocoap.CREATED:
        raise ProbeError(f"/authz-info answered {resp.code}")
    device = Device(session, key)
    challenge = await session.request(proofed(device, path), timeout=30)
    if challenge.code != aiocoap.UNAUTHORIZED or challenge.opt.echo is None:
        raise ProbeError(f"expected an Echo challenge, got {challenge.code}")
    device.piv += 1
    ok = await session.request(with_proof(device, device.piv, challenge.opt.echo, path), timeout=30)
    if ok.code != aiocoap.CONTENT:
        raise ProbeError(f"Echo repeat answered {ok.code}")
    return device


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench._gateway STATE_DIR")
    serve(Path(sys.argv[1]))


async def send_all(
    targets: list[Device], messages: list[aiocoap.Message], concurrency: int, result: Any
) -> None:
    """Send ``messages[i]`` on ``targets[i]``'s session, ``concurrency`` in
    flight; a 2.05 counts in ``result.requests``, anything else (another
    code, a timeout, a closed session) in ``result.failures``."""

    async def one(index: int) -> None:
        try:
            resp = await targets[index].session.request(messages[index], timeout=30)
        except ProbeError:
            result.failures += 1
            return
        if resp.code == aiocoap.CONTENT:
            result.requests += 1
        else:
            result.failures += 1

    await pool(len(messages), concurrency, one)
