"""Soak: many simulated devices at a steady low rate for a long time, and
whether the gateway stays healthy: its memory over time (flat after the
warm-up), the error rate, and the drift of the request p99.

    python -m bench.soak [--duration 30m] [--devices 10000] [--rate 0.05]
                         [--ramp-up S] [--warmup S] [--interval S] [--tiny] [--json FILE]

Processes on loopback: ``acegw serve`` (the real service, one worker, a temp
state dir with ``--devices`` clients from ``acegw clients bulk-add``, audit
and metrics off, per-address limits lifted because every simulated device
sends from 127.0.0.1), the demo HTTP upstream (``examples.demo_upstream``)
behind the route ``/temp``, and the simulator (:class:`device_sim.worker.
Worker`, the engine of ``acegw-sim``) in this process. Every device has its
own UDP socket and DTLS session (so the soft ``RLIMIT_NOFILE`` is raised to
fit ``devices + 64``), gets a symmetric-PoP token, uploads it, and sends
Poisson-spaced requests at ``--rate`` per second, half ``GET /whoami``
(answered by the gateway) and half ``GET /temp`` (proxied), each with a Mac0
proof; tokens are renewed before they expire (``as.token_lifetime``).

Every ``--interval`` seconds one sample: the gateway's RSS and CPU share,
connected devices, requests ok / failed and the request p50 / p99 of that
interval (from the simulator's histogram, so exact to its 0.8 %).

Verdict after the warm-up (default: ramp-up + 300 s, since the CoAP layer
keeps each exchange for EXCHANGE_LIFETIME = 247 s, RFC 7252 §4.8.2, so
memory grows until then; at most half of the run):

- memory flat: RSS of the last samples <= the first ones after warm-up plus
  max(5 %, 5 MB) (the slope in MB/hour is printed too);
- error rate <= 0.1 % (failed / finished requests of the steady part);
- p99 drift: p99 of the last third of the steady part <= 1.5 x that of the
  first third (or within 5 ms).

Last line: ``RESULT soak_rss_growth_pct=<x> error_rate=<x> p99_drift=<x>
p99_ms=<n> rss_mb=<n>``. Exit status 0 when all three hold.

This is not a CI test: ``make soak DURATION=30m``. ``--tiny`` (a few seconds,
200 devices) only shows that the driver works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_sim.histogram import bucket_bounds
from device_sim.scenario import RequestSpec, Scenario, load_devices, parse_duration
from device_sim.stats import Slo, evaluate, merge_reports
from device_sim.worker import Worker, open_files_needed, raise_open_files

#: Memory may grow this much after the warm-up (fraction, and MB).
RSS_GROWTH_PCT = 5.0
RSS_GROWTH_MB = 5.0
#: Error rate limit of the steady part.
ERROR_RATE = 0.001
#: p99 drift limits: ratio, or absolute milliseconds.
P99_DRIFT = 1.5
P99_SLACK_MS = 5.0
#: Seconds the CoAP layer keeps an exchange (RFC 7252 §4.8.2) plus margin.
WARMUP_AFTER_RAMP = 300.0


# --- processes --------------------------------------------------------------------------------


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system, proc(5) stat 14+15) and RSS bytes."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return cpu, int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0.0, 0


def _wait_udp_bound(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("acegw serve exited early")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return  # the gateway holds the port
        time.sleep(0.2)
    raise SystemExit("acegw serve did not bind its port")


def _wait_tcp_open(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("demo upstream exited early")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise SystemExit("demo upstream did not open its port")


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- samples ----------------------------------------------------------------------------------


def window_percentile(before: dict[str, Any], after: dict[str, Any], q: float) -> float:
    """Percentile ``q`` (ms) of the values recorded between two snapshots of
    a cumulative histogram (``Histogram.to_dict`` form); NaN when none."""
    counts: dict[int, int] = {int(i): int(c) for i, c in after.get("buckets", [])}
    for i, c in before.get("buckets", []):
        counts[int(i)] = counts.get(int(i), 0) - int(c)
    total = sum(c for c in counts.values() if c > 0)
    if total == 0:
        return math.nan
    rank = max(1, min(total, int(q / 100.0 * total + 0.5)))
    seen = 0
    for index in sorted(counts):
        if counts[index] > 0:
            seen += counts[index]
            if seen >= rank:
                return bucket_bounds(index)[1] / 1000.0
    return math.nan  # pragma: no cover


@dataclass
class Sample:
    t: float
    rss_mb: float
    gateway_cpu: float
    connected: int
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float


@dataclass
class Sampler:
    """Turns the worker's once-a-second progress snapshots into samples
    every ``interval`` seconds."""

    gateway_pid: int
    interval: float
    samples: list[Sample] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    _last: dict[str, Any] = field(default_factory=lambda: {"request_histogram": {}, "counters": {}})
    _last_cpu: tuple[float, float] = (0.0, 0.0)
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._last_cpu = (time.monotonic(), _proc_stat(self.gateway_pid)[0])
        self._next = self.interval

    def __call__(self, snap: dict[str, Any]) -> None:
        if snap["elapsed"] + 1e-6 < self._next:
            return
        self._next += self.interval
        cpu, rss = _proc_stat(self.gateway_pid)
        now = time.monotonic()
        share = (cpu - self._last_cpu[1]) / max(1e-6, now - self._last_cpu[0])
        self._last_cpu = (now, cpu)
        before, after = self._last["request_histogram"], snap["request_histogram"]
        c0, c1 = self._last["counters"], snap["counters"]
        sample = Sample(
            t=round(snap["elapsed"], 1),
            rss_mb=round(rss / 2**20, 1),
            gateway_cpu=round(share, 3),
            connected=snap["connected"],
            ok=c1.get("requests_ok", 0) - c0.get("requests_ok", 0),
            failed=c1.get("requests_failed", 0) - c0.get("requests_failed", 0),
            p50_ms=window_percentile(before, after, 50),
            p99_ms=window_percentile(before, after, 99),
        )
        self.samples.append(sample)
        self.snapshots.append(snap)
        self._last = snap
        print(
            f"{sample.t:8.0f} {sample.rss_mb:8.1f} {sample.gateway_cpu:7.0%} "
            f"{sample.connected:9} {sample.ok / self.interval:7.0f} {sample.failed:7} "
            f"{sample.p50_ms:8.2f} {sample.p99_ms:8.2f}",
            flush=True,
        )


# --- verdict --------------------------------------------------------------------------------


def _merged_percentile(snaps: Sequence[dict[str, Any]], first: int, last: int, q: float) -> float:
    """Percentile over the samples ``first..last`` (inclusive)."""
    before = snaps[first - 1]["request_histogram"] if first > 0 else {}
    return window_percentile(before, snaps[last]["request_histogram"], q)


def verdict(sampler: Sampler, warmup: float) -> dict[str, Any]:
    """Memory flatness, error rate and p99 drift of the samples after
    ``warmup`` seconds (see the module doc)."""
    samples = sampler.samples
    steady = [i for i, s in enumerate(samples) if s.t > warmup]
    if len(steady) < 3:
        return {"ok": False, "reason": "fewer than 3 samples after the warm-up"}
    first, last = steady[0], steady[-1]
    k = max(1, len(steady) // 3)
    rss_start = statistics.median(s.rss_mb for s in samples[first : first + k])
    rss_end = statistics.median(s.rss_mb for s in samples[last - k + 1 : last + 1])
    growth_mb = rss_end - rss_start
    growth_pct = 100.0 * growth_mb / rss_start if rss_start else math.nan
    ts = [samples[i].t for i in steady]
    rs = [samples[i].rss_mb for i in steady]
    slope = statistics.linear_regression(ts, rs).slope * 3600 if len(set(ts)) > 1 else 0.0
    ok = sum(samples[i].ok for i in steady)
    failed = sum(samples[i].failed for i in steady)
    error_rate = failed / (ok + failed) if ok + failed else math.nan
    snaps = sampler.snapshots
    p99_first = _merged_percentile(snaps, first, first + k - 1, 99)
    p99_last = _merged_percentile(snaps, last - k + 1, last, 99)
    p99_all = _merged_percentile(snaps, first, last, 99)
    drift = p99_last / p99_first if p99_first else math.nan
    checks = {
        "memory_flat": growth_pct <= RSS_GROWTH_PCT or growth_mb <= RSS_GROWTH_MB,
        "error_rate": error_rate <= ERROR_RATE,
        "p99_drift": drift <= P99_DRIFT or (p99_last - p99_first) <= P99_SLACK_MS,
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "steady_from_s": samples[first].t,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_peak_mb": max(s.rss_mb for s in samples),
        "rss_growth_mb": round(growth_mb, 1),
        "rss_growth_pct": round(growth_pct, 2),
        "rss_slope_mb_per_h": round(slope, 2),
        "requests_ok": ok,
        "requests_failed": failed,
        "error_rate": error_rate,
        "p99_first_ms": p99_first,
        "p99_last_ms": p99_last,
        "p99_ms": p99_all,
        "p99_drift": round(drift, 3),
    }


# --- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    needed = open_files_needed(args.devices)
    soft, hard = raise_open_files(needed)
    if soft < needed:
        raise SystemExit(
            f"{args.devices} devices need {needed} open files; the limit is {soft} (hard {hard})"
        )
    acegw = str(Path(sys.executable).parent / "acegw")
    with tempfile.TemporaryDirectory(prefix="acegw-soak-") as tmp:
        state = Path(tmp) / "state"
        csv_path = Path(tmp) / "devices.csv"
        subprocess.run([acegw, "init", "--dir", str(state)], check=True, capture_output=True)
        subprocess.run(
            [acegw, "clients", "bulk-add", "--dir", str(state), "--count", str(args.devices),
             "--prefix", "soak", "--scope", "/whoami:GET /temp:GET", "--out", str(csv_path)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        up_port = _free_port(socket.SOCK_STREAM)
        with (state / "acegw.toml").open("a") as config:
            config.write(
                f'\n[[routes]]\nprefix = "/temp"\nupstream = "http://127.0.0.1:{up_port}/temp"\n'
                'methods = ["GET"]\n'
            )
        port = _free_port(socket.SOCK_DGRAM)
        env = {
            **os.environ,
            "ACEGW_SERVER_BIND": "127.0.0.1",
            "ACEGW_SERVER_PORT": str(port),
            "ACEGW_SERVER_WORKERS": "1",
            "ACEGW_METRICS_LISTEN": "off",
            "ACEGW_AUDIT_PATH": "off",
            "ACEGW_LOGGING_LEVEL": "WARNING",
            "ACEGW_LIMITS_ACE_RATE": "1000000",
            "ACEGW_LIMITS_ACE_BURST": "1000000",
            "ACEGW_LIMITS_LOCKOUT_FAILURES": "1000000",
            "ACEGW_DTLS_MAX_SESSIONS": str(max(args.devices * 2, 1000)),
        }
        upstream = subprocess.Popen(
            [sys.executable, "-m", "examples.demo_upstream", "--port", str(up_port)],
            stdout=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[1],  # examples/ is not installed
        )
        gateway: subprocess.Popen[bytes] | None = None
        try:
            _wait_tcp_open(up_port, upstream)
            gateway = subprocess.Popen([acegw, "serve", "--dir", str(state)], env=env)
            _wait_udp_bound(port, gateway)
            specs = load_devices(csv_path)
            scenario = Scenario(
                name="soak",
                port=port,
                duration=args.duration,
                ramp_up=args.ramp_up,
                rate=args.rate,
                requests=(RequestSpec(path="/whoami"), RequestSpec(path="/temp")),
            )
            sampler = Sampler(gateway.pid, args.interval)
            cpu0, rss0 = _proc_stat(gateway.pid)
            print(
                f"bench.soak: {args.devices} devices at {args.rate:g} requests/s each "
                f"({args.devices * args.rate:.0f}/s), ramp-up {args.ramp_up:.0f} s, "
                f"{args.duration:.0f} s, warm-up {args.warmup:.0f} s; open files {soft}; "
                f"gateway RSS at start {rss0 / 2**20:.1f} MB"
            )
            print(
                f"{'t_s':>8} {'rss_mb':>8} {'gw_cpu':>7} {'connected':>9} {'ok/s':>7} "
                f"{'failed':>7} {'p50_ms':>8} {'p99_ms':>8}"
            )
            worker = Worker(scenario, specs, [None] * len(specs), progress=sampler)
            report = asyncio.run(worker.run())
            cpu1, _ = _proc_stat(gateway.pid)
        finally:
            if gateway is not None:
                _end(gateway)
            _end(upstream)
    result = verdict(sampler, args.warmup)
    report = evaluate(merge_reports([report]), Slo())
    return {
        "bench": "soak",
        "mode": "tiny" if args.tiny else "full",
        "settings": {
            k: getattr(args, k)
            for k in ("devices", "rate", "duration", "ramp_up", "warmup", "interval")
        },
        "gateway_rss_start_mb": round(rss0 / 2**20, 1),
        "gateway_cpu_seconds": round(cpu1 - cpu0, 2),
        "samples": [vars(s) for s in sampler.samples],
        "verdict": result,
        "simulator": {
            "devices": report["devices"],
            "counters": report["counters"],
            "errors": report["errors"],
            "latency_ms": report["latency_ms"],
            "workers": report["simulator"]["workers"],
            "warnings": report["simulator"].get("warnings", []),
        },
    }


def _print_verdict(out: dict[str, Any]) -> bool:
    v = out["verdict"]
    sim = out["simulator"]
    for warning in sim["warnings"]:
        print(f"simulator: {warning}")
    if sim["errors"]:
        print(f"errors by kind (whole run): {sim['errors']}")
    if "checks" not in v:
        print(f"MISS  {v['reason']}")
        print("RESULT soak_rss_growth_pct=nan error_rate=nan p99_drift=nan p99_ms=nan rss_mb=nan")
        return False
    c = v["checks"]
    print(
        f"{'PASS' if c['memory_flat'] else 'MISS'}  gateway RSS after warm-up "
        f"{v['rss_start_mb']:.1f} -> {v['rss_end_mb']:.1f} MB ({v['rss_growth_pct']:+.1f} %, "
        f"{v['rss_slope_mb_per_h']:+.1f} MB/h; limit max({RSS_GROWTH_PCT:g} %, "
        f"{RSS_GROWTH_MB:g} MB)); peak {v['rss_peak_mb']:.1f} MB"
    )
    print(
        f"{'PASS' if c['error_rate'] else 'MISS'}  error rate {v['error_rate']:.5f} "
        f"({v['requests_failed']} of {v['requests_ok'] + v['requests_failed']}; "
        f"limit {ERROR_RATE:g})"
    )
    print(
        f"{'PASS' if c['p99_drift'] else 'MISS'}  p99 first third {v['p99_first_ms']:.2f} ms, "
        f"last third {v['p99_last_ms']:.2f} ms: drift {v['p99_drift']:.2f}x (limit "
        f"{P99_DRIFT:g}x or +{P99_SLACK_MS:g} ms); p99 of the steady part {v['p99_ms']:.2f} ms"
    )
    print(
        f"RESULT soak_rss_growth_pct={v['rss_growth_pct']:.2f} error_rate={v['error_rate']:.5f} "
        f"p99_drift={v['p99_drift']:.2f} p99_ms={v['p99_ms']:.2f} rss_mb={v['rss_end_mb']:.1f}"
    )
    return bool(v["ok"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="a few seconds, 200 devices")
    parser.add_argument("--duration", default="30m", help="e.g. 600, 10m, 2h (default 30m)")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=0.05, help="requests/s per device")
    parser.add_argument("--ramp-up", help="device starts spread over this (default devices/150)")
    parser.add_argument("--warmup", help="excluded from the verdict (default ramp-up + 300 s)")
    parser.add_argument("--interval", help="seconds between samples (default duration/60)")
    parser.add_argument("--json", metavar="FILE", help="also write the samples as JSON")
    args = parser.parse_args(argv)
    if args.tiny:
        args.devices, args.rate, args.duration = 200, 2.0, "6s"
        args.ramp_up, args.warmup, args.interval = "1s", "2s", "1s"
    args.duration = parse_duration(args.duration, "--duration")
    args.ramp_up = (
        parse_duration(args.ramp_up, "--ramp-up")
        if args.ramp_up
        else min(args.devices / 150, args.duration / 4)
    )
    args.warmup = (
        parse_duration(args.warmup, "--warmup")
        if args.warmup
        else min(args.ramp_up + WARMUP_AFTER_RAMP, args.duration / 2)
    )
    args.interval = (
        parse_duration(args.interval, "--interval")
        if args.interval
        else max(5.0, min(60.0, args.duration / 60))
    )
    if args.devices < 1 or args.rate <= 0 or args.duration <= 0 or args.interval <= 0:
        parser.error("--devices, --rate, --duration and --interval must be positive")
    out = run(args)
    passed = _print_verdict(out)
    if args.json:
        Path(args.json).write_text(json.dumps(_clean(out), indent=1) + "\n")
    if args.tiny:
        # seconds are too few for a memory verdict: the tiny run only has to work
        v = out["verdict"]
        return 0 if v.get("requests_ok") and v.get("error_rate", 1.0) <= ERROR_RATE else 1
    return 0 if passed else 1


def _clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


if __name__ == "__main__":
    raise SystemExit(main())
