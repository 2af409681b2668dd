"""``make run``: a ready-to-try gateway with embedded defaults.

Creates (once) a state directory with a config, a master key, generated AS
keys, an SQLite registry and a few demo devices (also written to
``devices.csv`` for ``acegw-sim``); then starts the demo HTTP upstream and
the gateway and prints the exact commands to try. Ctrl-C or SIGTERM stops
everything (exit status 0).

    python -m examples.demo [--dir DIR] [--port PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import os
import shlex
import sys
from pathlib import Path

from examples import demo_upstream
from gateway.config import CONFIG_FILE_NAME, Config, load_config
from gateway.operations.logs import setup_logging
from gateway.registry.registry import Registry
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from gateway.runtime.serve import run
from tokens.ace import TokenRequest

DEMO_DEVICES = 3
DEMO_SCOPE = "/whoami:GET /temp:GET,PUT /readings:GET,POST"
DEMO_UPSTREAM_PORT = 8089
DEMO_ROUTES = """
# Routes to the demo HTTP upstream (python -m examples.demo_upstream), added by make run.
[[routes]]
prefix = "/temp"
upstream = "http://127.0.0.1:{port}/temp"
methods = ["GET", "PUT"]
headers = {{ "X-Device" = "{{client_id}}" }}

[[routes]]
prefix = "/readings"
upstream = "http://127.0.0.1:{port}/readings"
methods = ["GET", "POST"]
headers = {{ "X-Device" = "{{client_id}}" }}
"""


def prepare(
    directory: Path, port: int, upstream_port: int = DEMO_UPSTREAM_PORT
) -> tuple[Config, list[tuple[str, bytes]]]:
    """Initialise ``directory`` if needed and return the config and the demo
    devices (id, PSK)."""
    config_path = directory / CONFIG_FILE_NAME
    if not config_path.exists():
        if cli_main(["init", "--dir", str(directory)], out=io.StringIO()) != 0:
            raise SystemExit(f"cannot initialise {directory}")
        with config_path.open("a", encoding="utf-8") as f:
            f.write(DEMO_ROUTES.format(port=upstream_port))
    env = dict(os.environ)
    env.setdefault("ACEGW_SERVER_PORT", str(port))
    env.setdefault("ACEGW_AUDIT_PATH", str(directory / "audit.log"))
    # the walk-through is for a person: plain warnings only, unless asked
    env.setdefault("ACEGW_LOGGING_LEVEL", "WARNING")
    env.setdefault("ACEGW_LOGGING_JSON", "false")
    config = load_config(config_path, env=env)
    devices: list[tuple[str, bytes]] = []
    with Registry.from_config(config) as registry:
        for n in range(1, DEMO_DEVICES + 1):
            client_id = f"demo-sensor-{n}"
            try:
                psk = registry.psk(client_id)
            except Exception:
                psk = registry.add(client_id, scope=DEMO_SCOPE, printable=True)
            devices.append((client_id, psk))
    (directory / "token-request.cbor").write_bytes(TokenRequest(scope="/whoami:GET").encode())
    _write_devices_csv(directory / "devices.csv", devices)
    return config, devices


def _write_devices_csv(path: Path, devices: list[tuple[str, bytes]]) -> None:
    """``id,psk_hex,scope`` rows for ``acegw-sim`` (mode 0600: PSKs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write("id,psk_hex,scope\n")
        for client_id, psk in devices:
            f.write(f"{client_id},{psk.hex()},{DEMO_SCOPE}\n")


def _simulator_available() -> bool:
    root = Path(__file__).resolve().parents[1]
    return (root / "docs" / "simulator.md").exists() and importlib.util.find_spec(
        "device_sim.cli"
    ) is not None


def instructions(
    config: Config, gateway: Gateway, devices: list[tuple[str, bytes]], directory: Path
) -> str:
    port = gateway.address[1]
    client_id, psk = devices[0]
    q = shlex.quote
    lines = [
        "",
        f"acegw demo gateway on coaps://[::1]:{port} and coaps://127.0.0.1:{port}",
        f"state: {directory}  (config {directory / CONFIG_FILE_NAME})",
        f"audit log: {config.audit.path}",
        "",
        "Demo devices (id, PSK):",
        *[f"  {d}  {p.decode()}" for d, p in devices],
        "",
        "Get a token with libcoap's client (DTLS-PSK, ace+cbor payload):",
        f"  coap-client-openssl -m post -u {client_id} -k {q(psk.decode())} -t 19 \\",
        f"    -f {directory / 'token-request.cbor'} -o {directory / 'token-response.cbor'} \\",
        f"    coaps://127.0.0.1:{port}/token",
        "Look inside the token (no secrets printed):",
        f"  .venv/bin/acegw token decode {directory / 'token-response.cbor'}",
        "",
    ]
    if _simulator_available():
        lines += [
            "Simulated devices (token, upload, Echo, proofed GET /whoami at 2/s) for 10 s:",
            f"  .venv/bin/acegw-sim --devices-csv {directory / 'devices.csv'} "
            f"--target 127.0.0.1:{port} --duration 10s --rate 2",
            "",
        ]
    if config.metrics.enabled:
        host, mport = config.metrics.host, config.metrics.port
        base = f"http://{f'[{host}]' if ':' in host else host}:{mport}"
        lines += [
            "Watch it:",
            f"  curl -s {base}/metrics | grep -v '^#'",
            f"  curl -s {base}/readyz",
            "",
        ]
    lines.append("Ctrl-C stops the gateway and the demo upstream.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__)
    parser.add_argument("--dir", default=os.environ.get("ACEGW_DEMO_DIR", "demo-state"))
    parser.add_argument("--port", type=int, default=5684)
    parser.add_argument("--upstream-port", type=int, default=DEMO_UPSTREAM_PORT)
    args = parser.parse_args(argv)
    directory = Path(args.dir).absolute()
    config, devices = prepare(directory, args.port, args.upstream_port)
    setup_logging(config.logging.level, json_lines=config.logging.json)

    def ready(gateway: Gateway) -> None:
        print(instructions(config, gateway, devices, directory), flush=True)

    async def both() -> None:
        app = demo_upstream.create_app()
        runner, url = await demo_upstream.start(app, "127.0.0.1", args.upstream_port)
        print(f"demo HTTP upstream on {url}", flush=True)
        try:
            await run(config, ready=ready)
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(both())
    print("demo gateway stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
