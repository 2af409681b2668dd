"""Running the gateway as an operator does: ``acegw serve`` (or ``make run``'s
``python -m examples.demo``) as a subprocess on loopback with free ports, its
HTTP port scraped, and devices on :class:`gateway.dtls.probe.DtlsProbe`
sessions (one UDP source port each) doing token, upload, Echo and proofs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import aiohttp
from aiocoap.optiontypes import OpaqueOption

from gateway.config import load_config
from gateway.dtls.probe import DtlsProbe, ProbeError, ProbeSession
from gateway.operations import metrics
from gateway.registry.registry import Registry
from gateway.runtime.cli import main as cli_main
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.keys import CoseKey, Ec2Key
from tokens.params import PROOF_OPTION
from tokens.proof import ProofedRequest, build_proof

ACEGW = [sys.executable, "-c", "import sys; from gateway.runtime.cli import main; sys.exit(main())"]
ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_state(directory: Path) -> Path:
    assert cli_main(["init", "--dir", str(directory)], out=io.StringIO()) == 0
    return directory


def add_devices(state: Path, count: int, prefix: str, scope: str) -> list[tuple[str, bytes]]:
    config = load_config(state / "acegw.toml", env={})
    with Registry.from_config(config) as registry:
        return registry.bulk_add(count, prefix, scope)


def gateway_env(udp_port: int, metrics_port: int, **extra: str) -> dict[str, str]:
    """The environment of a gateway under test: loopback, free ports, limits
    that a test fleet from one address does not hit, WARNING logs."""
    env = dict(os.environ)
    env.update(
        {
            "ACEGW_SERVER_BIND": "127.0.0.1",
            "ACEGW_SERVER_PORT": str(udp_port),
            "ACEGW_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "ACEGW_AUDIT_PATH": "off",
            "ACEGW_LOGGING_LEVEL": "WARNING",
            "ACEGW_LIMITS_ACE_RATE": "10000",
            "ACEGW_LIMITS_ACE_BURST": "10000",
            "ACEGW_LIMITS_DEVICE_RATE": "10000",
            "ACEGW_LIMITS_DEVICE_BURST": "10000",
            "ACEGW_LIMITS_LOCKOUT_FAILURES": "10000",
        }
    )
    env.update(extra)
    return env


@dataclass
class Served:
    """A gateway subprocess; its output goes to ``log`` (never a pipe that
    could fill up)."""

    process: asyncio.subprocess.Process
    udp_port: int
    metrics_port: int
    log: Path

    @property
    def target(self) -> tuple[str, int]:
        return ("127.0.0.1", self.udp_port)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise AssertionError(f"gateway exited early:\n{self.output()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                status, _ = await http_get(self.http + "/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"gateway not ready in {timeout} s:\n{self.output()[-3000:]}")

    async def scrape(self) -> Samples:
        status, body = await http_get(self.http + "/metrics")
        assert status == 200
        return metrics.parse(body.decode())

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"gateway did not stop:\n{self.output()[-3000:]}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.asynccontextmanager
async def serving(
    args: list[str], env: Mapping[str, str], log: Path, udp_port: int, metrics_port: int
):
    """Start ``args``, wait for /readyz, yield a :class:`Served`; on exit
    stop it (SIGTERM, then SIGKILL) and all its children."""
    with open(log, "wb") as out:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=ROOT,
            start_new_session=True,
        )
    served = Served(process, udp_port, metrics_port, log)
    try:
        await served.wait_ready()
        yield served
    finally:
        if process.returncode is None:
            with contextlib.suppress(AssertionError):
                await served.stop()
        _kill_group(process.pid)


def _kill_group(pgid: int) -> None:
    """Leftovers of a failed test (workers of a killed supervisor)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


async def http_get(url: str) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status, await resp.read()


def value(samples: Samples, name: str, **labels: str) -> float:
    return metrics.sample(samples, name, **labels)


# --- devices ---------------------------------------------------------------------------


@dataclass
class ProofClient:
    """A device on one probe session holding a PoP token."""

    session: ProbeSession
    key: CoseKey
    token: bytes
    piv: int = 0
    echoes: int = 0
    kid: bytes = field(default=b"")

    @classmethod
    async def enroll(
        cls, session: ProbeSession, scope: str | None = None, *, asymmetric: bool = False
    ) -> ProofClient:
        """``POST /token`` then ``POST /authz-info`` (RFC 9200 §5.8, §5.10.1)."""
        key: CoseKey | None = None
        if asymmetric:
            key = Ec2Key.generate(os.urandom(8))
            request = TokenRequest(scope=scope, req_cnf=cnf_mod.CnfKey(key.public()).to_cbor())
        else:
            request = TokenRequest(scope=scope)
        resp = await post(session, "token", request.encode())
        assert resp.code == aiocoap.CREATED, (resp.code, resp.payload[:100])
        tr = TokenResponse.decode(resp.payload)
        if key is None:
            key = cnf_mod.decode(tr.cnf).key  # type: ignore[union-attr, arg-type]
        client = cls(session, key, tr.access_token)
        assert (await client.upload()).code == aiocoap.CREATED
        return client

    async def upload(self, session: ProbeSession | None = None) -> aiocoap.Message:
        return await post(session or self.session, "authz-info", self.token)

    def message(
        self,
        path: tuple[str, ...] = ("whoami",),
        *,
        code: aiocoap.numbers.codes.Code = aiocoap.GET,
        payload: bytes = b"",
        echo: bytes | None = None,
        key: CoseKey | None = None,
    ) -> aiocoap.Message:
        self.piv += 1
        covered = ProofedRequest(code=int(code), path=path, payload=payload)
        proof = build_proof(key or self.key, covered, self.piv, echo)
        msg = aiocoap.Message(code=code, uri_path=path, payload=payload)
        if echo is not None:
            msg.opt.echo = echo
        msg.opt.add_option(OpaqueOption(PROOF_OPTION, proof))
        return msg

    async def call(
        self, path: tuple[str, ...] = ("whoami",), *, timeout: float = 10.0, **kw: object
    ) -> aiocoap.Message:
        """A proofed request; a 4.01 with Echo (RFC 9175) is repeated once."""
        resp = await self.session.request(self.message(path, **kw), timeout=timeout)  # type: ignore[arg-type]
        if resp.code == aiocoap.UNAUTHORIZED and resp.opt.echo is not None:
            self.echoes += 1
            resp = await self.session.request(
                self.message(path, echo=resp.opt.echo, **kw),  # type: ignore[arg-type]
                timeout=timeout,
            )
        return resp


async def post(session: ProbeSession, path: str, payload: bytes) -> aiocoap.Message:
    msg = aiocoap.Message(code=aiocoap.POST, uri_path=(path,), payload=payload, content_format=19)
    return await session.request(msg, timeout=15)


# --- what an operator reads and runs ------------------------------------------------


def events(served: Served, name: str | None = None) -> list[dict[str, Any]]:
    """The event lines (JSON with an ``event`` key) the gateway wrote so far."""
    out = []
    for line in served.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "event" in record and (name is None or record["event"] == name):
            out.append(record)
    return out


async def until(found: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``found`` until it returns something true (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        result = found()
        if result:
            return result
        assert time.monotonic() < deadline, f"not seen in {timeout} s: {what}"
        await asyncio.sleep(0.05)


async def acegw(env: dict[str, str], *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """An operator's ``acegw`` command in its own process."""
    process = await asyncio.create_subprocess_exec(
        *ACEGW,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"acegw {' '.join(args)} did not end in {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def refused_handshake(target: tuple[str, int], identity: bytes, psk: bytes, **kw) -> bool:
    """Whether a handshake with ``identity`` and ``psk`` fails."""
    probe = DtlsProbe(target, **kw)
    try:
        await probe.connect(identity, psk, timeout=3)
    except ProbeError:
        return True
    finally:
        await probe.close()
    return False
