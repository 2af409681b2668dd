"""The event log's pieces without a gateway: stable names documented, JSON
lines with the event's fields, flood summaries rate-limited by an injected
clock, the admin token policy."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from gateway.operations.admin_access import create_admin_token, is_loopback, refusal
from gateway.operations.events import EVENTS, EventLog, FloodSummary
from gateway.operations.gateway_events import GatewayEvents, host_of
from gateway.operations.logs import JsonFormatter

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


class Lines:
    """An emit() that keeps what it is given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def __call__(self, event: str, message: str, **fields: object) -> None:
        assert event in EVENTS
        self.lines.append((event, message, fields))


def test_every_event_is_documented():
    text = DOCS.read_text()
    section = text[text.index("\n## Events") :]
    section = section[: section.index("\n## ", 5)]
    table = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert set(EVENTS) <= table, set(EVENTS) - table
    assert table <= set(EVENTS), table - set(EVENTS)


def test_event_lines_are_json_with_their_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(worker=3))
    logger = logging.getLogger("test.events")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        EventLog(logger)("client_disabled", "client a disabled", client_id="a", sessions_closed=2)
        with pytest.raises(TypeError):
            EventLog(logger)("client_disabled", "x", psk=b"secret")
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "client_disabled" and record["level"] == "INFO"
    assert record["client_id"] == "a" and record["sessions_closed"] == 2
    assert record["worker"] == 3 and record["msg"] == "client a disabled"


def test_a_thousand_refusals_give_two_lines():
    out = Lines()
    flood = FloodSummary(out, event="handshake_flood", what="failed handshakes", threshold=20)
    now = 1000.0
    for i in range(1000):  # 1,000 in 3 s from one address
        flood.count("127.0.0.10", now + i * 0.003, "bad_finished")
        flood.tick(now + i * 0.003)
    assert [f["phase"] for _, _, f in out.lines] == ["started"]
    assert out.lines[0][2]["count"] == 20 and out.lines[0][2]["address"] == "127.0.0.10"
    for step in range(1, 40):  # quiet for 39 s, ticking every second
        flood.tick(now + 3 + step)
    assert [f["phase"] for _, _, f in out.lines] == ["started", "ongoing"]
    assert out.lines[1][2]["count"] == 980 and out.lines[1][2]["total"] == 1000
    assert out.lines[1][2]["reasons"] == {"bad_finished": 980}
    assert "980 failed handshakes from 127.0.0.10 in the last 10 s" in out.lines[1][1]
    assert len(flood) == 0


def test_a_long_flood_gives_one_line_per_window_and_small_bursts_none():
    out = Lines()
    flood = FloodSummary(out, event="request_flood", what="refused requests", threshold=20)
    for second in range(60):  # 60 s at 100/s
        for i in range(100):
            flood.count("198.51.100.7", second + i / 100)
        flood.tick(second + 1)
    for i in range(19):  # below the threshold
        flood.count("198.51.100.8", 61 + i)
        flood.tick(61 + i)
    phases = [f["phase"] for _, _, f in out.lines]
    assert phases[0] == "started" and 5 <= phases.count("ongoing") <= 6
    assert all(f["address"] == "198.51.100.7" for _, _, f in out.lines)


def test_sources_beyond_the_bound_are_counted_as_other():
    out = Lines()
    flood = FloodSummary(out, event="handshake_flood", what="x", threshold=5, max_sources=4)
    for n in range(100):
        for _ in range(5):
            flood.count(f"10.0.0.{n}", 1.0)
    assert len(flood) == 5
    named = {f["address"] for _, _, f in out.lines}
    assert named == {"10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "other"}


def test_gateway_events_caps_breakers_and_request_floods():
    out = Lines()
    events = GatewayEvents(out)  # type: ignore[arg-type]
    events.dtls_drops({"address_handshake_cap": 0}, 1.0)
    events.dtls_drops({"address_handshake_cap": 3000, "unknown_peer": 5}, 2.0)
    events.dtls_drops({"address_handshake_cap": 3001}, 3.0)
    assert [(e, f["cap"], f["count"]) for e, _, f in out.lines] == [
        ("dtls_cap_reached", "address_handshake_cap", 3000)
    ]
    assert out.lines[0][1] == "3000 ClientHellos dropped at address_handshake_cap in 0.0 s"
    events.tick(12.5)
    assert out.lines[-1][2]["phase"] == "ongoing" and out.lines[-1][2]["count"] == 1
    out.lines.clear()
    # the DTLS server names the source address: a line per cap and address
    drops = {("handshake_cap", "127.0.0.10"): 40, ("handshake_cap", "127.0.0.11"): 2}
    events.dtls_drops({"handshake_cap": 42}, 20.0, drops)
    events.dtls_drops({"handshake_cap": 43}, 21.0, {("handshake_cap", "127.0.0.10"): 1})
    assert [(f["cap"], f["address"], f["count"]) for _, _, f in out.lines] == [
        ("handshake_cap", "127.0.0.10", 40),
        ("handshake_cap", "127.0.0.11", 2),
    ]
    assert out.lines[0][1] == "40 ClientHellos dropped at handshake_cap from 127.0.0.10 in 0.0 s"
    events.tick(30.5)
    assert out.lines[-1][2]["address"] == "127.0.0.10" and out.lines[-1][2]["count"] == 1
    assert "in the last 10 s" in out.lines[-1][1]
    out.lines.clear()
    events.breakers([("/api", "closed")])
    events.breakers([("/api", "open")])
    events.breakers([("/api", "open")])
    events.breakers([("/api", "half_open")])
    events.breakers([("/api", "closed")])
    assert [f["state"] for _, _, f in out.lines] == ["open", "half_open", "closed"]
    out.lines.clear()
    for i in range(25):
        events.audit_record({"decision": "deny", "reason": "rate_limited", "peer": "[::1]:5"}, i)
        events.audit_record({"decision": "deny", "reason": "scope_path", "peer": "[::1]:5"}, i)
    assert [(e, f["address"], f["count"]) for e, _, f in out.lines] == [
        ("request_flood", "::1", 20)
    ]
    assert host_of("127.0.0.1:5684") == "127.0.0.1" and host_of("127.0.0.1") == "127.0.0.1"


def test_state_changes_need_loopback_and_the_token(tmp_path):
    token_file = tmp_path / "admin.token"
    assert refusal("127.0.0.1", "Bearer x", token_file) is not None  # no file yet
    assert create_admin_token(token_file) and not create_admin_token(token_file)
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert len(token) == 64
    assert refusal("127.0.0.1", f"Bearer {token}", token_file) is None
    assert refusal("::ffff:127.0.0.5", f"Bearer {token}", token_file) is None
    assert "token" in str(refusal("127.0.0.1", None, token_file))
    assert "token" in str(refusal("127.0.0.1", f"Bearer {token[:-1]}x", token_file))
    for peer in ("192.0.2.1", "10.0.0.1", "2001:db8::1", None, "garbage"):
        assert "loopback" in str(refusal(peer, f"Bearer {token}", token_file))
    assert is_loopback("::1") and not is_loopback("::")
