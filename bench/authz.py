"""Per-request cost of authorization on the gateway, side by side in one run.

One gateway process (a temp state dir, the real registry and key store)
serves the same trivial 32-byte resource twice: ``/bench`` behind the
authorization layer and ``/bench-open`` without it. The load generator
(:class:`gateway.dtls.probe.DtlsProbe`, this process) opens ``--sessions``
DTLS sessions, one registered device each, gets a token per device, opens its
replay window through Echo, and then sends ``--requests`` CON requests per
mode, ``--concurrency`` in flight:

- ``none``: GET /bench-open, no Proof option;
- ``mac0``: GET /bench with a COSE_Mac0 (HMAC 256/64) proof, symmetric PoP;
- ``es256``: GET /bench with a COSE_Sign1 (ES256) proof, asymmetric PoP.

Modes run in interleaved rounds. For each mode: requests/s seen by the load
generator and the gateway's CPU time per request (user + system, from
/proc). The generator is Python on the same 2 cores, so the CPU figures are
the fairer comparison; both are printed. Proofs are built before each timed
batch, outside the measurement.

Last line: ``RESULT authz_mac0_ratio=<x> authz_es256_ratio=<x>`` where a ratio
is the mode's throughput divided by the no-authorization throughput (1.0 =
free; target for Mac0: >= 0.90, i.e. authorization costs <= 10%).

Usage: ``python -m bench.authz [--tiny] [--sessions N] [--requests N]
[--rounds N] [--concurrency N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiocoap
import aiocoap.resource
from aiocoap.optiontypes import OpaqueOption

from bench.gateway_dtls import _cpu_seconds, _pool, _stop
from gateway.authorization import UNPROTECTED
from gateway.dtls.probe import DtlsProbe, ProbeError, ProbeSession
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.keys import CoseKey, Ec2Key
from tokens.params import PROOF_OPTION
from tokens.proof import ProofedRequest, build_proof

MODES = ("none", "mac0", "es256")
PAYLOAD = b"x" * 32
PHASE_LIMIT = 300.0


# --- the gateway process ------------------------------------------------------


def _serve(state: Path) -> None:
    from gateway.config import load_config
    from gateway.server import Gateway

    class Trivial(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=PAYLOAD)

    class BenchGateway(Gateway):
        unprotected = UNPROTECTED | {("bench-open",)}

        def resource_tree(self) -> aiocoap.resource.Site:
            site = super().resource_tree()
            site.add_resource(["bench"], Trivial())
            site.add_resource(["bench-open"], Trivial())
            return site

    async def main() -> None:
        logging.basicConfig(level=logging.ERROR)
        config = load_config(state / "acegw.toml")
        gateway = BenchGateway(config)
        await gateway.start()
        print(f"READY {gateway.address[1]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await gateway.stop()

    asyncio.run(main())


def _prepare(state: Path, devices: int) -> list[tuple[str, bytes]]:
    from gateway.cli import main as cli_main
    from gateway.config import load_config
    from gateway.registry import Registry

    assert cli_main(["init", "--dir", str(state)], out=io.StringIO()) == 0
    config_path = state / "acegw.toml"
    text = config_path.read_text()
    text = text.replace('bind = "::"', 'bind = "127.0.0.1"').replace("port = 5684", "port = 0")
    text = text.replace('path = "stdout"', 'path = "off"')
    config_path.write_text(text)
    limits = {
        "ACEGW_LIMITS_DEVICE_BURST": "1000000",
        "ACEGW_LIMITS_DEVICE_RATE": "1000000",
        "ACEGW_LIMITS_ACE_BURST": "1000000",
        "ACEGW_LIMITS_ACE_RATE": "1000000",
        "ACEGW_LIMITS_MAX_IN_FLIGHT": "100000",
    }
    os.environ.update(limits)
    config = load_config(config_path)
    with Registry.from_config(config) as registry:
        return registry.bulk_add(devices, "bench-", "/bench:GET")


async def _start_gateway(state: Path) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.authz",
        "--serve",
        str(state),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if not line.startswith(b"READY"):
        raise RuntimeError("gateway did not start")
    return process, int(line.split()[1])


# --- the devices ----------------------------------------------------------------


@dataclass
class Device:
    session: ProbeSession
    key: CoseKey
    piv: int = 0


async def _post(session: ProbeSession, path: str, payload: bytes) -> aiocoap.Message:
    msg = aiocoap.Message(code=aiocoap.POST, uri_path=(path,), payload=payload, content_format=19)
    return await session.request(msg, timeout=30)


def _proofed(device: Device) -> aiocoap.Message:
    device.piv += 1
    return _with_proof(device, device.piv, None)


def _with_proof(device: Device, piv: int, echo: bytes | None) -> aiocoap.Message:
    proof = build_proof(device.key, ProofedRequest(code=1, path=("bench",)), piv, echo)
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=("bench",))
    if echo is not None:
        msg.opt.echo = echo
    msg.opt.add_option(OpaqueOption(PROOF_OPTION, proof))
    return msg


async def _enroll(session: ProbeSession, asymmetric: bool) -> Device:
    if asymmetric:
        key: CoseKey = Ec2Key.generate(os.urandom(8))
        request = TokenRequest(req_cnf=cnf_mod.CnfKey(key.public()).to_cbor())
    else:
        request = TokenRequest()
    resp = await _post(session, "token", request.encode())
    if resp.code != aiocoap.CREATED:
        raise ProbeError(f"/token answered {resp.code}")
    tr = TokenResponse.decode(resp.payload)
    if not asymmetric:
        key = cnf_mod.decode(tr.cnf).key  # type: ignore[union-attr, arg-type]
    resp = await _post(session, "authz-info", tr.access_token)
    if resp.code != aiocoap.CREATED:
        raise ProbeError(f"/authz-info answered {resp.code}")
    device = Device(session, key)
    challenge = await session.request(_proofed(device), timeout=30)
    if challenge.code != aiocoap.UNAUTHORIZED or challenge.opt.echo is None:
        raise ProbeError(f"expected an Echo challenge, got {challenge.code}")
    device.piv += 1
    ok = await session.request(_with_proof(device, device.piv, challenge.opt.echo), timeout=30)
    if ok.code != aiocoap.CONTENT:
        raise ProbeError(f"Echo repeat answered {ok.code}")
    return device


@dataclass
class ModeResult:
    mode: str
    requests: int = 0
    failures: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rounds: list[float] = field(default_factory=list)

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else float("nan")


async def _batch(
    mode: str, devices: list[Device], count: int, concurrency: int, result: ModeResult, pid: int
) -> None:
    if mode == "none":
        messages = [
            aiocoap.Message(code=aiocoap.GET, uri_path=("bench-open",)) for _ in range(count)
        ]
        targets = [devices[i % len(devices)] for i in range(count)]
    else:
        targets = [devices[i % len(devices)] for i in range(count)]
        messages = [_proofed(d) for d in targets]  # built before the clock starts

    async def one(index: int) -> None:
        try:
            resp = await targets[index].session.request(messages[index], timeout=30)
            if resp.code == aiocoap.CONTENT:
                result.requests += 1
                return
        except ProbeError:
            pass
        result.failures += 1

    # a device's proofs must arrive roughly in order: give each device's
    # requests to one worker (the window tolerates reordering within 64)
    started, cpu = time.perf_counter(), _cpu_seconds(pid)
    before = result.requests
    await asyncio.wait_for(_pool(count, concurrency, one), PHASE_LIMIT)
    elapsed = time.perf_counter() - started
    result.seconds += elapsed
    result.cpu_seconds += _cpu_seconds(pid) - cpu
    result.rounds.append((result.requests - before) / elapsed if elapsed else 0.0)


async def _run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        provisioned = _prepare(state, args.sessions * 2)
        process, port = await _start_gateway(state)
        probe = DtlsProbe(("127.0.0.1", port))
        results = {mode: ModeResult(mode) for mode in MODES}
        try:
            sym: list[Device] = []
            asym: list[Device] = []
            for index, (client_id, psk) in enumerate(provisioned):
                session = await probe.connect(client_id.encode(), psk, timeout=30)
                asymmetric = index >= args.sessions
                (asym if asymmetric else sym).append(await _enroll(session, asymmetric))
            pools = {"none": sym, "mac0": sym, "es256": asym}
            for round_no in range(args.rounds):
                order = MODES[round_no % 3 :] + MODES[: round_no % 3]
                for mode in order:
                    await _batch(
                        mode,
                        pools[mode],
                        args.requests,
                        args.concurrency,
                        results[mode],
                        process.pid,
                    )
        finally:
            await probe.close()
            await _stop(process)
    return _report(results, args)


def _report(results: dict[str, ModeResult], args: argparse.Namespace) -> dict[str, object]:
    base = results["none"]
    print(
        f"gateway authorization cost: {args.sessions} sessions per mode, {args.rounds} rounds"
        f" x {args.requests} requests, concurrency {args.concurrency}"
    )
    print(
        f"{'mode':8}{'req/s':>10}{'cpu us/req':>12}{'ratio req/s':>13}{'ratio cpu':>11}{'fail':>6}"
    )
    out: dict[str, object] = {"modes": {}}
    for mode, r in results.items():
        ratio = r.req_per_s / base.req_per_s if base.req_per_s else float("nan")
        cpu_ratio = base.cpu_us / r.cpu_us if r.requests and base.requests else float("nan")
        print(
            f"{mode:8}{r.req_per_s:10.0f}{r.cpu_us:12.0f}{ratio:13.2f}{cpu_ratio:11.2f}{r.failures:6}"
        )
        out["modes"][mode] = {  # type: ignore[index]
            "req_per_s": r.req_per_s,
            "cpu_us_per_req": r.cpu_us,
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
            "failures": r.failures,
            "rounds_req_per_s": r.rounds,
        }
    mac0 = out["modes"]["mac0"]["ratio"]  # type: ignore[index]
    es256 = out["modes"]["es256"]["ratio"]  # type: ignore[index]
    target = "PASS" if mac0 >= 0.90 else "MISS"
    print(
        f"{target}  Mac0 authorization throughput / no authorization: {mac0:.2f} (target >= 0.90)"
    )
    out["result"] = f"RESULT authz_mac0_ratio={mac0:.2f} authz_es256_ratio={es256:.2f}"
    print(out["result"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.authz", description=__doc__)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run (CI)")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args(argv)
    if args.serve:
        _serve(Path(args.serve))
        return 0
    if args.tiny:
        args.sessions, args.requests, args.rounds, args.concurrency = 4, 40, 1, 4
    out = asyncio.run(_run(args))
    failures = sum(m["failures"] for m in out["modes"].values())  # type: ignore[attr-defined]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
