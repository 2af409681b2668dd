"""A worker's end of the control channel, over a real Unix socket pair: it
answers the supervisor's metrics and readiness requests, takes shared tokens, and
stops its process when the supervisor goes away."""

from __future__ import annotations

import asyncio
import json
import signal
import socket

from gateway.operations import metrics as m
from gateway.runtime import worker


class FakeGateway:
    """What the control channel calls on a Gateway."""

    worker = 1

    def __init__(self) -> None:
        self.shared: list[bytes] = []

    def clock(self) -> float:
        return 100.0

    def accept_shared(self, token: bytes, now: float) -> None:
        self.shared.append(token)

    def collect(self) -> list[m.Family]:
        return [m.family("acegw_x", "gauge", "x", [({"worker": "0"}, 1)])]

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return False, {"draining": True}


async def test_control_channel_answers_and_stops_on_eof(monkeypatch):
    ours, theirs = socket.socketpair()
    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    sup_reader, sup_writer = await asyncio.open_unix_connection(sock=theirs)
    gateway = FakeGateway()
    channel = worker.ControlChannel(writer)
    task = asyncio.create_task(worker._control(reader, channel, gateway))
    try:
        for message in (
            {"t": "token", "v": "a1b2"},
            {"t": "metrics?", "id": 1},
            {"t": "bans?", "id": 9},  # not a request: no answer
            {"t": "ask", "q": "ready", "a": {}, "id": 2},
        ):
            sup_writer.write(json.dumps(message).encode() + b"\n")
        channel.share_token(b"\x01", 5.0)
        replies = [json.loads(await asyncio.wait_for(sup_reader.readline(), 5)) for _ in range(3)]
        assert replies[0] == {"t": "token", "v": "01", "exp": 5.0}
        assert replies[1]["t"] == "metrics" and replies[1]["id"] == 1
        assert replies[1]["families"][0]["name"] == "acegw_x"
        assert replies[2] == {
            "t": "answer",
            "id": 2,
            "v": [{"draining": True, "worker": 1, "ready": False}],
        }
        assert gateway.shared == [b"\xa1\xb2"]
        sup_writer.close()  # the supervisor is gone
        await asyncio.wait_for(task, 5)
        assert raised == [signal.SIGTERM]
    finally:
        task.cancel()
        writer.close()
        sup_writer.close()
