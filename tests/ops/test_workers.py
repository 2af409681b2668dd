"""Two worker processes on one UDP port (SO_REUSEPORT): sessions spread over
both, a killed worker loses only its own sessions, its devices reconnect and
carry on with the token they have, and registry and key changes reach every
worker within a second."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import aiocoap

from gateway.dtls.probe import DtlsProbe, ProbeError
from gateway.runtime.cli import main as cli_main
from tokens.cwt import decode_unverified

from .conftest import (
    ACEGW,
    ProofClient,
    add_devices,
    children,
    free_port,
    gateway_env,
    init_state,
    serving,
    value,
)

DEVICES = 16


def _worker_pids(supervisor: int) -> dict[str, int]:
    out = {}
    for pid in children(supervisor):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        out[argv[argv.index(b"--index") + 1].decode()] = pid
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _until(predicate, timeout: float, what: str) -> float:
    """Poll ``predicate`` (async) until true; returns the seconds it took."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _two_workers(tmp_path: Path, scope: str = "/whoami:GET"):
    state = init_state(tmp_path / "state")
    devices = add_devices(state, DEVICES, "dev-", scope)
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    args = [*ACEGW, "serve", "--dir", str(state), "--workers", "2"]
    return state, devices, serving(args, gateway_env(udp, http), tmp_path / "gw.log", udp, http)


async def _enroll_all(probe: DtlsProbe, devices, **kw) -> list[ProofClient]:
    clients = []
    for client_id, psk in devices:
        session = await probe.connect(client_id.encode(), psk, timeout=15)
        client = await ProofClient.enroll(session, **kw)
        assert (await client.call()).code == aiocoap.CONTENT
        clients.append(client)
    return clients


async def test_sessions_spread_and_survive_a_worker_crash(tmp_path):
    _, devices, gateway = await _two_workers(tmp_path)
    async with gateway as served:
        pids = _worker_pids(served.process.pid)
        assert sorted(pids) == ["0", "1"]
        probe = DtlsProbe(served.target)
        try:
            clients = await _enroll_all(probe, devices)
            samples = await served.scrape()
            per_worker = {
                w: value(samples, "acegw_dtls_sessions", worker=w, state="established")
                for w in "01"
            }
            assert sum(per_worker.values()) == DEVICES
            assert per_worker["0"] >= 1 and per_worker["1"] >= 1, per_worker
            # every worker holds every token (shared through the supervisor)
            assert value(samples, "acegw_tokens_held", worker="0") == DEVICES
            assert value(samples, "acegw_tokens_held", worker="1") == DEVICES

            os.kill(pids["0"], signal.SIGKILL)
            results = await asyncio.gather(
                *(c.call(timeout=3) for c in clients), return_exceptions=True
            )
            lost = [c for c, r in zip(clients, results, strict=True) if isinstance(r, ProbeError)]
            kept = [r for r in results if not isinstance(r, BaseException)]
            assert len(lost) == per_worker["0"]  # only the dead worker's sessions
            assert all(r.code == aiocoap.CONTENT for r in kept)
            assert len(kept) == per_worker["1"]

            # the lost devices open a new session (new source port) and go on
            # with the token they hold: one Echo challenge, no new token
            by_id = dict(devices)
            for client in lost:
                identity = client.session.identity
                await client.session.close(notify=False)
                client.session = await probe.connect(identity, by_id[identity.decode()], timeout=30)
                echoes = client.echoes
                resp = await client.call()
                assert resp.code == aiocoap.CONTENT, resp
                assert client.echoes == echoes + 1

            async def restarted() -> bool:
                s = await served.scrape()
                return (
                    value(s, "acegw_worker_up", worker="0") == 1
                    and value(s, "acegw_worker_restarts_total", worker="0") == 1
                )

            await _until(restarted, 30, "worker 0 restarted")
            samples = await served.scrape()
            assert value(samples, "acegw_worker_restarts_total", worker="1") == 0
            assert value(samples, "acegw_tokens_held", worker="0") == DEVICES  # replayed to it
            new_pids = _worker_pids(served.process.pid)
            assert new_pids["1"] == pids["1"] and new_pids["0"] != pids["0"]
            # the survivor's peers did not move to the restarted worker: the
            # supervisor kept worker 0's socket in the SO_REUSEPORT group
            survivors = [c for c in clients if c not in lost]
            echoes = [c.echoes for c in survivors]
            for client in survivors:
                assert (await client.call(timeout=5)).code == aiocoap.CONTENT
            assert [c.echoes for c in survivors] == echoes
        finally:
            await probe.close()
        assert await served.stop() == 0
    assert not any(_alive(p) for p in (*pids.values(), *new_pids.values()))


async def test_registry_and_key_changes_reach_every_worker_within_a_second(tmp_path):
    state, devices, gateway = await _two_workers(tmp_path)
    async with gateway as served:
        probe = DtlsProbe(served.target)
        try:
            clients = await _enroll_all(probe, devices[:8])

            # revoke one token: both workers hold it, both drop it
            revoked = clients[0]
            cti_hex = json.loads((await revoked.call()).payload)["cti"]
            assert cli_main(["tokens", "revoke", cti_hex, "--dir", str(state)]) == 0

            async def dropped(cause: str) -> bool:
                s = await served.scrape()
                return all(
                    value(s, "acegw_tokens_dropped_total", worker=w, cause=cause) >= 1 for w in "01"
                )

            assert await _until(lambda: dropped("revoked"), 5, "revocation") < 1.5
            resp = await revoked.call(timeout=3)
            assert resp.code == aiocoap.UNAUTHORIZED

            # disable a client: its tokens go on both workers, its session closes
            disabled = clients[1]
            identity = disabled.session.identity.decode()
            assert cli_main(["clients", "disable", identity, "--dir", str(state)]) == 0
            assert await _until(lambda: dropped("client"), 5, "disable") < 1.5
            await asyncio.wait_for(disabled.session.closed_by_peer.wait(), 2)

            # rotate the AS signing key: new asymmetric tokens are signed with
            # it on every worker, old ones still verify
            old = await ProofClient.enroll(clients[7].session, asymmetric=True)
            old_kid = decode_unverified(old.token).kid
            assert cli_main(["keys", "rotate", "--dir", str(state)]) == 0
            started = time.monotonic()
            while (
                decode_unverified(
                    (await ProofClient.enroll(clients[2].session, asymmetric=True)).token
                ).kid
                == old_kid
            ):
                assert time.monotonic() - started < 1.5, "new signing key not used within 1 s"
                await asyncio.sleep(0.05)
            # one second after the rotation every worker signs with the new key
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
            kids = set()
            for client in clients[2:7]:
                fresh = await ProofClient.enroll(client.session, asymmetric=True)
                kids.add(decode_unverified(fresh.token).kid)
                assert (await fresh.call()).code == aiocoap.CONTENT
            assert len(kids) == 1 and old_kid not in kids
            assert (await old.call()).code == aiocoap.CONTENT
        finally:
            await probe.close()
        assert await served.stop() == 0


async def test_workers_stop_by_themselves_when_the_supervisor_dies(tmp_path):
    _, _, gateway = await _two_workers(tmp_path)
    async with gateway as served:
        pids = _worker_pids(served.process.pid)
        assert len(pids) == 2
        served.send(signal.SIGKILL)
        assert await served.process.wait() == -signal.SIGKILL

        async def gone() -> bool:
            return not any(_alive(p) for p in pids.values())

        await _until(gone, 15, "orphaned workers exited")
