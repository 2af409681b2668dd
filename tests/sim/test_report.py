"""Histograms, report merging, verdicts, scenario files and device lists."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_sim import coap
from device_sim.attacks import judge
from device_sim.cli import main as sim_main
from device_sim.histogram import Histogram, bucket_bounds, bucket_index
from device_sim.scenario import (
    ATTACK_KINDS,
    ScenarioError,
    assign_roles,
    load_devices,
    parse_duration,
    scenario_from_dict,
    split,
    unassigned_attacks,
)
from device_sim.stats import Recorder, merge_problems, merge_reports
from device_sim.verdict import Slo, Thresholds, evaluate
from tests.ops.conftest import free_port

from .conftest import make_devices, write_devices_csv


def _report(
    rec: Recorder,
    shard: str,
    started: float,
    ended: float,
    *,
    rows: tuple[int, int] = (0, 0),
    scenario: dict | None = None,
    completed: bool = True,
) -> dict:
    return rec.report(
        scenario=scenario or {"name": "t", "seed": 1, "fingerprint": "f"},
        shard=shard,
        started=started,
        ended=ended,
        devices={
            "simulated": 1,
            "normal": 1,
            "normal_with_success": 1,
            "attackers": {},
            "rows": [list(rows)],
        },
        simulator={"workers": [], "warnings": []},
        run={"planned_duration": ended - started, "completed": completed, "interrupted": None},
    )


def _fill(rec: Recorder, values: list[int], t0: float) -> None:
    route = rec.route("GET /whoami")
    for i, v in enumerate(values):
        rec.request(route, t0 + i * 0.01, "2.05", v / 1e6, True)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, 10**9), min_size=1, max_size=300),
    st.lists(st.integers(0, 10**9), min_size=1, max_size=300),
)
def test_merge_equals_the_report_of_the_union(a: list[int], b: list[int]) -> None:
    ra, rb, ru = Recorder(), Recorder(), Recorder()
    _fill(ra, a, 1000.0)
    _fill(rb, b, 1001.0)
    _fill(ru, a, 1000.0)
    _fill(ru, b, 1001.0)
    merged = evaluate(
        merge_reports([_report(ra, "1/2", 0, 5), _report(rb, "2/2", 1, 6, rows=(1, 1))]), Slo()
    )
    union = evaluate(_report(ru, "1/1", 0, 6), Slo())
    assert merged["histograms"] == union["histograms"]
    assert merged["latency_ms"] == union["latency_ms"]
    assert merged["codes"] == union["codes"] and merged["counters"] == union["counters"]
    assert merged["timeline"] == union["timeline"]
    assert merged["timeline_latency"] == union["timeline_latency"]
    assert merged["routes"] == union["routes"]
    assert merged["shards"] == ["1/2", "2/2"]
    # and the percentiles are those of the raw union within HDR precision
    values = sorted(a + b)
    for q in (50, 90, 99):
        exact = values[max(0, int(q / 100 * len(values) + 0.5) - 1)]
        got = merged["latency_ms"]["request"][f"p{q}"] * 1000
        assert abs(got - exact) <= max(1.0, exact / 128), (q, got, exact)


def test_histogram_buckets_are_contiguous_and_precise() -> None:
    prev = -1
    for i in range(0, 4500):
        lo, hi = bucket_bounds(i)
        assert lo == prev + 1 and hi >= lo
        prev = hi
    rng = random.Random(3)
    for _ in range(2000):
        v = int(rng.lognormvariate(10, 3)) % (1 << 40)
        lo, hi = bucket_bounds(bucket_index(v))
        assert lo <= v <= hi and (hi - lo) <= max(0, lo // 128)
    h = Histogram()
    h.record(5)
    assert Histogram.from_dict(json.loads(json.dumps(h.to_dict()))) == h
    with pytest.raises(ValueError):
        Histogram.from_dict({**h.to_dict(), "count": 2})


def test_verdict_fails_on_slo_and_on_accepted_attacks() -> None:
    rec = Recorder()
    _fill(rec, [1000] * 196 + [900_000] * 4, 0.0)
    rec.request(rec.route("GET /whoami"), 0.5, "4.03", 0.001, False)
    report = _report(rec, "1/1", 0, 1)
    assert evaluate(json.loads(json.dumps(report)), Slo(p99_ms=2000))["verdict"]["pass"]
    assert not evaluate(json.loads(json.dumps(report)), Slo(p99_ms=100))["verdict"]["pass"]
    failed = evaluate(json.loads(json.dumps(report)), Slo(error_rate=0.001))["verdict"]
    assert not failed["pass"] and "1 of 201 operations" in failed["causes"][0]
    rec.attack("replayed_proof", "2.05", "dev", 0.2, route="GET /whoami", request="replay")
    rec.attack("tampered_proof", "4.00", "dev", 0.3)
    report = evaluate(_report(rec, "1/1", 0, 1), Slo())
    assert report["attacks"]["replayed_proof"]["finding"] == 1
    finding = report["findings"][0]
    assert (finding["answer"], finding["route"], finding["device"]) == (
        "2.05",
        "GET /whoami",
        "dev",
    )
    assert not report["verdict"]["pass"]
    assert "replayed_proof x1" in report["verdict"]["causes"][0]
    rec2 = Recorder()
    _fill(rec2, [1000], 0.0)
    rec2.attack("tampered_proof", "4.00", "dev", 0.3)
    assert evaluate(_report(rec2, "1/1", 0, 1), Slo())["verdict"]["pass"]
    assert not evaluate(_report(rec2, "1/1", 0, 1), Slo(strict_attacks=True))["verdict"]["pass"]


def test_checks_that_always_apply_and_their_causes() -> None:
    """Served share, normal error rate and the whole duration are checked
    without any option; each failed check names its cause."""
    rec = Recorder()
    for _ in range(50):
        rec.outcome("handshake", True)
        rec.outcome("token", False)
        rec.error("token_4.29")
    report = _report(rec, "1/1", 0, 10)
    report["devices"].update(normal=50, normal_with_success=0)
    report["sources"] = {"count": 1, "mode": "configured", "ranges": ["127.0.0.1"]}
    report["scenario"]["token_path"] = "/token"
    v = evaluate(report)["verdict"]
    assert not v["pass"]
    failed = {c["name"] for c in v["checks"] if not c["ok"]}
    assert failed == {"served devices", "normal error rate"}
    assert "0 of 50 normal devices" in v["causes"][0]
    assert "token_4.29 x50" in v["causes"][0] and "source_addresses" in v["causes"][0]
    assert report["diagnosis"]["token"]["top_error"] == "token_4.29"
    # with many source addresses the hint is the gateway's limit
    report["sources"]["count"] = 50
    assert "source_addresses" not in evaluate(report)["diagnosis"]["token"]["hint"]
    # no limit makes a run that served no device pass
    loose = Thresholds.of({"served_ratio": 0.5}, served_ratio=0.0, error_rate=1.0)
    v = evaluate(report, loose)["verdict"]
    assert not v["pass"] and "at least one is needed" in v["causes"][0]
    # thresholds from the scenario, overridden on the command line
    report["devices"]["normal_with_success"] = 1
    assert not evaluate(report, Thresholds.of({"served_ratio": 0.5}))["verdict"]["pass"]
    assert evaluate(report, loose)["verdict"]["pass"]
    # an interrupted run fails and says so
    rec2 = Recorder()
    _fill(rec2, [1000], 0.0)
    cut = _report(rec2, "1/1", 0, 10, completed=False)
    cut["run"]["interrupted"] = "SIGINT"
    v = evaluate(cut)["verdict"]
    assert not v["pass"] and "interrupted (SIGINT)" in v["causes"][0]


def test_a_run_without_normal_devices_or_operations_fails() -> None:
    """No normal device, or normal devices that finished no operation: the
    checks measure nothing and the verdict says FAIL with the cause."""
    empty = _report(Recorder(), "1/1", 0, 10)
    empty["devices"].update(
        simulated=3, normal=0, normal_with_success=0, attackers={"wrong_psk": 3}
    )
    v = evaluate(empty, Thresholds(served_ratio=0.0, error_rate=1.0))["verdict"]
    assert not v["pass"]
    failed = {c["name"] for c in v["checks"] if not c["ok"]}
    assert failed == {"served devices", "normal error rate"}
    assert "no normal device in this run" in v["causes"][0]
    assert "no operation of a normal device finished" in v["causes"][1]
    # normal devices that never got as far as an operation
    idle = _report(Recorder(), "1/1", 0, 10)
    idle["devices"].update(normal=5, normal_with_success=0)
    v = evaluate(idle, Thresholds(served_ratio=0.0, error_rate=1.0))["verdict"]
    assert not v["pass"] and "0 of 5 normal devices" in v["causes"][0]


def test_observe_trl_fails_when_the_revocation_list_was_not_observed() -> None:
    """With ``observe_trl`` a run whose TRL registrations were all refused
    (no revocation could reach a device) fails and names the answer; one
    where they took and a revoked token was refused passes; one where a
    revoked token was accepted fails."""

    def run(observations: int, refused: int, accepted: int = 0) -> dict:
        rec = Recorder()
        _fill(rec, [1000], 0.0)
        for _ in range(observations):
            rec.count("trl_observations")
        for _ in range(refused):
            rec.error("trl_4.04")
        for _ in range(accepted):
            rec.count("trl_revoked_token_requests")
            rec.count("trl_revoked_token_accepted")
            rec.error("trl_revoked_token_accepted_2.05")
        report = _report(rec, "1/1", 0, 10)
        report["scenario"]["observe_trl"] = True
        return evaluate(report)["verdict"]

    v = run(0, 20)
    assert not v["pass"]
    failed = [c for c in v["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["revocation list observed"]
    assert "no device followed the revocation list" in failed[0]["cause"]
    assert "trl_4.04 x20" in failed[0]["cause"]
    assert not run(10, 5)["pass"]  # a third of the registrations failed
    assert run(200, 1)["pass"]  # within error_rate
    v = run(200, 0, accepted=1)
    assert [c["name"] for c in v["checks"] if not c["ok"]] == ["revoked tokens refused"]


def test_attack_kinds_not_exercised_are_reported_and_fail_when_strict() -> None:
    rec = Recorder()
    _fill(rec, [1000], 0.0)
    rec.cannot_attack("expired_token_reuse", "tokens outlive the run")
    report = _report(rec, "1/1", 0, 1)
    report["devices"]["attackers"] = {"expired_token_reuse": 2, "wrong_psk": 1}
    report["attacks"] = {
        "expired_token_reuse": {"devices": 2, "attempts": 0, "expected": 0, "finding": 0},
        "wrong_psk": {"devices": 1, "attempts": 3, "expected": 3, "finding": 0},
    }
    assert evaluate(report)["verdict"]["pass"]
    assert report["attacks_not_exercised"] == {"expired_token_reuse": "tokens outlive the run"}
    v = evaluate(report, Thresholds(strict_attacks=True))["verdict"]
    assert not v["pass"] and "expired_token_reuse not exercised" in v["causes"][0]


def test_merge_refuses_reports_that_do_not_belong_together(tmp_path) -> None:
    def saved(file: str, shard: str, rows: tuple[int, int], **scenario: object) -> str:
        rec = Recorder()
        _fill(rec, [1000, 2000], 100.0)
        sc = {"name": "t", "seed": 1, "fingerprint": "f", **scenario}
        path = tmp_path / file
        path.write_text(json.dumps(_report(rec, shard, 0, 2, rows=rows, scenario=sc)))
        return str(path)

    a = saved("a.json", "1/2", (0, 49))
    b = saved("b.json", "2/2", (50, 99))
    assert sim_main(["merge", a, b, "-q"]) == 0
    cases = {
        "shard 1/2 twice": [a, a],
        "both simulated devices.csv rows 41..50": [a, saved("c.json", "2/2", (40, 60))],
        "different scenarios": [a, saved("d.json", "2/2", (50, 99), name="soak", fingerprint="x")],
        "seed 7": [a, saved("e.json", "2/2", (50, 99), seed=7)],
    }
    for needle, paths in cases.items():
        loaded = [json.loads(Path(p).read_text()) for p in paths]
        assert any(needle in p for p in merge_problems(loaded, paths)), needle
        assert sim_main(["merge", *paths, "-q"]) == 2, needle
        # a merge of 1/2 with itself lacks 2/2, so its verdict fails even with --force
        forced = 1 if needle == "shard 1/2 twice" else 0
        assert sim_main(["merge", *paths, "-q", "--force"]) == forced, needle
    # the merged verdict comes from the merged data
    out = tmp_path / "m.json"
    assert sim_main(["merge", a, b, "-q", "--report", str(out), "--slo-p99-ms", "1.5"]) == 1
    merged = json.loads(out.read_text())
    assert merged["routes"]["GET /whoami"]["count"] == 4
    assert merged["devices"]["rows"] == [[0, 99]]
    # report renders saved reports (merged with the same refusals)
    page = tmp_path / "r.html"
    assert sim_main(["report", a, b, "--html", str(page), "-q"]) == 0
    assert page.read_text().count("<svg") == 6
    assert sim_main(["report", a, a, "--html", str(page), "-q"]) == 2
    assert sim_main(["report", str(out), "--csv", str(tmp_path / "r.csv"), "-q"]) == 0


def test_merge_of_an_incomplete_shard_set_is_refused_or_fails(tmp_path, capsys) -> None:
    def saved(shard: str, rows: tuple[int, int]) -> str:
        rec = Recorder()
        _fill(rec, [1000, 2000], 100.0)
        path = tmp_path / f"s{shard[0]}.json"
        path.write_text(json.dumps(_report(rec, shard, 0, 2, rows=rows)))
        return str(path)

    one, two, three = saved("1/3", (0, 32)), saved("2/3", (33, 65)), saved("3/3", (66, 99))
    loaded = [json.loads(Path(p).read_text()) for p in (one, two)]
    assert merge_problems(loaded, [one, two]) == ["shards missing: 3/3"]
    assert sim_main(["merge", one, two, "-q"]) == 2
    err = capsys.readouterr().err
    assert "refusing to merge: shards missing: 3/3 (--force merges anyway)" in err
    out = tmp_path / "m.json"
    assert sim_main(["merge", one, two, "-q", "--force", "--report", str(out)]) == 1
    verdict = json.loads(out.read_text())["verdict"]
    assert not verdict["pass"]
    (whole,) = [c for c in verdict["checks"] if c["name"] == "ran the whole duration"]
    assert not whole["ok"] and whole["value"] == "shards missing: 3/3"
    assert whole["cause"].startswith("shards missing: 3/3")
    # the whole set merges and passes
    assert sim_main(["merge", one, two, three, "-q", "--report", str(out)]) == 0
    assert json.loads(out.read_text())["verdict"]["pass"]


def test_attack_kinds_without_a_device_are_not_exercised(tmp_path) -> None:
    mix = {"wrong_psk": 10, "replayed_proof": 10, "tampered_proof": 10}
    roles = assign_roles(2, mix, seed=1)
    assert sorted(r for r in roles if r) == ["replayed_proof", "wrong_psk"]
    why = "no device assigned (2 devices for 3 attack kinds)"
    assert unassigned_attacks(roles, mix) == {"tampered_proof": why}
    assert unassigned_attacks(assign_roles(3, mix, seed=1), mix) == {}
    # a run of 2 devices: tampered_proof never runs, and --strict-attacks says so
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        'duration = "1s"\nramp_up = "0s"\n[attacks]\n'
        + "".join(f"{k} = {v}\n" for k, v in mix.items())
    )
    csv_path = write_devices_csv(tmp_path / "d.csv", make_devices(2))
    out = tmp_path / "r.json"
    args = ["--devices-csv", str(csv_path), "--scenario", str(scenario), "-q"]
    args += ["--target", f"127.0.0.1:{free_port()}", "--report", str(out), "--strict-attacks"]
    assert sim_main(args) == 1
    report = json.loads(out.read_text())
    assert report["attacks_not_exercised"]["tampered_proof"] == why
    (kinds,) = [c for c in report["verdict"]["checks"] if c["name"] == "attack kinds exercised"]
    assert not kinds["ok"] and f"tampered_proof not exercised: {why}" in kinds["cause"]


def test_judgement_of_answers() -> None:
    assert judge("replayed_proof", "4.01") == "expected"
    assert judge("replayed_proof", "2.05") == "finding"
    assert judge("scope_violation", "4.04") == "deviated"
    assert judge("malformed_cbor", "4.29") == "inconclusive"
    assert judge("wrong_psk", "connected") == "finding"
    assert judge("handshake_flood", "server_hello") == "finding"
    assert judge("abrupt_disconnect", "recovered") == "expected"


def test_scenario_file_is_strict() -> None:
    sc = scenario_from_dict(
        {
            "devices": 10,
            "duration": "2m",
            "ramp_up": "500ms",
            "target": {"port": 6000, "token_path": "/as/token"},
            "device": {"think_time": "10s", "pop": "es256"},
            "coap": {"max_retransmit": 2},
            "requests": [{"method": "post", "path": "/r", "payload_size": 32, "weight": 2}],
            "attacks": {"replayed_proof": 2.5, "options": {"interval": "1s"}},
        }
    )
    assert sc.duration == 120 and sc.ramp_up == 0.5 and sc.rate is None and sc.interval == 10
    assert sc.token_path == "/as/token" and sc.transmission.max_retransmit == 2
    assert sc.requests[0].method == 2 and sc.attacks == {"replayed_proof": 2.5}
    for bad in (
        {"durtion": 5},
        {"device": {"pop": "rsa"}},
        {"device": {"rate": 1, "think_time": 2}},
        {"attacks": {"replay": 5}},
        {"attacks": {"wrong_psk": 60, "tampered_proof": 50}},
        {"requests": [{"path": "no-slash"}]},
        {"target": {"port": 0}},
    ):
        with pytest.raises(ScenarioError):
            scenario_from_dict(bad)
    assert parse_duration("1h", "x") == 3600
    with pytest.raises(ScenarioError):
        parse_duration("soon", "x")


def test_roles_are_exact_and_the_same_for_every_shard() -> None:
    roles = assign_roles(200, {"wrong_psk": 2.5, "replayed_proof": 1}, seed=4)
    assert roles.count("wrong_psk") == 5 and roles.count("replayed_proof") == 2
    assert roles == assign_roles(200, {"wrong_psk": 2.5, "replayed_proof": 1}, seed=4)
    parts = [split(range(10), k, 3) for k in (1, 2, 3)]
    assert [x for p in parts for x in p] == list(range(10))
    assert set(ATTACK_KINDS) >= {"wrong_psk", "handshake_flood"}


def test_devices_csv(tmp_path) -> None:
    devices = make_devices(3)
    path = write_devices_csv(tmp_path / "d.csv", devices)
    loaded = load_devices(path)
    assert [(d.client_id, d.psk, d.scope) for d in loaded] == [
        (d.client_id, d.psk, d.scope) for d in devices
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,psk_hex,scope\nx," + "ab" * 65 + ",/a:GET\n")
    with pytest.raises(ScenarioError, match="65 bytes") as info:
        load_devices(bad)
    assert "ab" * 65 not in str(info.value)  # never the key
    long = tmp_path / "long.csv"  # 32-byte PSKs (acegw's default) are fine
    long.write_text("id,psk_hex,scope\nx," + "ab" * 32 + ",/a:GET\n")
    assert len(load_devices(long)[0].psk) == 32


def test_cli_usage_errors_exit_2(tmp_path, capsys) -> None:
    csv_path = write_devices_csv(tmp_path / "d.csv", make_devices(2))
    assert sim_main(["--devices-csv", str(tmp_path / "missing.csv")]) == 2
    bad = tmp_path / "s.toml"
    bad.write_text("[device]\nrate = -1\n")
    assert sim_main(["--devices-csv", str(csv_path), "--scenario", str(bad)]) == 2
    assert sim_main(["--devices-csv", str(csv_path), "--shard", "3/2"]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_merge(tmp_path, capsys) -> None:
    paths = []
    for k, values in enumerate(([1000, 2000], [3000, 4_000_000])):
        rec = Recorder()
        _fill(rec, values, 100.0 + k)
        p = tmp_path / f"r{k}.json"
        p.write_text(json.dumps(_report(rec, f"{k + 1}/2", 0, 2, rows=(k, k))))
        paths.append(str(p))
    out = tmp_path / "all.json"
    csv_out = tmp_path / "all.csv"
    args = ["merge", *paths, "--report", str(out), "--csv", str(csv_out), "-q"]
    assert sim_main(args) == 0
    merged = json.loads(out.read_text())
    assert merged["latency_ms"]["request"]["count"] == 4
    assert merged["counters"]["requests_ok"] == 4 and merged["shards"] == ["1/2", "2/2"]
    header = csv_out.read_text().splitlines()[0].split(",")
    assert header[:3] == ["t_s", "epoch", "requests_ok"] and "p99_ms" in header
    assert sim_main([*args[:-1], "--slo-p99-ms", "100", "-q"]) == 1  # 4 s > 100 ms


def test_codec_round_trip_and_garbage() -> None:
    msg = coap.CoapMessage(0, 1, 513, b"tok", [(11, b"a"), (11, b"b" * 300), (65001, b"p")], b"x")
    assert coap.decode(coap.encode(msg)) == msg
    rng = random.Random(5)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        with contextlib.suppress(coap.CoapFormatError):
            coap.decode(data)


def test_device_count_that_does_not_fit_the_open_files_limit(tmp_path) -> None:
    import resource
    import subprocess
    import sys

    csv_path = write_devices_csv(tmp_path / "d.csv", make_devices(300))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    done = subprocess.run(
        [sys.executable, "-m", "device_sim.cli", "--devices-csv", str(csv_path)],
        preexec_fn=low_limit,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "need 364 open files" in done.stderr and "limit is 100" in done.stderr
