"""The simulator against a real gateway on loopback (load, counts that match
the gateway's own, every attack refused) and against a deliberately
permissive fake (every attack a finding, exit status non-zero)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from html.parser import HTMLParser

from device_sim.html_report import CHARTS, render_html
from device_sim.scenario import ATTACK_KINDS, Scenario, assign_roles
from device_sim.stats import merge_reports
from device_sim.verdict import Slo, evaluate
from device_sim.worker import SourcePlan, Worker
from gateway.runtime.gateway import Gateway

from .conftest import audit_records, make_devices, run_sim, write_devices_csv
from .fake_gateway import FakeGateway


async def _run(sc: Scenario, devices, roles, gateway: Gateway | None = None) -> dict:
    """One simulator worker's run, judged; with ``gateway`` (served on this
    event loop), returned once the gateway has taken in as many datagrams as
    the run sent (the last close_notify alerts included), so its counts are
    final. Bounded: after 10 s the caller's assertions judge what arrived."""
    received = gateway.dtls.stats().datagrams_received if gateway and gateway.dtls else 0
    report = await Worker(sc, devices, roles).run()
    if gateway is not None and gateway.dtls is not None:
        received += sum(w["datagrams_sent"] for w in report["simulator"]["workers"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        # the gateway's socket callback raises no event: polled, on this loop
        while gateway.dtls.stats().datagrams_received < received and loop.time() < deadline:
            await asyncio.sleep(0.005)
    return evaluate(merge_reports([report]), Slo(p99_ms=5000, error_rate=0.0))


async def test_200_devices_and_the_counts_match_the_gateways(gateway_factory):
    devices = make_devices(200)
    async with gateway_factory(devices) as gw:
        sc = Scenario(port=gw.address[1], duration=4.0, ramp_up=1.0, rate=2.0)
        report = await _run(sc, devices, [None] * 200, gw)
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


#: Every kind but the half-open flood, which gets runs of its own (it is
#: judged by honest handshakes while it fills the gateway's handshake table).
MIXED = tuple(k for k in ATTACK_KINDS if k != "half_open_flood")


def _attack_scenario(port: int, kinds=MIXED, percent: float = 4.0, **kw) -> Scenario:
    params = {
        "port": port,
        "rate": 2.0,
        "ramp_up": 0.5,
        "handshake_timeout": 1.5,
        "reconnect_backoff": (0.2, 1.0),
        "attacks": {kind: percent for kind in kinds},
        "attack_interval": 0.4,
        "expiry_leeway": 0.0,
        "abrupt_pause": 0.3,
        "flood_requests": 40,
    }
    params.update(kw)
    return Scenario(**params)


async def test_every_attack_is_refused_by_the_gateway(gateway_factory):
    devices = make_devices(100)
    sc0 = _attack_scenario(0, duration=12.5)
    roles = assign_roles(100, sc0.attacks, sc0.seed)
    # the gateway's own lockout defaults: lockout abuse must meet the real thing
    env = {"ACEGW_LIMITS_LOCKOUT_FAILURES": "10"}
    async with gateway_factory(devices, lifetime=10, env=env) as gw:
        sc = _attack_scenario(gw.address[1], duration=12.5)
        report = await _run(sc, devices, roles, gw)
        plan = SourcePlan(sc)
        now = gw.clock()
        refused = [
            d.client_id
            for d, role in zip(devices, roles, strict=True)
            if role is None
            and gw.lockout.refuses(d.client_id.encode(), plan.address(d.index), now) is not None
        ]
    attacks = report["attacks"]
    assert set(attacks) == set(MIXED)
    for kind, tally in attacks.items():
        assert tally["attempts"] > 0 and tally["expected"] > 0, (kind, tally)
        assert tally["deviated"] == 0, (kind, tally)
        if kind == "lockout_abuse":
            # a finding exactly when the gateway refuses a named device from
            # its own address (the lockout model keyed by (identity, address)
            # never does: then no finding)
            assert (tally["finding"] > 0) == bool(refused), (tally, refused)
        else:
            assert tally["finding"] == 0, (kind, tally)
    assert report["counters"]["lockout_victims_named"] > 0
    assert report["attacks_not_exercised"] == {}, report["attacks_not_exercised"]
    if not refused:
        assert report["findings"] == [] and report["verdict"]["pass"], report["verdict"]
        # normal devices do not suffer from the attackers next to them
        d = report["devices"]
        assert d["normal_with_success"] == d["normal"] > 0
        assert report["errors"] == {}, report["errors"]
    # a stolen token is refused because it is bound to its own device's session
    assert set(attacks["token_theft"]["answers"]) == {"4.01"}
    assert attacks["request_flood"]["answers"].get("4.29", 0) > 0
    _check_html(report)


class _Page(HTMLParser):
    """What a reader of the HTML report finds: per chart, the data series
    and bars drawn (SVG groups with a path inside); per table, its rows;
    the verdict's causes."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, int]] = {}
        self.tables: dict[str, list[list[str]]] = defaultdict(list)
        self.causes: list[str] = []
        self.external: list[str] = []
        self._figure: str | None = None
        self._group: list[str | None] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_causes = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and not str(a[key]).startswith("#"):
                self.external.append(a[key])
        if tag == "figure":
            self._figure = a.get("id")
            self.charts[self._figure] = {}
        elif tag == "g":
            gid = a.get("id") or ""
            self._group.append(gid if gid.startswith(("series-", "bar-")) else None)
        elif tag == "path" and self._figure and any(self._group):
            name = next(g for g in reversed(self._group) if g)
            points = str(a.get("d", "")).count("L") + 1
            self.charts[self._figure][name] = max(points, self.charts[self._figure].get(name, 0))
        elif tag == "table":
            self._table = a.get("id")
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "ul" and a.get("id") == "causes":
            self._in_causes = True
        elif tag == "li" and self._in_causes:
            self.causes.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        elif tag == "g" and self._group:
            self._group.pop()
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "ul":
            self._in_causes = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_causes and self.causes:
            self.causes[-1] += data


def _check_html(report: dict) -> None:
    """The HTML report of a run with attacks and routes holds every chart
    with its data drawn, every table with its rows, and nothing fetched."""
    page = _Page()
    page.feed(render_html(report))
    assert set(page.charts) == set(CHARTS)
    drawn = page.charts
    assert drawn["chart-throughput"].get("series-ok", 0) >= 5
    assert drawn["chart-latency"].get("series-p99", 0) >= 3
    assert drawn["chart-codes"].get("series-2.05", 0) >= 3
    assert {"series-handshakes", "series-tokens", "series-uploads"} <= set(drawn["chart-phases"])
    assert {"bar-p99-handshake", "bar-p99-request"} <= set(drawn["chart-phase-latency"])
    assert {f"bar-expected-{k}" for k in report["attacks"]} <= set(drawn["chart-attacks"])
    routes = {row[0]: row for row in page.tables["routes"][1:]}
    stats = report["routes"]["GET /whoami"]
    assert routes["GET /whoami"][1] == str(stats["count"])
    assert routes["GET /whoami"][5] == str(stats["latency_ms"]["p99"])
    attack_rows = {row[0]: row for row in page.tables["attacks"][1:]}
    assert set(attack_rows) == set(report["attacks"])
    checks = {row[0]: row[3] for row in page.tables["checks"][1:]}
    assert checks == {c["name"]: "ok" if c["ok"] else "FAIL" for c in report["verdict"]["checks"]}
    assert [c.strip() for c in page.causes] == report["verdict"]["causes"]
    assert page.tables["diagnosis-table"] and page.tables["workers"]
    assert page.external == []  # opens offline: nothing linked or loaded


async def test_half_open_flood_from_one_address_leaves_honest_handshakes_served(gateway_factory):
    devices = make_devices(30)
    sc0 = _attack_scenario(0, kinds=("half_open_flood",), percent=7.0, duration=6.0)
    roles = assign_roles(30, sc0.attacks, sc0.seed)
    assert roles.count("half_open_flood") == 2
    async with gateway_factory(devices) as gw:
        sc = _attack_scenario(
            gw.address[1],
            kinds=("half_open_flood",),
            percent=7.0,
            duration=6.0,
            half_open_rate=300.0,
            handshake_timeout=3.0,
        )
        report = await _run(sc, devices, roles, gw)
        stats = gw.dtls.stats()
    tally = report["attacks"]["half_open_flood"]
    c = report["counters"]
    # the flood reached the gateway: thousands of cookie-completing hellos
    assert c["half_open_cookies_returned"] > 1000, c
    assert stats.handshakes_ok >= report["counters"]["handshakes_ok"]
    assert tally["attempts"] > 0 and tally["expected"] > 0, tally
    assert tally["finding"] == 0, (tally, report["findings"][:3])
    d = report["devices"]
    assert d["normal_with_success"] == d["normal"]
    assert report["verdict"]["pass"], report["verdict"]


def _permissive_scenario(port: int, kinds, percent: int, duration: str = "5s") -> str:
    return f"""
duration = "{duration}"
ramp_up = "0.5s"
[target]
port = {port}
[device]
rate = 2.0
handshake_timeout = "1s"
reconnect_backoff = ["0.2s", "1s"]
[attacks]
{chr(10).join(f"{k} = {percent}" for k in kinds)}
[attacks.options]
interval = "0.4s"
expiry_leeway = 0
abrupt_pause = "0.3s"
flood_requests = 30
lockout_attempts = 3
"""


async def test_every_attack_is_a_finding_against_a_permissive_gateway(tmp_path):
    devices = make_devices(100)
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
    scenario.write_text(_permissive_scenario(fake.address[1], MIXED, 4, duration="6s"))
    out = tmp_path / "report.json"
    csv_path = write_devices_csv(tmp_path / "devices.csv", devices)
    try:
        status, text = await run_sim(
            "--devices-csv", str(csv_path), "--scenario", str(scenario), "--workers", "2",
            "--report", str(out), "--html", str(tmp_path / "report.html"),
        )  # fmt: skip
    finally:
        await fake.stop()
    assert status == 1, text
    report = json.loads(out.read_text())
    for kind in MIXED:
        assert report["attacks"][kind]["finding"] > 0, (kind, report["attacks"][kind])
    assert not report["verdict"]["pass"]
    assert {f["attack"] for f in report["findings"]} == set(MIXED)
    for f in report["findings"]:  # each finding says who, where, what and what came back
        assert f["device"] and f["route"] and f["answer"], f
    flood = next(f for f in report["findings"] if f["attack"] == "request_flood")
    assert flood["answer"] == "no_limit" and flood["route"] == "GET /whoami"
    victim = next(f for f in report["findings"] if f["attack"] == "lockout_abuse")
    assert victim["answer"] == "victim_locked_out" and "named by" in victim["request"]
    assert "FINDING" in text and "FAIL" in text
    assert len(report["simulator"]["workers"]) == 2
    assert "attack attempt(s) accepted" in " ".join(report["verdict"]["causes"])
    page = _Page()  # the HTML report shows the failed verdict, its causes and the findings
    page.feed((tmp_path / "report.html").read_text())
    assert [c.strip() for c in page.causes] == report["verdict"]["causes"] != []
    assert len(page.tables["findings"]) - 1 == len(report["findings"])
    assert "FAIL" in {row[3] for row in page.tables["checks"][1:]}


async def test_half_open_flood_is_a_finding_when_honest_handshakes_starve():
    devices = make_devices(20)
    fake = FakeGateway({d.client_id.encode(): d.psk for d in devices}, starve_on_flood=True)
    await fake.start()
    sc = _attack_scenario(
        fake.address[1], kinds=("half_open_flood",), percent=5.0, duration=4.0,
        handshake_timeout=1.0,
    )  # fmt: skip
    roles = assign_roles(20, sc.attacks, sc.seed)
    try:
        report = await _run(sc, devices, roles)
    finally:
        await fake.stop()
    tally = report["attacks"]["half_open_flood"]
    assert tally["finding"] > 0, tally
    assert fake.starved > 0
    assert report["findings"][0]["answer"] == "honest_handshake_failed"
    assert not report["verdict"]["pass"]


async def test_asymmetric_pop_devices(gateway_factory):
    devices = make_devices(12)
    async with gateway_factory(devices) as gw:
        for pop in ("es256", "eddsa"):
            sc = Scenario(port=gw.address[1], duration=2.0, ramp_up=0.3, rate=3.0, pop=pop)
            report = await _run(sc, devices, [None] * 12, gw)
            assert report["devices"]["normal_with_success"] == 12, (pop, report["errors"])
            assert report["errors"] == {} and report["codes"]["token"] == {"2.01": 12}
        tokens = [r for r in audit_records(gw) if r["event"] == "authz-info"]
    assert len(tokens) == 24
