"""The scenario library shipped with acegw-sim, stages, thresholds and
request body templates."""

from __future__ import annotations

import json
import random

import cbor2
import pytest

from device_sim.cli import main as sim_main
from device_sim.device import Device
from device_sim.scenario import (
    Scenario,
    ScenarioError,
    load_scenario,
    resolve_scenario,
    scenario_from_dict,
    scenario_names,
)
from device_sim.stats import Recorder
from device_sim.templates import TemplateError, compile_body

from .conftest import make_devices

LIBRARY = ("attack-mix", "ramp-spike", "smoke", "soak", "steady-fleet")


def test_the_library_is_shipped_and_every_scenario_loads(capsys) -> None:
    assert tuple(scenario_names()) == LIBRARY
    for name in LIBRARY:
        sc = load_scenario(resolve_scenario(name))
        assert sc.name == name and sc.description
    assert sim_main(["scenarios"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in LIBRARY)
    with pytest.raises(ScenarioError, match="not in the library"):
        resolve_scenario("no-such-scenario")
    spike = load_scenario(resolve_scenario("ramp-spike"))
    assert max(rate for _, rate in spike.stages) == 10 * spike.rate  # type: ignore[operator]
    mix = load_scenario(resolve_scenario("attack-mix"))
    assert mix.attacks.keys() >= {"token_theft", "request_flood", "lockout_abuse"}
    assert load_scenario(resolve_scenario("soak")).timeline_interval == 10


def test_stages_set_the_rate_over_time() -> None:
    sc = scenario_from_dict(
        {
            "device": {"rate": 0.1},
            "stages": [{"duration": "10s", "rate": 5}, {"duration": 5, "rate": 1}],
        }
    )
    assert sc.rate_at(0) == (5, 10) and sc.rate_at(12) == (1, 15)
    assert sc.rate_at(20)[0] == pytest.approx(0.1)
    # a device's requests follow the stages: ~50 in the first 10 s, ~5 after
    dev = Device(make_devices(1)[0], sc, Recorder(), run_start=0.0, rng=random.Random(2))
    times = []
    while dev._next_at < 15:
        dev._schedule_next(dev._next_at)
        times.append(dev._next_at)
    first = sum(1 for t in times if t < 10)
    assert 35 <= first <= 65 and 1 <= sum(1 for t in times if 10 <= t < 15) <= 12
    for bad in (
        {"stages": [{"duration": "1s"}]},
        {"stages": [{"duration": "1s", "rate": 0}]},
        {"stages": [{"duration": "1s", "rate": 1}], "device": {"think_time": "1s"}},
    ):
        with pytest.raises(ScenarioError):
            scenario_from_dict(bad)


def test_stages_that_do_not_fit_the_duration_are_refused(capsys, tmp_path) -> None:
    # a stage past the end of the run would never run, and the run could still PASS
    with pytest.raises(ScenarioError, match=r"stages add up to 15 s but the run lasts 12 s"):
        scenario_from_dict(
            {
                "duration": "12s",
                "stages": [{"duration": "10s", "rate": 5}, {"duration": 5, "rate": 1}],
            }
        )
    fits = scenario_from_dict(
        {"duration": "15s", "stages": [{"duration": "10s", "rate": 5}, {"duration": 5, "rate": 1}]}
    )
    with pytest.raises(ScenarioError, match="stages add up to 15 s"):
        fits.with_overrides(duration=14.0)
    # every shipped scenario fits its stages into its own duration
    for name in LIBRARY:
        sc = load_scenario(resolve_scenario(name))
        assert sum(d for d, _ in sc.stages) <= sc.duration
    # the command line: a shorter --duration cuts the spike off, so it is refused (exit 2)
    csv = tmp_path / "devices.csv"
    csv.write_text("id,psk_hex,scope\ndev-0,00112233445566778899aabbccddeeff,\n")
    args = ["--scenario", "ramp-spike", "--duration", "60s", "--devices-csv", str(csv)]
    assert sim_main([*args, "--target", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "stages add up to 300 s but the run lasts 60 s" in err and "\n" not in err


def test_thresholds_from_the_scenario() -> None:
    sc = scenario_from_dict(
        {"thresholds": {"served_devices": 0.9, "error_rate": 0.05, "p99_ms": 80}}
    )
    assert sc.thresholds() == {
        "served_ratio": 0.9,
        "error_rate": 0.05,
        "p99_ms": 80.0,
        "strict_attacks": False,
    }
    assert Scenario().thresholds()["served_ratio"] == 0.99
    with pytest.raises(ScenarioError):
        scenario_from_dict({"thresholds": {"served_devices": 2}})
    with pytest.raises(ScenarioError):
        scenario_from_dict({"thresholds": {"errors": 0.1}})


def test_body_templates_fill_per_device_and_per_request_fields() -> None:
    sc = scenario_from_dict(
        {
            "requests": [
                {
                    "method": "POST",
                    "path": "/readings",
                    "body": {
                        "device": "$device_id",
                        "row": "$device_index",
                        "seq": "$seq",
                        "celsius": "$random(15.5, 30)",
                        "level": "$random(1, 3)",
                        "state": "$choice(ok, warn)",
                        "at": "$timestamp",
                        "at_ms": "$timestamp_ms",
                        "when": "$iso_time",
                        "label": "sensor-${device_id}/${seq}",
                        "tags": ["fixed", 2, True],
                    },
                }
            ]
        }
    )
    spec = sc.requests[0]
    assert spec.content_format == 50 and spec.body is not None  # JSON set by the format
    rng = random.Random(1)
    bodies = [json.loads(spec.body.render("dev-7", 7, n, rng, 1_700_000_000.25)) for n in (1, 2)]
    first = bodies[0]
    assert first["device"] == "dev-7" and first["row"] == 7 and first["seq"] == 1
    assert bodies[1]["seq"] == 2 and first["label"] == "sensor-dev-7/1"
    assert 15.5 <= first["celsius"] <= 30 and isinstance(first["celsius"], float)
    assert first["level"] in (1, 2, 3) and first["state"] in ("ok", "warn")
    assert first["at"] == 1_700_000_000 and first["at_ms"] == 1_700_000_000_250
    assert first["when"] == "2023-11-14T22:13:20.250Z" and first["tags"] == ["fixed", 2, True]
    cb = compile_body({"v": "$seq"}, "cbor", "t")
    assert cb.content_format == 60
    assert cbor2.loads(cb.render("d", 0, 5, rng, 0.0)) == {"v": 5}
    for bad, fmt in (({"x": "$nope"}, "json"), ({"x": "$random(3, 1)"}, "json"), ({}, "xml")):
        with pytest.raises(TemplateError):
            compile_body(bad, fmt, "t")
    with pytest.raises(ScenarioError, match="body or payload_size"):
        scenario_from_dict({"requests": [{"body": {"a": 1}, "payload_size": 3}]})
    with pytest.raises(ScenarioError, match="unknown placeholder"):
        scenario_from_dict({"requests": [{"body": {"a": "$whatever"}}]})


def test_handshake_refusals_are_classified_from_the_wire_and_the_devices_history() -> None:
    def refused(reason: str, *, worked_before: bool = False) -> dict[str, int]:
        rec = Recorder()
        dev = Device(make_devices(1)[0], Scenario(), rec, rng=random.Random(1))
        dev.timer(0.0)  # start: connect
        if worked_before:
            dev.connected(0.1)
            dev.closed(0.2, "close_notify")  # the gateway ends the session
            dev.timer(dev.deadline)  # reconnect after the back-off
        dev.closed(dev.deadline - 1e-3 if dev.deadline < 1e9 else 1.0, reason)
        return {k: v for k, v in rec.errors.items() if k.startswith("handshake_")}

    assert refused("fatal_alert_20") == {"handshake_wrong_psk": 1}  # bad_record_mac
    assert refused("close_notify") == {"handshake_wrong_psk": 1}
    assert refused("fatal_alert_115") == {"handshake_unknown_identity": 1}
    assert refused("port_unreachable") == {"handshake_port_unreachable": 1}
    assert refused("fatal_alert_20", worked_before=True) == {"handshake_locked_out": 1}


def test_refusals_are_split_by_the_gateways_diagnostic() -> None:
    from device_sim.coap import CoapMessage
    from device_sim.device import _kind, _reason
    from tokens.ace import CreationHints, ErrorResponse
    from tokens.params import AceError

    def answer(payload: bytes, cf: int | None = None) -> CoapMessage:
        options = [] if cf is None else [(12, bytes((cf,)))]
        return CoapMessage(2, 0x81, 1, b"t", options, payload)

    locked = answer(b"temporarily locked out after repeated failures")
    assert _kind("request", "4.01", locked) == (
        "request_4.01 (temporarily locked out after repeated failures)"
    )
    err = ErrorResponse(error=AceError.INVALID_CLIENT, error_description="token expired")
    ace = answer(err.encode(), 19)
    assert _reason(ace) == "invalid_client: token expired"
    hints = answer(CreationHints(as_uri="coaps://as/token").encode(), 19)
    assert _reason(hints) == "unknown token (AS request creation hints)"
    assert _kind("token", "4.29", answer(b"")) == "token_4.29"
    assert _reason(answer(b"\x00bad\nline" + b"x" * 100)) == ("bad line" + "x" * 52)


def test_observe_trl_option() -> None:
    sc = scenario_from_dict({"device": {"observe_trl": True}, "target": {"trl_path": "/t/l"}})
    assert sc.observe_trl and sc.trl_path == "/t/l"
    assert sc.summary()["observe_trl"] is True
    assert not scenario_from_dict({}).observe_trl
    with pytest.raises(ScenarioError, match="observe_trl: expected true or false"):
        scenario_from_dict({"device": {"observe_trl": "yes"}})
    with pytest.raises(ScenarioError, match="follows tokens"):
        scenario_from_dict({"device": {"observe_trl": True}, "target": {"auth": "none"}})
