"""The simulator against a real gateway on loopback (load, counts that match
the gateway's own, every attack refused) and against a deliberately
permissive fake (every attack a finding, exit status non-zero)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

from device_sim.scenario import ATTACK_KINDS, Scenario, assign_roles
from device_sim.stats import Slo, evaluate, merge_reports
from device_sim.worker import Worker

from .conftest import audit_records, make_devices, write_devices_csv
from .fake_gateway import FakeGateway


async def _run(sc: Scenario, devices, roles) -> dict:
    report = await Worker(sc, devices, roles).run()
    await asyncio.sleep(0.3)  # let the gateway take in the last close_notify datagrams
    return evaluate(merge_reports([report]), Slo(p99_ms=5000, error_rate=0.0))


async def test_200_devices_and_the_counts_match_the_gateways(gateway_factory):
    devices = make_devices(200)
    async with gateway_factory(devices) as gw:
        sc = Scenario(port=gw.address[1], duration=4.0, ramp_up=1.0, rate=2.0)
        report = await _run(sc, devices, [None] * 200)
        stats = gw.dtls.stats()
        audit = Counter((r["event"], r["decision"], r.get("reason")) for r in audit_records(gw))
    d = report["devices"]
    assert d["normal_connected"] == d["normal_with_token"] == d["normal_with_success"] == 200
    assert report["errors"] == {} and report["verdict"]["pass"], report["verdict"]
    c = report["counters"]
    assert c["requests_ok"] > 600
    # the simulator's counts are the gateway's counts
    assert c["handshakes_ok"] == stats.handshakes_ok == 200
    assert audit["handshake", "established", "ok"] == 200
    assert c["tokens_ok"] == audit["token", "issue", "ok"] == 200
    assert report["codes"]["authz_info"] == {"2.01": audit["authz-info", "accept", "ok"]}
    assert c["echo_challenges"] == audit["request", "deny", "echo_required"] == 200
    allowed = audit["request", "allow", "ok"]
    abandoned = c.get("exchanges_abandoned_at_stop", 0)
    assert report["codes"]["request"] == {"2.05": c["requests_ok"]}
    assert c["requests_ok"] <= allowed <= c["requests_ok"] + abandoned
    worker = report["simulator"]["workers"][0]
    assert worker["datagrams_sent"] == stats.datagrams_received
    assert stats.sessions == 0 and stats.sessions_closed.get("peer_closed") == 200
    assert report["latency_ms"]["handshake"]["count"] == 200
    assert sum(row[0] for row in report["timeline"].values()) == c["requests_ok"]


def _attack_scenario(port: int, **kw) -> Scenario:
    return Scenario(
        port=port,
        rate=2.0,
        ramp_up=0.5,
        handshake_timeout=1.5,
        reconnect_backoff=(0.2, 1.0),
        attacks={kind: 8.0 for kind in ATTACK_KINDS},
        attack_interval=0.4,
        expiry_leeway=0.0,
        abrupt_pause=0.3,
        **kw,
    )


async def test_every_attack_is_refused_by_the_gateway(gateway_factory):
    devices = make_devices(50)
    sc0 = _attack_scenario(0, duration=12.5)
    roles = assign_roles(50, sc0.attacks, sc0.seed)
    async with gateway_factory(devices, lifetime=10) as gw:
        sc = _attack_scenario(gw.address[1], duration=12.5)
        report = await _run(sc, devices, roles)
    attacks = report["attacks"]
    assert set(attacks) == set(ATTACK_KINDS)
    for kind, tally in attacks.items():
        assert tally["attempts"] > 0 and tally["expected"] > 0, (kind, tally)
        assert tally["finding"] == 0 and tally["deviated"] == 0, (kind, tally)
    assert report["findings"] == [] and report["verdict"]["pass"], report["verdict"]
    # normal devices do not suffer from the attackers next to them
    d = report["devices"]
    assert d["normal_with_success"] == d["normal"] > 0
    assert report["errors"] == {}


async def test_every_attack_is_a_finding_against_a_permissive_gateway(tmp_path):
    devices = make_devices(40)
    sc = _attack_scenario(0)
    roles = assign_roles(len(devices), sc.attacks, sc.seed)
    wrong = {
        d.client_id.encode(): d.psk[:-1] + bytes((d.psk[-1] ^ 1,))
        for d, role in zip(devices, roles, strict=True)
        if role == "wrong_psk"
    }
    fake = FakeGateway({d.client_id.encode(): d.psk for d in devices}, extra_psks=wrong)
    await fake.start()
    scenario = tmp_path / "attacks.toml"
    scenario.write_text(
        f"""
duration = "5s"
ramp_up = "0.5s"
[target]
port = {fake.address[1]}
[device]
rate = 2.0
handshake_timeout = "1s"
reconnect_backoff = ["0.2s", "1s"]
[attacks]
{chr(10).join(f"{k} = 8" for k in ATTACK_KINDS)}
[attacks.options]
interval = "0.4s"
expiry_leeway = 0
abrupt_pause = "0.3s"
"""
    )
    out = tmp_path / "report.json"
    csv_path = write_devices_csv(tmp_path / "devices.csv", devices)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "device_sim.cli",
        "--devices-csv",
        str(csv_path),
        "--scenario",
        str(scenario),
        "--workers",
        "2",
        "--report",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.stop()
    text = output.decode()
    assert proc.returncode == 1, text
    report = json.loads(out.read_text())
    for kind in ATTACK_KINDS:
        assert report["attacks"][kind]["finding"] > 0, (kind, report["attacks"][kind])
    assert not report["verdict"]["pass"]
    assert {f["attack"] for f in report["findings"]} == set(ATTACK_KINDS)
    assert "FINDING" in text and "FAIL" in text
    assert len(report["simulator"]["workers"]) == 2


async def test_asymmetric_pop_devices(gateway_factory):
    devices = make_devices(12)
    async with gateway_factory(devices) as gw:
        for pop in ("es256", "eddsa"):
            sc = Scenario(port=gw.address[1], duration=2.0, ramp_up=0.3, rate=3.0, pop=pop)
            report = await _run(sc, devices, [None] * 12)
            assert report["devices"]["normal_with_success"] == 12, (pop, report["errors"])
            assert report["errors"] == {} and report["codes"]["token"] == {"2.01": 12}
        tokens = [r for r in audit_records(gw) if r["event"] == "authz-info"]
    assert len(tokens) == 24
