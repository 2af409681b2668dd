"""Availability under attack: ``acegw serve`` with ``acegw init`` defaults as
a subprocess on loopback, attacked from one 127.x address while an honest
device probes from another (docs/operations.md "Lockout and floods").

Each attack is bounded in count and time:

1. lockout by naming: wrong-PSK handshakes naming a device from another
   address ban only that (identity, address) pair; the device still gets a
   token; spraying identities from one address bans the address;
2. a half-open flood of cookie-completing ClientHellos from one address holds
   at most its share of the half-open table;
3. out-of-order handshake records from a half-open peer are dropped before
   tinydtls: the gateway's RSS stays within 8 MB;
4. 300 (and 1,000) devices behind one address all get tokens;
5. a second ``acegw serve`` on the port exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from pathlib import Path

import aiocoap
import pytest

from gateway.dtls.hostile import client_hello, cookie_of, half_open_flood, handshake_record
from gateway.dtls.probe import DtlsProbe, ProbeError
from gateway.dtls.records import HandshakeType, first_handshake_type
from tests.ops.conftest import (
    ACEGW,
    ROOT,
    Served,
    add_devices,
    free_port,
    http_get,
    init_state,
    serving,
    value,
)
from tokens.ace import TokenRequest

SCOPE = "/whoami:GET"
HONEST = "127.0.0.5"


def defaults_env(udp_port: int, metrics_port: int, state: Path, **extra: str) -> dict[str, str]:
    """``acegw init`` defaults; only where to listen and log differ."""
    env = dict(os.environ)
    env.update(
        {
            "ACEGW_SERVER_BIND": "127.0.0.1",
            "ACEGW_SERVER_PORT": str(udp_port),
            "ACEGW_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "ACEGW_AUDIT_PATH": str(state / "audit.log"),
            "ACEGW_LOGGING_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, devices: int, **extra: str):
    """A served gateway with ``devices`` registered (``acc-0000``...)."""
    state = init_state(tmp_path / "state")
    fleet = add_devices(state, devices, "acc-", SCOPE)
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = defaults_env(udp, http, state, **extra)
    args = [*ACEGW, "serve", "--dir", str(state)]
    async with serving(args, env, tmp_path / "gateway.log", udp, http) as served:
        served.fleet = dict(fleet)  # type: ignore[attr-defined]
        served.state = state  # type: ignore[attr-defined]
        served.env = env  # type: ignore[attr-defined]
        yield served


async def get_token(
    target: tuple[str, int],
    identity: str,
    psk: bytes,
    *,
    source: str = HONEST,
    timeout: float = 8.0,
) -> bool:
    """One device: a new DTLS session from ``source`` and ``POST /token``."""
    probe = DtlsProbe(target, source=source)
    try:
        session = await probe.connect(identity.encode(), psk, timeout=timeout)
        resp = await session.request(
            aiocoap.Message(
                code=aiocoap.POST,
                uri_path=("token",),
                payload=TokenRequest(scope=SCOPE).encode(),
                content_format=19,
            ),
            timeout=timeout,
        )
        return resp.code == aiocoap.CREATED
    except ProbeError:
        return False
    finally:
        await probe.close()


class Prober:
    """The honest device asking for a token every ``interval`` seconds from
    :data:`HONEST` while an attack runs."""

    def __init__(self, served: Served, identity: str, interval: float = 0.4) -> None:
        self.served = served
        self.identity = identity
        self.interval = interval
        self.results: list[bool] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        psk = self.served.fleet[self.identity]  # type: ignore[attr-defined]
        while True:
            self.results.append(await get_token(self.served.target, self.identity, psk))
            await asyncio.sleep(self.interval)

    def __enter__(self) -> Prober:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def stop(self) -> list[bool]:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.results


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def audit_events(served: Served, event: str) -> list[dict[str, object]]:
    path = served.state / "audit.log"  # type: ignore[attr-defined]
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r.get("event") == event]


async def acegw(served: Served, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """An operator's ``acegw`` command, with the gateway's environment."""
    process = await asyncio.create_subprocess_exec(
        *ACEGW,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
        env=served.env,  # type: ignore[attr-defined]
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"acegw {' '.join(args)} did not end in {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# --- 1. lockout by naming -------------------------------------------------------------


async def test_naming_a_device_bans_only_the_attackers_pair(tmp_path):
    """Wrong-PSK handshakes naming acc-0001 from 127.0.0.12 ban (acc-0001,
    127.0.0.12) only: the device gets tokens from its own address during
    and after. Naming many devices from 127.0.0.13 bans that address. The
    operator lists the bans and lifts one; it reaches the running gateway."""
    async with gateway(tmp_path, 8) as served:
        victim, psk = "acc-0001", served.fleet["acc-0001"]
        assert await get_token(served.target, victim, psk)  # trusted at HONEST
        prober = Prober(served, victim)
        with prober:
            wrong = b"not-the-psk-0123"
            for _ in range(12):  # > lockout_failures (10), one after the other
                assert not await get_token(served.target, victim, wrong, source="127.0.0.12")
            for name in sorted(served.fleet)[2:8]:  # six identities: credential stuffing
                assert not await get_token(served.target, name, wrong, source="127.0.0.13")
            during = await prober.stop()
        assert during and all(during), during
        for _ in range(3):
            assert await get_token(served.target, victim, psk)
        # the ban works where it applies: even the right PSK from the
        # attacker's address is refused, and so is an untrusted identity
        # from the stuffing address
        assert not await get_token(served.target, victim, psk, source="127.0.0.12")
        assert not await get_token(
            served.target, "acc-0000", served.fleet["acc-0000"], source="127.0.0.13"
        )
        assert await get_token(
            served.target, "acc-0000", served.fleet["acc-0000"], source="127.0.0.14"
        )
        samples = await served.scrape()
        assert value(samples, "acegw_lockout_bans_total", worker="0", scope="pair") >= 1
        assert value(samples, "acegw_lockout_bans_total", worker="0", scope="address") == 1
        assert value(samples, "acegw_dtls_handshakes_total", worker="0", outcome="locked_out") >= 2

        rc, out, err = await acegw(served, "bans", "list", "--dir", str(served.state), "--json")
        assert rc == 0, err
        bans = json.loads(out)
        pairs = [(b["scope"], b["address"], b.get("client_id")) for b in bans]
        assert ("pair", "127.0.0.12", victim) in pairs
        assert ("address", "127.0.0.13", None) in pairs
        assert not any(b["address"] == HONEST for b in bans)
        assert "psk" not in out.lower()

        rc, out, err = await acegw(
            served, "bans", "lift", "--client", victim, "--dir", str(served.state)
        )
        assert rc == 0, err
        deadline = time.monotonic() + 5
        while not await get_token(served.target, victim, psk, source="127.0.0.12"):
            assert time.monotonic() < deadline, "the lift did not reach the gateway"
            await asyncio.sleep(0.2)
        rc, out, _ = await acegw(served, "bans", "list", "--dir", str(served.state))
        assert rc == 0 and "127.0.0.13" in out and victim not in out
        lifts = await audit_events(served, "lockout")
        assert any(r["decision"] == "ban" and r.get("client_id") == victim for r in lifts)
        assert any(r["decision"] == "lift" and r.get("client_id") == victim for r in lifts)


# --- 2. half-open flood from one address ----------------------------------------------


async def test_half_open_flood_from_one_address_leaves_room_for_others(tmp_path):
    """6,000 cookie-completing ClientHellos from 127.0.0.10 in 8 s: that
    address holds at most its share (100 of 500) of the half-open table; at
    least 90 % of the honest device's token attempts succeed during the
    flood, all after it."""
    async with gateway(tmp_path, 2) as served:
        victim = "acc-0001"
        assert await get_token(served.target, victim, served.fleet[victim])
        prober = Prober(served, victim, interval=0.2)
        with prober:
            sent = await asyncio.to_thread(
                half_open_flood, served.target, "127.0.0.10", sockets=600, rounds=10, duration=8.0
            )
            samples = await served.scrape()
            during = await prober.stop()
        assert sent >= 5000, sent
        half_open = value(samples, "acegw_dtls_sessions", worker="0", state="handshaking")
        assert half_open <= 100, half_open
        capped = value(
            samples,
            "acegw_dtls_datagrams_dropped_total",
            worker="0",
            reason="address_handshake_cap",
        )
        assert capped > 1000, capped
        assert len(during) >= 10, during
        assert sum(during) >= 0.9 * len(during), during
        after = [await get_token(served.target, victim, served.fleet[victim]) for _ in range(5)]
        assert all(after), after


# --- 3. bounded memory per half-open peer ---------------------------------------------


async def test_out_of_order_handshake_records_do_not_grow_memory(tmp_path):
    """One peer past the cookie exchange sends 20,000 handshake records of
    1.3 kB with message_seq beyond the next expected one (tinydtls would
    queue every one of them): dropped before tinydtls, RSS grows <= 8 MB."""
    async with gateway(tmp_path, 2) as served:
        victim = "acc-0001"
        for _ in range(3):
            assert await get_token(served.target, victim, served.fleet[victim])
        pid = served.process.pid
        before_in = value(
            await served.scrape(), "acegw_dtls_datagrams_total", worker="0", direction="in"
        )
        baseline = rss(pid)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.11", 0))
        sock.connect(served.target)
        sock.setblocking(False)
        prober = Prober(served, victim, interval=0.3)
        try:
            random = os.urandom(32)
            sock.send(client_hello(random=random))
            hello_verify = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
            sock.send(client_hello(cookie_of(hello_verify), seq=1, random=random))
            server_hello = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
            assert first_handshake_type(server_hello) == HandshakeType.SERVER_HELLO
            with prober:
                body = os.urandom(1300 - 25)
                for i in range(20_000):
                    # ClientKeyExchange-typed, message_seq 3.. (2 is expected next)
                    sock.send(
                        handshake_record(
                            HandshakeType.CLIENT_KEY_EXCHANGE, body, seq=3 + i, record_seq=2 + i
                        )
                    )
                    if i % 200 == 199:
                        await asyncio.sleep(0.01)  # let the gateway read them
                await asyncio.sleep(1.0)
                during = await prober.stop()
        finally:
            sock.close()
        samples = await served.scrape()
        received = (
            value(samples, "acegw_dtls_datagrams_total", worker="0", direction="in") - before_in
        )
        grown = rss(pid) - baseline
        assert received >= 15_000, received  # the attack reached the gateway
        dropped = sum(
            value(samples, "acegw_dtls_datagrams_dropped_total", worker="0", reason=reason)
            for reason in ("handshake_window", "handshake_bytes")
        )
        assert dropped >= 15_000, dropped
        assert grown <= 8 << 20, f"RSS grew {grown / 1e6:.1f} MB"
        assert during and sum(during) >= 0.9 * len(during), during
        assert await get_token(served.target, victim, served.fleet[victim])


# --- 4. fleets behind one address -----------------------------------------------------


@pytest.mark.parametrize("count", [300, 1000])
async def test_every_device_behind_one_address_gets_a_token(tmp_path, count):
    """``count`` devices from 127.0.0.1 (one NAT), 64 at a time, with the
    defaults of ``acegw init``: every one gets a token (the ACE endpoints
    are limited per identity, the half-open share of one address is 100)."""
    async with gateway(tmp_path, count) as served:
        fleet = sorted(served.fleet.items())
        results: list[bool] = []
        queue = iter(fleet)

        async def worker() -> None:
            for identity, psk in queue:
                results.append(
                    await get_token(served.target, identity, psk, source="127.0.0.1", timeout=20)
                )

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(64))), 240)
        assert len(results) == count
        assert results.count(False) == 0, f"{results.count(False)} of {count} got no token"
        samples = await served.scrape()
        assert value(samples, "acegw_rate_limited_total", worker="0") == 0


# --- 5. one instance per port ---------------------------------------------------------


@pytest.mark.parametrize("first_workers,second_workers", [(2, 2), (2, 1), (1, 2)])
async def test_a_second_instance_on_the_port_exits_2(tmp_path, first_workers, second_workers):
    """``acegw serve`` on a port another ``acegw serve`` serves refuses with
    one line and exit status 2, whatever either's worker count; the first
    one keeps serving."""
    async with gateway(tmp_path, 1, ACEGW_SERVER_WORKERS=str(first_workers)) as served:
        victim, psk = "acc-0000", served.fleet["acc-0000"]
        assert await get_token(served.target, victim, psk)
        second_state = init_state(tmp_path / "second")
        env = defaults_env(
            served.udp_port,
            free_port(socket.SOCK_STREAM),
            second_state,
            ACEGW_SERVER_WORKERS=str(second_workers),
        )
        rc, out, err = await _serve_once(second_state, env)
        assert rc == 2, (out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("acegw: error: UDP port"), lines
        assert "already served by another acegw" in lines[-1], lines
        assert not any("Traceback" in line for line in lines)
        for _ in range(3):
            assert await get_token(served.target, victim, psk)
        status, _ = await http_get(served.http + "/readyz")
        assert status == 200


async def test_a_port_held_by_another_program_exits_2(tmp_path):
    state = init_state(tmp_path / "state")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        env = defaults_env(holder.getsockname()[1], free_port(socket.SOCK_STREAM), state)
        rc, out, err = await _serve_once(state, env)
    assert rc == 2, (out, err)
    assert "already in use by another process" in err.strip().splitlines()[-1]


async def _serve_once(state: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *ACEGW,
        "serve",
        "--dir",
        str(state),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
