"""What an operator sees and steers on a running ``acegw serve`` (from
``acegw init``): each event once for its cause with its JSON fields, flood
lines rate-limited, every CLI change audited and found from another process,
disable/enable leaving the old token refused, sessions and lockouts listed
and lifted through the admin port (refused without the token), ``token
decode --config`` without the PoP key, ``keys retire`` counting and asking,
and no secret in any line."""

from __future__ import annotations

import asyncio
import getpass
import json
import math
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiocoap
import aiohttp
import pytest

from gateway.authorization_server.keystore import Keystore
from gateway.config import load_config
from gateway.dtls.probe import DtlsProbe

from .conftest import (
    ACEGW,
    ROOT,
    ProofClient,
    acegw,
    add_devices,
    events,
    free_port,
    gateway_env,
    init_state,
    post,
    refused_handshake,
    serving,
    until,
    value,
)

__all__ = ["acegw"]  # also used by test_external_as_processes


async def test_operator_sees_and_steers_a_running_gateway(tmp_path):
    state = init_state(tmp_path / "state")
    devices = add_devices(state, 3, "op-", "/whoami:GET")
    (a_id, a_psk), (b_id, b_psk), (c_id, _) = devices
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(
        udp,
        http,
        ACEGW_LOGGING_LEVEL="INFO",
        ACEGW_AUDIT_PATH=str(tmp_path / "audit.log"),
        ACEGW_LIMITS_LOCKOUT_FAILURES="5",
    )
    d = ("--dir", str(state))
    secrets: list[bytes] = [a_psk, b_psk]
    async with serving([*ACEGW, "serve", *d], env, tmp_path / "gw.log", udp, http) as served:
        (started,) = await until(lambda: events(served, "gateway_started"), "start")
        assert started["coaps"].endswith(f":{udp}") and started["admin"].endswith(f":{http}")
        probe = DtlsProbe(served.target)
        try:
            # --- sessions list and token decode -----------------------------------
            device = await ProofClient.enroll(await probe.connect(a_id.encode(), a_psk))
            assert (await device.call()).code == aiocoap.CONTENT
            pop_key = device.key.secret  # type: ignore[attr-defined]
            secrets += [pop_key, device.token]
            cti = None
            rc, out, err = await acegw(env, "sessions", "list", "--json", *d)
            assert rc == 0, err
            (session,) = [s for s in json.loads(out) if s.get("client_id") == a_id]
            assert session["worker"] == 0 and session["age"] >= 0
            assert session["address"].startswith("127.0.0.1:")
            (held,) = session["tokens"]
            cti = held["cti"]
            rc, table, _ = await acegw(env, "sessions", "list", "--client", a_id, *d)
            assert rc == 0 and a_id in table and cti in table
            rc, out, err = await acegw(env, "token", "decode", device.token.hex(), *d)
            assert rc == 0, err
            claims = json.loads(out)["claims"]
            assert json.loads(out)["verified"] is True
            assert claims["cti"] == cti and claims["sub"] == a_id
            assert claims["scope"] == "/whoami:GET" and claims["iss"] and claims["aud"]
            assert claims["exp"] > claims["iat"] and claims["cnf"] == {"kid": device.key.kid.hex()}
            for shown in (pop_key.hex(), pop_key.hex().upper(), repr(pop_key)):
                assert shown not in out
            rc, out, _ = await acegw(env, "token", "decode", device.token.hex())
            assert rc == 0 and json.loads(out)["claims"] is None  # no keys: not opened

            # --- disable means disable ------------------------------------------------
            rc, _, err = await acegw(env, "clients", "disable", a_id, *d)
            assert rc == 0, err
            disabled_at = time.time()
            (event,) = await until(lambda: events(served, "client_disabled"), "disable")
            assert event["client_id"] == a_id and event["tokens_dropped"] == 1
            assert event["sessions_closed"] >= 1
            assert await refused_handshake(served.target, a_id.encode(), a_psk)
            samples = await served.scrape()
            outcome = value(
                samples, "acegw_dtls_handshakes_total", worker="0", outcome="client_disabled"
            )
            assert outcome == 1
            rc, _, err = await acegw(env, "clients", "enable", a_id, *d)
            assert rc == 0, err
            await until(lambda: events(served, "client_enabled"), "enable")
            session = await probe.connect(a_id.encode(), a_psk, timeout=10)
            upload = await post(session, "authz-info", device.token)
            assert upload.code == aiocoap.UNAUTHORIZED  # issued before the disable
            await asyncio.sleep(max(0.0, math.floor(disabled_at) + 1.05 - time.time()))
            fresh = await ProofClient.enroll(session)
            assert (await fresh.call()).code == aiocoap.CONTENT
            secrets += [fresh.key.secret, fresh.token]  # type: ignore[attr-defined]

            # --- revocation -----------------------------------------------------------------
            rc, out, err = await acegw(env, "sessions", "list", "--client", a_id, "--json", *d)
            fresh_cti = json.loads(out)[0]["tokens"][0]["cti"]
            rc, _, err = await acegw(env, "tokens", "revoke", fresh_cti, *d)
            assert rc == 0, err
            (revoked,) = await until(lambda: events(served, "token_revoked"), "revoke")
            assert revoked["ctis"] == [fresh_cti] and revoked["tokens_dropped"] == 1

            # --- lockout: ban, list, lift (refused without the token) ------------------------
            for _ in range(6):
                assert await refused_handshake(
                    served.target, b_id.encode(), b"wrong-psk-0123456", source="127.0.0.12"
                )
            (ban,) = await until(lambda: events(served, "lockout_ban"), "ban")
            assert (ban["scope"], ban["address"], ban["client_id"]) == ("pair", "127.0.0.12", b_id)
            rc, out, err = await acegw(env, "lockouts", "list", "--json", *d)
            assert rc == 0, err
            assert [(b["address"], b["client_id"]) for b in json.loads(out)] == [
                ("127.0.0.12", b_id)
            ]
            async with aiohttp.ClientSession() as web:
                for headers in ({}, {"Authorization": "Bearer " + "0" * 64}):
                    async with web.post(
                        served.http + "/lockouts/lift", json={"all": True}, headers=headers
                    ) as resp:
                        assert resp.status == 403
            rc, out, _ = await acegw(env, "bans", "list", *d)  # the old name
            assert rc == 0 and "127.0.0.12" in out
            rc, out, err = await acegw(env, "lockouts", "lift", "127.0.0.12", *d)
            assert rc == 0, err
            assert "1 ban(s) lifted on 1 worker(s)" in out
            (lift,) = await until(lambda: events(served, "lockout_lift"), "lift")
            assert lift["count"] == 1 and lift["by"] == "operator"
            assert not await refused_handshake(
                served.target, b_id.encode(), b_psk, source="127.0.0.12"
            )

            # --- a handshake flood from one address: a line or two, not 60 -----------------
            for _ in range(60):
                await refused_handshake(
                    served.target, c_id.encode(), b"wrong-psk-0123456", source="127.0.0.13"
                )
            floods = await until(
                lambda: [
                    e for e in events(served, "handshake_flood") if e["address"] == "127.0.0.13"
                ],
                "flood",
            )
            assert floods[0]["phase"] == "started" and floods[0]["count"] == 20
            assert set(floods[0]["reasons"]) <= {"bad_finished", "locked_out"}

            # --- reload, key rotation and retirement ---------------------------------------
            served.send(signal.SIGHUP)
            (reload,) = await until(lambda: events(served, "config_reloaded"), "reload")
            assert reload["routes"] == 0 and reload["restart_needed"] == []
            second = await ProofClient.enroll(await probe.connect(b_id.encode(), b_psk))
            secrets += [second.key.secret, second.token]  # type: ignore[attr-defined]
            keystore = Keystore.from_config(load_config(state / "acegw.toml", env={}))
            old = keystore.as_rs_key().kid.hex()
            rc, _, err = await acegw(env, "keys", "rotate", "--as-rs", *d)
            assert rc == 0, err
            (rotated,) = await until(lambda: events(served, "keys_changed"), "rotate")
            assert rotated["current"]["as_rs"] != old and rotated["retired"] == []
            rc, out, err = await acegw(env, "keys", "retire", old, *d)
            assert rc == 2 and "holds 1 token(s) under it" in out and "--yes" in err
            rc, out, err = await acegw(env, "keys", "retire", old, "--yes", *d)
            assert rc == 0, err
            retired = await until(
                lambda: [e for e in events(served, "keys_changed") if e["retired"]], "retire"
            )
            assert retired[0]["retired"] == [old] and retired[0]["tokens_dropped"] == 1
        finally:
            await probe.close()

        # --- the audit trail, read from another process -----------------------------------
        rc, out, err = await acegw(env, "audit", "search", "--client", a_id, "--json", *d)
        assert rc == 0, err
        records = json.loads(out)
        assert [r["action"] for r in records] == ["clients disable", "clients enable"]
        assert all(r["operator"].startswith(getpass.getuser()) for r in records)
        assert all(r["outcome"] == "ok" for r in records)
        rc, out, err = await acegw(env, "audit", "tail", "-n", "50", "--json", *d)
        actions = [(r["action"], r["target"]) for r in json.loads(out)]
        assert ("tokens revoke", fresh_cti) in actions
        assert ("lockouts lift", "127.0.0.12") in actions
        assert ("keys rotate", None) in actions
        retires = [r for r in json.loads(out) if r["action"] == "keys retire"]
        assert [r["outcome"][:7] for r in retires] == ["refused", "ok"]
        assert retires[1]["detail"]["held_tokens"] == 1
        rc, out, _ = await acegw(env, "audit", "search", "--since", "1h", "--action", "keys", *d)
        assert rc == 0 and out.count("keys ") == 3

        assert await served.stop(signal.SIGINT) == 0
    for name in (
        "gateway_started",
        "gateway_stopping",
        "gateway_stopped",
        "client_disabled",
        "client_enabled",
        "token_revoked",
        "lockout_lift",
        "config_reloaded",
    ):
        assert len(events(served, name)) == 1, name
    bans = [e for e in events(served, "lockout_ban") if e["address"] == "127.0.0.12"]
    assert len(bans) == 1
    floods = [e for e in events(served, "handshake_flood") if e["address"] == "127.0.0.13"]
    assert 1 <= len(floods) <= 2
    assert len(events(served, "keys_changed")) == 2
    log = served.output() + (tmp_path / "audit.log").read_text()
    for secret in secrets:
        assert secret.hex() not in log and secret.hex().upper() not in log
    for psk in (a_psk, b_psk):
        assert psk.hex() not in log
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    # refused while disabled at the handshake; its old token, uploaded after the
    # enable, refused as issued before the cut-off
    assert "handshake" in {r["event"] for r in records if r.get("reason") == "client_disabled"}
    assert "authz-info" in {r["event"] for r in records if r.get("reason") == "token_cut_off"}


async def test_worker_events_and_live_state_through_the_supervisor(tmp_path):
    state = init_state(tmp_path / "state")
    devices = add_devices(state, 4, "wk-", "/whoami:GET")
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(udp, http, ACEGW_LOGGING_LEVEL="INFO", ACEGW_SERVER_WORKERS="2")
    d = ("--dir", str(state))
    async with serving([*ACEGW, "serve", *d], env, tmp_path / "gw.log", udp, http) as served:
        await until(lambda: len(events(served, "worker_started")) == 2, "two workers")
        (started,) = events(served, "gateway_started")
        assert started["workers"] == 2
        probe = DtlsProbe(served.target)
        try:
            for identity, psk in devices:
                await ProofClient.enroll(await probe.connect(identity.encode(), psk))
            rc, out, err = await acegw(env, "sessions", "list", "--json", *d)
            assert rc == 0, err
            listed = json.loads(out)
            assert sorted(s["client_id"] for s in listed) == [i for i, _ in devices]
            assert all(len(s["tokens"]) == 1 for s in listed)
            workers = {s["worker"] for s in listed}
            pids = {e["index"]: e["pid"] for e in events(served, "worker_started")}
            victim = sorted(workers)[0]
            import os

            os.kill(pids[victim], signal.SIGKILL)
            (exited,) = await until(lambda: events(served, "worker_exited"), "exit")
            assert exited["index"] == victim and exited["exit"] == "signal SIGKILL"
            restarted = await until(
                lambda: [e for e in events(served, "worker_started") if e["restarts"] == 1],
                "restart",
            )
            assert restarted[0]["index"] == victim
        finally:
            await probe.close()
        assert await served.stop() == 0
    assert len(events(served, "gateway_started")) == 1
    assert len(events(served, "gateway_stopped")) == 1


NETNS_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, subprocess, sys
    from pathlib import Path
    import aiohttp
    from gateway.operations.admin_access import create_admin_token
    from gateway.operations.admin_http import AdminHttp

    async def main():
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
        token_file = Path(sys.argv[1])
        create_admin_token(token_file)
        token = token_file.read_text().strip()
        lifted = []

        async def live(query, args):
            if query == "lift":
                lifted.append(args)
            return [{"worker": 0, "lifted": 0}] if query == "lift" else []

        http = AdminHttp(metrics=None, ready=None, key_set=None, live=live, token_file=token_file)
        _, port = await http.start("0.0.0.0", 0)
        results = {}
        for source in ("127.0.0.1", "192.0.2.1"):
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            async with aiohttp.ClientSession(connector=connector) as web:
                base = f"http://{source}:{port}"
                async with web.get(base + "/sessions") as resp:
                    results[source + " get"] = resp.status
                headers = {"Authorization": "Bearer " + token}
                lift = base + "/lockouts/lift"
                async with web.post(lift, json={"all": True}, headers=headers) as resp:
                    results[source + " lift"] = resp.status
                async with web.post(lift, json={"all": True}) as resp:
                    results[source + " lift without token"] = resp.status
        await http.stop()
        results["lifted"] = len(lifted)
        print(json.dumps(results))

    asyncio.run(main())
    """
)


def test_admin_port_refuses_other_hosts_in_its_own_network_namespace(tmp_path):
    """In a network namespace of its own (192.0.2.1 on its loopback device,
    not a loopback address), the admin port listening on 0.0.0.0 refuses
    live state and state changes from 192.0.2.1, token or not, and serves
    127.0.0.1 (the change only with the token)."""
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", NETNS_SCRIPT, str(tmp_path / "admin.token")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {
        "127.0.0.1 get": 200,
        "127.0.0.1 lift": 200,
        "127.0.0.1 lift without token": 403,
        "192.0.2.1 get": 403,
        "192.0.2.1 lift": 403,
        "192.0.2.1 lift without token": 403,
        "lifted": 1,
    }


@pytest.fixture(autouse=True)
def _path(monkeypatch):
    monkeypatch.chdir(Path(ROOT))
