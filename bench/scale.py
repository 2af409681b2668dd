"""Scaling with worker processes: authorized, proxied throughput of ``acegw
serve`` with 1 worker and with 2 workers (SO_REUSEPORT, one supervisor), the
same load in one run.

Processes on loopback: two gateways started with ``acegw serve --workers 1``
and ``--workers 2`` on one state directory (:func:`bench._gateway.prepare`:
registry, keys, lifted rate limits), a minimal keep-alive HTTP upstream
(:mod:`bench._upstream`: a fixed 8-byte JSON answer, so the upstream costs
as little as possible), and this process, the load generator
(:class:`gateway.dtls.probe.DtlsProbe`, one UDP source port per session, so
the kernel spreads the sessions over the workers). Each gateway gets its own
``--sessions`` devices; each device holds a symmetric PoP token (token,
upload, Echo round by :func:`bench._gateway.enroll`) and sends ``GET /up``
with a COSE_Mac0 proof (built before the clock starts): authorized, mapped to
HTTP, forwarded over a pooled connection, mapped back.

``--rounds`` interleaved rounds (the order alternates) of ``--requests``
requests per configuration, ``--concurrency`` in flight (closed loop). For
each configuration: requests/s seen by the generator, and CPU seconds per
1,000 requests (user + system from /proc) of the gateway (supervisor and
workers together), of the generator and of the upstream. All share the 2
cores of this machine: the generator and the upstream take CPU the second
worker would need, so the speedup is bounded by the machine, not only by the
gateway.

Enough sessions and requests in flight (128 by default) keep both workers
busy: with fewer, each worker wakes up for fewer datagrams at a time and
spends more CPU per request on the event loop.

Targets: with 2 workers, CPU per request within 10% of 1 worker
(``cpu_per_req_ratio`` <= 1.10) and throughput at least 1.4x
(``workers2_speedup`` >= 1.4); printed PASS/MISS.

Last line: ``RESULT workers2_speedup=<x> cpu_per_req_ratio=<x>``.

Usage: ``python -m bench.scale [--tiny] [--sessions N] [--requests N]
[--rounds N] [--concurrency N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._gateway import Device, cpu_seconds, enroll, prepare, proofed, send_all, stop
from bench._upstream import start_upstream
from gateway.dtls.probe import DtlsProbe

CONFIGS = (1, 2)
PATH = ("up",)
ROUND_LIMIT = 300.0
_BODY = b'{"v":1}\n'


# --- the gateways -----------------------------------------------------------------------


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    workers: int
    process: asyncio.subprocess.Process
    port: int
    metrics_port: int

    def pids(self) -> list[int]:
        """The supervisor (or single process) and its workers."""
        pids = [self.process.pid]
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total


async def _start_gateway(state: Path, workers: int) -> Gateway:
    port, metrics_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    env = dict(os.environ)
    env.update(
        {
            "ACEGW_SERVER_PORT": str(port),
            "ACEGW_SERVER_WORKERS": str(workers),
            "ACEGW_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "ACEGW_LOGGING_LEVEL": "ERROR",
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from gateway.runtime.cli import main; sys.exit(main())",
        "serve",
        "--config",
        str(state / "acegw.toml"),
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
    )
    gateway = Gateway(workers, process, port, metrics_port)
    deadline = time.monotonic() + 60
    url = f"http://127.0.0.1:{metrics_port}/readyz"
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"gateway with {workers} worker(s) exited")
        try:
            ready = await asyncio.to_thread(_status, url) == 200
        except OSError:
            ready = False
        if ready and (workers == 1 or len(gateway.pids()) == workers + 1):
            return gateway
        if time.monotonic() > deadline:
            await _stop_gateway(gateway)
            raise RuntimeError(f"gateway with {workers} worker(s) not ready")
        await asyncio.sleep(0.1)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def _stop_gateway(gateway: Gateway) -> None:
    process = gateway.process
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


# --- measuring ---------------------------------------------------------------------------


@dataclass
class ConfigResult:
    workers: int
    requests: int = 0
    failures: int = 0
    seconds: float = 0.0
    gateway_cpu: float = 0.0
    generator_cpu: float = 0.0
    upstream_cpu: float = 0.0
    rounds: list[float] = field(default_factory=list)
    sessions_per_worker: dict[str, float] = field(default_factory=dict)

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def per_1000(self, cpu: float) -> float:
        return cpu / self.requests * 1000 if self.requests else math.nan


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def _round(
    gateway: Gateway,
    devices: list[Device],
    count: int,
    concurrency: int,
    result: ConfigResult,
    upstream_pid: int,
) -> None:
    targets = [devices[i % len(devices)] for i in range(count)]
    messages = [proofed(d, PATH) for d in targets]  # built before the clock starts

    before = result.requests
    gw0, gen0, up0 = gateway.cpu(), _own_cpu(), cpu_seconds(upstream_pid)
    started = time.perf_counter()
    await asyncio.wait_for(send_all(targets, messages, concurrency, result), ROUND_LIMIT)
    elapsed = time.perf_counter() - started
    result.seconds += elapsed
    result.gateway_cpu += gateway.cpu() - gw0
    result.generator_cpu += _own_cpu() - gen0
    result.upstream_cpu += cpu_seconds(upstream_pid) - up0
    result.rounds.append((result.requests - before) / elapsed if elapsed else 0.0)


def _sessions_per_worker(gateway: Gateway) -> dict[str, float]:
    from gateway.operations.metrics import parse

    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        samples = parse(resp.read().decode())
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        lb = dict(labels)
        if name == "acegw_dtls_sessions" and lb.get("state") == "established":
            out[lb["worker"]] = value
    return out


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    results = {w: ConfigResult(w) for w in CONFIGS}
    upstream, up_port = await start_upstream("application/json", _BODY)
    gateways: dict[int, Gateway] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "state"
            route = f'\n[[routes]]\nprefix = "/up"\nupstream = "http://127.0.0.1:{up_port}/b"\n'
            route += f"pool_size = {max(16, args.concurrency)}\n"
            provisioned = prepare(state, args.sessions * len(CONFIGS), "/up:GET", route)
            for w in CONFIGS:
                gateways[w] = await _start_gateway(state, w)
            probes = {w: DtlsProbe(("127.0.0.1", g.port)) for w, g in gateways.items()}
            try:
                fleets: dict[int, list[Device]] = {}
                for n, w in enumerate(CONFIGS):
                    mine = provisioned[n * args.sessions : (n + 1) * args.sessions]
                    fleets[w] = []
                    for client_id, psk in mine:
                        session = await probes[w].connect(client_id.encode(), psk, timeout=30)
                        fleets[w].append(await enroll(session, False, PATH))
                    results[w].sessions_per_worker = await asyncio.to_thread(
                        _sessions_per_worker, gateways[w]
                    )
                    warm = ConfigResult(w)  # unmeasured: opens the upstream connections
                    await _round(
                        gateways[w],
                        fleets[w],
                        args.concurrency,
                        args.concurrency,
                        warm,
                        upstream.pid,
                    )
                for round_no in range(args.rounds):
                    order = CONFIGS if round_no % 2 == 0 else CONFIGS[::-1]
                    for w in order:
                        await _round(
                            gateways[w],
                            fleets[w],
                            args.requests,
                            args.concurrency,
                            results[w],
                            upstream.pid,
                        )
            finally:
                for probe in probes.values():
                    await probe.close()
                for g in gateways.values():
                    await _stop_gateway(g)
                gateways.clear()
    finally:
        for g in gateways.values():
            await _stop_gateway(g)
        await stop(upstream)
    return _report(results, args)


def _num(x: float, digits: int = 3) -> float | None:
    return None if x != x else round(x, digits)


def _report(results: dict[int, ConfigResult], args: argparse.Namespace) -> dict[str, Any]:
    one, two = results[1], results[2]
    speedup = two.req_per_s / one.req_per_s if one.req_per_s else math.nan
    cpu1, cpu2 = one.per_1000(one.gateway_cpu), two.per_1000(two.gateway_cpu)
    # NaN when no CPU tick was seen (--tiny)
    cpu_ratio = cpu2 / cpu1 if cpu1 and cpu1 == cpu1 and cpu2 == cpu2 else math.nan
    print(
        f"bench.scale ({'tiny' if args.tiny else 'full'}): {args.sessions} sessions per "
        f"configuration, {args.rounds} rounds x {args.requests} proxied requests, "
        f"concurrency {args.concurrency}, {os.cpu_count()} CPUs shared by all processes"
    )
    print(
        f"{'workers':8}{'req/s':>9}{'gw cpu s/1k':>13}{'gen cpu s/1k':>14}"
        f"{'upstr s/1k':>12}{'gw cores':>10}{'sessions/worker':>17}{'fail':>6}"
    )
    out: dict[str, Any] = {"configs": {}}
    for w, r in results.items():
        cores = r.gateway_cpu / r.seconds if r.seconds else math.nan
        spread = "/".join(f"{v:.0f}" for _, v in sorted(r.sessions_per_worker.items()))
        print(
            f"{w:<8}{r.req_per_s:9.0f}{r.per_1000(r.gateway_cpu):13.3f}"
            f"{r.per_1000(r.generator_cpu):14.3f}{r.per_1000(r.upstream_cpu):12.3f}"
            f"{cores:10.2f}{spread:>17}{r.failures:6}"
        )
        out["configs"][str(w)] = {
            "req_per_s": _num(r.req_per_s, 1),
            "gateway_cpu_s_per_1000": _num(r.per_1000(r.gateway_cpu)),
            "generator_cpu_s_per_1000": _num(r.per_1000(r.generator_cpu)),
            "upstream_cpu_s_per_1000": _num(r.per_1000(r.upstream_cpu)),
            "gateway_cores_used": _num(cores, 2),
            "sessions_per_worker": r.sessions_per_worker,
            "rounds_req_per_s": [round(x, 1) for x in r.rounds],
            "failures": r.failures,
        }
    for label, ok, text in (
        ("speedup", speedup >= 1.4, f"2 workers / 1 worker throughput: {speedup:.2f} (>= 1.4)"),
        ("cpu", cpu_ratio <= 1.10, f"gateway CPU per request, 2 / 1: {cpu_ratio:.2f} (<= 1.10)"),
    ):
        print(f"{'PASS' if ok else 'MISS'}  {text}")
        out[f"target_{label}"] = ok
    out["workers2_speedup"] = _num(speedup)
    out["cpu_per_req_ratio"] = _num(cpu_ratio)
    out["result"] = f"RESULT workers2_speedup={speedup:.2f} cpu_per_req_ratio={cpu_ratio:.2f}"
    print(out["result"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run (CI)")
    parser.add_argument("--sessions", type=int, default=128)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.sessions, args.requests, args.rounds, args.concurrency = 8, 200, 2, 8
    out = asyncio.run(_run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    failures = sum(c["failures"] for c in out["configs"].values())
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
