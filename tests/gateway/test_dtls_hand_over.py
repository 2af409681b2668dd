"""The CID hand-over between workers is bounded: a record's CID cannot be
authenticated before its owner decrypts it, so a peer sending records with
random CIDs naming another worker gets at most ``hand_over_burst`` datagrams
(then ``hand_over_rate`` per second) forwarded through the supervisor; the
rest are dropped and counted (``hand_over_limit``)."""

from __future__ import annotations

import asyncio
import os
import socket

from aiocoap import resource

from gateway.dtls import DtlsServerConfig, create_server_context

RECORDS = 40
BURST = 5


def cid_record(owner: int, seq: int) -> bytes:
    """A tls12_cid record (RFC 9146 §4: content type 25, epoch 1) with a
    6-byte CID whose first byte names ``owner``, and garbage inside."""
    cid = bytes((owner,)) + os.urandom(5)
    body = os.urandom(32)
    return (
        b"\x19\xfe\xfd\x00\x01" + seq.to_bytes(6, "big") + cid + len(body).to_bytes(2, "big") + body
    )


async def test_random_cids_naming_another_worker_are_handed_over_within_the_budget():
    handed: list[int] = []
    config = DtlsServerConfig(
        host="127.0.0.1", port=0, cid_owner=0, hand_over_rate=0.001, hand_over_burst=BURST
    )
    context, server = await create_server_context(
        resource.Site(),
        config,
        lambda identity: None,
        hand_over=lambda owner, data, address, local: handed.append(owner),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for n in range(RECORDS):
            sock.sendto(cid_record(1 + n % 3, n), server.address)
        sock.sendto(cid_record(0, RECORDS), server.address)  # its own: unknown, not handed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while server.stats().datagrams_received < RECORDS + 1 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        stats = server.stats()
    finally:
        sock.close()
        await context.shutdown()
    assert stats.datagrams_received == RECORDS + 1
    assert len(handed) == BURST and set(handed) <= {1, 2, 3}
    assert stats.dropped["hand_over_limit"] == RECORDS - BURST
    assert stats.dropped["unknown_cid"] == 1
