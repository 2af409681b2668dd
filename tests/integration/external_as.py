"""Helpers for the external-AS tests: an AS gateway (embedded AS, a
resource server registered at it) and a gateway following it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiocoap

from gateway.resource_server.issuer_follower import IssuerFollower
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse

from .conftest import DEVICE_ID, DEVICE_PSK, device, gateway_config

RS_ID = "rs-b"
RS_PSK = os.urandom(32)  # above tinydtls's 16: the engine's client carries it


def init_dir(d: Path) -> Path:
    assert cli_main(["init", "--dir", str(d)], out=io.StringIO()) == 0
    return d


def init_as_dir(d: Path) -> Path:
    """``acegw init`` with this AS issuing tokens for RS_ID too (in the file:
    the CLI at that directory reads it)."""
    init_dir(d)
    toml = d / "acegw.toml"
    text = toml.read_text()
    assert '# audiences = ["acegw"]' in text
    toml.write_text(text.replace('# audiences = ["acegw"]', f'audiences = ["acegw", "{RS_ID}"]'))
    return d


async def until(
    predicate: Callable[[], object], timeout: float = 10.0, state: object = None
) -> float:
    """Poll ``predicate`` (bounded); returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not reached in time ({state})")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def token_from(gw_as: Gateway) -> tuple[bytes, object]:
    """A token for RS_ID from the AS, with its PoP key."""
    async with device(gw_as, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        resp = await dev.post("/token", TokenRequest(audience=RS_ID).encode())
        assert resp.code == aiocoap.CREATED, resp.payload
    tr = TokenResponse.decode(resp.payload)
    return tr.access_token, cnf_mod.decode(tr.cnf).key


def cti_of(as_dir: Path, token: bytes) -> str:
    """The token's cti as the AS's operator sees it (``acegw tokens decode``)."""
    out = io.StringIO()
    assert cli_main(["tokens", "decode", "--dir", str(as_dir), token.hex()], out=out) == 0
    m = re.search(r"cti\W+([0-9a-f]+)", out.getvalue())
    assert m, out.getvalue()
    return m.group(1)


def revoke(as_dir: Path, cti: str) -> None:
    """``acegw tokens revoke`` at the AS's directory (another registry connection)."""
    assert cli_main(["tokens", "revoke", "--dir", str(as_dir), cti], out=io.StringIO()) == 0


def write_rs_secrets(rs_dir: Path, gw_as: Gateway) -> tuple[Path, Path]:
    """The RS's PSK at the AS and the AS-RS key file (mode 0600)."""
    psk_file = rs_dir / "as.psk"
    psk_file.write_text(RS_PSK.hex())
    os.chmod(psk_file, 0o600)
    keys_file = rs_dir / "as-rs.cbor"
    keys_file.write_bytes(gw_as.keystore.export_for_rs())
    os.chmod(keys_file, 0o600)
    return psk_file, keys_file


@dataclass
class Pair:
    as_dir: Path
    gw_as: Gateway
    gw_rs: Gateway
    follower: IssuerFollower


@contextlib.asynccontextmanager
async def as_and_rs(
    tmp_path: Path, extra: str = "", before_rs: Callable[[Gateway], None] | None = None
) -> AsyncIterator[Pair]:
    """The AS gateway and the RS following it; ``extra``: more lines of
    the RS's ``[[rs.issuers]]`` entry."""
    as_dir = init_as_dir(tmp_path / "as")
    gw_as = Gateway(gateway_config(as_dir))
    gw_as.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET", audiences=[RS_ID])
    gw_as.registry.add(RS_ID, psk=RS_PSK, scope="/introspect:POST", audiences=[RS_ID])
    await gw_as.start()
    if before_rs is not None:
        before_rs(gw_as)
    gw_rs = None
    try:
        rs_dir = init_dir(tmp_path / "rs")
        psk_file, keys_file = write_rs_secrets(rs_dir, gw_as)
        host, port = gw_as.address
        with open(rs_dir / "acegw.toml", "a") as f:
            f.write(
                "\n[[rs.issuers]]\n"
                f'name = "{gw_as.config.as_.issuer}"\n'
                f'as_uri = "coaps://{host}:{port}"\n'
                f'identity = "{RS_ID}"\n'
                f'psk_file = "{psk_file}"\n'
                f'keys_file = "{keys_file}"\n' + extra
            )
        gw_rs = Gateway(gateway_config(rs_dir, ACEGW_AS_ENABLED="false", ACEGW_RS_AUDIENCE=RS_ID))
        # the device's DTLS PSK at the RS (its access rights come from the AS's tokens)
        gw_rs.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
        await gw_rs.start()
        follower = gw_rs.followed.followers[gw_as.config.as_.issuer]
        yield Pair(as_dir, gw_as, gw_rs, follower)
    finally:
        if gw_rs is not None:
            await gw_rs.stop()
            gw_rs.registry.close()
        await gw_as.stop()
        gw_as.registry.close()
