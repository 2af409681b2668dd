"""``make run``: a ready-to-try gateway with embedded defaults.

Creates (once) a state directory with a config, a master key, generated AS
keys, an SQLite registry and a few demo devices; then starts the gateway and
prints the exact commands to try. Ctrl-C stops everything.

    python -m gateway.demo [--dir DIR] [--port PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shlex
import sys
from pathlib import Path

from tokens.ace import TokenRequest

from .cli import main as cli_main
from .config import CONFIG_FILE_NAME, Config, load_config
from .registry import Registry
from .server import Gateway, run

DEMO_DEVICES = 3
DEMO_SCOPE = "/whoami:GET /temp:GET,PUT /readings:POST"


def prepare(directory: Path, port: int) -> tuple[Config, list[tuple[str, bytes]]]:
    """Initialise ``directory`` if needed and return the config and the demo
    devices (id, PSK)."""
    config_path = directory / CONFIG_FILE_NAME
    initialised = config_path.exists()
    if not initialised and cli_main(["init", "--dir", str(directory)], out=io.StringIO()) != 0:
        raise SystemExit(f"cannot initialise {directory}")
    env = dict(os.environ)
    env.setdefault("ACEGW_SERVER_PORT", str(port))
    env.setdefault("ACEGW_AUDIT_PATH", str(directory / "audit.log"))
    config = load_config(config_path, env=env)
    devices: list[tuple[str, bytes]] = []
    with Registry.from_config(config) as registry:
        for n in range(1, DEMO_DEVICES + 1):
            client_id = f"demo-sensor-{n}"
            try:
                psk = registry.psk(client_id)
            except Exception:
                psk = registry.add(client_id, scope=DEMO_SCOPE)
            devices.append((client_id, psk))
    (directory / "token-request.cbor").write_bytes(TokenRequest(scope="/whoami:GET").encode())
    return config, devices


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
        "Ctrl-C stops the gateway.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.demo", description=__doc__)
    parser.add_argument("--dir", default=os.environ.get("ACEGW_DEMO_DIR", "demo-state"))
    parser.add_argument("--port", type=int, default=5684)
    args = parser.parse_args(argv)
    directory = Path(args.dir).absolute()
    config, devices = prepare(directory, args.port)

    def ready(gateway: Gateway) -> None:
        print(instructions(config, gateway, devices, directory), flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config, ready=ready))
    print("demo gateway stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
