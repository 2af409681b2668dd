"""Two ``acegw serve`` instances (127.0.0.1 and 127.0.0.2) on one PostgreSQL
registry: a ``clients disable`` and a ``tokens revoke`` run with the CLI
against the database are enforced on both within 1 s (changes pushed by
LISTEN/NOTIFY; measured from the command's return to the first refused
request on each instance), and /readyz names the registry's state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiocoap

from gateway.dtls.probe import DtlsProbe
from gateway.registry.masterkey import load_master_key
from gateway.registry.registry import Registry
from tests.fleet.conftest import cli, start_instances
from tests.ops.conftest import ProofClient, http_get, init_state

#: The bound on propagation to every instance (docs/deployment.md).
PROPAGATION_BOUND_S = 1.0


async def _refused_after(client: ProofClient, start: float, deadline: float) -> float:
    """Seconds from ``start`` to the send time of the first request the
    instance refused (an error code, or no answer: its session was closed)."""
    while time.monotonic() < deadline:
        sent = time.monotonic()
        try:
            resp = await client.session.request(client.message(), timeout=0.5)
        except Exception:  # a closed session, an alert, a timeout: all refusals
            return sent - start
        if resp.code != aiocoap.CONTENT:
            return sent - start
        await asyncio.sleep(0.02)
    raise AssertionError("still served 10 s after the change")


async def test_disable_and_revoke_reach_every_instance_within_a_second(tmp_path: Path, pg_url):
    state = init_state(tmp_path / "state")
    key = load_master_key(state / "master.key", env={})
    with Registry(pg_url, key) as registry:
        devices = dict(registry.bulk_add(2, "dev-", "/whoami:GET", psk_bytes=16))
    (x_id, x_psk), (y_id, y_psk) = devices.items()
    d = ("--dir", str(state))
    async with contextlib.AsyncExitStack() as stack:
        instances = await start_instances(stack, state, pg_url, tmp_path)
        for instance in instances:
            status, body = await http_get(instance.served.http + "/readyz")
            assert status == 200 and b'"registry": "connected"' in body.replace(b'":"', b'": "')
        x_clients, y_clients = [], []
        for instance in instances:
            probe = DtlsProbe(instance.target)
            stack.push_async_callback(probe.close)
            x_clients.append(await ProofClient.enroll(await probe.connect(x_id.encode(), x_psk)))
            y_clients.append(await ProofClient.enroll(await probe.connect(y_id.encode(), y_psk)))
        for c in (*x_clients, *y_clients):
            assert (await c.call()).code == aiocoap.CONTENT
        env = instances[1].env

        cli(env, "clients", "disable", *d, x_id)
        start = time.monotonic()
        delays = await asyncio.gather(*(_refused_after(c, start, start + 10) for c in x_clients))
        assert max(delays) < PROPAGATION_BOUND_S, delays
        # refused for the disable, not by a failing instance: the other device is served on both
        for c in y_clients:
            assert (await c.call()).code == aiocoap.CONTENT

        shown = json.loads(cli(env, "token", "decode", *d, y_clients[0].token.hex()))
        cti = shown["claims"]["cti"]
        cli(env, "tokens", "revoke", *d, cti)
        start = time.monotonic()
        revoke_delay = await _refused_after(y_clients[0], start, start + 10)
        assert revoke_delay < PROPAGATION_BOUND_S, revoke_delay
        # the other instance's token (another cti) is still served, and the
        # revoking instance still answers
        assert (await y_clients[1].call()).code == aiocoap.CONTENT
        for instance in instances:
            status, _ = await http_get(instance.served.http + "/readyz")
            assert status == 200
    print(json.dumps({"disable_s": delays, "revoke_s": revoke_delay}))
