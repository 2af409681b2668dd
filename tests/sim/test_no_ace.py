"""``auth = "none"``: after the handshake a device sends its request mix
without ACE (no /token, no /authz-info, no Proof option), sans-I/O."""

from __future__ import annotations

import random

import pytest

from device_sim import coap
from device_sim.cli import _scenario, build_parser
from device_sim.coap import CoapMessage, MessageType, OptionNumber
from device_sim.device import READY, Device
from device_sim.scenario import DeviceSpec, RequestSpec, Scenario, ScenarioError, scenario_from_dict
from device_sim.stats import Recorder


def test_no_ace_goes_from_connected_straight_to_plain_requests():
    sc = Scenario(auth="none", rate=1000.0, requests=(RequestSpec(path="/"),))
    rec = Recorder()
    dev = Device(DeviceSpec(0, "dev-0", b"p" * 16), sc, rec, rng=random.Random(3))
    dev.timer(0.0)
    assert dev.actions == [("connect", False)]
    dev.actions.clear()
    dev.connected(0.01)
    assert dev.phase == READY
    now, sent = 0.01, []
    for _ in range(20):  # a server answering every request at once, 1 ms later
        now = max(now, dev.deadline)
        dev.timer(now)
        while dev.actions:
            action = dev.actions.pop(0)
            assert action[0] == "send", action
            msg = coap.decode(action[1])
            sent.append(msg)
            now += 0.001
            ack = CoapMessage(MessageType.ACK, 0x45, msg.mid, msg.token, [], b"hi")
            dev.datagram(coap.encode(ack), now)
    assert len(sent) >= 10
    for msg in sent:
        assert msg.mtype == MessageType.CON and msg.code == 1  # GET /
        assert msg.option(OptionNumber.URI_PATH) is None
        assert msg.option(OptionNumber.PROOF) is None
        assert msg.option(OptionNumber.ECHO) is None
    assert rec.counters["requests_ok"] == len(sent)
    assert rec.counters["sent_token"] == 0 and rec.counters["sent_authz_info"] == 0
    assert dev.token is None and not dev.got_token and dev.succeeded


def test_no_ace_from_toml_and_cli_and_refused_with_token_attacks():
    assert scenario_from_dict({"target": {"auth": "none"}}).auth == "none"
    assert Scenario().auth == "ace"
    with pytest.raises(ScenarioError, match=r"target\.auth"):
        scenario_from_dict({"target": {"auth": "oauth"}})
    with pytest.raises(ScenarioError, match="replayed_proof"):
        scenario_from_dict({"target": {"auth": "none"}, "attacks": {"replayed_proof": 1}})
    assert scenario_from_dict({"target": {"auth": "none"}, "attacks": {"wrong_psk": 1}})
    args = build_parser().parse_args(["run", "--devices-csv", "x.csv", "--no-ace"])
    assert _scenario(args).auth == "none"
    args = build_parser().parse_args(["run", "--devices-csv", "x.csv"])
    assert _scenario(args).auth == "ace"
