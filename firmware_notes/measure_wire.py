"""Measure bytes on the wire against a live gateway and write
``firmware_notes/vectors/wire.json`` (the handshake and message tables of
``budgets.md`` are rendered from it by ``generate_vectors``).

Two clients talk to a gateway through :class:`~firmware_notes.relay.UdpRelay`
on loopback, which records every datagram and its DTLS records:

* a tinydtls client (tinydtls 0.8.6 in DTLSSocket, driven by aiocoap's
  ``tinydtls`` transport): the DTLS stack a small device runs, so its
  handshake flights are the device's;
* libcoap's ``coap-client-openssl`` running :mod:`firmware_notes.walkthrough`
  (/token, /authz-info, the Echo round trip, a steady-state request): the
  application-data records of every message.

Run from the repository root (starts its own gateway on 127.0.0.1)::

    python -m firmware_notes.measure_wire            # rewrite vectors/wire.json
    python -m firmware_notes.measure_wire --out FILE

The device is the vectors' (``inputs.json``: client id, PSK, scope), so the
sizes line up with the vectors' messages; ``tests/firmware`` checks that
they do, and that a new measurement equals the committed file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiocoap

from firmware_notes import recipe, walkthrough
from firmware_notes.relay import Datagram, UdpRelay

HERE = Path(__file__).resolve().parent
WIRE = HERE / "vectors" / "wire.json"
#: DTLS 1.2 record header (13) + CCM explicit nonce (8) + CCM_8 tag (8):
#: TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655 §3), the only PSK suite tinydtls has.
RECORD_OVERHEAD = 13 + 8 + 8


def _inputs() -> dict[str, Any]:
    inputs: dict[str, Any] = json.loads((HERE / "vectors" / "inputs.json").read_text())
    return inputs


def flights(handshake: list[Datagram]) -> dict[str, Any]:
    """Group handshake datagrams into flights (RFC 6347 §4.2.4: a flight is
    what one side sends before waiting for the other) and total them."""
    out: list[dict[str, Any]] = []
    for d in handshake:
        direction = "device -> gateway" if d.direction == "c>s" else "gateway -> device"
        if not out or out[-1]["direction"] != direction:
            out.append({"flight": len(out) + 1, "direction": direction, "datagrams": []})
        out[-1]["datagrams"].append({"size": d.size, "records": list(d.records)})
    up = [d for d in handshake if d.direction == "c>s"]
    down = [d for d in handshake if d.direction == "s>c"]
    return {
        "flights": out,
        "totals": {
            "device_to_gateway": sum(d.size for d in up),
            "datagrams_device_to_gateway": len(up),
            "gateway_to_device": sum(d.size for d in down),
            "datagrams_gateway_to_device": len(down),
        },
    }


def _sizes(datagrams: list[Datagram]) -> list[dict[str, Any]]:
    return [
        {
            "direction": "device -> gateway" if d.direction == "c>s" else "gateway -> device",
            "size": d.size,
            "records": list(d.records),
        }
        for d in datagrams
    ]


async def tinydtls_session(
    server: tuple[str, int], identity: str, psk: bytes, token_request: bytes
) -> list[Datagram]:
    """One DTLS session of a tinydtls client through the relay: handshake,
    POST /token, close. Returns every datagram."""
    relay = UdpRelay(server)
    host, port = await relay.start()
    base = f"coaps://{host}:{port}"
    ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
    try:
        ctx.client_credentials.load_from_dict(
            {base + "/*": {"dtls": {"psk": psk, "client-identity": identity.encode()}}}
        )
        msg = aiocoap.Message(
            code=aiocoap.POST, uri=base + "/token", payload=token_request, content_format=19
        )
        response = await asyncio.wait_for(ctx.request(msg).response, 10)
        if response.code != aiocoap.CREATED:
            raise RuntimeError(f"/token answered {response.code} to the tinydtls client")
    finally:
        await ctx.shutdown()
        await asyncio.sleep(0.05)
        datagrams = list(relay.datagrams)
        await relay.close()
    return datagrams


async def measure(server: tuple[str, int], workdir: Path) -> dict[str, Any]:
    """Both measurements against the gateway at ``server``, as wire.json."""
    inputs = _inputs()
    client_id = inputs["client_id"]
    psk = bytes.fromhex(inputs["psk"]["hex"])
    scope = bytes.fromhex(inputs["scope_aif"]["hex"])
    tiny = await tinydtls_session(server, client_id, psk, recipe.token_request(scope))
    walk = await walkthrough.run(
        server[0],
        server[1],
        client_id,
        psk.decode(),
        scope=scope,
        workdir=workdir,
        measure=True,
    )
    exchanges = []
    for step in walk.steps:
        app = walkthrough.application_part(step.datagrams)
        exchanges.append(
            {
                "step": step.name,
                "sent": _sizes([d for d in app if d.direction == "c>s"]),
                "received": _sizes([d for d in app if d.direction == "s>c"]),
            }
        )
    closing = [d for d in tiny if not d.application_data and d.records[0].startswith("Alert")]
    return {
        "description": (
            "Datagram sizes measured through a UDP relay on loopback against a live "
            "gateway (firmware_notes/measure_wire.py). Sizes are UDP payloads: add "
            "8 bytes of UDP header and 20 (IPv4) or 40 (IPv6) bytes of IP header, "
            "less with 6LoWPAN header compression."
        ),
        "identity": client_id,
        "identity_length": len(client_id),
        "cipher_suite": "TLS_PSK_WITH_AES_128_CCM_8",
        "dtls_record_overhead": RECORD_OVERHEAD,
        "dtls_record_overhead_note": (
            "13-byte record header + 8-byte explicit nonce + 8-byte CCM_8 tag; the tests "
            "check every measured application-data datagram against vectors + this"
        ),
        "tinydtls": {
            "client": "tinydtls 0.8.6 (DTLSSocket) via aiocoap's tinydtls transport",
            "handshake": flights(walkthrough.handshake_part(tiny)),
            "close": _sizes(closing),
        },
        "libcoap": {
            "client": "coap-client-openssl (libcoap 4.3.1, Debian libcoap3-bin)",
            "handshake": flights(walk.handshake),
            "exchanges": exchanges,
        },
    }


@contextlib.asynccontextmanager
async def local_gateway(state: Path) -> AsyncIterator[tuple[str, int]]:
    """A gateway on 127.0.0.1 with the vectors' device registered."""
    from gateway.config import load_config
    from gateway.runtime.cli import main as cli_main
    from gateway.runtime.gateway import Gateway

    inputs = _inputs()
    if cli_main(["init", "--dir", str(state)], out=io.StringIO()) != 0:
        raise RuntimeError("acegw init failed")
    env = {
        "ACEGW_SERVER_BIND": "127.0.0.1",
        "ACEGW_SERVER_PORT": "0",
        "ACEGW_METRICS_LISTEN": "off",
        "ACEGW_AUDIT_PATH": str(state / "audit.log"),
        "ACEGW_LOGGING_LEVEL": "WARNING",
    }
    gw = Gateway(load_config(state / "acegw.toml", env=env))
    gw.registry.add(
        inputs["client_id"], psk=bytes.fromhex(inputs["psk"]["hex"]), scope=inputs["scope_text"]
    )
    await gw.start()
    try:
        yield gw.address
    finally:
        await gw.stop()
        gw.registry.close()


async def _main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with local_gateway(Path(tmp) / "state") as address:
            result = await measure(address, Path(tmp))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure datagram sizes; write wire.json.")
    parser.add_argument("--out", type=Path, default=WIRE)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
