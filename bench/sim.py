"""The device simulator's own costs: its CoAP codec next to aiocoap's, and
how many devices one worker holds against a real gateway.

    python -m bench.sim [--tiny] [--devices N] [--rate R] [--duration S] [--json FILE]

1. Codec (interleaved batches, as the other benchmarks): encode a request with
   two Uri-Path options, a Content-Format and an 80-byte Proof option, and
   decode a small 2.05 response, with ``device_sim.coap`` and with
   ``aiocoap.Message``.
2. Scale: ``acegw serve`` in its own process (temp state dir, ``--devices``
   clients registered with ``bulk-add``, per-address limits raised because
   every simulated device sends from 127.0.0.1), and one simulator worker in
   this process driving all devices at ``--rate`` requests per second each:
   peak RSS, CPU share of a core, event-loop lag, requests/s, saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap.optiontypes import OpaqueOption

from device_sim import coap
from device_sim.scenario import Scenario, load_devices
from device_sim.stats import Slo, evaluate, merge_reports
from device_sim.worker import Worker, raise_open_files

from ._common import Candidate, fixed, fmt_ratio, fmt_us, measure, print_table

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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="smoke run of a few seconds")
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=0.1, help="requests/s per device")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.tiny:
        args.devices, args.rate, args.duration = 100, 1.0, 3.0
    print("bench.sim: codec microseconds per operation, best of interleaved batches")
    results: dict[str, Any] = {"codec": codec(3 if args.tiny else 9, 0.002 if args.tiny else 0.05)}
    print(f"\nscale: {args.devices} devices in one worker at {args.rate}/s each, "
          f"{args.duration:.0f} s against acegw serve")  # fmt: skip
    ramp = min(args.duration / 3, args.devices / 150)
    results["scale"] = scale(args.devices, args.rate, args.duration, ramp)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
