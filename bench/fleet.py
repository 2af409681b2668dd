"""A fleet behind a UDP load balancer: requests/s through nginx with 1 and
with 2 ``acegw serve`` instances on one PostgreSQL registry, the moved
devices' recovery when one instance is stopped, and how fast a token
revocation made at the database reaches an instance.

    python -m bench.fleet [--tiny] [--devices N] [--seconds S] [--rate R]
                          [--rounds N] [--sim-workers N] [--probes N]
                          [--revokes N] [--idle-clients N]
                          [--failover-seconds S] [--json FILE]

Real parts on loopback: a throwaway PostgreSQL cluster
(:func:`bench._fleet.running_cluster`), one ``acegw init`` directory whose
registry is a database in it, two ``acegw serve`` instances (one worker
each, 127.0.0.1 and 127.0.0.2, per-address limits lifted since every device
reaches them from the balancer's address), nginx stream in front
(:func:`bench._fleet.balancing`, ``hash $remote_addr$remote_port
consistent``), ``--devices`` clients from ``acegw clients bulk-add``.

1. Throughput: ``acegw-sim run`` (``--sim-workers`` processes) with all
   devices at ``--rate`` requests/s each for ``--seconds`` through a
   balancer in front of instance A alone, then through one in front of A
   and B (both instances run throughout);
   ``--rounds`` rounds, the order alternating; the figure is the report's
   ``throughput.requests_ok_per_s`` (token, upload and Echo round included),
   median over rounds. Everything shares the 2 cores of this machine: the
   simulator and nginx take CPU a second instance would need.
2. Revocation: ``--revokes`` devices on probe sessions
   (:class:`gateway.dtls.probe.DtlsProbe`) each hold a token and send a
   proofed ``GET /whoami`` every 5 ms through the balancer; ``acegw tokens
   revoke <cti>`` runs in this process against the database; the figure is
   the time from the command's return (the revocation committed) to the
   first refused request, median over the devices.
3. Memory: the resident size of each instance (its processes' VmRSS
   summed) after start, after ``--idle-clients`` more clients are
   registered (bulk-added at the database; the figure waits until each
   instance completes a handshake as the last of them, so its registry view
   holds them all): bytes per registered client; and its peak during the
   first one-instance throughput run over the baseline before it, per
   device served: bytes per connected device (DTLS session, held token, replay window, limiter).
   Python rarely returns freed memory, so both are growth figures.
4. Failover: the simulator runs the whole fleet at 1 request/s per device
   with the CoAP timers of ``tests/fleet/test_balancer.py`` while
   ``--probes`` probe devices, each on its own source port, send a proofed
   request every 0.25 s (a request unanswered after 3 s is given up; the
   device then does a new handshake from the same port, as a device behind
   the same NAT binding does (a new port if that one was taken meanwhile),
   and goes on with the token it holds, repeating
   once with an Echo). Instance A is killed (SIGKILL) mid-run. The simulator's
   report has no per-device timing, so the recovery figure comes from the
   probes: for each probe that failed after the stop (a moved device), the
   time from the stop to its first 2.05 after it; p50 and p99 over them. The
   simulator's raw samples give, for its fleet, the last failure after the
   stop.

Last line: ``RESULT fleet_rps_1=<n> fleet_rps_2=<n> fleet_speedup=<x>
fleet_failover_p50_s=<x> fleet_failover_p99_s=<x>
fleet_revoke_propagation_ms=<n> fleet_kb_per_client=<x> fleet_kb_per_device=<x>``
(``fleet_speedup`` = 2 instances / 1); ``nan`` and exit
status 1 when a part did not work (the cause is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import math
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap.optiontypes import OpaqueOption

from bench._fleet import balancing, running_cluster
from gateway.dtls.probe import DtlsProbe, ProbeError, ProbeSession
from gateway.runtime.cli import main as cli_main
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.keys import CoseKey
from tokens.params import PROOF_OPTION
from tokens.proof import ProofedRequest, build_proof

HOSTS = ("127.0.0.1", "127.0.0.2")
SCOPE = "/whoami:GET"
PATH = ("whoami",)
SIM = [sys.executable, "-m", "device_sim.cli"]
ACEGW = [sys.executable, "-c", "import sys; from gateway.runtime.cli import main; sys.exit(main())"]
ROOT = Path(__file__).resolve().parents[1]
#: The failover run's CoAP timers: a request given up after 1 + 2 + 4 s.
FAILOVER_SCENARIO = """
name = "failover"
duration = "{seconds}s"
ramp_up = "2s"
[device]
rate = 1.0
[coap]
ack_timeout = 1.0
max_retransmit = 2
"""
PROBE_INTERVAL_S = 0.25
#: RSS growth below this is not turned into a per-client or per-device
#: figure (bytes): pages and the allocator's free space make it meaningless.
RSS_RESOLUTION = 64 * 1024
PROBE_GIVE_UP_S = 3.0
REVOKE_POLL_S = 0.005


class FleetBenchError(RuntimeError):
    """A part of the run did not work; the message names it."""


# --- the instances --------------------------------------------------------------------------


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    """One ``acegw serve`` of the fleet."""

    name: str
    process: asyncio.subprocess.Process
    target: tuple[str, int]
    metrics: int
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def growth_per(grown: float, count: int) -> float:
    """RSS growth per item (bytes); NaN when nothing was counted or the
    growth is below :data:`RSS_RESOLUTION` (a negative one included)."""
    if count <= 0 or grown < RSS_RESOLUTION:
        return math.nan
    return grown / count


def rss_bytes(pid: int) -> int:
    """Resident size of process group ``pid`` (the instance's supervisor and
    workers): VmRSS summed over the processes whose group it is."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


def database_connections(url: str) -> int:
    """Connections to the registry database now, this query's own left out
    (both instances' pools, LISTEN connections and writer threads)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process group ``pid`` so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pid:
                total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total / ticks


@contextlib.asynccontextmanager
async def serving(
    name: str, host: str, state: Path, url: str, log: Path
) -> AsyncIterator[Instance]:
    """``acegw serve`` on ``host`` (one worker, the PostgreSQL registry at
    ``url``); yields once /readyz answers 200; stopped on exit."""
    udp, http = _free_port(), _free_port(socket.SOCK_STREAM)
    env = dict(os.environ)
    env.update(
        {
            "ACEGW_REGISTRY_URL": url,
            "ACEGW_SERVER_BIND": host,
            "ACEGW_SERVER_PORT": str(udp),
            "ACEGW_SERVER_WORKERS": "1",
            "ACEGW_METRICS_LISTEN": f"127.0.0.1:{http}",
            "ACEGW_AUDIT_PATH": "off",
            "ACEGW_LOGGING_LEVEL": "WARNING",
            "ACEGW_LIMITS_ACE_RATE": "100000",
            "ACEGW_LIMITS_ACE_BURST": "100000",
            "ACEGW_LIMITS_DEVICE_RATE": "100000",
            "ACEGW_LIMITS_DEVICE_BURST": "100000",
            "ACEGW_LIMITS_LOCKOUT_FAILURES": "100000",
        }
    )
    with open(log, "wb") as out:
        process = await asyncio.create_subprocess_exec(
            *ACEGW, "serve", "--dir", str(state),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            env=env, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    instance = Instance(name, process, (host, udp), http, log)
    try:
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(_ready, f"http://127.0.0.1:{http}/readyz"):
            if process.returncode is not None or time.monotonic() > deadline:
                raise FleetBenchError(f"instance {name} did not start:\n{instance.tail()}")
            await asyncio.sleep(0.2)
        yield instance
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def acegw(*argv: str) -> str:
    """An ``acegw`` command in this process (the registry URL is in the
    environment); what it printed."""
    out = io.StringIO()
    if cli_main(list(argv), out=out) != 0:
        raise FleetBenchError(f"acegw {argv[0]} {argv[1]} failed: {out.getvalue()[-500:]}")
    return out.getvalue()


# --- the simulator --------------------------------------------------------------------------


async def simulate(args: list[str], timeout: float) -> dict[str, Any]:
    """``acegw-sim run ARGS --report``; its report (a failed verdict is
    returned too: the caller reads what it needs)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        report_path = Path(f.name)
    proc = await asyncio.create_subprocess_exec(
        *SIM, "run", *args, "--report", str(report_path), "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    try:
        report: dict[str, Any] = json.loads(report_path.read_text())
    except (OSError, ValueError):
        raise FleetBenchError(
            f"acegw-sim wrote no report: {out.decode(errors='replace')[-1500:]}"
        ) from None
    finally:
        report_path.unlink(missing_ok=True)
    return report


# --- probe devices --------------------------------------------------------------------------


@dataclass
class Prober:
    """A device on a probe session: token, upload, proofs (RFC 9200 §5.8,
    §5.10.1; a 4.01 with Echo, RFC 9175 §2.4, repeated once)."""

    probe: DtlsProbe
    identity: bytes
    psk: bytes
    session: ProbeSession | None = None
    key: CoseKey | None = None
    token: bytes = b""
    piv: int = 0
    port: int = 0
    served_at: list[float] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)

    async def _post(self, path: str, payload: bytes) -> aiocoap.Message:
        assert self.session is not None
        msg = aiocoap.Message(
            code=aiocoap.POST, uri_path=(path,), payload=payload, content_format=19
        )
        return await self.session.request(msg, timeout=15)

    async def enroll(self) -> None:
        self.session = await self.probe.connect(self.identity, self.psk, timeout=15)
        self.port = self.session.local_port
        resp = await self._post("token", TokenRequest().encode())
        if resp.code != aiocoap.CREATED:
            raise FleetBenchError(f"/token answered {resp.code}")
        tr = TokenResponse.decode(resp.payload)
        self.key = cnf_mod.decode(tr.cnf).key  # type: ignore[union-attr, arg-type]
        self.token = tr.access_token
        resp = await self._post("authz-info", self.token)
        if resp.code != aiocoap.CREATED:
            raise FleetBenchError(f"/authz-info answered {resp.code}")
        if (await self.call(15)).code != aiocoap.CONTENT:
            raise FleetBenchError("an enrolled probe device was not served")

    def _message(self, echo: bytes | None) -> aiocoap.Message:
        assert self.key is not None
        self.piv += 1
        proof = build_proof(self.key, ProofedRequest(code=1, path=PATH), self.piv, echo)
        msg = aiocoap.Message(code=aiocoap.GET, uri_path=PATH)
        if echo is not None:
            msg.opt.echo = echo
        msg.opt.add_option(OpaqueOption(PROOF_OPTION, proof))
        return msg

    async def call(self, timeout: float) -> aiocoap.Message:
        assert self.session is not None
        resp = await self.session.request(self._message(None), timeout=timeout)
        if resp.code == aiocoap.UNAUTHORIZED and resp.opt.echo is not None:
            resp = await self.session.request(self._message(resp.opt.echo), timeout=timeout)
        return resp

    async def reconnect(self) -> None:
        """A new handshake from the same source port, keeping the token."""
        if self.session is not None:
            await self.session.close(notify=False)
            self.session = None
        try:
            self.session = await self.probe.connect(
                self.identity, self.psk, timeout=PROBE_GIVE_UP_S, local_port=self.port
            )
        except OSError:  # the port was taken meanwhile: a new one, as after a NAT rebinding
            self.session = await self.probe.connect(
                self.identity, self.psk, timeout=PROBE_GIVE_UP_S
            )
            self.port = self.session.local_port

    async def run(self, until: float) -> None:
        """Proofed requests every :data:`PROBE_INTERVAL_S` until ``until``
        (wall clock); a timeout or a closed session means a new handshake."""
        # spread the probes over the interval (they are enrolled together)
        await asyncio.sleep(random.uniform(0, PROBE_INTERVAL_S))
        while time.time() < until:
            started = time.time()
            try:
                if self.session is None:
                    await self.reconnect()
                resp = await self.call(PROBE_GIVE_UP_S)
                ok = resp.code == aiocoap.CONTENT
                (self.served_at if ok else self.failed_at).append(time.time())
            except ProbeError:
                self.failed_at.append(time.time())
                with contextlib.suppress(ProbeError):
                    await self.reconnect()
            await asyncio.sleep(max(0.0, PROBE_INTERVAL_S - (time.time() - started)))


async def enroll_all(probers: list[Prober], concurrency: int = 20) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(p: Prober) -> None:
        async with sem:
            await p.enroll()

    await asyncio.gather(*(one(p) for p in probers))


# --- the three measurements -------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def throughput(
    upstreams: list[Instance], devices_csv: Path, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """One simulator run through a fresh balancer in front of ``upstreams``;
    the instances' resident sizes before it and their peak during it."""
    root = work / f"nginx-{len(upstreams)}-{time.monotonic_ns()}"
    before = [rss_bytes(i.process.pid) for i in upstreams]
    cpu_before = [cpu_seconds(i.process.pid) for i in upstreams]
    started = time.monotonic()
    peak = list(before)
    running = True

    async def sample() -> None:
        while running:
            for n, i in enumerate(upstreams):
                peak[n] = max(peak[n], rss_bytes(i.process.pid))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        async with balancing([i.target for i in upstreams], root, port=_free_port()) as lb:
            report = await simulate(
                ["--devices-csv", str(devices_csv), "--target", f"{lb.target[0]}:{lb.target[1]}",
                 "--duration", f"{args.seconds}s", "--ramp-up", "1s", "--rate", str(args.rate),
                 "--workers", str(args.sim_workers)],
                timeout=args.seconds + 120,
            )  # fmt: skip
    finally:
        running = False
        await sampler
    wall = time.monotonic() - started
    # the share of one core each instance used: near 1.0, the instance is the
    # limit; well below, something else on the machine is (simulator, nginx)
    cores = [
        round((cpu_seconds(i.process.pid) - c) / wall, 2)
        for i, c in zip(upstreams, cpu_before, strict=True)
    ]
    ok = report["devices"].get("normal_with_success", 0)
    return {
        "instances": len(upstreams),
        "rss_before": before,
        "rss_peak": peak,
        "instance_cores": cores,
        "requests_ok_per_s": float(report["throughput"]["requests_ok_per_s"]),
        "devices_served": ok,
        "verdict": report["verdict"]["pass"],
        "causes": report["verdict"].get("causes", [])[:3],
    }


async def _first_refusal(p: Prober) -> float:
    """Proofed requests every :data:`REVOKE_POLL_S`; the send time of the
    first one refused (an error code, a timeout, a closed session)."""
    while True:
        sent = time.monotonic()
        try:
            if (await p.call(1.0)).code != aiocoap.CONTENT:
                return sent
        except ProbeError:
            return sent
        await asyncio.sleep(REVOKE_POLL_S)


async def revoke_propagation(probers: list[Prober], state: Path) -> list[float]:
    """Per device: ms from ``acegw tokens revoke``'s return to its first
    refused request (sent time)."""
    delays = []
    for p in probers:
        shown = json.loads(acegw("token", "decode", "--dir", str(state), p.token.hex()))
        cti = shown["claims"]["cti"]
        poller = asyncio.create_task(_first_refusal(p))
        await asyncio.sleep(0.2)
        if poller.done():
            raise FleetBenchError("a probe device was refused before its token was revoked")
        await asyncio.to_thread(acegw, "tokens", "revoke", "--dir", str(state), cti)
        committed = time.monotonic()
        try:
            refused = await asyncio.wait_for(poller, 10)
        except TimeoutError:
            raise FleetBenchError("a revoked token was still served 10 s later") from None
        delays.append((refused - committed) * 1000)
    return delays


async def registry_memory(
    instances: list[Instance], state: Path, work: Path, count: int
) -> dict[str, Any]:
    """Bytes per registered client: each instance's resident size before
    and after ``count`` clients are bulk-added at the database, once each
    instance completed a handshake as the last of them."""
    before = [rss_bytes(i.process.pid) for i in instances]
    idle_csv = work / "idle.csv"
    acegw("clients", "bulk-add", "--dir", str(state), "--count", str(count),
          "--prefix", "idle-", "--scope", SCOPE, "--out", str(idle_csv))  # fmt: skip
    with idle_csv.open() as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#") and r[0] != "id"]
    identity, psk = rows[-1][0].encode(), bytes.fromhex(rows[-1][1])
    for i in instances:
        probe = DtlsProbe(i.target)
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    session = await probe.connect(identity, psk, timeout=2)
                    await session.close()
                    break
                except ProbeError:
                    if time.monotonic() > deadline:
                        raise FleetBenchError(
                            f"instance {i.name} never learnt of {count} new clients"
                        ) from None
                    await asyncio.sleep(0.5)
        finally:
            await probe.close()
    after = [rss_bytes(i.process.pid) for i in instances]
    per_client = [growth_per(a - b, count) for a, b in zip(after, before, strict=True)]
    return {
        "clients": count,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_client": per_client,
    }


async def failover(
    a: Instance, b: Instance, probers: list[Prober], devices_csv: Path,
    args: argparse.Namespace, work: Path,
) -> dict[str, Any]:  # fmt: skip
    """Kill ``a`` mid-run under the simulator's fleet and the probes."""
    seconds = args.failover_seconds
    scenario = work / "failover.toml"
    scenario.write_text(FAILOVER_SCENARIO.format(seconds=seconds))
    samples = work / "failover-samples.csv"
    async with balancing([a.target, b.target], work / "nginx-failover", port=_free_port()) as lb:
        for p in probers:
            p.probe = DtlsProbe(lb.target)
        try:
            await enroll_all(probers)
            sim = asyncio.create_task(
                simulate(
                    ["--devices-csv", str(devices_csv), "--target",
                     f"{lb.target[0]}:{lb.target[1]}", "--scenario", str(scenario),
                     "--samples", str(samples)],
                    timeout=seconds + 120,
                )
            )  # fmt: skip
            begun = time.time()
            until = begun + seconds
            probes = [asyncio.create_task(p.run(until)) for p in probers]
            await asyncio.sleep(seconds * 0.4)
            stopped = time.time()
            a.process.send_signal(signal.SIGKILL)
            await a.process.wait()
            await asyncio.gather(*probes)
            report = await sim
        finally:
            for p in probers:
                await p.probe.close()
    moved = [p for p in probers if any(t >= stopped for t in p.failed_at)]
    recovery, handover, unrecovered = [], [], 0
    for p in moved:
        after = [t for t in p.served_at if t > stopped]
        if after:
            recovery.append(min(after) - stopped)
            # from giving up on the dead instance to served at the other
            handover.append(min(after) - min(t for t in p.failed_at if t >= stopped))
        else:
            unrecovered += 1
    sim_failures = []
    with samples.open() as f:
        for row in csv.DictReader(f):
            if float(row["epoch"]) >= stopped and not row["outcome"].startswith("2."):
                sim_failures.append(float(row["epoch"]) - stopped)
    return {
        "probes": len(probers),
        "probes_moved": len(moved),
        "probes_unrecovered": unrecovered,
        "recovery_s": recovery,
        "p50_s": _percentile(recovery, 50),
        "p99_s": _percentile(recovery, 99),
        "handover_p50_s": _percentile(handover, 50),
        "handover_p99_s": _percentile(handover, 99),
        "stopped_after_s": round(stopped - begun, 1),
        "sim_failed_after_stop": len(sim_failures),
        "sim_last_failure_s": round(max(sim_failures, default=0.0), 2),
        "sim_devices_served": report["devices"].get("normal_with_success", 0),
    }


# --- main -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace, work: Path, result: dict[str, Any]) -> None:
    """The three measurements; figures go into ``result`` as they are made."""
    with running_cluster() as cluster:
        url = cluster.create_database()
        os.environ["ACEGW_REGISTRY_URL"] = url
        state = work / "state"
        acegw("init", "--dir", str(state))
        devices_csv = work / "devices.csv"
        acegw("clients", "bulk-add", "--dir", str(state), "--count", str(args.devices),
              "--prefix", "dev-", "--scope", SCOPE, "--out", str(devices_csv))  # fmt: skip
        extra_csv = work / "probes.csv"
        acegw("clients", "bulk-add", "--dir", str(state), "--count",
              str(args.probes + args.revokes), "--prefix", "probe-", "--scope", SCOPE,
              "--out", str(extra_csv))  # fmt: skip
        with extra_csv.open() as f:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#") and r[0] != "id"]
        creds = [(r[0].encode(), bytes.fromhex(r[1])) for r in rows]
        async with contextlib.AsyncExitStack() as stack:
            a, b = [
                await stack.enter_async_context(
                    serving(name, host, state, url, work / f"{name}.log")
                )
                for name, host in zip("AB", HOSTS, strict=True)
            ]
            result["memory"] = await registry_memory([a, b], state, work, args.idle_clients)
            runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
            for r in range(args.rounds):
                for n in (1, 2) if r % 2 == 0 else (2, 1):
                    one = await throughput([a, b][:n], devices_csv, args, work)
                    print(f"  round {r + 1}, {n} instance(s): {one}", flush=True)
                    runs[n].append(one)
            result["throughput"] = runs
            for n in (1, 2):
                result[f"rps_{n}"] = statistics.median(x["requests_ok_per_s"] for x in runs[n])
            result["db_connections"] = database_connections(url)
            # the first one-instance run only: later runs reuse what it grew
            first = runs[1][0]
            result["bytes_per_device"] = growth_per(
                first["rss_peak"][0] - first["rss_before"][0], first["devices_served"]
            )

            lb_root = work / "nginx-revoke"
            async with balancing([a.target, b.target], lb_root, port=_free_port()) as lb:
                probe = DtlsProbe(lb.target)
                revokers = [Prober(probe, i, k) for i, k in creds[args.probes :]]
                try:
                    await enroll_all(revokers)
                    delays = await revoke_propagation(revokers, state)
                finally:
                    await probe.close()
            result["revoke_ms"] = delays
            result["revoke_propagation_ms"] = statistics.median(delays)

            probers = [Prober(probe, i, k) for i, k in creds[: args.probes]]
            result["failover"] = await failover(a, b, probers, devices_csv, args, work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tiny", action="store_true", help="a quick run: small fleet, short runs")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20, help="each throughput run")
    parser.add_argument("--rate", type=float, default=8.0, help="requests/s per device")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sim-workers", type=int, default=2, help="acegw-sim worker processes")
    parser.add_argument("--probes", type=int, default=100, help="failover probe devices")
    parser.add_argument("--revokes", type=int, default=5, help="revocations measured")
    parser.add_argument(
        "--idle-clients", type=int, default=5000, help="clients registered for the memory figure"
    )
    parser.add_argument("--failover-seconds", type=int, default=30)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.tiny:
        args.devices, args.seconds, args.rounds, args.sim_workers = 50, 4, 1, 1
        args.probes, args.revokes, args.failover_seconds = 10, 2, 14
        args.idle_clients = 500
    print(
        f"bench.fleet: {args.devices} devices at {args.rate}/s for {args.seconds} s x "
        f"{args.rounds} rounds; {args.probes} failover probes; {args.revokes} revocations",
        flush=True,
    )
    t0 = time.monotonic()
    error = ""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="acegw-fleet-") as tmp:
        os.chmod(tmp, 0o755)
        try:
            asyncio.run(run(args, Path(tmp), result))
        except (FleetBenchError, AssertionError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    fo = result.get("failover", {})
    mem = result.get("memory", {})
    figures = {
        "fleet_rps_1": result.get("rps_1", math.nan),
        "fleet_rps_2": result.get("rps_2", math.nan),
        "fleet_failover_p50_s": fo.get("p50_s", math.nan),
        "fleet_failover_p99_s": fo.get("p99_s", math.nan),
        "fleet_revoke_propagation_ms": result.get("revoke_propagation_ms", math.nan),
        "fleet_kb_per_client": (
            statistics.median(mem["bytes_per_client"]) / 1024 if mem else math.nan
        ),
        "fleet_kb_per_device": result.get("bytes_per_device", math.nan) / 1024,
    }
    unmeasured = [k for k in ("fleet_kb_per_client", "fleet_kb_per_device") if not figures[k] > 0]
    if "throughput" in result and unmeasured:
        error = error or (
            f"memory not measured ({', '.join(unmeasured)}): no device served, or the "
            f"instance's RSS grew less than {RSS_RESOLUTION // 1024} kB"
        )
    failed_runs = [
        f"{x['instances']} instance(s): {'; '.join(map(str, x['causes'])) or 'FAIL'}"
        for runs in result.get("throughput", {}).values()
        for x in runs
        if not x["verdict"]
    ]
    if failed_runs:
        # a throughput figure from a run whose fleet was not served is no figure
        error = error or "simulator verdict FAIL in " + " | ".join(failed_runs)
    if fo and (fo["probes_moved"] == 0 or fo["probes_unrecovered"]):
        error = error or (
            f"failover: {fo['probes_moved']} probes moved, {fo['probes_unrecovered']} never served "
            "again after the stop"
        )
    print()
    if "rps_1" in result:
        print(f"requests/s through the balancer: 1 instance {figures['fleet_rps_1']:.0f}, "
              f"2 instances {figures['fleet_rps_2']:.0f} "
              f"({figures['fleet_rps_2'] / figures['fleet_rps_1']:.2f}x)")  # fmt: skip
    if "revoke_ms" in result:
        print("revocation to first refusal (ms): "
              + ", ".join(f"{d:.0f}" for d in result["revoke_ms"]))  # fmt: skip
    if "db_connections" in result:
        print(f"database connections of the two instances (one worker each) after the runs: "
              f"{result['db_connections']}")  # fmt: skip
    if mem:
        print(
            f"memory: {figures['fleet_kb_per_client']:.2f} kB per registered client "
            f"({mem['clients']} added; per instance "
            + ", ".join(f"{b / 1024:.2f}" for b in mem["bytes_per_client"])
            + f"), {figures['fleet_kb_per_device']:.2f} kB per connected device"
        )
    if fo:
        print(
            f"failover: {fo['probes_moved']}/{fo['probes']} probes moved, recovery p50 "
            f"{fo['p50_s']:.2f} s p99 {fo['p99_s']:.2f} s (from giving up after "
            f"{PROBE_GIVE_UP_S:.0f} s: p50 {fo['handover_p50_s']:.2f} s p99 "
            f"{fo['handover_p99_s']:.2f} s); simulator: "
            f"{fo['sim_failed_after_stop']} failed requests after the stop, the last "
            f"{fo['sim_last_failure_s']} s after it, {fo['sim_devices_served']} devices served"
        )
    if error:
        print(f"FAILED: {error}")
    print(f"({time.monotonic() - t0:.0f} s)")
    if args.json:
        doc = {"figures": figures, "detail": result, "error": error, "tiny": args.tiny}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")

    def fmt(v: float, digits: int) -> str:
        return "nan" if v != v else f"{v:.{digits}f}"

    print(
        "RESULT "
        f"fleet_rps_1={fmt(figures['fleet_rps_1'], 0)} "
        f"fleet_rps_2={fmt(figures['fleet_rps_2'], 0)} "
        f"fleet_speedup={fmt(figures['fleet_rps_2'] / (figures['fleet_rps_1'] or math.nan), 2)} "
        f"fleet_failover_p50_s={fmt(figures['fleet_failover_p50_s'], 2)} "
        f"fleet_failover_p99_s={fmt(figures['fleet_failover_p99_s'], 2)} "
        f"fleet_revoke_propagation_ms={fmt(figures['fleet_revoke_propagation_ms'], 0)} "
        f"fleet_kb_per_client={fmt(figures['fleet_kb_per_client'], 2)} "
        f"fleet_kb_per_device={fmt(figures['fleet_kb_per_device'], 2)}"
    )
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
