"""The audit trail: JSON lines, no bytes (hence no secret) in a record,
successes sampled, failures always written."""

from __future__ import annotations

import json

import pytest

from gateway.operations.audit import AuditLog


def test_records_are_json_lines_with_time_and_no_empty_fields(tmp_path):
    path = tmp_path / "audit" / "log.jsonl"
    audit = AuditLog(str(path), clock=lambda: 12.3456)
    audit(event="request", decision="allow", reason="ok", kid="0a0b", cti=None)
    audit(event="request", decision="deny", reason="replay")
    audit.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"ts": 12.346, "event": "request", "decision": "allow", "reason": "ok", "kid": "0a0b"},
        {"ts": 12.346, "event": "request", "decision": "deny", "reason": "replay"},
    ]
    assert audit.records == 2
    audit(event="after-close")  # a closed log drops records
    assert not audit.enabled


def test_bytes_are_refused_so_no_key_or_token_reaches_the_log(tmp_path):
    audit = AuditLog(str(tmp_path / "a.jsonl"), clock=lambda: 0.0)
    with pytest.raises(TypeError, match="pass hex ids"):
        audit(event="request", kid=b"\x01\x02")
    audit.close()
    assert (tmp_path / "a.jsonl").read_text() == ""


def test_sampling_thins_successes_only(tmp_path):
    path = tmp_path / "s.jsonl"
    draws = iter([0.9, 0.9, 0.1])
    audit = AuditLog(str(path), sample_success=0.5, clock=lambda: 0.0, rng=lambda: next(draws))
    audit(event="request", decision="allow", reason="ok")  # 0.9 >= 0.5: sampled out
    audit(event="request", decision="deny", reason="replay")  # failures always
    audit(event="request", decision="allow", reason="ok")  # 0.1: kept
    audit.close()
    decisions = [json.loads(line)["decision"] for line in path.read_text().splitlines()]
    assert decisions == ["deny", "allow"]


def test_off_writes_nothing():
    audit = AuditLog("off", clock=lambda: 0.0)
    assert not audit.enabled
    audit(event="request", kid=b"not even checked")
