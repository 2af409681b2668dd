"""The device simulator's own costs: requests/s one worker generates against
libcoap's ``coap-server-openssl`` next to a minimal raw-DTLS load loop, memory
per simulated device, and its CoAP codec next to aiocoap's.

    python -m bench.sim [--tiny] [--sessions N] [--seconds S] [--rounds R]
                        [--gateway [--devices N] [--rate R] [--duration S]] [--json FILE]

1. Codec (interleaved batches, as the other benchmarks): encode a request with
   two Uri-Path options, a Content-Format and an 80-byte Proof option, and
   decode a small 2.05 response, with ``device_sim.coap`` and with
   ``aiocoap.Message``.
2. Load generation: ``coap-server-openssl`` (C, so the server is not the
   limit; PSK for every identity) on a free loopback port. Each round runs,
   each in a fresh process of its own (so CPU and RSS are its own):
   (a) one simulator worker (``device_sim.worker.Worker``, scenario
   ``auth = "none"``) with ``--sessions`` devices, each its own DTLS session,
   source port and (the default on loopback) source address, sending CON GET /
   back to back (NSTART 1 per device), with everything a run records switched
   on: per-route counts, codes and latency histograms, per-interval latency
   histograms and codes, the phase outcomes behind the verdict;
   (b) the raw loop: ``gateway.dtls.probe.DtlsProbe`` with the same sessions,
   each awaiting ``GET /`` in a loop. Both count requests answered in a
   window of ``--seconds`` that opens once every session is up. (a) and (b)
   alternate for ``--rounds`` rounds; medians are reported. Memory per
   simulated device: (worker RSS at the end of the window - RSS before the
   worker started) / devices.
3. ``--gateway`` only (it takes minutes): ``acegw serve`` in its own process
   (temp state dir, ``--devices`` clients registered with ``bulk-add``,
   per-address limits raised because every simulated device sends from
   127.0.0.1), and one simulator worker in this process driving all devices
   at ``--rate`` requests per second each: peak RSS, CPU share of a core,
   event-loop lag, requests/s, saturation.

Last stdout line: ``RESULT sim_req_per_s=<n> vs_raw=<x> kb_per_device=<n>``
(``vs_raw`` = simulator requests/s / raw loop requests/s); ``nan`` and exit
status 1 when ``coap-server-openssl`` is missing or a run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap.optiontypes import OpaqueOption

from device_sim import coap
from device_sim.scenario import DeviceSpec, RequestSpec, Scenario, load_devices
from device_sim.stats import merge_reports
from device_sim.verdict import Slo, evaluate
from device_sim.worker import Worker, _rss_bytes, raise_open_files
from gateway.dtls.probe import DtlsProbe, ProbeError, ProbeSession

from ._common import Candidate, fixed, fmt_ratio, fmt_us, measure, print_table
from .gateway_dtls import PSK, _free_port_pair, _warm_up

PROOF = b"\x84" + b"p" * 79
_REQUEST = coap.CoapMessage(
    0,
    1,
    1234,
    b"\x01\x02\x03\x04",
    [(11, b"sensors"), (11, b"temp"), (12, b"\x3c"), (65001, PROOF)],
)
_RESPONSE = coap.encode(
    coap.CoapMessage(2, 0x45, 1234, b"\x01\x02\x03\x04", [(12, b"\x32")], b"x" * 40)
)


def _aiocoap_encode(mid: int | None) -> bytes:
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=("sensors", "temp"))
    msg.mtype = aiocoap.CON
    msg.mid = mid
    msg.token = b"\x01\x02\x03\x04"
    msg.opt.content_format = 60
    msg.opt.add_option(OpaqueOption(65001, PROOF))
    return bytes(msg.encode())


def _aiocoap_decode(data: bytes) -> Any:
    msg = aiocoap.Message.decode(data)
    return msg.code, msg.opt.content_format, msg.payload


def _ours_encode(mid: int | None) -> bytes:
    if mid is None:
        raise ValueError("no message id")
    _REQUEST.mid = mid
    return coap.encode(_REQUEST)


def codec(rounds: int, batch_seconds: float) -> dict[str, Any]:
    bad = b"\x00" + _RESPONSE[1:]
    ops = [
        (
            "encode request",
            Candidate("ours", _ours_encode, fixed(1234), lambda: None),
            Candidate("aiocoap", _aiocoap_encode, fixed(1234), lambda: None),
        ),
        (
            "decode response",
            Candidate("ours", coap.decode, fixed(_RESPONSE), lambda: bad),
            Candidate("aiocoap", _aiocoap_decode, fixed(_RESPONSE), lambda: bad),
        ),
    ]
    measure([c for _, a, b in ops for c in (a, b)], rounds=rounds, batch_seconds=batch_seconds)
    rows, out = [], {}
    for label, ours, peer in ops:
        if ours.skipped or peer.skipped:
            raise SystemExit(f"{label}: {ours.skipped or peer.skipped}")
        ratio = peer.best_us / ours.best_us
        rows.append([label, fmt_us(ours.best_us), fmt_us(peer.best_us), fmt_ratio(ratio)])
        out[label] = {"ours_us": ours.best_us, "aiocoap_us": peer.best_us, "ratio": ratio}
    print_table(["operation", "ours_us", "aiocoap_us", "ratio"], rows)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_bound(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
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


def scale(devices: int, rate: float, duration: float, ramp_up: float) -> dict[str, Any]:
    acegw = [str(Path(sys.executable).parent / "acegw")]
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        csv_path = Path(tmp) / "devices.csv"
        subprocess.run([*acegw, "init", "--dir", str(state)], check=True, capture_output=True)
        subprocess.run(
            [*acegw, "clients", "bulk-add", "--dir", str(state), "--count", str(devices),
             "--prefix", "bench", "--scope", "/whoami:GET", "--out", str(csv_path)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        port = _free_port()
        env = {
            **os.environ,
            "ACEGW_SERVER_BIND": "127.0.0.1",
            "ACEGW_SERVER_PORT": str(port),
            "ACEGW_METRICS_LISTEN": "off",
            "ACEGW_AUDIT_PATH": "off",
            "ACEGW_LOGGING_LEVEL": "WARNING",
            "ACEGW_LIMITS_ACE_RATE": "1000000",
            "ACEGW_LIMITS_ACE_BURST": "1000000",
            "ACEGW_LIMITS_LOCKOUT_FAILURES": "1000000",
        }
        proc = subprocess.Popen([*acegw, "serve", "--dir", str(state)], env=env)
        try:
            _wait_bound(port, proc)
            specs = load_devices(csv_path)
            raise_open_files(devices + 64)
            sc = Scenario(port=port, duration=duration, ramp_up=ramp_up, rate=rate)
            gw_cpu0 = _cpu_seconds(proc.pid)
            report = asyncio.run(Worker(sc, specs, [None] * len(specs)).run())
            gw_cpu = _cpu_seconds(proc.pid) - gw_cpu0
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    report = evaluate(merge_reports([report]), Slo())
    w = report["simulator"]["workers"][0]
    d = report["devices"]
    out = {
        "devices_per_worker": devices,
        "rate_per_device": rate,
        "duration_s": report["duration"],
        "devices_with_success": d["normal_with_success"],
        "requests_ok_per_s": report["throughput"]["requests_ok_per_s"],
        "sim_rss_peak_mb": w["rss_peak_mb"],
        "sim_cpu_share": w["cpu_share"],
        "sim_loop_lag_p99_ms": w["loop_lag_p99_ms"],
        "sim_saturated_s": w["saturated_seconds"],
        "gateway_cpu_share": round(gw_cpu / max(1e-6, report["duration"]), 3),
        "request_p50_ms": report["latency_ms"]["request"]["p50"],
        "request_p99_ms": report["latency_ms"]["request"]["p99"],
        "errors": report["errors"],
    }
    print_table(["measure", "value"], [[k, str(v)] for k, v in out.items()])
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# --- load generation against coap-server-openssl ---------------------------------------

#: Slack for process start and handshakes before a child gives up.
_CHILD_SLACK = 30.0


async def _window(
    connected: Callable[[], bool], done: Callable[[], int], seconds: float
) -> dict[str, float]:
    """Wait until every session is up, then count answered requests for
    ``seconds``: requests/s and this process's CPU share in the window."""
    started = time.perf_counter()
    while not connected():
        if time.perf_counter() - started > _CHILD_SLACK:
            raise RuntimeError("sessions did not all connect")
        await asyncio.sleep(0.02)
    handshake_s = time.perf_counter() - started
    n0, t0, c0 = done(), time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    n1, t1, c1 = done(), time.perf_counter(), time.process_time()
    return {
        "req_per_s": (n1 - n0) / (t1 - t0),
        "requests": n1 - n0,
        "cpu_share": (c1 - c0) / (t1 - t0),
        "handshake_s": handshake_s,
    }


async def _child_sim(port: int, sessions: int, seconds: float) -> dict[str, Any]:
    """(a): one simulator worker, ``auth = "none"``, closed loop GET /."""
    specs = [DeviceSpec(i, f"sim-{i:05d}", PSK) for i in range(sessions)]
    sc = Scenario(
        port=port,
        duration=seconds + _CHILD_SLACK,
        auth="none",
        rate=1e6,  # the next request is due at once: NSTART 1 is the only limit
        requests=(RequestSpec(path="/"),),
    )
    worker = Worker(sc, specs, [None] * sessions)
    gc.collect()
    rss0 = _rss_bytes()
    run = asyncio.create_task(worker.run())
    try:
        out = await _window(
            lambda: len(worker.slots) == sessions and all(s.dev.session for s in worker.slots),
            lambda: worker.rec.counters["requests_ok"],
            seconds,
        )
        out["rss_before"] = rss0
        out["rss_connected"] = _rss_bytes()
        out["kb_per_device"] = (out["rss_connected"] - rss0) / sessions / 1024
    finally:
        worker.stop()
        report = await run
    out["failed"] = report["counters"].get("requests_failed", 0)
    return out


async def _child_raw(port: int, sessions: int, seconds: float) -> dict[str, Any]:
    """(b): the minimal raw-DTLS load loop, same sessions and concurrency."""
    probe = DtlsProbe(("127.0.0.1", port))
    live: list[ProbeSession] = []
    count = [0, 0]
    stop = asyncio.Event()

    async def session_loop(index: int) -> None:
        session = await probe.connect(b"raw-%05d" % index, PSK, timeout=_CHILD_SLACK)
        live.append(session)
        while not stop.is_set():
            try:
                await session.request(aiocoap.Message(code=aiocoap.GET), timeout=10.0)
                count[0] += 1
            except ProbeError:
                count[1] += 1

    tasks = [asyncio.create_task(session_loop(i)) for i in range(sessions)]
    try:
        out = await _window(lambda: len(live) == sessions, lambda: count[0], seconds)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await probe.close()
    out["failed"] = count[1]
    return out


def _child(kind: str, port: int, sessions: int, seconds: float) -> None:
    raise_open_files(sessions + 64)
    run = _child_sim if kind == "sim" else _child_raw
    print(json.dumps(asyncio.run(run(port, sessions, seconds))))


def _run_child(kind: str, port: int, sessions: int, seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.sim", "--child", kind, "--port", str(port),
           "--sessions", str(sessions), "--seconds", str(seconds)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 2 * _CHILD_SLACK)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} run failed: {proc.stderr.strip()[-400:]}")
    return dict(json.loads(lines[-1]))


def load(sessions: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Rounds of (a) simulator worker and (b) raw DTLS loop, interleaved."""
    if shutil.which("coap-server-openssl") is None:
        raise RuntimeError("coap-server-openssl not found (Debian package libcoap3-bin)")
    port = _free_port_pair()
    server = subprocess.Popen(
        ["coap-server-openssl", "-A", "127.0.0.1", "-p", str(port - 1), "-k", PSK.decode(),
         "-v", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"sim": [], "raw": []}
    try:
        asyncio.run(_warm_up(("127.0.0.1", port)))
        for r in range(rounds):
            for kind in ("sim", "raw") if r % 2 == 0 else ("raw", "sim"):
                cpu0 = _cpu_seconds(server.pid)
                res = _run_child(kind, port, sessions, seconds)
                res["server_cpu_s"] = round(_cpu_seconds(server.pid) - cpu0, 2)
                runs[kind].append(res)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    sim = statistics.median(x["req_per_s"] for x in runs["sim"])
    raw = statistics.median(x["req_per_s"] for x in runs["raw"])
    out = {
        "sessions": sessions,
        "seconds": seconds,
        "rounds": rounds,
        "sim_req_per_s": sim,
        "raw_req_per_s": raw,
        "vs_raw": sim / raw if raw else float("nan"),
        "kb_per_device": statistics.median(x["kb_per_device"] for x in runs["sim"]),
        "sim_cpu_share": statistics.median(x["cpu_share"] for x in runs["sim"]),
        "raw_cpu_share": statistics.median(x["cpu_share"] for x in runs["raw"]),
        "runs": runs,
    }
    rows = []
    for kind in ("sim", "raw"):
        for i, x in enumerate(runs[kind]):
            rows.append([kind, str(i + 1), f"{x['req_per_s']:.0f}", f"{x['cpu_share']:.2f}",
                         str(x["failed"]), f"{x['handshake_s']:.2f}",
                         f"{x['kb_per_device']:.1f}" if kind == "sim" else "-"])  # fmt: skip
    print_table(["loop", "round", "req_per_s", "cpu_share", "failed", "connect_s", "kb/device"],
                rows)  # fmt: skip
    return out


def _num(x: float, fmt: str) -> str:
    return "nan" if x != x else format(x, fmt)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="smoke run of a few seconds")
    parser.add_argument("--sessions", type=int, default=200, help="devices / DTLS sessions")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gateway", action="store_true", help="also the scale run vs acegw")
    parser.add_argument("--devices", type=int, default=5000, help="--gateway: devices")
    parser.add_argument("--rate", type=float, default=0.1, help="--gateway: requests/s/device")
    parser.add_argument("--duration", type=float, default=60.0, help="--gateway: seconds")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    parser.add_argument("--child", choices=("sim", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.port, args.sessions, args.seconds)
        return 0
    if args.tiny:
        args.sessions, args.seconds, args.rounds = 20, 1.0, 1
        args.devices, args.rate, args.duration = 100, 1.0, 3.0
    print("bench.sim: codec microseconds per operation, best of interleaved batches")
    results: dict[str, Any] = {"codec": codec(3 if args.tiny else 9, 0.002 if args.tiny else 0.05)}
    print(f"\nload: {args.sessions} DTLS sessions, closed loop GET / (NSTART 1 each) against "
          f"coap-server-openssl, {args.seconds:g} s windows, {args.rounds} round(s): one "
          "simulator worker (sim) vs DtlsProbe (raw), each in its own process")  # fmt: skip
    status = 0
    nan = float("nan")
    sim = vs_raw = kb = nan
    try:
        results["load"] = load(args.sessions, args.seconds, args.rounds)
        sim = results["load"]["sim_req_per_s"]
        vs_raw = results["load"]["vs_raw"]
        kb = results["load"]["kb_per_device"]
    except (RuntimeError, OSError, ProbeError, subprocess.TimeoutExpired) as exc:
        print(f"load: not measured: {exc}")
        results["load"] = {"error": str(exc)}
        status = 1
    if args.gateway:
        print(f"\nscale: {args.devices} devices in one worker at {args.rate}/s each, "
              f"{args.duration:.0f} s against acegw serve")  # fmt: skip
        ramp = min(args.duration / 3, args.devices / 150)
        results["scale"] = scale(args.devices, args.rate, args.duration, ramp)
    results["sim_req_per_s"] = None if sim != sim else round(sim, 1)
    results["vs_raw"] = None if vs_raw != vs_raw else round(vs_raw, 3)
    results["kb_per_device"] = None if kb != kb else round(kb, 2)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"RESULT sim_req_per_s={_num(sim, '.0f')} vs_raw={_num(vs_raw, '.2f')} "
          f"kb_per_device={_num(kb, '.1f')}")  # fmt: skip
    return status


if __name__ == "__main__":
    sys.exit(main())
