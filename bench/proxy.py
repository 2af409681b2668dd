"""Cost of proxying: authorized requests forwarded to an HTTP upstream next to
the same authorized requests answered by a trivial resource, in one run.

Three processes on loopback: the gateway (:mod:`bench._gateway`: the real
gateway with its registry, key store and authorization layer, plus a trivial
32-byte resource ``/bench``), a bare asyncio HTTP/1.1 upstream
(:mod:`bench._upstream`: the same 32 bytes as ``application/octet-stream``;
no framework, so that its CPU, taken from the same 2 cores, is small) and
this process, the load
generator (:class:`gateway.dtls.probe.DtlsProbe`). The gateway has one route,
``/up`` -> ``http://127.0.0.1:<port>/bench`` (GET, default pool and queue,
no cache, no upstream credential). ``--sessions`` devices each hold a DTLS
session and a symmetric PoP token whose scope covers both paths.

Two modes, every request carrying a COSE_Mac0 proof (built before the clock
starts):

- ``trivial``: GET /bench, answered inside the gateway;
- ``proxy``: GET /up, authorized, mapped to HTTP (RFC 8075), sent over a
  pooled keep-alive connection, the answer mapped back.

1. Peak: ``--rounds`` interleaved rounds of ``--requests`` requests per
   mode, ``--concurrency`` in flight (closed loop). Requests/s as seen by the
   generator, and CPU per request of the gateway (its own clock, ``GET
   /bench-cpu``) and of the upstream (/proc). The generator and the upstream
   are Python on the same 2 cores as the gateway, so the gateway's CPU per
   request is the fairer cost figure; both are printed. The machine is
   shared and its speed drifts within seconds: rounds are short, each pairs
   the two modes moments apart, and the ratios are medians over rounds of
   the paired ratios (the ratio of the totals is printed too).
2. Latency at half of peak: an open-loop load paced at 50% of the proxy
   mode's median round rate for ``--latency-seconds``, each request sent at
   its scheduled time whatever is still outstanding; latency counts from the
   scheduled time (no coordinated omission). The trivial mode then runs at the
   same absolute rate, so the difference is what proxying adds.

Target: proxying costs at most 35% of the trivial resource's throughput
(``proxy_ratio`` = proxy req/s / trivial req/s, median of paired rounds,
>= 0.65), printed PASS/MISS. The ratio also moves when the shared path
(DTLS, authorization) changes, so the gateway CPU proxying itself adds per
request (median of paired rounds) is printed next to it, and failed
requests are counted by the gateway's diagnostic (which limit answered).

3. aiocoap bare, in the same run: aiocoap's own DTLS server
   (``tinydtls_server``, as in :mod:`bench.gateway_dtls`) answering the same
   trivial GET without any authorization, its CPU per request from /proc;
   ``proxied_vs_aiocoap_bare`` = that CPU / our full authorized proxied
   request's CPU (gateway + upstream). 1.0 would mean a proxied, authorized
   request costs what aiocoap spends on a bare one.

Last line: ``RESULT proxy_req_per_s=<n> proxy_ratio=<x> p99_ms=<n>
proxied_vs_aiocoap_bare=<x>`` (p99 of the proxy mode at half of peak).

Usage: ``python -m bench.proxy [--tiny] [--sessions N] [--requests N]
[--rounds N] [--concurrency N] [--latency-seconds S] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap

from bench._gateway import (
    PAYLOAD,
    Device,
    cpu_seconds,
    enroll,
    median_ratio,
    pool,
    prepare,
    proofed,
    server_cpu,
    start_gateway,
    stop,
)
from bench._upstream import start_upstream
from bench.gateway_dtls import PSK as BARE_PSK
from bench.gateway_dtls import _cpu_seconds, _free_port_pair, _start, _stop, _warm_up
from gateway.dtls.probe import DtlsProbe, ProbeError

MODES = ("trivial", "proxy")
PATHS = {"trivial": ("bench",), "proxy": ("up",)}
#: Target: proxied throughput / trivial throughput.
TARGET_RATIO = 0.65
#: Share of the peak rate at which latency is measured.
LOAD_SHARE = 0.5
PHASE_LIMIT = 300.0


# --- the upstream process -------------------------------------------------------------------


def _route(port: int) -> str:
    return (
        "\n[[routes]]\n"
        'prefix = "/up"\n'
        f'upstream = "http://127.0.0.1:{port}/bench"\n'
        'methods = ["GET"]\n'
    )


# --- measurement --------------------------------------------------------------------------


@dataclass
class ModeResult:
    """One mode over all peak rounds, plus its paced latency run."""

    mode: str
    requests: int = 0
    failures: int = 0
    seconds: float = 0.0
    gateway_cpu: float = 0.0
    upstream_cpu: float = 0.0
    rounds: list[float] = field(default_factory=list)
    cpu_rounds: list[float] = field(default_factory=list)
    paced_rate: float = 0.0
    paced_sent: int = 0
    paced_failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    #: failed requests by answer (CoAP code, "no answer")
    answers: dict[str, int] = field(default_factory=dict)

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def gateway_cpu_us(self) -> float:
        return self.gateway_cpu / self.requests * 1e6 if self.requests else math.nan

    @property
    def upstream_cpu_us(self) -> float:
        return self.upstream_cpu / self.requests * 1e6 if self.requests else math.nan

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the paced latencies."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]


async def _request(device: Device, message: aiocoap.Message, result: ModeResult) -> bool:
    """Send one request; a failure is counted under its answer in ``result``."""
    try:
        resp = await device.session.request(message, timeout=30)
    except ProbeError:
        answer = "no answer"
    else:
        if resp.code == aiocoap.CONTENT and resp.payload == PAYLOAD:
            return True
        if resp.code == aiocoap.CONTENT:
            answer = "wrong payload"
        else:  # the code and the gateway's diagnostic: which limit answered
            answer = f"{resp.code.dotted} {bytes(resp.payload[:40]).decode('utf-8', 'replace')}"
    result.answers[answer] = result.answers.get(answer, 0) + 1
    return False


async def _peak_round(
    mode: str,
    devices: list[Device],
    count: int,
    concurrency: int,
    result: ModeResult,
    upstream_pid: int,
) -> None:
    targets = [devices[i % len(devices)] for i in range(count)]
    messages = [proofed(d, PATHS[mode]) for d in targets]  # built before the clock starts
    ok = 0

    async def one(index: int) -> None:
        nonlocal ok
        if await _request(targets[index], messages[index], result):
            ok += 1
        else:
            result.failures += 1

    gw0, up0 = await server_cpu(devices[0].session), cpu_seconds(upstream_pid)
    started = time.perf_counter()
    await asyncio.wait_for(pool(count, concurrency, one), PHASE_LIMIT)
    elapsed = time.perf_counter() - started
    used = await server_cpu(devices[0].session) - gw0
    result.gateway_cpu += used
    result.upstream_cpu += cpu_seconds(upstream_pid) - up0
    result.requests += ok
    result.seconds += elapsed
    result.rounds.append(ok / elapsed if elapsed else 0.0)
    result.cpu_rounds.append(used / ok * 1e6 if ok else math.nan)


async def _paced(
    mode: str, devices: list[Device], rate: float, seconds: float, result: ModeResult
) -> None:
    """Open loop: request ``i`` leaves at ``start + i / rate``; its latency
    counts from then (RFC-style load testing without coordinated omission)."""
    count = max(1, int(rate * seconds))
    targets = [devices[i % len(devices)] for i in range(count)]
    messages = [proofed(d, PATHS[mode]) for d in targets]
    # the prepared messages are many long-lived objects: out of the
    # generator's garbage collections, whose pauses would send requests in
    # bursts (an open loop catches up on late sends)
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    result.paced_rate = rate
    result.paced_sent = count

    async def one(index: int, scheduled: float) -> None:
        if await _request(targets[index], messages[index], result):
            result.latencies_ms.append((loop.time() - scheduled) * 1000)
        else:
            result.paced_failures += 1

    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + 0.05
    for index in range(count):
        scheduled = start + index / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), PHASE_LIMIT)
    finally:
        gc.unfreeze()


async def _aiocoap_bare(args: argparse.Namespace) -> list[float]:
    """aiocoap's server CPU per bare trivial GET (us), one figure per round:
    its own DTLS server, ``--sessions`` sessions, ``--requests`` GETs per
    round, ``--concurrency`` in flight."""
    port = _free_port_pair()
    process = await _start("aiocoap", port, args.sessions)
    target = ("127.0.0.1", port)
    probe = DtlsProbe(target)
    per_round: list[float] = []
    try:
        await _warm_up(target)
        sessions = [
            await probe.connect(b"bare-%06d" % i, BARE_PSK, timeout=20.0)
            for i in range(args.sessions)
        ]
        message = aiocoap.Message(code=aiocoap.GET)
        for _ in range(max(3, args.rounds // 2)):
            done = 0

            async def one(index: int) -> None:
                nonlocal done
                try:
                    await sessions[index % len(sessions)].request(message, timeout=20.0)
                    done += 1
                except ProbeError:
                    pass

            cpu = _cpu_seconds(process.pid)
            await asyncio.wait_for(pool(args.requests, args.concurrency, one), PHASE_LIMIT)
            if done:
                per_round.append((_cpu_seconds(process.pid) - cpu) / done * 1e6)
    finally:
        await probe.close()
        await _stop(process)
    return per_round


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    results = {mode: ModeResult(mode) for mode in MODES}
    bare = await _aiocoap_bare(args)
    upstream, up_port = await start_upstream("application/octet-stream", PAYLOAD)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "state"
            provisioned = prepare(state, args.sessions, "/bench:GET /up:GET", _route(up_port))
            gateway, port = await start_gateway(state)
            probe = DtlsProbe(("127.0.0.1", port))
            try:
                devices: list[Device] = []
                for client_id, psk in provisioned:
                    session = await probe.connect(client_id.encode(), psk, timeout=30)
                    devices.append(await enroll(session, False))

                warmup = ModeResult("warm-up")

                async def warm(index: int) -> None:
                    # unmeasured: opens the upstream pool's connections
                    await _request(devices[index], proofed(devices[index], PATHS["proxy"]), warmup)

                await pool(len(devices), args.concurrency, warm)
                for round_no in range(args.rounds):
                    order = MODES if round_no % 2 == 0 else MODES[::-1]
                    for mode in order:
                        await _peak_round(
                            mode,
                            devices,
                            args.requests,
                            args.concurrency,
                            results[mode],
                            upstream.pid,
                        )
                peak = statistics.median(results["proxy"].rounds)
                rate = max(1.0, peak * LOAD_SHARE)
                for mode in ("proxy", "trivial"):
                    await _paced(mode, devices, rate, args.latency_seconds, results[mode])
            finally:
                await probe.close()
                await stop(gateway)
    finally:
        await stop(upstream)
    return _report(results, args, bare)


def _round(x: float, digits: int = 3) -> float | None:
    return None if x != x else round(x, digits)


def _report(
    results: dict[str, ModeResult], args: argparse.Namespace, bare: list[float]
) -> dict[str, Any]:
    trivial, proxy = results["trivial"], results["proxy"]
    bare_us = statistics.median(bare) if bare else math.nan
    full_us = proxy.gateway_cpu_us + proxy.upstream_cpu_us
    vs_bare = bare_us / full_us if full_us else math.nan
    ratio = median_ratio(proxy.rounds, trivial.rounds)
    total_ratio = proxy.req_per_s / trivial.req_per_s if trivial.req_per_s else math.nan
    cpu_ratio = median_ratio(trivial.cpu_rounds, proxy.cpu_rounds)
    # what proxying itself adds to the gateway's CPU per request (paired rounds):
    # proxy_ratio also moves when the shared path (DTLS, authorization) changes
    paired = [p - t for p, t in zip(proxy.cpu_rounds, trivial.cpu_rounds, strict=False)]
    extra_us = statistics.median(x for x in paired if x == x) if paired else math.nan
    print(
        f"bench.proxy ({'tiny' if args.tiny else 'full'}): {args.sessions} sessions, "
        f"{args.rounds} interleaved rounds x {args.requests} requests per mode, "
        f"concurrency {args.concurrency}; then {args.latency_seconds:g} s per mode paced at "
        f"{LOAD_SHARE:.0%} of the proxy peak"
    )
    print(
        f"{'mode':8}{'req/s':>9}{'gw cpu us/req':>15}{'upstream us/req':>17}{'fail':>6}"
        f"{'paced/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'fail':>6}"
    )
    modes: dict[str, Any] = {}
    for mode, r in results.items():
        print(
            f"{mode:8}{r.req_per_s:9.0f}{r.gateway_cpu_us:15.0f}{r.upstream_cpu_us:17.0f}"
            f"{r.failures:6}{r.paced_rate:9.0f}{r.percentile_ms(50):8.2f}"
            f"{r.percentile_ms(99):8.2f}{r.paced_failures:6}"
        )
        modes[mode] = {
            "req_per_s": _round(r.req_per_s, 1),
            "rounds_req_per_s": [round(x, 1) for x in r.rounds],
            "gateway_cpu_us_per_req": _round(r.gateway_cpu_us, 1),
            "upstream_cpu_us_per_req": _round(r.upstream_cpu_us, 1),
            "failures": r.failures,
            "paced_req_per_s": _round(r.paced_rate, 1),
            "paced_requests": r.paced_sent,
            "paced_failures": r.paced_failures,
            "p50_ms": _round(r.percentile_ms(50)),
            "p99_ms": _round(r.percentile_ms(99)),
            "failed_answers": r.answers,
        }

    for mode, r in results.items():
        if r.answers:
            print(f"{mode} failures by answer: {r.answers}")
    print(
        "req/s: generator's view (Python on the same cores); gw cpu: per request, from the "
        "gateway's clock; upstream: from /proc (idle noise in the trivial mode); ratios: "
        f"median over rounds of paired ratios (ratio of the totals: {total_ratio:.2f})"
    )
    verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
    print(
        f"{verdict}  proxied / trivial throughput: {ratio:.2f} (target >= {TARGET_RATIO:.2f}, "
        f"i.e. proxying costs <= {1 - TARGET_RATIO:.0%}); gateway CPU per request "
        f"trivial / proxied: {cpu_ratio:.2f}; proxying adds {extra_us:.0f} us of gateway CPU "
        "per request (median of paired rounds)"
    )
    print(
        f"aiocoap bare trivial GET: {bare_us:.0f} us CPU per request (median of {len(bare)} "
        f"rounds); ours proxied and authorized: {full_us:.0f} us (gateway + upstream); "
        f"proxied_vs_aiocoap_bare {vs_bare:.2f}"
    )
    p99 = proxy.percentile_ms(99)
    out: dict[str, Any] = {
        "bench": "proxy",
        "mode": "tiny" if args.tiny else "full",
        "settings": {
            k: getattr(args, k)
            for k in ("sessions", "requests", "rounds", "concurrency", "latency_seconds")
        },
        "modes": modes,
        "proxy_ratio": _round(ratio),
        "proxy_ratio_of_totals": _round(total_ratio),
        "gateway_cpu_ratio": _round(cpu_ratio),
        "proxy_extra_gateway_cpu_us": _round(extra_us, 1),
        "aiocoap_bare_cpu_us_per_req": _round(bare_us, 1),
        "proxied_vs_aiocoap_bare": _round(vs_bare),
        "target": {"proxy_ratio_min": TARGET_RATIO, "verdict": verdict},
        "result": {
            "proxy_req_per_s": _round(proxy.req_per_s, 1),
            "proxy_ratio": _round(ratio),
            "p99_ms": _round(p99),
            "proxied_vs_aiocoap_bare": _round(vs_bare),
        },
    }
    print(
        f"RESULT proxy_req_per_s={proxy.req_per_s:.0f} proxy_ratio={ratio:.2f} p99_ms={p99:.2f} "
        f"proxied_vs_aiocoap_bare={vs_bare:.2f}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run (CI)")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--requests", type=int, default=750)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.tiny:
        args.sessions, args.requests, args.rounds, args.concurrency = 4, 40, 2, 4
        args.latency_seconds = 0.5
    if min(args.sessions, args.requests, args.rounds, args.concurrency) < 1:
        parser.error("--sessions, --requests, --rounds and --concurrency must be >= 1")
    out = asyncio.run(_run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    # peak-phase failures are bugs; failures of the paced phase are a measured
    # outcome (load shedding at half of peak, reported), fatal only in --tiny
    failures = sum(m["failures"] for m in out["modes"].values())
    if args.tiny:
        failures += sum(m["paced_failures"] for m in out["modes"].values())
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
