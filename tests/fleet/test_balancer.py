"""Two ``acegw serve`` instances on one PostgreSQL registry behind a real UDP
load balancer (nginx stream, ``hash $remote_addr$remote_port consistent``),
driven by ``acegw-sim`` with its default flags: the fleet passes and both
instances serve; then one instance is stopped mid-run and its devices go on
at the other with the token they hold (no new /token), none failing after
recovery."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import signal
import sys
import time
from pathlib import Path

from bench._fleet import balancing
from bench.fleet import FAILOVER_SCENARIO
from tests.fleet.conftest import Instance, cli, start_instances
from tests.ops.conftest import free_port, init_state, value

SIM = [sys.executable, "-m", "device_sim.cli"]
DEVICES = 1000
RUN2_S = 40
# Devices that notice a dead instance within seconds: the benchmark's
# failover scenario (a confirmable request given up after 1 + 2 + 4 s, then a
# new handshake; the default CoAP timers of RFC 7252 §4.8 take up to 93 s).
RECOVERY_BOUND_S = 30.0


async def _sim(*args: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *SIM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(errors="replace")


async def _count(instance: Instance, name: str, **labels: str) -> float:
    return value(await instance.served.scrape(), name, **labels)


async def _progress(instance: Instance) -> dict[str, float]:
    """Tokens issued, uploaded and written to the shared store, requests
    answered 2.05, so far."""
    samples = await instance.served.scrape()
    return {
        "issued": value(samples, "acegw_tokens_issued_total"),
        "uploaded": value(samples, "acegw_tokens_accepted_total", via="authz-info"),
        "answered": value(samples, "acegw_requests_total", code="2.05"),
        "written": value(samples, "acegw_shared_tokens_written_total"),
    }


async def test_a_fleet_through_the_balancer_and_one_instance_stopped(tmp_path: Path, pg_url):
    state = init_state(tmp_path / "state")
    csv_path = tmp_path / "devices.csv"
    async with contextlib.AsyncExitStack() as stack:
        a, b = await start_instances(stack, state, pg_url, tmp_path)
        cli(a.env, "clients", "bulk-add", "--dir", str(state), "--count", str(DEVICES),
            "--prefix", "dev-", "--scope", "/whoami:GET", "--out", str(csv_path))  # fmt: skip
        lb = await stack.enter_async_context(
            balancing([a.target, b.target], tmp_path / "nginx", port=free_port())
        )
        target = f"{lb.target[0]}:{lb.target[1]}"

        # 1. the whole fleet through the balancer, acegw-sim's defaults
        report_path = tmp_path / "run1.json"
        status, text = await _sim(
            "run", "--devices-csv", str(csv_path), "--target", target,
            "--duration", "8s", "--report", str(report_path),
        )  # fmt: skip
        report = json.loads(report_path.read_text())
        assert status == 0, (report["verdict"]["causes"], text[-2000:], lb.log()[-2000:])
        assert report["devices"]["normal_with_success"] == DEVICES
        issued = [await _count(i, "acegw_tokens_issued_total") for i in (a, b)]
        assert sum(issued) >= DEVICES
        assert min(issued) > DEVICES / 5, issued  # both instances served a share
        print({"tokens_issued_per_instance": issued})

        # 2. a second run; instance A is killed while it runs
        issued_a0 = await _count(a, "acegw_tokens_issued_total")
        before = [await _progress(i) for i in (a, b)]
        report_path, samples_path = tmp_path / "run2.json", tmp_path / "run2.csv"
        scenario = tmp_path / "failover.toml"
        scenario.write_text(FAILOVER_SCENARIO.format(seconds=RUN2_S))
        run_args = ["run", "--devices-csv", str(csv_path), "--target", target]
        run_args += ["--report", str(report_path)]
        run = asyncio.create_task(
            _sim(*run_args, "--scenario", str(scenario), "--samples", str(samples_path))
        )
        started = time.time()
        # every device holds its token (one /token each, shared between A and B)
        deadline = time.monotonic() + 30
        while True:
            issued = [await _count(i, "acegw_tokens_issued_total") for i in (a, b)]
            if sum(issued) >= 2 * DEVICES:
                break
            assert time.monotonic() < deadline and not run.done(), issued
            await asyncio.sleep(0.2)
        # requests flowing on both: every token uploaded and written to the
        # shared store (where B finds A's once A is gone), and each instance
        # has answered 2.05 at least once per device it issued a token to in
        # this run (the balancer keeps a device's session on one instance)
        deadline = time.monotonic() + 30
        while True:
            now = [await _progress(i) for i in (a, b)]
            grew = [{k: n[k] - b0[k] for k in n} for n, b0 in zip(now, before, strict=True)]
            if sum(g["uploaded"] for g in grew) >= DEVICES and all(
                g["answered"] >= g["issued"] and g["written"] >= g["uploaded"] for g in grew
            ):
                break
            assert time.monotonic() < deadline and not run.done(), grew
            await asyncio.sleep(0.2)
        on_a = issued[0] - issued_a0
        before_b = {
            "issued": await _count(b, "acegw_tokens_issued_total"),
            "uploaded": await _count(b, "acegw_tokens_accepted_total", via="authz-info"),
            "shared": await _count(b, "acegw_tokens_accepted_total", via="shared_store"),
        }
        stopped = time.time()
        await a.served.stop(signal.SIGKILL)
        status, text = await run
        report = json.loads(report_path.read_text())
        after_b = {
            "issued": await _count(b, "acegw_tokens_issued_total"),
            "uploaded": await _count(b, "acegw_tokens_accepted_total", via="authz-info"),
            "shared": await _count(b, "acegw_tokens_accepted_total", via="shared_store"),
        }
        moved = {k: after_b[k] - before_b[k] for k in after_b}
        echo_rounds = report["counters"].get("echo_challenges", 0) - DEVICES  # beyond the first
        failures: list[float] = []  # seconds after the stop
        refusals: list[str] = []  # answers other than 2.xx or a timeout
        served_after = 0
        served_at: list[float] = []
        with samples_path.open() as f:
            for row in csv.DictReader(f):
                at = float(row["epoch"])
                if at < stopped:
                    continue
                if row["outcome"].startswith("2."):
                    served_after += 1
                    served_at.append(at)
                else:
                    failures.append(at - stopped)
                    if not row["outcome"].startswith("timeout"):
                        refusals.append(row["outcome"])
        after_recovery = sum(1 for at in served_at if at > stopped + max(failures, default=0))
        print(
            {
                "devices_on_a": on_a,
                "extra_echo_rounds": echo_rounds,
                "at_b_after_stop": moved,
                "failed_after_stop": len(failures),
                "last_failure_s": round(max(failures, default=0.0), 2),
                "served_after_stop": served_after,
                "verdict": report["verdict"]["pass"],
                "started_s_before_stop": round(stopped - started, 1),
            }
        )
        assert on_a > DEVICES / 5
        assert moved["issued"] == 0  # no device asked for a new token
        assert moved["uploaded"] == 0  # nor uploaded its token again
        assert moved["shared"] == on_a  # every device of A continued at B with its token
        assert echo_rounds <= on_a  # at most one Echo round per moved device
        assert report["devices"]["normal_with_success"] == DEVICES
        # the interruption cost timeouts only (no refusal), and ended: after
        # the last one every device is served at its rate again
        assert failures and max(failures) < RECOVERY_BOUND_S, sorted(failures)[-5:]
        assert refusals == [], refusals[:5]
        recovered = stopped + max(failures)
        left = started + report["duration"] - recovered
        assert after_recovery >= 0.8 * DEVICES * (left - 1), (after_recovery, left)
