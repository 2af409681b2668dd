"""``acegw registry migrate``: a populated SQLite registry (bulk-added
clients, a disabled one, a revocation, audit records) copied into
PostgreSQL; a gateway on the PostgreSQL registry then lets every enabled
client authenticate with its old PSK (DTLS-PSK handshake and /token) and
still refuses the disabled one."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import aiocoap
import pytest

from gateway.registry.postgres import PostgresStore
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from tests.integration.conftest import device, gateway_config
from tokens.ace import TokenRequest

COUNT = 30


def _cli(*argv: str) -> str:
    out = io.StringIO()
    assert cli_main(list(argv), out=out) == 0, out.getvalue()
    return out.getvalue()


async def test_migrated_clients_authenticate_with_their_old_psks(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    _cli("init", "--dir", str(state))
    cfg = ["--config", str(state / "acegw.toml")]
    psks = tmp_path / "psks.csv"
    _cli(
        "clients",
        "bulk-add",
        *cfg,
        "--count",
        str(COUNT),
        "--prefix",
        "dev-",
        "--scope",
        "/whoami:GET",
        "--out",
        str(psks),
        "--psk-bytes",
        "16",
    )
    rows = list(csv.DictReader(psks.open()))
    assert len(rows) == COUNT
    _cli("clients", "disable", *cfg, rows[0]["id"])
    _cli("tokens", "revoke", *cfg, "0a0b0c")

    said = _cli("registry", "migrate", *cfg, "--to", pg_url)
    assert f"copied {COUNT} clients, 1 revocations, 1 cut-offs" in said

    store = PostgresStore(pg_url, create=False)
    try:
        assert store.count_clients() == COUNT
        assert {a.action for a in store.search_actions()} >= {
            "clients bulk-add",
            "clients disable",
            "tokens revoke",
        }
        assert b"\x0a\x0b\x0c" in {cti for cti, _ in store.revoked()}
    finally:
        store.close()
    assert cli_main(["registry", "migrate", *cfg, "--to", pg_url], out=io.StringIO()) != 0
    assert "already has clients" in capsys.readouterr().err  # a second copy is refused

    gw = Gateway(gateway_config(state, ACEGW_REGISTRY_URL=pg_url))
    await gw.start()
    try:
        assert gw.registry.store.location.startswith("postgresql://")
        assert gw.registry.is_revoked(b"\x0a\x0b\x0c")
        for row in rows[1:]:
            async with device(gw, row["id"].encode(), bytes.fromhex(row["psk_hex"])) as dev:
                resp = await dev.post("/token", TokenRequest(scope="/whoami:GET").encode())
                assert resp.code == aiocoap.CREATED, (row["id"], resp)
        async with device(gw, rows[0]["id"].encode(), bytes.fromhex(rows[0]["psk_hex"])) as dev:
            with pytest.raises(Exception):  # noqa: B017 - the handshake fails
                await dev.post("/token", TokenRequest(scope="/whoami:GET").encode(), timeout=3)
    finally:
        await gw.stop()
        gw.registry.close()
