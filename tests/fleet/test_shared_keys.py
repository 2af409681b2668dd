"""The AS keys and the issued-token ledger shared through PostgreSQL, with two
``acegw serve`` instances (127.0.0.1 and 127.0.0.2), each from its own copy
of the gateway directory (as on two machines):

- ``acegw keys rotate`` run with the CLI: within 1 s both instances issue
  tokens under the new kid and accept each other's (measured from the
  command's return to the send time of the first such token request);
- ``acegw keys retire OLDKID --yes``: tokens under the old key are refused on
  both within 1 s;
- a token issued by A and revoked with ``acegw tokens revoke`` is on B's TRL;
- no private key appears in the instances' logs or the commands' output;
- ``acegw registry migrate`` from SQLite and a key directory: an instance on
  PostgreSQL, whose own key directory holds other keys (the database's keys
  win, one log line says so), accepts a token issued before the move.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import aiocoap
import cbor2

from gateway.authorization_server.issued_tokens import SharedIssuedTokens
from gateway.authorization_server.keystore import Keystore, RegistryKeys
from gateway.authorization_server.revocation_list import FULL_SET, token_hash
from gateway.config import load_config
from gateway.dtls.probe import DtlsProbe, ProbeSession
from gateway.registry.masterkey import load_master_key
from gateway.registry.postgres import PostgresStore
from gateway.registry.registry import Registry
from gateway.registry.store import ClientRecord
from tests.fleet.conftest import cli, start_instances
from tests.fleet.test_shared_registry import PROPAGATION_BOUND_S, _refused_after
from tests.ops.conftest import (
    ACEGW,
    ProofClient,
    free_port,
    gateway_env,
    init_state,
    post,
    serving,
)
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.cwt import decode_unverified
from tokens.keys import Ec2Key
from tokens.params import KeyParam


async def _token(session: ProbeSession) -> ProofClient:
    """A new asymmetric-PoP token (a COSE_Sign1 under the current signing
    key) from ``session``'s instance, not uploaded yet."""
    key = Ec2Key.generate(os.urandom(8))
    request = TokenRequest(req_cnf=cnf_mod.CnfKey(key.public()).to_cbor())
    resp = await post(session, "token", request.encode())
    assert resp.code == aiocoap.CREATED, (resp.code, resp.payload[:100])
    return ProofClient(session, key, TokenResponse.decode(resp.payload).access_token)


async def _first_under(
    session: ProbeSession, kid: bytes, start: float, deadline: float
) -> tuple[float, ProofClient]:
    """Seconds from ``start`` to the send time of the first token request
    answered with a token under ``kid``, and that token."""
    while time.monotonic() < deadline:
        sent = time.monotonic()
        client = await _token(session)
        if decode_unverified(client.token).kid == kid:
            return sent - start, client
        await asyncio.sleep(0.02)
    raise AssertionError(f"no token under {kid.hex()} 10 s after the rotation")


def _signing(env: dict[str, str], d: tuple[str, ...]) -> dict[str, str]:
    keys = json.loads(cli(env, "keys", "list", "--json", *d))
    return {k["kid"]: k["status"] for k in keys if k["kind"] == "signing"}


def _secrets_of(pg_url: str, state: Path) -> set[str]:
    """Text forms (hex, base64) of the store's current signing key and its
    AS-RS keys (private parts)."""
    key = load_master_key(state / "master.key", env={})
    out: set[str] = set()
    store = PostgresStore(pg_url)
    try:
        with Keystore(backend=RegistryKeys(store, key)) as ks:
            for k in [ks.signing_key(), ks.as_rs_key(), *ks.decryption_keys()]:
                m = k.to_cose(include_private=True)
                for param in (KeyParam.D, KeyParam.K):
                    value = m.get(int(param))
                    if isinstance(value, bytes):
                        out |= {value.hex(), base64.b64encode(value).decode()[:20]}
    finally:
        store.close()
    return out


async def _trl(session: ProbeSession) -> list[bytes]:
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=("revoke", "trl"))
    resp = await session.request(msg, timeout=10)
    assert resp.code == aiocoap.CONTENT, (resp.code, resp.payload[:100])
    return list(cbor2.loads(resp.payload)[FULL_SET])


async def test_rotation_retirement_and_trl_reach_every_instance(tmp_path: Path, pg_url) -> None:
    state = init_state(tmp_path / "state")
    key = load_master_key(state / "master.key", env={})
    with Registry(pg_url, key) as registry:
        devices = registry.bulk_add(2, "dev-", "/whoami:GET", psk_bytes=16)
        ops_psk = registry.add("ops", scope="/whoami:GET", psk=os.urandom(16))
    d = ("--dir", str(state))
    # B on "another machine": its own copy of the directory (config, master
    # key, key directory, local files), nothing shared but the database
    state_b = tmp_path / "state-b"
    shutil.copytree(state, state_b)
    said: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        a, b = await start_instances(
            stack, [state, state_b], pg_url, tmp_path, ACEGW_AS_TRL_ADMINS="ops"
        )
        env = a.env
        sessions: dict[tuple[str, str], ProbeSession] = {}
        for name, instance in (("a", a), ("b", b)):
            probe = DtlsProbe(instance.target)
            stack.push_async_callback(probe.close)
            for device, psk in [*devices, ("ops", ops_psk)]:
                sessions[name, device] = await probe.connect(device.encode(), psk)
        dev0, dev1 = devices[0][0], devices[1][0]

        (old_kid,) = [k for k, s in _signing(env, d).items() if s == "current"]
        secrets = _secrets_of(pg_url, state)  # the signing key rotated out and retired below
        olds = {}
        for name in ("a", "b"):
            client = await _token(sessions[name, dev0])
            assert decode_unverified(client.token).kid.hex() == old_kid
            assert (await client.upload()).code == aiocoap.CREATED
            assert (await client.call()).code == aiocoap.CONTENT
            olds[name] = client

        # rotate with the CLI (the first instance's configuration)
        said.append(cli(env, "keys", "rotate", *d))
        start = time.monotonic()
        new_kid = bytes.fromhex(re.search(r"signing key ([0-9a-f]+)", said[-1]).group(1))
        firsts = await asyncio.gather(
            *(_first_under(sessions[n, dev1], new_kid, start, start + 10) for n in ("a", "b"))
        )
        rotate_s = [round(s, 3) for s, _ in firsts]
        assert max(rotate_s) < PROPAGATION_BOUND_S, rotate_s
        # each instance accepts the other's token under the new key
        from_a, from_b = (c for _, c in firsts)
        crossed = []
        for token, there in ((from_a, "b"), (from_b, "a")):
            moved = ProofClient(sessions[there, dev1], token.key, token.token)
            assert (await moved.upload()).code == aiocoap.CREATED
            assert (await moved.call()).code == aiocoap.CONTENT
            crossed.append(moved)
        assert (await olds["a"].call()).code == aiocoap.CONTENT  # the old key still verifies

        # retire the old key: its tokens are refused on both
        said.append(cli(env, "keys", "retire", old_kid, "--yes", *d))
        start = time.monotonic()
        retire_s = await asyncio.gather(
            *(_refused_after(olds[n], start, start + 10) for n in ("a", "b"))
        )
        retire_s = [round(s, 3) for s in retire_s]
        assert max(retire_s) < PROPAGATION_BOUND_S, retire_s
        assert _signing(env, d)[old_kid] == "retired"
        for moved in crossed:  # the new key's tokens are still served on both
            assert (await moved.call()).code == aiocoap.CONTENT

        # a token issued by A, revoked with the CLI, is on B's TRL too
        issued = await _token(sessions["a", dev0])
        shown = json.loads(cli(env, "token", "decode", *d, issued.token.hex()))
        said.append(cli(b.env, "tokens", "revoke", "--dir", str(state_b), shown["claims"]["cti"]))
        start = time.monotonic()
        wanted = token_hash(issued.token)
        trl_s = []
        for name in ("b", "a"):
            while wanted not in await _trl(sessions[name, "ops"]):
                assert time.monotonic() - start < 10, f"{name}'s TRL never listed the token"
                await asyncio.sleep(0.05)
            trl_s.append(round(time.monotonic() - start, 3))
        assert max(trl_s) < PROPAGATION_BOUND_S, trl_s
        assert not (state_b / "issued-tokens.sqlite").exists()  # B's ledger is the database's

        # no private key in what the instances logged or the commands printed
        secrets |= _secrets_of(pg_url, state)
        assert len(secrets) >= 6  # old and new signing keys, the AS-RS key: hex and base64
        text = "\n".join([a.served.output(), b.served.output(), *said])
        assert not [s for s in secrets if s in text]
    print(json.dumps({"rotate_s": rotate_s, "retire_s": retire_s, "trl_s": trl_s}))


async def test_migrate_keeps_tokens_valid_and_the_database_keys_win(tmp_path: Path, pg_url) -> None:
    state = init_state(tmp_path / "state")
    d = ("--dir", str(state))
    with Registry.from_config(load_config(state / "acegw.toml", env={})) as registry:
        ((device, psk),) = registry.bulk_add(1, "dev-", "/whoami:GET", psk_bytes=16)
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(udp, http)
    args = [*ACEGW, "serve", *d]
    async with serving(args, env, tmp_path / "sqlite.log", udp, http) as served:
        probe = DtlsProbe(served.target)
        try:
            session = await probe.connect(device.encode(), psk)
            signed = await _token(session)  # COSE_Sign1 under the signing key
            assert (await signed.upload()).code == aiocoap.CREATED
            sealed = await ProofClient.enroll(session)  # COSE_Encrypt0 under the AS-RS key
        finally:
            await probe.close()

    said = cli({"ACEGW_REGISTRY_URL": ""}, "registry", "migrate", *d, "--to", pg_url)
    assert "1 clients" in said and "2 AS keys" in said
    # this instance's key directory now holds other keys: the database's are used
    shutil.rmtree(state / "keys")
    with Keystore(state / "keys") as other:
        other_kids = {e.kid.hex() for e in other.list()}
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(udp, http, ACEGW_REGISTRY_URL=pg_url)
    async with serving(args, env, tmp_path / "pg.log", udp, http) as served:
        probe = DtlsProbe(served.target)
        try:
            session = await probe.connect(device.encode(), psk)
            for before in (signed, sealed):
                moved = ProofClient(session, before.key, before.token)
                assert (await moved.upload()).code == aiocoap.CREATED
                assert (await moved.call()).code == aiocoap.CONTENT
        finally:
            await probe.close()
        lines = [line for line in served.output().splitlines() if "different ones" in line]
        assert len(lines) == 1, served.output()[-2000:]
        assert "key directory" in lines[0] and not [k for k in other_kids if k in lines[0]]


def test_issued_token_ledger_on_postgres(pg_url) -> None:
    """Rows written by one instance's ledger are on another's TRL list: by
    revoked cti, by client cut-off (iat at or before it), not once expired;
    a row written after its revocation appends a ``trl`` change so every
    instance computes its TRL again; rows still queued count too."""
    store_a, store_b = PostgresStore(pg_url), PostgresStore(pg_url)
    a = SharedIssuedTokens(store_a, interval=3600)  # flushed by hand here
    b = SharedIssuedTokens(store_b, interval=3600)
    try:
        now = time.time()
        a.record(b"t1", cti=b"c1", client_id="x", audience="rs", iat=now, exp=now + 60)
        a.record(b"t2", cti=b"c2", client_id="y", audience="rs", iat=now, exp=now + 60)
        a.record(b"t3", cti=b"c3", client_id="x", audience="rs", iat=now - 90, exp=now - 1)
        assert a.flush() == 3
        stamp = store_b.change_stamp()
        assert b.read(now) and b.take_fresh() and not b.take_fresh()
        assert b.revoked(now, [], lambda c: None) == []
        store_b.revoke(b"c1", now + 60, at=now)
        # revoked() is memory only (it runs on the event loop): the store's
        # rows count once read, by the ledger's thread or here
        assert b.revoked(now, [], lambda c: None) == []
        assert b.read(now)
        assert {e.hash for e in b.revoked(now, [], lambda c: None)} == {token_hash(b"t1")}
        # revoked before its row arrived: a "trl" change wakes every instance
        store_b.revoke(b"c4", now + 60, at=now)
        a.record(b"t4", cti=b"c4", client_id="z", audience="rs", iat=now, exp=now + 60)
        changes = store_b.changes_since(stamp)
        assert [k for k, _ in changes.kinds] == ["revoke", "revoke"]
        assert a.flush() == 1
        changes = store_b.changes_since(changes.stamp)
        assert [k for k, _ in changes.kinds] == ["trl"] and changes.revocations
        # a cut-off (disable) covers the client's tokens issued until then
        store_b.add_clients([ClientRecord("y", b"s", "/a:GET", None, (), None, True, now, None, 0)])
        store_b.update_client("y", "disable", {"enabled": False}, at=now + 1, cut=True)
        assert b.read(now)
        listed = {e.hash for e in b.revoked(now, [], lambda c: None)}
        assert listed == {token_hash(t) for t in (b"t1", b"t2", b"t4")}
        # still queued at b: matched against the given ctis and cut-offs
        b.record(b"t5", cti=b"c5", client_id="w", audience="rs", iat=now, exp=now + 60)
        assert token_hash(b"t5") in {e.hash for e in b.revoked(now, [b"c5"], lambda c: None)}
        # the ledger's own thread reads when asked (what the TRL publisher does)
        c = SharedIssuedTokens(store_b, interval=3600)
        try:
            c.request_read()
            deadline = time.monotonic() + 10
            while not c.take_fresh():
                assert time.monotonic() < deadline, "the ledger's thread never read the store"
                time.sleep(0.01)
            assert token_hash(b"t1") in {e.hash for e in c.revoked(now, [], lambda c: None)}
        finally:
            c.close()
        # the registry's own purge leaves the ledger's rows to the ledger's
        # purge (which the gateway runs after it and counts)
        store_a.purge(now + 61, 0.0)
        assert a.purge(now + 61) == 4  # t1..t4 (t5 was never written)
        assert a.purge(now + 61) == 0
    finally:
        a.close()
        b.close()
        store_a.close()
        store_b.close()
