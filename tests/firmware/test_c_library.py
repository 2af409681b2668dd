"""The C device library (firmware_notes/c): its unit tests over every vector
under AddressSanitizer and UndefinedBehaviorSanitizer, a bounded libFuzzer
run over the response parsers, and the libcoap example device against a live
gateway on 127.0.0.1 (the Echo round, 4.29 + Max-Age at the default device
limit, a reconnect with the same token, a renewal, a gateway restart)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, LimitsConfig, load_config
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway

C_DIR = Path(__file__).resolve().parents[2] / "firmware_notes" / "c"
VECTORS = C_DIR.parent / "vectors"
PROOF_NAMES = [v["name"] for v in json.loads((VECTORS / "proofs.json").read_text())["vectors"]]
INPUTS = json.loads((VECTORS / "inputs.json").read_text())
CLIENT_ID = INPUTS["client_id"]
PSK = bytes.fromhex(INPUTS["psk"]["hex"])

pytestmark = pytest.mark.interop


def make(target: str, build: Path, *extra: str, timeout: float = 300) -> str:
    """``make -C firmware_notes/c TARGET`` into ``build``; fails with its output."""
    proc = subprocess.run(
        ["make", "-C", str(C_DIR), f"BUILD={build}", target, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("acedev-build")


def hook_runs(out: str) -> dict[str, dict[str, str]]:
    """The unit tests' results per hook: ``{hook: {test name: "ok  " | "FAIL"}}``
    from the ``hook NAME`` line each run starts with."""
    runs: dict[str, dict[str, str]] = {}
    for hook, body in re.findall(r"^hook (\S+)$(.*?)^\d+ passed, 0 failed$", out, re.M | re.S):
        runs[hook] = {
            name: status for status, name in re.findall(r"^(ok  |FAIL) (\S+)$", body, re.M)
        }
    return runs


def test_unit_tests_pass_under_sanitizers(build: Path) -> None:
    """Both crypto hooks, OpenSSL and PSA Crypto (Mbed TLS), built with the same
    warnings and sanitizers, produce every vector: HMAC tags byte for byte,
    ES256 byte for byte through PSA's deterministic ECDSA (RFC 6979, as the
    vectors) and by verification through OpenSSL's randomized one."""
    out = make("check", build)
    for binary in ("unit", "unit_psa"):
        (line,) = [ln for ln in out.splitlines() if re.search(rf"-o \S+/{binary} ", ln)]
        assert "-fsanitize=address,undefined" in line and "-Werror" in line, line
    runs = hook_runs(out)
    assert set(runs) == {"openssl", "psa"}, out[-2000:]
    shared = ["hook_primitives", "proof_size_by_piv", "long_path_refused", "token_requests"]
    for name in [*PROOF_NAMES, *shared]:
        assert runs["openssl"].get(name) == "ok  ", name
    for name in [*PROOF_NAMES, *shared]:
        # Mbed TLS has no Ed25519: the PSA hook refuses the EdDSA vector
        name = f"{name}:refused" if name.startswith("eddsa_") else name
        assert runs["psa"].get(name) == "ok  ", name
    # the PSA run is PSA's work: its binary has no OpenSSL in it
    ldd = subprocess.run(["ldd", str(build / "unit_psa")], capture_output=True, text=True).stdout
    assert "libmbedcrypto" in ldd and "libcrypto.so" not in ldd, ldd


def test_fuzzer_runs_over_the_response_parsers(build: Path) -> None:
    out = make("fuzz", build, "FUZZ_SECONDS=4")
    runs = int(re.search(r"stat::number_of_executed_units: (\d+)", out).group(1))  # type: ignore[union-attr]
    seeds = len(list((build / "corpus").iterdir()))
    assert seeds >= 9
    assert runs > 10_000, out[-2000:]
    assert "ERROR: libFuzzer" not in out and "runtime error" not in out


# --- the example device against a live gateway -------------------------------


def gateway_config(state: Path, port: int = 0) -> Config:
    """The defaults of `acegw init`, on loopback, with 10-second tokens (the
    shortest lifetime the AS allows) so that renewal happens within the test."""
    env = {
        "ACEGW_SERVER_BIND": "127.0.0.1",
        "ACEGW_SERVER_PORT": str(port),
        "ACEGW_METRICS_LISTEN": "off",
        "ACEGW_AUDIT_PATH": str(state / "audit.log"),
        "ACEGW_LOGGING_LEVEL": "WARNING",
        "ACEGW_AS_TOKEN_LIFETIME": "10",
    }
    return load_config(state / "acegw.toml", env=env)


@dataclass
class Run:
    lines: list[str]
    returncode: int

    def events(self, kind: str) -> list[dict[str, str]]:
        out = []
        for line in self.lines:
            head, _, rest = line.partition(" ")
            if head == kind:
                out.append(dict(kv.split("=", 1) for kv in rest.split()))
        return out


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[list[Gateway]]:
    state = tmp_path / "state"
    assert cli_main(["init", "--dir", str(state)], out=io.StringIO()) == 0
    gw = Gateway(gateway_config(state))
    gw.registry.add(CLIENT_ID, psk=PSK, scope=INPUTS["scope_text"])
    await gw.start()
    holder = [gw]
    try:
        yield holder
    finally:
        await holder[0].stop()
        holder[0].registry.close()


async def restart(holder: list[Gateway]) -> None:
    """Stop the gateway (close_notify to every peer) and start a new process
    state on the same port and files: uploaded tokens and windows are gone."""
    old = holder[0]
    port = old.address[1]
    state = old.config.base_dir
    await old.stop()
    old.registry.close()
    new = Gateway(gateway_config(state, port))
    await new.start()
    holder[0] = new


async def run_device(
    binary: Path, holder: list[Gateway], *args: str, pause_action: Any = None
) -> Run:
    host, port = holder[0].address
    proc = await asyncio.create_subprocess_exec(
        str(binary), "--host", host, "--port", str(port), "--id", CLIENT_ID,
        "--psk-hex", PSK.hex(), "--scope", "/whoami:GET", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(120):
            while line := (await proc.stdout.readline()).decode():
                lines.append(line.strip())
                if line.startswith("paused") and pause_action is not None:
                    await pause_action()
                    proc.stdin.write(b"go\n")
                    await proc.stdin.drain()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return Run(lines, proc.returncode or 0)


def audit(gw: Gateway) -> list[dict[str, Any]]:
    path = gw.config.base_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def device_binary(build: Path) -> Path:
    make("example", build)
    return build / "acedev-device"


async def test_example_device_against_a_live_gateway(
    device_binary: Path, gateway: list[Gateway]
) -> None:
    limits = LimitsConfig()
    # back to back, three buckets' worth: even at 100 ms per request (a slow,
    # loaded machine) the bucket refills slower than the burst drains it
    burst = 3 * limits.device_burst
    burst_at, pace_ms = 5, 600
    requests = burst_at + burst + 16  # the paced ones outlast the 9 s to renewal
    run = await run_device(
        device_binary,
        gateway,
        "--requests", str(requests), "--pace-ms", str(pace_ms),
        "--reconnect-at", "3", "--burst-at", str(burst_at), "--burst", str(burst),
        "--pause-at", str(requests - 2),
        pause_action=lambda: restart(gateway),
    )  # fmt: skip
    text = "\n".join(run.lines)
    assert run.returncode == 0, text
    done = run.events("request")
    assert [int(d["n"]) for d in done] == list(range(1, requests + 1)), text
    assert all(d["code"].startswith("2.") for d in done)
    assert len(done) >= 20

    # the Echo round: the first request of the token was answered 4.01 + Echo,
    # and the repeat (next piv, Echo in option and proof) 2.05
    answers = run.events("answer")
    assert answers[0] == {"n": "1", "code": "4.01", "action": "repeat_echo", "piv": "1"}
    assert done[0] == {"n": "1", "code": "2.05", "piv": "2", "echo_rounds": "1"}

    # the planned reconnect kept the token: no new token, no Echo, next piv
    reconnects = run.events("reconnect")
    assert reconnects[0]["reason"] == "planned"
    third = done[2]
    assert third["echo_rounds"] == "0" and int(third["piv"]) == int(done[1]["piv"]) + 1

    # 4.29 + Max-Age from the default device limit, waited out, then served
    waits = run.events("wait")
    assert waits and all(int(w["max_age"]) >= 1 for w in waits), text
    throttled = [a for a in answers if a["code"] == "4.29"]
    assert throttled and all(a["action"] == "wait" for a in throttled)
    # not before the default bucket (full after the paced start) is used up
    assert int(throttled[0]["n"]) >= burst_at + limits.device_burst - 1, text

    # renewal at 90 % of the 10 s lifetime on the device's clock: a new kid
    tokens = run.events("token")
    assert tokens[0]["expires_in"] == "10" and tokens[0]["renew_after_ms"] == "9000"
    renewals = run.events("renew")
    assert renewals and all(int(r["elapsed_ms"]) >= 9000 for r in renewals), text
    assert len({t["kid"] for t in tokens}) == len(tokens) >= 2

    # the gateway restart: close_notify -> reconnect -> 4.01 + Creation Hints
    # -> re-upload of the same token -> 4.01 + Echo -> 2.05
    after = run.lines[run.lines.index(f"resumed n={requests - 2}") :]
    assert any(line.startswith("session_closed") for line in after), text
    assert any(line == "reconnect reason=closed" for line in after), text
    restart_answers = [a for a in answers if a["n"] == str(requests - 2)]
    assert [a["action"] for a in restart_answers] == ["upload_token", "repeat_echo"], text
    assert (
        "upload code=2.01" in after[after.index(next(x for x in after if "upload_token" in x)) + 1]
    )
    assert done[-1]["code"] == "2.05"

    # the new gateway process saw no bad proof and no replay
    reasons = [r.get("reason") for r in audit(gateway[0]) if r["event"] == "request"]
    assert "bad_signature" not in reasons and "replay" not in reasons, reasons
