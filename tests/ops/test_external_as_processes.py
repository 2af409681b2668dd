"""Two ``acegw serve`` processes on loopback, each from ``acegw init`` in its
own directory, over real DTLS: the AS (embedded AS, TRL at /revoke/trl,
RFC 9770) and an RS following it (``[[rs.issuers]] as_uri``). Everything
the operator does goes through the CLI: clients registered at each side,
the AS-RS key exported, tokens revoked, the AS's signing key rotated."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from pathlib import Path

import aiocoap

from gateway.config import IssuerConfig
from gateway.dtls.probe import DtlsProbe, ProbeSession
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.cwt import decode_unverified
from tokens.keys import Ec2Key

from .conftest import (
    ACEGW,
    ProofClient,
    Served,
    free_port,
    gateway_env,
    init_state,
    post,
    serving,
    value,
)
from .test_operator import acegw

RS_ID = "rs-b"
DEVICE = "meter-7"
#: an AS outage this long (docs/operations.md: the AS stopped for 5-10 s)
OUTAGE = 10.0


def _edit(toml: Path, old: str, new: str) -> None:
    text = toml.read_text()
    assert old in text, old
    toml.write_text(text.replace(old, new, 1))


async def _ok(env: dict[str, str], *args: str) -> str:
    rc, out, err = await acegw(env, *args)
    assert rc == 0, (args, err)
    return out


async def _token(session: ProbeSession, key: Ec2Key | None = None) -> tuple[bytes, object]:
    """A token for the RS from the AS (symmetric PoP, or ``key``'s)."""
    req_cnf = None if key is None else cnf_mod.CnfKey(key.public()).to_cbor()
    resp = await post(session, "token", TokenRequest(audience=RS_ID, req_cnf=req_cnf).encode())
    assert resp.code == aiocoap.CREATED, (resp.code, resp.payload[:100])
    tr = TokenResponse.decode(resp.payload)
    return tr.access_token, key or cnf_mod.decode(tr.cnf).key


async def _cti(env: dict[str, str], as_dir: Path, token: bytes) -> str:
    out = await _ok(env, "tokens", "decode", "--dir", str(as_dir), token.hex())
    return str(json.loads(out)["claims"]["cti"])


async def _issuer(rs: Served, name: str) -> float:
    return value(await rs.scrape(), name, worker="0", issuer="acegw")


async def test_as_and_rs_processes(tmp_path: Path) -> None:
    as_dir = init_state(tmp_path / "as")
    rs_dir = init_state(tmp_path / "rs")
    _edit(as_dir / "acegw.toml", '# audiences = ["acegw"]', f'audiences = ["acegw", "{RS_ID}"]')
    _edit(rs_dir / "acegw.toml", "enabled = true\n", "enabled = false\n")
    _edit(rs_dir / "acegw.toml", 'audience = "acegw"', f'audience = "{RS_ID}"')
    as_udp, as_http = free_port(), free_port(socket.SOCK_STREAM)
    rs_udp, rs_http = free_port(), free_port(socket.SOCK_STREAM)
    as_env = gateway_env(as_udp, as_http, ACEGW_LOGGING_LEVEL="INFO")
    rs_env = gateway_env(rs_udp, rs_http, ACEGW_LOGGING_LEVEL="INFO")
    at_as, at_rs = ("--dir", str(as_dir)), ("--dir", str(rs_dir))
    device_psk, rs_psk = os.urandom(32), os.urandom(32)

    # the AS's operator registers the device and the RS (which may introspect)
    await _ok(as_env, "clients", "add", DEVICE, "--scope", "/whoami:GET", "--audience", RS_ID,
              "--psk-hex", device_psk.hex(), *at_as)  # fmt: skip
    registered = await _ok(as_env, "clients", "add", RS_ID, "--scope", "/introspect:POST",
                           "--audience", RS_ID, "--psk-hex", rs_psk.hex(), *at_as)  # fmt: skip
    # the registration response names the TRL (RFC 9770 §10), never a secret
    assert f"GET {IssuerConfig.trl_path} " in registered and "token hash sha-256" in registered
    assert "MAX_N 32, MAX_DIFF_BATCH 16" in registered and rs_psk.hex() not in registered
    await _ok(as_env, "keys", "export", "--include-as-rs", "--out", str(rs_dir / "as-rs.cbor"),
              *at_as)  # fmt: skip
    # the RS's operator: the device's DTLS PSK there, and the RS's own PSK at the AS
    (rs_dir / "as.psk").write_text(rs_psk.hex())
    os.chmod(rs_dir / "as.psk", 0o600)
    with open(rs_dir / "acegw.toml", "a") as f:
        f.write(
            "\n[[rs.issuers]]\n"
            'name = "acegw"\n'
            f'as_uri = "coaps://127.0.0.1:{as_udp}"\n'
            f'identity = "{RS_ID}"\n'
            'psk_file = "as.psk"\n'
            'keys_file = "as-rs.cbor"\n'
        )
    await _ok(rs_env, "clients", "add", DEVICE, "--scope", "/whoami:GET",
              "--psk-hex", device_psk.hex(), *at_rs)  # fmt: skip

    as_cmd = [*ACEGW, "serve", *at_as]
    async with contextlib.AsyncExitStack() as stack:
        as_gw = await stack.enter_async_context(
            serving(as_cmd, as_env, tmp_path / "as.log", as_udp, as_http)
        )
        rs = await stack.enter_async_context(
            serving([*ACEGW, "serve", *at_rs], rs_env, tmp_path / "rs.log", rs_udp, rs_http)
        )
        # the RS's /readyz is 200 once the TRL was received
        assert await _issuer(rs, "acegw_issuer_trl_following") == 1
        to_as, to_rs = DtlsProbe(as_gw.target), DtlsProbe(rs.target)
        stack.push_async_callback(to_rs.close)
        as_session = await to_as.connect(DEVICE.encode(), device_psk)
        rs_session = await to_rs.connect(DEVICE.encode(), device_psk)

        # --- a token of the AS works at the RS; revoked at the AS: refused in < 1 s
        token, pop = await _token(as_session)
        first = ProofClient(rs_session, pop, token)  # type: ignore[arg-type]
        assert (await first.upload()).code == aiocoap.CREATED
        assert (await first.call()).code == aiocoap.CONTENT
        first_cti = await _cti(as_env, as_dir, token)
        await _ok(as_env, "tokens", "revoke", first_cti, *at_as)
        took, resp = await _until_refused(first, within=5)
        print(f"revoked with the CLI at the AS, refused at the RS after {took * 1000:.0f} ms")
        assert took < 1.0, f"the revocation took {took:.3f} s to reach the RS"
        assert resp.code == aiocoap.UNAUTHORIZED
        assert first_cti in _revoked_at(rs)
        assert (await first.upload()).code == aiocoap.UNAUTHORIZED  # its hash is listed

        # --- the AS stops; a revocation is made with the CLI while it is down
        second_token, second_pop = await _token(as_session)
        second = ProofClient(rs_session, second_pop, second_token)  # type: ignore[arg-type]
        assert (await second.upload()).code == aiocoap.CREATED
        second_cti = await _cti(as_env, as_dir, second_token)
        await to_as.close()
        assert await as_gw.stop() == 0
        down_at = time.monotonic()
        await _until_issuer(rs, "acegw_issuer_trl_following", 0)
        await _ok(as_env, "tokens", "revoke", second_cti, *at_as)
        # within max_staleness (60 s by default) the RS serves on its last view
        assert (await second.call()).code == aiocoap.CONTENT
        await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        assert await _issuer(rs, "acegw_issuer_trl_stale") == 0

        # --- the AS is back: the RS registers again (a full query) and applies it
        as_gw = await stack.enter_async_context(
            serving(as_cmd, as_env, tmp_path / "as-again.log", as_udp, as_http)
        )
        after, resp = await _until_refused(second, within=15)
        print(f"AS down {OUTAGE:.0f} s; the revocation made meanwhile applied {after:.2f} s after")
        # reconnects back off to at most 5 s (MAX_RETRY), plus a handshake
        assert after < 8.0, after
        assert resp.code == aiocoap.UNAUTHORIZED
        assert second_cti in _revoked_at(rs)
        assert await _issuer(rs, "acegw_issuer_trl_following") == 1
        assert await _issuer(rs, "acegw_issuer_trl_entries") == 2  # the whole list came

        # --- the AS rotates its signing key: the RS follows without its operator
        await _ok(as_env, "keys", "rotate", *at_as)
        to_as = DtlsProbe(as_gw.target)
        stack.push_async_callback(to_as.close)
        as_session = await to_as.connect(DEVICE.encode(), device_psk)
        key = Ec2Key.generate(b"meter-7-key")
        new_kid = await _signing_kid(as_env, as_dir)
        deadline = time.monotonic() + 10
        while True:  # the running AS takes the new key at its next housekeeping
            signed, _ = await _token(as_session, key)
            if decode_unverified(signed).kid == new_kid:
                break
            assert time.monotonic() < deadline, "the AS never signed with the rotated key"
            await asyncio.sleep(0.1)
        third = ProofClient(rs_session, key, signed)
        fetches = await _issuer(rs, "acegw_issuer_key_fetches_total")
        deadline = time.monotonic() + 10
        while (await third.upload()).code != aiocoap.CREATED:  # unknown kid: a fetch
            assert time.monotonic() < deadline, "the RS never learnt the rotated key"
            await asyncio.sleep(0.1)
        assert await _issuer(rs, "acegw_issuer_key_fetches_total") > fetches
        assert (await third.call()).code == aiocoap.CONTENT
        for secret in (device_psk.hex(), rs_psk.hex(), token.hex(), second_token.hex()):
            for log in ("as.log", "as-again.log", "rs.log"):
                assert secret not in (tmp_path / log).read_text()


async def _until_refused(client: ProofClient, within: float) -> tuple[float, aiocoap.Message]:
    """Proofed calls until one is not 2.05: (seconds it took, that response)."""
    start = time.monotonic()
    while (resp := await client.call(timeout=5)).code == aiocoap.CONTENT:
        assert time.monotonic() - start < within, "the revocation never reached the RS"
        await asyncio.sleep(0.005)
    return time.monotonic() - start, resp


def _revoked_at(rs: Served) -> list[str]:
    """ctis of the RS's ``token_revoked`` events (docs/operations.md "Events")."""
    ctis: list[str] = []
    for line in rs.output().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "token_revoked":
                ctis += record["ctis"]
    return ctis


async def _until_issuer(rs: Served, name: str, expected: float, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await _issuer(rs, name)) != expected:
        assert time.monotonic() < deadline, f"{name} stayed {got}, not {expected}"
        await asyncio.sleep(0.05)


async def _signing_kid(env: dict[str, str], as_dir: Path) -> bytes:
    """The AS's current signing kid, as ``acegw keys list --json`` says."""
    keys = json.loads(await _ok(env, "keys", "list", "--json", "--dir", str(as_dir)))
    (kid,) = [k["kid"] for k in keys if k["kind"] == "signing" and k["status"] == "current"]
    return bytes.fromhex(kid)
