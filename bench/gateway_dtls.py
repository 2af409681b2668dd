"""DTLS-PSK CoAP servers side by side under the same load, on loopback.

Servers (each in its own process, all serving a 136-byte GET on ``/``, the
size of libcoap's ``/``, with one PSK for every identity):

- ``ours``: the gateway's transport (:mod:`gateway.dtls`, the project's own
  DTLS engine);
- ``tinydtls``: the transport it replaced (tinydtls 0.8.6 through DTLSSocket,
  :mod:`gateway.dtls.tinydtls_server`), the baseline for CPU per request;
- ``aiocoap``: aiocoap 0.4.17's experimental ``tinydtls_server`` (given an
  O(1) credential lookup so that the transport, not its linear
  ``CredentialsMap`` scan, is measured);
- ``libcoap``: ``coap-server-openssl`` (C, OpenSSL DTLS).

Load (this process, :class:`gateway.dtls.probe.DtlsProbe`): ``--sessions``
sessions, each from its own source port with its own identity, opened
``--concurrency`` at a time (handshakes/s); then ``--requests`` CON GETs spread
over the sessions, ``--concurrency`` in flight (requests/s). Memory per idle
session is the server's RSS growth over all handshakes (before any request),
divided by the sessions.

The load generator is Python on a machine with 2 cores: against libcoap it is
the bottleneck, so ``vs_libcoap`` is an upper bound of our relative speed.

Under attack (``ours+flood``): the same handshakes while one address
(127.0.0.10) floods the server with cookie-completing ClientHellos from 300
ports (:func:`gateway.dtls.hostile.half_open_flood`), holding its share of
the half-open table the whole time.

NAT rebinding (after the rounds): the real gateway (``bench._gateway``) behind
a :class:`gateway.dtls.nat_relay.NatRelay` that gives the device a new source
port every 5 datagrams; the device holds a token and makes proof-bearing GETs
(``--rebind-requests`` in all, :func:`gateway.dtls.nat_relay.rebinding_run`)
with a Connection ID (RFC 9146) and its generated 32-byte PSK; every extra
handshake it needed is counted (``cid_rebind_handshakes``, 0 when CID works);
the same without CID, where each move costs a new handshake
(``nocid_rebind_handshakes``).

Last line: ``RESULT handshakes_per_s=<ours, seen> req_per_s=<ours, seen>
vs_tinydtls=<tinydtls CPU per request / ours> vs_aiocoap=<aiocoap's / ours>
vs_libcoap=<libcoap's / ours> hs_cpu_us=<ours, server CPU per handshake>
kb_per_session=<ours> handshakes_per_s_flood=<ours under the flood>
flood_ratio=<under the flood / without> cid_rebind_handshakes=<n>
nocid_rebind_handshakes=<n>``.

Ratios in the RESULT line compare server CPU per request (capacity), which
the load generator does not limit; the table also shows the rates it saw.
Server CPU is read from each server process's CPU-time clock (nanoseconds),
so the tiny mode's short phases give real figures too. ``ours+flood``
measures handshakes only. A figure the servers that ran should have given
but did not (NaN, 0) is printed ``n/a`` and fails the run; ``n/a`` for a
server left out with ``--servers`` is expected.

Usage: ``python -m bench.gateway_dtls [--tiny] [--sessions N] [--requests N]
[--concurrency N] [--rounds N] [--servers ours,tinydtls,aiocoap,libcoap]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiocoap
from aiocoap import resource

from bench._common import fmt_ratio, fmt_us, print_table
from gateway.dtls import DtlsServerConfig, create_server_context
from gateway.dtls.hostile import half_open_flood
from gateway.dtls.nat_relay import rebinding_run
from gateway.dtls.probe import DtlsProbe, ProbeError, ProbeSession
from gateway.dtls.tinydtls_server import create_tinydtls_server_context

PSK = b"bench-psk-0123ab"
PAYLOAD = b"x" * 136
SERVERS = ("ours", "tinydtls", "aiocoap", "libcoap")
#: Datagrams from the rebinding device between two source-port changes (a
#: handshake takes 3, a proofed GET 1).
REBIND_EVERY = 5
#: The flooding address of the ``ours+flood`` measurement.
FLOODER = "127.0.0.10"
#: No phase may take longer than this (seconds).
PHASE_LIMIT = 180.0
#: RSS growth below this is not turned into a per-session figure (bytes).
RSS_RESOLUTION = 64 * 1024


# --- server side (child processes) -------------------------------------------------------


class _Trivial(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CONTENT, payload=PAYLOAD)


class _AnyIdentity:
    """aiocoap server credentials: every identity has :data:`PSK`."""

    def __bool__(self) -> bool:  # aiocoap replaces a falsy credentials object
        return True

    def find_dtls_psk(self, identity: bytes) -> tuple[bytes, str]:
        return PSK, ":bench"


async def _serve(kind: str, port: int, sessions: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    site = resource.Site()
    site.add_resource([], _Trivial())
    if kind in ("ours", "tinydtls"):
        config = DtlsServerConfig(
            host="127.0.0.1",
            port=port,
            max_sessions=max(sessions * 2, 1000),
            # the gateway's defaults (dtls.max_handshakes 500, a fifth per
            # address): the load generator is one address, like a NAT
            max_handshakes=500,
        )

        def lookup(identity: bytes) -> bytes:
            return PSK

        create = create_server_context if kind == "ours" else create_tinydtls_server_context
        context, _server = await create(site, config, lookup)
    else:
        # tinydtls_server listens on the given port + 1.
        context = await aiocoap.Context.create_server_context(
            site,
            bind=("127.0.0.1", port - 1),
            transports=["tinydtls_server"],
            server_credentials=_AnyIdentity(),
        )
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    # Run until the parent closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    await context.shutdown()


# --- load side --------------------------------------------------------------------------------


@dataclass
class Result:
    """One server, one round."""

    name: str
    sessions: int = 0
    handshake_failures: int = 0
    handshakes_per_s: float = 0.0
    #: Server CPU time (user + system) per completed handshake, microseconds.
    handshake_cpu_us: float = float("nan")
    requests: int = 0
    request_failures: int = 0
    req_per_s: float = 0.0
    request_cpu_us: float = float("nan")
    kb_per_session: float = float("nan")
    error: str = ""
    #: Handshakes only (the ``+flood`` round): requests and memory are not measured.
    handshakes_only: bool = False


def _combine(rounds: list[Result]) -> Result:
    """Best observed rates (the machine is shared), median costs, all
    failures."""

    def median(values: list[float]) -> float:
        known = [v for v in values if v == v]
        return statistics.median(known) if known else float("nan")

    good = [r for r in rounds if not r.error] or rounds
    return Result(
        name=rounds[0].name,
        sessions=min(r.sessions for r in rounds),
        handshake_failures=sum(r.handshake_failures for r in rounds),
        handshakes_per_s=max(r.handshakes_per_s for r in rounds),
        handshake_cpu_us=median([r.handshake_cpu_us for r in good]),
        requests=min(r.requests for r in rounds),
        request_failures=sum(r.request_failures for r in rounds),
        req_per_s=max(r.req_per_s for r in rounds),
        request_cpu_us=median([r.request_cpu_us for r in good]),
        kb_per_session=median([r.kb_per_session for r in good]),
        error="; ".join(r.error for r in rounds if r.error),
        handshakes_only=rounds[0].handshakes_only,
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far, all threads, to the
    nanosecond: its process CPU-time clock (clock_getcpuclockid(3): clock id
    ``(~pid << 3) | CPUCLOCK_SCHED``), not proc(5)'s 10 ms ticks, which are
    too coarse for the tiny mode's few milliseconds."""
    return time.clock_gettime((~pid << 3) | 2)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _free_port_pair() -> int:
    """A port P with P-1 and P free for UDP and TCP (libcoap binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 1025:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for p in (port - 1, port):
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        s = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


async def _start(kind: str, port: int, sessions: int) -> asyncio.subprocess.Process:
    if kind == "libcoap":
        return await asyncio.create_subprocess_exec(
            "coap-server-openssl",
            "-A",
            "127.0.0.1",
            "-p",
            str(port - 1),
            "-k",
            PSK.decode(),
            "-v",
            "0",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.gateway_dtls",
        "--serve",
        kind,
        "--port",
        str(port),
        "--sessions",
        str(sessions),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if line.strip() != b"READY":
        raise RuntimeError(f"{kind} server did not start")
    return process


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    else:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _warm_up(target: tuple[str, int]) -> None:
    """Wait until the server completes a handshake and a request."""
    deadline = time.monotonic() + 20
    while True:
        probe = DtlsProbe(target)
        try:
            session = await probe.connect(b"bench-warmup", PSK, timeout=1.0)
            await session.request(aiocoap.Message(code=aiocoap.GET), timeout=2.0)
            return
        except ProbeError:
            if time.monotonic() > deadline:
                raise
        finally:
            await probe.close()


async def _pool(count: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    """Run ``job(0..count-1)`` with at most ``concurrency`` at once."""
    indices = iter(range(count))

    async def worker() -> None:
        for index in indices:
            await job(index)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))


async def _measure(kind: str, args: argparse.Namespace, *, flood: bool = False) -> Result:
    result = Result(kind + ("+flood" if flood else ""), handshakes_only=flood)
    port = _free_port_pair()
    process = await _start(kind, port, args.sessions)
    target = ("127.0.0.1", port)
    probe: DtlsProbe | None = None
    stop_flood = threading.Event()
    flooding: asyncio.Future[int] | None = None
    try:
        await _warm_up(target)
        if flood:
            flooding = asyncio.ensure_future(
                asyncio.to_thread(
                    half_open_flood,
                    target,
                    FLOODER,
                    sockets=300,
                    rounds=int(PHASE_LIMIT),  # one round a second until stopped
                    duration=PHASE_LIMIT,
                    stop=stop_flood,
                )
            )
            await asyncio.sleep(1.0)  # the flood holds its share before we start
        await asyncio.sleep(0.3)
        baseline = _rss(process.pid)
        probe = DtlsProbe(target)
        sessions: list[ProbeSession] = []

        async def handshake(index: int) -> None:
            try:
                sessions.append(await probe.connect(b"bench-%06d" % index, PSK, timeout=20.0))
            except ProbeError:
                result.handshake_failures += 1

        started, cpu = time.perf_counter(), _cpu_seconds(process.pid)
        await asyncio.wait_for(_pool(args.sessions, args.concurrency, handshake), PHASE_LIMIT)
        elapsed = time.perf_counter() - started
        result.sessions = len(sessions)
        result.handshakes_per_s = len(sessions) / elapsed
        result.handshake_cpu_us = _per_op_us(_cpu_seconds(process.pid) - cpu, len(sessions))
        if flooding is not None:
            stop_flood.set()
            await flooding
            return result
        await asyncio.sleep(0.5)
        if sessions:
            result.kb_per_session = _kb_per_session(_rss(process.pid) - baseline, len(sessions))

            async def request(index: int) -> None:
                session = sessions[index % len(sessions)]
                try:
                    await session.request(aiocoap.Message(code=aiocoap.GET), timeout=20.0)
                    result.requests += 1
                except ProbeError:
                    result.request_failures += 1

            started, cpu = time.perf_counter(), _cpu_seconds(process.pid)
            await asyncio.wait_for(_pool(args.requests, args.concurrency, request), PHASE_LIMIT)
            result.req_per_s = result.requests / (time.perf_counter() - started)
            used = _cpu_seconds(process.pid) - cpu
            result.request_cpu_us = _per_op_us(used, result.requests)
    except (ProbeError, RuntimeError, TimeoutError, OSError) as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        stop_flood.set()
        if flooding is not None:
            with contextlib.suppress(Exception):
                await flooding
        if probe is not None:
            await probe.close()
        await _stop(process)
    return result


async def _rebinding(connection_id: bool, requests: int) -> tuple[int, int, int]:
    """A device with a token on the real gateway behind a NAT that moves it
    every :data:`REBIND_EVERY` datagrams: ``(extra handshakes, requests
    answered, Echo rounds)``. A request that gets no answer in 1 s costs a new
    handshake."""
    from bench import _gateway  # imports this module

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        ((client_id, psk),) = _gateway.prepare(state, 1)
        process, port = await _gateway.start_gateway(state)
        try:
            run = await rebinding_run(
                ("127.0.0.1", port),
                client_id.encode(),
                psk,
                connection_id=connection_id,
                requests=requests,
                rebind_every=REBIND_EVERY,
                path=("bench",),
            )
        finally:
            await _stop(process)
    return run.extra_handshakes, run.answered, run.echo_rounds


def _per_op_us(seconds: float, operations: int) -> float:
    """CPU per operation (NaN when there was none)."""
    if not operations or seconds <= 0:
        return float("nan")
    return seconds / operations * 1e6


def _kb_per_session(grown: int, sessions: int) -> float:
    """RSS growth per session; NaN when the growth is below
    :data:`RSS_RESOLUTION` (pages, and the allocator's free space, make a
    smaller figure meaningless)."""
    if not sessions or grown < RSS_RESOLUTION:
        return float("nan")
    return grown / sessions / 1024


def _ratio(a: float, b: float) -> float:
    return a / b if a and b else float("nan")


def _jsonable(x: float) -> float | None:
    return None if x != x else round(x, 3)


async def _run(args: argparse.Namespace) -> int:
    print(
        f"bench.gateway_dtls ({'tiny' if args.tiny else 'full'}): {args.sessions} sessions "
        f"({args.concurrency} handshakes at a time), {args.requests} GETs "
        f"({args.concurrency} in flight), {args.rounds} interleaved round(s); "
        f"{os.cpu_count()} CPUs"
    )
    rounds: dict[str, list[Result]] = {kind: [] for kind in args.servers}
    if "ours" in args.servers:
        rounds["ours+flood"] = []
    for _ in range(args.rounds):
        for kind in args.servers:
            rounds[kind].append(await _measure(kind, args))
            if kind == "ours":
                rounds["ours+flood"].append(await _measure(kind, args, flood=True))
    results = {kind: _combine(measured) for kind, measured in rounds.items()}
    rebinding: dict[str, tuple[int, int, int]] = {}
    if "ours" in args.servers:
        for label, cid in (("cid", True), ("nocid", False)):
            rebinding[label] = await _rebinding(cid, args.rebind_requests)
    print()
    rows = [
        [
            r.name,
            str(r.sessions),
            str(r.handshake_failures),
            f"{r.handshakes_per_s:.0f}",
            fmt_us(r.handshake_cpu_us),
            *(
                ["-", "-", "-", "-"]
                if r.handshakes_only
                else [
                    f"{r.req_per_s:.0f}",
                    str(r.request_failures),
                    fmt_us(r.request_cpu_us),
                    _fmt_kb(r.kb_per_session),
                ]
            ),
            *([r.error] if r.error else []),
        ]
        for r in results.values()
    ]
    print_table(
        [
            "server",
            "sessions",
            "fail",
            "handshakes/s",
            "cpu_us/hs",
            "req/s",
            "fail",
            "cpu_us/req",
            "kB/session",
        ],
        rows,
    )
    print(
        "rates: best round as seen by the load generator (Python, often the limit); "
        "cpu_us: server process CPU per operation, median round"
    )
    if "ours+flood" in results:
        print("ours+flood: handshakes only (no requests or memory measured under the flood)")
    if any(r.kb_per_session != r.kb_per_session for r in results.values() if not r.handshakes_only):
        print(
            f"kB/session n/a: RSS grew less than {RSS_RESOLUTION // 1024} kB over the sessions "
            "(below what RSS can tell; use more --sessions)"
        )
    ours = results.get("ours", Result("ours"))
    ratios: dict[str, dict[str, float]] = {}
    for other in ("tinydtls", "aiocoap", "libcoap"):
        if other not in results:
            continue
        theirs = results[other]
        ratios[other] = {
            "seen_handshakes": _ratio(ours.handshakes_per_s, theirs.handshakes_per_s),
            "seen_requests": _ratio(ours.req_per_s, theirs.req_per_s),
            "capacity_handshakes": _ratio(theirs.handshake_cpu_us, ours.handshake_cpu_us),
            "capacity_requests": _ratio(theirs.request_cpu_us, ours.request_cpu_us),
            "memory": _ratio(ours.kb_per_session, theirs.kb_per_session),
        }
        x = ratios[other]
        print(
            f"ours vs {other}: seen handshakes/s {fmt_ratio(x['seen_handshakes'])}, "
            f"req/s {fmt_ratio(x['seen_requests'])}; server capacity (1/cpu) handshakes "
            f"{fmt_ratio(x['capacity_handshakes'])}, requests "
            f"{fmt_ratio(x['capacity_requests'])}; memory per session {fmt_ratio(x['memory'])}"
        )
    for label, (extra, answered, echoes) in rebinding.items():
        print(
            f"rebinding every {REBIND_EVERY} datagrams ({label}): {extra} extra handshake(s), "
            f"{echoes} Echo round(s), {answered} of {args.rebind_requests} requests answered"
        )
    flooded = results.get("ours+flood", Result("ours+flood"))
    nan = float("nan")
    result = {
        "handshakes_per_s_flood": flooded.handshakes_per_s,
        "flood_ratio": _ratio(flooded.handshakes_per_s, ours.handshakes_per_s),
        "handshakes_per_s": ours.handshakes_per_s,
        "req_per_s": ours.req_per_s,
        "vs_tinydtls": ratios.get("tinydtls", {}).get("capacity_requests", nan),
        "hs_vs_tinydtls": ratios.get("tinydtls", {}).get("capacity_handshakes", nan),
        "hs_cpu_us": ours.handshake_cpu_us,
        "vs_aiocoap": ratios.get("aiocoap", {}).get("capacity_requests", float("nan")),
        "vs_libcoap": ratios.get("libcoap", {}).get("capacity_requests", float("nan")),
        "kb_per_session": ours.kb_per_session,
        "cid_rebind_handshakes": rebinding.get("cid", (nan, 0, 0))[0],
        "nocid_rebind_handshakes": rebinding.get("nocid", (nan, 0, 0))[0],
    }
    if args.json:
        report = {
            "bench": "gateway_dtls",
            "mode": "tiny" if args.tiny else "full",
            "settings": {
                k: getattr(args, k) for k in ("sessions", "requests", "concurrency", "rounds")
            },
            "servers": {
                kind: {k: (_jsonable(v) if isinstance(v, float) else v) for k, v in vars(r).items()}
                for kind, r in results.items()
            },
            "ratios": {k: {n: _jsonable(v) for n, v in x.items()} for k, x in ratios.items()},
            "result": {k: _jsonable(v) for k, v in result.items()},
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")
    unmeasured = _unmeasured(result, args.servers)
    if unmeasured:
        print(f"FAIL  figures not measured: {', '.join(unmeasured)}")
    print()
    print(
        f"RESULT handshakes_per_s={ours.handshakes_per_s:.0f} req_per_s={ours.req_per_s:.0f} "
        f"vs_tinydtls={_fmt(result['vs_tinydtls'], 2)} vs_aiocoap={_fmt(result['vs_aiocoap'], 2)} "
        f"vs_libcoap={_fmt(result['vs_libcoap'], 2)} hs_cpu_us={_fmt(result['hs_cpu_us'], 0)} "
        f"kb_per_session={_fmt(result['kb_per_session'], 1)} "
        f"handshakes_per_s_flood={flooded.handshakes_per_s:.0f} "
        f"flood_ratio={_fmt(result['flood_ratio'], 2)} "
        f"cid_rebind_handshakes={_fmt(result['cid_rebind_handshakes'], 0)} "
        f"nocid_rebind_handshakes={_fmt(result['nocid_rebind_handshakes'], 0)}"
    )
    failed = any(r.error or r.handshake_failures or r.request_failures for r in results.values())
    rebind_failed = rebinding.get("cid", (0, 0, 0))[0] != 0
    broken = ours.error or not ours.sessions or rebind_failed or unmeasured
    return 1 if broken or (failed and args.tiny) else 0


#: Each RESULT figure that must be a positive number when the servers it
#: compares ran (``cid_rebind_handshakes`` must be 0: checked on its own).
_NEEDS = {
    "handshakes_per_s": ("ours",),
    "req_per_s": ("ours",),
    "vs_tinydtls": ("ours", "tinydtls"),
    "hs_vs_tinydtls": ("ours", "tinydtls"),
    "vs_aiocoap": ("ours", "aiocoap"),
    "vs_libcoap": ("ours", "libcoap"),
    "hs_cpu_us": ("ours",),
    "kb_per_session": ("ours",),
    "handshakes_per_s_flood": ("ours",),
    "flood_ratio": ("ours",),
    "nocid_rebind_handshakes": ("ours",),
}


def _unmeasured(result: dict[str, float], servers: tuple[str, ...]) -> list[str]:
    """The RESULT figures that should have been measured with ``servers``
    but are NaN, zero or negative."""
    return [
        key
        for key, needs in _NEEDS.items()
        if all(n in servers for n in needs) and not result[key] > 0
    ]


def _fmt(value: float, digits: int) -> str:
    """A RESULT figure; ``n/a`` for one not measured (NaN)."""
    return "n/a" if value != value else f"{value:.{digits}f}"


def _fmt_kb(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_dtls", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="CI smoke: 300 sessions, 1000 GETs")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    parser.add_argument(
        "--servers",
        type=lambda text: tuple(text.split(",")),
        default=SERVERS,
        help="comma-separated subset of " + ",".join(SERVERS),
    )
    parser.add_argument(
        "--rebind-requests", type=int, default=40, help="requests of the rebinding device"
    )
    parser.add_argument("--serve", choices=("ours", "tinydtls", "aiocoap"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, args.port, args.sessions))
        return 0
    if args.tiny:
        # enough sessions for RSS to show their memory, enough requests for a
        # per-request CPU figure; well under a second of load per server
        args.sessions, args.requests, args.concurrency, args.rounds = 300, 1000, 10, 1
        args.rebind_requests = 12
    unknown = set(args.servers) - set(SERVERS)
    if unknown or min(args.sessions, args.requests, args.concurrency, args.rounds) < 1:
        parser.error("bad --servers, --sessions, --requests, --concurrency or --rounds")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
