"""``acegw serve`` with two workers: ``/keys`` on the supervisor's HTTP port
is the AS key set the workers hold, and follows ``acegw keys rotate`` within
the workers' own bound (they report each change; the supervisor reads no key
store of its own), with the key directory and with the keys in a PostgreSQL
registry (where a key store read only every ``SAFETY_RELOAD`` s would lag)."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from pathlib import Path

import pytest

from gateway.authorization_server.keystore import SAFETY_RELOAD, Keystore
from gateway.config import load_config
from gateway.runtime.cli import main as cli_main
from tests.ops.conftest import ACEGW, free_port, gateway_env, http_get, init_state, serving
from tests.postgres_cluster import pg_cluster, pg_url  # noqa: F401 - fixtures
from tokens import cbor

#: Seconds within which /keys shows a rotation: the workers notice it within
#: about 0.5 s; well under the key store's safety reload, which a /keys read
#: only that often would need.
BOUND_S = SAFETY_RELOAD - 2.0


async def _kids(served) -> set[bytes]:
    status, body = await http_get(served.http + "/keys")
    assert status == 200, body
    keys = cbor.decode(body, what="key set")
    assert all(-4 not in k for k in keys)  # public keys only
    return {k[2] for k in keys}  # COSE_Key label 2 = kid


def _verification_kids(state: Path, url: str) -> set[bytes]:
    config = load_config(state / "acegw.toml", env={"ACEGW_REGISTRY_URL": url})
    with Keystore.from_config(config, create=False) as keys:
        return {k.kid for k in keys.verification_keys()}


@pytest.fixture(params=["key directory", "postgresql"])
def registry_url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "key directory" else request.getfixturevalue("pg_url")


async def test_keys_follow_a_rotation(
    tmp_path: Path, registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = init_state(tmp_path / "state")
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(udp, http, ACEGW_SERVER_WORKERS="2", ACEGW_REGISTRY_URL=registry_url)
    args = [*ACEGW, "serve", "--dir", str(state)]
    async with serving(args, env, tmp_path / "gw.log", udp, http) as served:
        before = _verification_kids(state, registry_url)
        assert len(before) == 1 and await _kids(served) == before
        monkeypatch.setenv("ACEGW_REGISTRY_URL", registry_url)
        out = io.StringIO()
        assert cli_main(["keys", "rotate", "--dir", str(state)], out=out) == 0, out.getvalue()
        start = time.monotonic()
        after = _verification_kids(state, registry_url)
        assert len(after) == 2 and before < after  # the old key still verifies
        while (shown := await _kids(served)) != after:
            assert shown == before, shown
            assert time.monotonic() - start < BOUND_S, f"/keys still {shown} {BOUND_S} s after"
            await asyncio.sleep(0.05)
        assert await served.stop() == 0
