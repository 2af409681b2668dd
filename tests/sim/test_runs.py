"""``acegw-sim run`` as a load tester uses it, against real gateways on
loopback: the verdict tells the truth (exit status and the cause named in
the report), defaults work against a default gateway, statistics equal
those of the raw samples, and a normal request refused by the upstream is
an error of normal traffic, not a finding."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import socket
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiohttp import web

from device_sim.histogram import Histogram
from device_sim.scenario import RequestSpec, Scenario, assign_roles, scenario_from_dict
from device_sim.stats import merge_reports
from device_sim.verdict import Thresholds, evaluate
from device_sim.worker import Worker
from gateway.runtime.cli import main as gateway_cli
from tests.ops.conftest import ACEGW, free_port, serving

from .conftest import make_devices, run_sim, sim_process, until_progress, write_devices_csv


def _causes(report: dict) -> str:
    return " | ".join(report["verdict"]["causes"])


async def test_gateway_down_fails_and_names_port_unreachable(tmp_path):
    csv_path = write_devices_csv(tmp_path / "d.csv", make_devices(200))
    out = tmp_path / "r.json"
    port = free_port()  # nothing listens there
    status, text = await run_sim(
        "--devices-csv", str(csv_path), "--target", f"127.0.0.1:{port}", "--duration", "3s",
        "--report", str(out), "-q",
    )  # fmt: skip
    assert status == 1, text
    report = json.loads(out.read_text())
    assert not report["verdict"]["pass"]
    assert report["diagnosis"]["handshake"]["top_error"] == "handshake_port_unreachable"
    assert "nothing listens on 127.0.0.1" in _causes(report)
    assert report["devices"]["normal_with_success"] == 0


async def test_every_wrong_psk_fails_and_names_the_psk(gateway_factory, tmp_path):
    devices = make_devices(200)
    wrong = [
        d.__class__(d.index, d.client_id, os.urandom(8).hex().encode(), d.scope) for d in devices
    ]
    csv_path = write_devices_csv(tmp_path / "d.csv", wrong)
    out = tmp_path / "r.json"
    async with gateway_factory(devices, env={"ACEGW_LIMITS_LOCKOUT_FAILURES": "10"}) as gw:
        status, text = await run_sim(
            "--devices-csv", str(csv_path), "--target", f"127.0.0.1:{gw.address[1]}",
            "--duration", "4s", "--report", str(out), "-q",
        )  # fmt: skip
    assert status == 1, text
    report = json.loads(out.read_text())
    handshake = report["diagnosis"]["handshake"]
    assert handshake["top_error"] == "handshake_wrong_psk" and handshake["ok"] == 0
    assert handshake["count"] >= 200
    assert "the gateway refused the key" in _causes(report)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_ctrl_c_interrupts_the_run_and_the_report_says_so(gateway_factory, tmp_path, sig):
    devices = make_devices(100)
    csv_path = write_devices_csv(tmp_path / "d.csv", devices)
    out = tmp_path / "r.json"
    async with gateway_factory(devices) as gw, sim_process(
        "--devices-csv", str(csv_path), "--target", f"127.0.0.1:{gw.address[1]}",
        "--duration", "60s", "--rate", "2", "--report", str(out),
    ) as proc:  # fmt: skip
        line = await until_progress(proc)
        assert b" served=" in line and b" top_error=" in line  # the live view
        proc.send_signal(sig)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, rest.decode()
    report = json.loads(out.read_text())
    name = signal.Signals(sig).name
    assert report["run"] == {"planned_duration": 60.0, "completed": False, "interrupted": name}
    assert report["duration"] < 30
    failed = [c for c in report["verdict"]["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["ran the whole duration"]
    assert f"interrupted ({name})" in _causes(report)
    assert "FAIL" in rest.decode()


def _workers_of(pid: int) -> list[int]:
    """The simulator's worker processes (children running a spawned worker,
    not multiprocessing's resource tracker)."""
    out = []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in map(int, children):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            out.append(child)
    return out


async def test_a_crashed_worker_interrupts_the_run_and_the_others_report(gateway_factory, tmp_path):
    devices = make_devices(60)
    csv_path = write_devices_csv(tmp_path / "d.csv", devices)
    out = tmp_path / "r.json"
    async with gateway_factory(devices) as gw, sim_process(
        "--devices-csv", str(csv_path), "--target", f"127.0.0.1:{gw.address[1]}",
        "--duration", "8s", "--rate", "2", "--workers", "2", "--report", str(out),
    ) as proc:  # fmt: skip
        await until_progress(proc)
        workers = _workers_of(proc.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, rest.decode()
    report = json.loads(out.read_text())
    assert report["run"]["completed"] is False
    assert "crashed (exit status -9)" in report["run"]["interrupted"]
    assert "crashed" in _causes(report)
    assert len(report["simulator"]["workers"]) == 1  # the other worker's report is kept
    assert report["devices"]["normal_with_success"] == 30


async def test_defaults_against_a_default_gateway_pass(tmp_path):
    """``acegw init`` defaults, ``bulk-add``, ``acegw serve``, then
    ``acegw-sim run --devices-csv --target`` with nothing else: PASS, with
    the source addresses it used in the report."""
    state = tmp_path / "st"
    csv_path = tmp_path / "devices.csv"
    quiet = open(os.devnull, "w")  # noqa: SIM115
    with quiet:
        assert gateway_cli(["init", "--dir", str(state)], out=quiet) == 0
        args = ["clients", "bulk-add", "--dir", str(state), "--count", "300", "--prefix", "dev",
                "--scope", "/whoami:GET", "--out", str(csv_path)]  # fmt: skip
        assert gateway_cli(args, out=quiet) == 0
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = {
        **os.environ,
        "ACEGW_SERVER_BIND": "127.0.0.1",  # tests stay on loopback; every limit is the default
        "ACEGW_SERVER_PORT": str(udp),
        "ACEGW_METRICS_LISTEN": f"127.0.0.1:{http}",
    }
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    async with serving([*ACEGW, "serve", "--dir", str(state)], env, tmp_path / "gw.log", udp, http):
        status, text = await run_sim(
            "run", "--devices-csv", str(csv_path), "--target", f"127.0.0.1:{udp}",
            "--duration", "8s", "--report", str(out), "--html", str(html),
        )  # fmt: skip
    report = json.loads(out.read_text())
    assert status == 0, (_causes(report), text[-2000:])
    assert report["verdict"]["pass"] and report["errors"] == {}
    d = report["devices"]
    assert d["normal_with_success"] == d["normal"] == 300
    assert report["sources"]["count"] == 300 and "default on loopback" in report["sources"]["mode"]
    assert "source addresses: 300" in text and "PASS" in text
    assert html.read_text().count("<svg") >= 5


async def test_per_route_and_per_interval_statistics_equal_the_raw_samples(
    gateway_factory, tmp_path
):
    devices = make_devices(40)
    csv_path = write_devices_csv(tmp_path / "d.csv", devices)
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        'duration = "4s"\nramp_up = "0.5s"\n[device]\nrate = 5.0\n'
        '[[requests]]\npath = "/whoami"\nweight = 3\n'
        '[[requests]]\npath = "/not-in-scope"\nweight = 1\n'
    )
    out, table, raw = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "raw.csv"
    async with gateway_factory(devices) as gw:
        status, text = await run_sim(
            "--devices-csv", str(csv_path), "--scenario", str(scenario),
            "--target", f"127.0.0.1:{gw.address[1]}", "--report", str(out), "--csv", str(table),
            "--samples", str(raw), "-q",
        )  # fmt: skip
    report = json.loads(out.read_text())
    assert status == 1 and "request_4.03" in _causes(report), text  # a quarter is out of scope
    with raw.open() as f:
        samples = list(csv.DictReader(f))
    assert len(samples) == sum(r["count"] for r in report["routes"].values()) > 300
    by_route: dict[str, list[dict[str, str]]] = defaultdict(list)
    for s in samples:
        by_route[s["route"]].append(s)
    assert set(by_route) == {"GET /whoami", "GET /not-in-scope"}
    for route, rows in by_route.items():
        stats = report["routes"][route]
        assert stats["count"] == len(rows)
        assert stats["codes"] == dict(sorted(Counter(r["outcome"] for r in rows).items()))
        h = Histogram()
        values = sorted(int(r["latency_us"]) for r in rows if r["latency_us"])
        for v in values:
            h.record(v)
        assert stats["latency_ms"] == h.summary()
        for q in ("p50", "p90", "p99", "p99.9"):  # and the HDR answer is the raw one, +-0.8 %
            rank = max(1, int(float(q[1:]) / 100 * len(values) + 0.5))
            exact = values[rank - 1] / 1000
            assert abs(stats["latency_ms"][q] - exact) <= max(0.001, exact / 128), (q, route)
    assert report["codes"]["request"] == dict(
        sorted(Counter(s["outcome"] for s in samples if s["latency_us"]).items())
    )
    with table.open() as f:
        intervals = list(csv.DictReader(f))
    ok_by_second: dict[int, list[int]] = defaultdict(list)
    failed_by_second: Counter[int] = Counter()
    for s in samples:
        second = int(float(s["epoch"]))
        if s["outcome"].startswith("2."):
            ok_by_second[second].append(int(s["latency_us"]))
        else:
            failed_by_second[second] += 1
    assert sum(int(r["requests_ok"]) for r in intervals) == sum(map(len, ok_by_second.values()))
    checked = 0
    for row in intervals:
        second = int(row["epoch"])
        assert int(row["requests_ok"]) == len(ok_by_second.get(second, []))
        assert int(row["requests_failed"]) == failed_by_second.get(second, 0)
        if not ok_by_second.get(second):
            assert row["p50_ms"] == ""
            continue
        h = Histogram()
        for v in ok_by_second[second]:
            h.record(v)
        for col, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p99_9_ms", 99.9)):
            assert float(row[col]) == h.percentile(q) / 1000, (second, col)
        assert float(row["max_ms"]) == h.max / 1000
        checked += 1
    assert checked >= 3


READINGS_ROUTE = (
    '\n[[routes]]\nprefix = "/readings"\nupstream = "{url}/readings"\nmethods = ["POST"]\n'
)


async def test_upstream_415_is_an_error_of_normal_traffic_and_a_json_template_is_accepted(
    gateway_factory,
):
    seen: list[dict] = []

    async def readings(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=415, text="JSON only")
        seen.append(await request.json())
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/readings", readings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    devices = make_devices(30, scope="/readings:POST")
    roles = assign_roles(30, {"abrupt_disconnect": 10}, 1)
    try:
        async with gateway_factory(devices, routes=READINGS_ROUTE.format(url=url)) as gw:
            port = gw.address[1]
            base = {"port": port, "duration": 4.0, "ramp_up": 0.3, "rate": 3.0,
                    "attacks": {"abrupt_disconnect": 10.0}, "attack_interval": 0.5,
                    "abrupt_pause": 0.2}  # fmt: skip
            raw = Scenario(
                **base, requests=(RequestSpec(method=2, path="/readings", payload_size=8),)
            )
            report_raw = evaluate(merge_reports([await Worker(raw, devices, roles).run()]))
            template = scenario_from_dict(
                {"requests": [{"method": "POST", "path": "/readings", "format": "json",
                               "body": {"device": "$device_id", "seq": "$seq",
                                        "celsius": "$random(10.0, 30.0)", "at": "$timestamp"}}]}
            ).requests  # fmt: skip
            templated = Scenario(**base, requests=template)
            report_json = evaluate(merge_reports([await Worker(templated, devices, roles).run()]))
    finally:
        await runner.cleanup()
    # bytes without a Content-Format: the upstream says 4.15; an error, not a finding
    errors = report_raw["errors"]
    assert sum(n for k, n in errors.items() if k.startswith("request_4.15")) > 0, errors
    assert report_raw["routes"]["POST /readings"]["codes"].get("4.15", 0) > 0
    assert (
        report_raw["findings"] == [] and report_raw["attacks"]["abrupt_disconnect"]["finding"] == 0
    )
    assert report_raw["attacks"]["abrupt_disconnect"]["expected"] > 0
    assert not report_raw["verdict"]["pass"]
    assert "Content-Format" in report_raw["diagnosis"]["request"]["hint"]
    # the same fleet with a JSON body template: every request accepted
    assert report_json["verdict"]["pass"], report_json["verdict"]["causes"]
    assert set(report_json["routes"]["POST /readings"]["codes"]) == {"2.01"}
    normal = {d.client_id for d, r in zip(devices, roles, strict=True) if r is None}
    mine = [b for b in seen if b["device"] in normal]
    assert {b["device"] for b in mine} == normal
    assert all(10.0 <= b["celsius"] <= 30.0 and b["at"] > 1_600_000_000 for b in mine)
    per_device: dict[str, list[int]] = defaultdict(list)
    for b in mine:
        per_device[b["device"]].append(b["seq"])
    assert all(seqs == sorted(seqs) and seqs[0] == 1 for seqs in per_device.values())


def test_an_unresolvable_target_is_a_one_line_usage_error(tmp_path, capsys):
    from device_sim.cli import main as sim_main

    csv_path = write_devices_csv(tmp_path / "d.csv", make_devices(2))
    assert sim_main(["--devices-csv", str(csv_path), "--target", "no-such-host.invalid:5684"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not resolve" in err


async def test_attacks_that_cannot_run_are_reported_not_exercised(gateway_factory):
    """Tokens that outlive the run, one source address for everyone: the kinds
    that need otherwise say why they did not run; --strict-attacks fails."""
    devices = make_devices(20)
    roles: list[str | None] = [None] * 20
    roles[3], roles[7], roles[11] = "expired_token_reuse", "lockout_abuse", "half_open_flood"
    async with gateway_factory(devices, lifetime=3600) as gw:
        sc = Scenario(
            port=gw.address[1],
            duration=2.0,
            ramp_up=0.2,
            rate=2.0,
            source_addresses=("127.0.0.1",),
            attacks={"expired_token_reuse": 5, "lockout_abuse": 5, "half_open_flood": 5},
        )
        report = evaluate(merge_reports([await Worker(sc, devices, roles).run()]))
    why = report["attacks_not_exercised"]
    assert set(why) == {"expired_token_reuse", "lockout_abuse", "half_open_flood"}
    assert why["expired_token_reuse"].startswith("tokens outlive the run (expires_in 3600 s")
    assert "source_addresses" in why["lockout_abuse"]
    assert "second source address" in why["half_open_flood"]
    assert report["verdict"]["pass"]  # reported, not failed by default
    strict = evaluate(report, Thresholds(strict_attacks=True))["verdict"]
    assert not strict["pass"] and "lockout_abuse not exercised" in strict["causes"][0]
