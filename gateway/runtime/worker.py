"""One worker process of a supervised gateway (``python -m
gateway.runtime.worker``, started by :mod:`gateway.runtime.supervisor`): a
:class:`~gateway.runtime.gateway.Gateway` on the UDP socket the supervisor
hands it, and the worker's end of the control channel (JSON lines over a Unix
socket pair: ``hello``/``synced`` with the held tokens before serving,
``ready``, ``reload`` with the configuration text the supervisor accepted,
``keys`` (the public AS key set, at ready and at each change), ``token``
both ways, ``metrics`` on request, ``ask`` for the live state an
operator asks for and for this worker's readiness,
:mod:`gateway.operations.live_state`).

A worker runs on the configuration text its supervisor hands it
(``--config-fd``, then ``reload`` messages), never on what the file holds
when it (re)starts; ``--config`` names the file only for relative paths and
messages. It ignores SIGHUP and SIGINT: the supervisor decides.
"""

from __future__ import annotations

import signal

if __name__ == "__main__":
    # SIGHUP's default action ends a process; a worker gets its reloads from
    # the supervisor, and ignores the signal from before the imports that
    # make up most of its start-up.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from gateway.config import Config, load_config
from gateway.errors import GatewayError
from gateway.operations import live_state
from gateway.operations.logs import setup_logging
from gateway.runtime.gateway import Gateway
from gateway.runtime.serve import apply_config, serve_gateway
from gateway.runtime.supervisor import LINE_LIMIT, parse_config_text

log = logging.getLogger("gateway.runtime.worker")  # also when run as __main__


class ControlChannel:
    """The worker's end of the control socket."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def share_token(self, token: bytes, exp: float) -> None:
        self.send({"t": "token", "v": token.hex(), "exp": exp})

    def hand_over(
        self, owner: int, datagram: bytes, address: tuple[object, ...], local: Any
    ) -> None:
        """A datagram whose Connection ID names worker ``owner`` (RFC 9146:
        its peer moved and the kernel hashed the new 4-tuple here)."""
        ancillary = None if local is None else [local[0], local[1], local[2].hex()]
        self.send({"t": "cid", "w": owner, "d": datagram.hex(), "a": list(address), "l": ancillary})


async def _control(reader: asyncio.StreamReader, channel: ControlChannel, gateway: Any) -> None:
    """Serve the supervisor's requests; on EOF (supervisor gone) stop.
    Reloads are applied one after the other, in the order sent."""
    while True:
        try:
            line = await reader.readline()
        except (ValueError, ConnectionError):
            line = b""
        if not line:
            log.warning("supervisor gone; stopping")
            signal.raise_signal(signal.SIGTERM)
            return
        try:
            message = json.loads(line)
            kind = message["t"]
            if kind == "token":
                gateway.accept_shared(bytes.fromhex(message["v"]), gateway.clock())
            elif kind == "cid" and gateway.dtls is not None:
                local = message["l"]
                gateway.dtls.receive_handed_over(
                    bytes.fromhex(message["d"]),
                    tuple(message["a"]),
                    None if local is None else (local[0], local[1], bytes.fromhex(local[2])),
                )
            elif kind == "reload":
                load = functools.partial(
                    parse_config_text, str(message["config"]), gateway.config.source
                )
                await apply_config(gateway, load)
            elif kind == "metrics?":
                families = [f.to_json() for f in gateway.collect()]
                channel.send({"t": "metrics", "id": message["id"], "families": families})
            elif kind == "ask":
                try:
                    items = live_state.answer(gateway, message["q"], dict(message.get("a") or {}))
                except GatewayError as exc:
                    channel.send({"t": "answer", "id": message["id"], "error": exc.description})
                else:
                    channel.send({"t": "answer", "id": message["id"], "v": items})
        except Exception:  # keep the channel alive; the supervisor times out
            log.exception("cannot handle a control message")


async def run_worker(config: Config, index: int, udp_fd: int, control_fd: int) -> None:
    """One worker: a :class:`~gateway.runtime.gateway.Gateway` on the inherited socket."""
    sock = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
    channel = ControlChannel(writer)
    gateway = Gateway(
        config,
        worker=index,
        udp_fd=udp_fd,
        share_token=channel.share_token,
        hand_over=channel.hand_over,
    )

    def send_keys() -> None:
        channel.send({"t": "keys", "v": gateway.keystore.export_public().hex()})

    def ready(gw: Gateway) -> None:
        os.close(udp_fd)  # the server holds its own duplicate
        channel.send({"t": "ready", "port": gw.address[1], "pid": os.getpid()})
        send_keys()  # and again at each change: the supervisor serves /keys
        gw.on_keys = send_keys

    # Take the tokens other workers hold before serving, so a device that
    # lands here after a crash or a NAT rebinding needs no new token.
    channel.send({"t": "hello"})
    while True:
        line = await reader.readline()
        if not line:
            return  # supervisor gone before we started
        message = json.loads(line)
        if message.get("t") == "synced":
            break
        if message.get("t") == "token":
            gateway.accept_shared(bytes.fromhex(message["v"]), gateway.clock())
    control = asyncio.create_task(_control(reader, channel, gateway))
    try:
        await serve_gateway(gateway, admin=False, ready=ready, hup=False)
    finally:
        control.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await control
        writer.close()


def _initial_config(path: Path, fd: int | None) -> Config:
    if fd is None:
        return load_config(path)
    with os.fdopen(fd, "rb") as handed:
        text = handed.read().decode()
    return parse_config_text(text, path)


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.runtime.worker", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--udp-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--config-fd", type=int, help="the configuration text (else --config)")
    parser.add_argument("--log-level")
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group: the supervisor decides when
    # workers stop (SIGTERM), so none is restarted by mistake meanwhile.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        config = _initial_config(Path(args.config).absolute(), args.config_fd)
    except GatewayError as exc:
        print(f"worker {args.index}: {exc.description}", file=sys.stderr)
        return 2
    setup_logging(
        args.log_level or config.logging.level, json_lines=config.logging.json, worker=args.index
    )
    asyncio.run(run_worker(config, args.index, args.udp_fd, args.control_fd))
    return 0


__all__ = ["ControlChannel", "run_worker", "worker_main"]

if __name__ == "__main__":
    raise SystemExit(worker_main())
