"""Revocation reaching a fleet (RFC 9770): ``acegw serve`` from ``acegw
init``, devices from ``acegw clients bulk-add``, ``acegw-sim run`` with
``[device] observe_trl``. While the run goes on, 10 % of the devices' tokens
are revoked with ``acegw tokens revoke`` (their ctis from the gateway's audit
records of /token issuance): exactly those devices see their token on the
TRL, fetch a new one, and the one request each makes with its revoked token
after the notification is refused."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.runtime.cli import main as cli_main
from tests.ops.conftest import ACEGW, free_port, gateway_env, init_state, serving

from .conftest import SIM

DEVICES = 500
REVOKED = DEVICES // 10
DURATION = 40


def _audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line being written
            continue
    return records


async def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        await asyncio.sleep(0.2)
    return got


async def test_revoking_a_tenth_of_the_fleet_retokens_exactly_those(tmp_path: Path) -> None:
    state = init_state(tmp_path / "state")
    devices_csv = tmp_path / "devices.csv"
    add = ["clients", "bulk-add", "--count", str(DEVICES), "--prefix", "trl-"]
    add += ["--scope", "/whoami:GET", "--psk-bytes", "16", "--out", str(devices_csv)]
    assert cli_main([*add, "--dir", str(state)], out=io.StringIO()) == 0
    with open(devices_csv, newline="") as f:
        ids = [row[0] for row in list(csv.reader(f))[1:]]
    assert len(ids) == DEVICES
    audit = state / "audit.log"
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    env = gateway_env(udp, http, ACEGW_AUDIT_PATH=str(audit))
    scenario = tmp_path / "trl.toml"
    scenario.write_text(
        f'name = "trl"\nduration = "{DURATION}s"\nramp_up = "5s"\n'
        "[device]\nrate = 0.2\nobserve_trl = true\nreconnect_backoff = [0.2, 2.0]\n"
    )
    report_path = tmp_path / "report.json"
    async with serving([*ACEGW, "serve", "--dir", str(state)], env, tmp_path / "gw.log", udp, http):
        sim = await asyncio.create_subprocess_exec(
            *SIM, "run", "--devices-csv", str(devices_csv), "--scenario", str(scenario),
            "--target", f"127.0.0.1:{udp}", "--report", str(report_path), "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            # every device got its token and observes the TRL
            def observing() -> bool:
                records = _audit(audit)
                observes = [r for r in records if r.get("event") == "trl"]
                return sum(1 for r in observes if r.get("decision") == "observe") >= DEVICES

            await _until("500 TRL observations", observing, 40)
            issued = {
                r["client_id"]: r["cti"]
                for r in _audit(audit)
                if r.get("event") == "token" and r.get("decision") == "issue"
            }
            assert len(issued) == DEVICES
            revoked = sorted(ids[:: DEVICES // REVOKED])[:REVOKED]
            for cid in revoked:  # the operator's command, one token at a time
                out = io.StringIO()
                assert (
                    cli_main(["tokens", "revoke", issued[cid], "--dir", str(state)], out=out) == 0
                )
                assert "revoked until" in out.getvalue()
            output, _ = await asyncio.wait_for(sim.communicate(), DURATION + 60)
        finally:
            if sim.returncode is None:
                sim.kill()
                await sim.wait()
    report = json.loads(report_path.read_text())
    trl = report["devices"]["trl"]
    c = report["counters"]
    print(
        f"{c.get('trl_observations')} observations, {c.get('trl_notifications')} notifications, "
        f"{c.get('trl_revocations_seen')} revocations seen, {c.get('trl_retokens')} new tokens, "
        f"revoked-token answers "
        f"{ {k: v for k, v in c.items() if k.startswith('trl_revoked_token_answer_')} }"
    )
    # exactly the revoked devices saw their token listed and fetched a new one
    assert trl["revoked"] == revoked
    assert trl["retokened"] == revoked
    assert trl["fetched_several_tokens"] == revoked
    assert c["trl_revocations_seen"] == c["trl_retokens"] == REVOKED
    assert c["trl_observations"] >= DEVICES
    # the gateway's side: one more token issued for each revoked device, none for others
    issues = Counter(
        r["client_id"]
        for r in _audit(audit)
        if r.get("event") == "token" and r.get("decision") == "issue"
    )
    assert sorted(cid for cid, n in issues.items() if n > 1) == revoked
    assert all(issues[cid] == 2 for cid in revoked)
    # each revoked token was tried once after its notification: refused, never 2.xx
    assert c["trl_revoked_token_requests"] == REVOKED
    assert c.get("trl_revoked_token_answer_4.01") == REVOKED, c
    assert "trl_revoked_token_accepted" not in c
    check = {k["name"]: k for k in report["verdict"]["checks"]}
    assert check["revoked tokens refused"]["ok"] and check["revoked tokens refused"]["value"] == 0
    assert report["devices"]["normal_with_success"] == DEVICES, output.decode()[-2000:]
