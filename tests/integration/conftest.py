"""A real gateway on 127.0.0.1 (DTLS over UDP, SQLite registry, key
directory in tmp_path) and DTLS-PSK clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import pytest

from gateway.config import Config, load_config
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway

DEVICE_ID = "sensor-1"
DEVICE_PSK = b"sensor-1-psk-abc"
DEVICE_SCOPE = "/temp:GET /cfg:GET,PUT /whoami:GET"


class FakeClock:
    """Injected wall clock; tests move it instead of sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    assert cli_main(["init", "--dir", str(d)], out=io.StringIO()) == 0
    return d


def gateway_config(state_dir: Path, **env: str) -> Config:
    base = {
        "ACEGW_SERVER_BIND": "127.0.0.1",
        "ACEGW_SERVER_PORT": "0",
        "ACEGW_METRICS_LISTEN": "off",
        "ACEGW_AUDIT_PATH": str(state_dir / "audit.log"),
        "ACEGW_LOGGING_LEVEL": "WARNING",
        "ACEGW_LIMITS_ACE_BURST": "1000",
        "ACEGW_LIMITS_DEVICE_BURST": "1000",
        "ACEGW_LIMITS_LOCKOUT_FAILURES": "1000",
    }
    base.update(env)
    return load_config(state_dir / "acegw.toml", env=base)


@pytest.fixture
def config(state_dir: Path) -> Config:
    return gateway_config(state_dir)


@pytest.fixture
async def gateway(config: Config) -> AsyncIterator[Gateway]:
    gw = Gateway(config)
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope=DEVICE_SCOPE)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
        gw.registry.close()


@dataclass
class Device:
    """A DTLS-PSK CoAP client (aiocoap's tinydtls client transport)."""

    context: aiocoap.Context
    base: str

    async def post(
        self, path: str, payload: bytes, content_format: int | None = 19, timeout: float = 10
    ) -> aiocoap.Message:
        msg = aiocoap.Message(
            code=aiocoap.POST, uri=self.base + path, payload=payload, content_format=content_format
        )
        return await asyncio.wait_for(self.context.request(msg).response, timeout)

    async def request(self, msg: aiocoap.Message, timeout: float = 10) -> aiocoap.Message:
        return await asyncio.wait_for(self.context.request(msg).response, timeout)


@contextlib.asynccontextmanager
async def device(gw: Gateway, identity: bytes, psk: bytes) -> AsyncIterator[Device]:
    port = gw.address[1]
    base = f"coaps://127.0.0.1:{port}"
    ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
    ctx.client_credentials.load_from_dict(
        {base + "/*": {"dtls": {"psk": psk, "client-identity": identity}}}
    )
    try:
        yield Device(ctx, base)
    finally:
        await ctx.shutdown()


class ProofDevice:
    """A device holding a symmetric PoP token, making proof-bearing requests
    (docs/design.md "Wire formats") over its DTLS session."""

    def __init__(self, dev: Device, key, token: bytes) -> None:
        self.dev = dev
        self.key = key
        self.token = token
        self.piv = 0
        self.echo: bytes | None = None

    @classmethod
    async def enroll(cls, dev: Device, scope: str | None = None) -> ProofDevice:
        from tokens import cnf as cnf_mod
        from tokens.ace import TokenRequest, TokenResponse

        resp = await dev.post("/token", TokenRequest(scope=scope).encode())
        assert resp.code == aiocoap.CREATED, resp
        tr = TokenResponse.decode(resp.payload)
        assert (await dev.post("/authz-info", tr.access_token)).code == aiocoap.CREATED
        return cls(dev, cnf_mod.decode(tr.cnf).key, tr.access_token)

    def message(
        self,
        code=aiocoap.GET,
        path: str = "/whoami",
        *,
        query: tuple[str, ...] = (),
        payload: bytes = b"",
        content_format: int | None = None,
        piv: int | None = None,
        echo: bytes | None = None,
        key=None,
        proofed_as: dict | None = None,
        mtype=None,
    ) -> aiocoap.Message:
        """A request with a Proof option; ``proofed_as`` overrides fields of
        what the proof covers (to tamper), ``key`` signs with another key."""
        from aiocoap.optiontypes import OpaqueOption

        from tokens.params import PROOF_OPTION
        from tokens.proof import ProofedRequest, build_proof

        if piv is None:
            self.piv += 1
            piv = self.piv
        segments = tuple(s for s in path.split("/") if s)
        covered = dict(
            code=int(code),
            path=segments,
            query=query,
            content_format=content_format,
            payload=payload,
        )
        covered.update(proofed_as or {})
        value = build_proof(key or self.key, ProofedRequest(**covered), piv, echo)
        msg = aiocoap.Message(
            code=code, uri=self.dev.base + path, payload=payload, content_format=content_format
        )
        if query:
            msg.opt.uri_query = query
        if echo is not None:
            msg.opt.echo = echo
        if mtype is not None:
            msg.mtype = mtype
        msg.opt.add_option(OpaqueOption(PROOF_OPTION, value))
        return msg

    async def call(self, *args, **kwargs) -> aiocoap.Message:
        """Send; on 4.01 with an Echo option repeat once with the Echo."""
        resp = await self.dev.request(self.message(*args, **kwargs))
        if resp.code == aiocoap.UNAUTHORIZED and resp.opt.echo is not None:
            self.echo = resp.opt.echo
            kwargs.pop("piv", None)
            resp = await self.dev.request(self.message(*args, echo=resp.opt.echo, **kwargs))
        return resp
