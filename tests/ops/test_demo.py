"""``make run``'s entry point (``python -m examples.demo``) on a fresh state
directory: a device gets a token, reaches the demo upstream through a route,
the metrics show it, and SIGTERM stops everything with exit status 0."""

from __future__ import annotations

import json
import re
import socket
import sys

import aiocoap

from gateway.dtls.probe import DtlsProbe

from .conftest import ProofClient, children, free_port, gateway_env, http_get, serving, value


async def test_make_run_entry_point_serves_a_device_end_to_end(tmp_path):
    udp, http, upstream = free_port(), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    state = tmp_path / "demo-state"
    env = gateway_env(udp, http, ACEGW_LOGGING_LEVEL="INFO")
    for key in ("ACEGW_SERVER_BIND", "ACEGW_AUDIT_PATH"):
        env.pop(key)  # the demo's own defaults
    args = [sys.executable, "-m", "examples.demo", "--dir", str(state), "--port", str(udp)]
    args += ["--upstream-port", str(upstream)]
    async with serving(args, env, tmp_path / "demo.log", udp, http) as served:
        text = served.output()
        # the printed walk-through names the real port, a device and its PSK
        found = re.search(r"^  (demo-sensor-1)  (\S+)$", text, re.M)
        assert found, text
        assert f"coaps://127.0.0.1:{udp}/token" in text
        assert f"--target 127.0.0.1:{udp}" in text  # the simulator command
        assert (state / "devices.csv").stat().st_mode & 0o077 == 0
        identity, psk = found.group(1).encode(), found.group(2).encode()

        probe = DtlsProbe(served.target)
        try:
            session = await probe.connect(identity, psk, timeout=15)
            device = await ProofClient.enroll(session, "/temp:GET")
            resp = await device.call(("temp",))
            assert resp.code == aiocoap.CONTENT, (resp.code, resp.payload)
            assert "celsius" in json.loads(resp.payload)  # the demo upstream's answer
            assert device.echoes == 1
        finally:
            await probe.close()

        samples = await served.scrape()
        assert value(samples, "acegw_requests_total", route="/temp", code="2.05") == 1
        assert value(samples, "acegw_tokens_issued_total") == 1
        assert value(samples, "acegw_upstream_request_duration_seconds_count", route="/temp") == 1
        status, _ = await http_get(served.http + "/healthz")
        assert status == 200
        pid = served.process.pid
        assert children(pid) == []  # one process: gateway and upstream share it
        assert await served.stop() == 0
    assert "demo gateway stopped" in served.output()
