"""A device holding a token behind a NAT that rebinds, in front of the real
gateway (:class:`gateway.dtls.nat_relay.NatRelay` on loopback, a new source
port every few datagrams): with a Connection ID (RFC 9146) the session, its
token binding and its replay window follow the device, so there is no new
handshake and no Echo round; without one, every move costs a handshake
(the old behaviour, measured). Counted by the gateway itself: its
``acegw_dtls_handshakes_total`` and ``echo_required`` refusals."""

from __future__ import annotations

from gateway.dtls.nat_relay import rebinding_run
from gateway.operations import metrics
from gateway.operations.gateway_metrics import collect
from tests.integration.conftest import config, gateway, state_dir  # noqa: F401

REQUESTS = 24
#: datagrams from the device between two source-port changes: the handshake
#: takes three (ClientHello twice, then the packed final flight), a proofed
#: GET one (its answer is piggybacked), so a session without CID gets one
#: request through before it moves; with CID the device moves every 5 requests
REBIND_EVERY = 5


def counts(gw) -> tuple[float, float, float]:
    samples = metrics.parse(metrics.render(collect(gw)))
    return (
        metrics.sample(samples, "acegw_dtls_handshakes_total", outcome="ok"),
        metrics.sample(samples, "acegw_proofs_rejected_total", reason="echo_required"),
        metrics.sample(samples, "acegw_dtls_address_changes_total"),
    )


async def test_with_cid_a_rebinding_device_keeps_session_token_and_window(gateway):  # noqa: F811
    psk = gateway.registry.add("nat-cid", scope="/whoami:GET")  # generated: 32 bytes
    assert len(psk) == 32
    run = await rebinding_run(
        gateway.address, b"nat-cid", psk, connection_id=True,
        requests=REQUESTS, rebind_every=REBIND_EVERY,
    )  # fmt: skip
    handshakes, echoes, moves = counts(gateway)
    assert run.answered == REQUESTS and run.rebinds >= REQUESTS // REBIND_EVERY - 1
    # one handshake to get the token, one through the NAT: none after a move
    assert run.extra_handshakes == 0 and handshakes == 2
    # the first proof of a new PoP key opens its window with an Echo; no move adds one
    assert run.echo_rounds == 1 and echoes == 1
    assert moves == run.rebinds


async def test_without_cid_each_move_costs_a_handshake(gateway):  # noqa: F811
    psk = gateway.registry.add("nat-plain", scope="/whoami:GET")
    run = await rebinding_run(
        gateway.address, b"nat-plain", psk, connection_id=False,
        requests=REQUESTS, rebind_every=REBIND_EVERY,
    )  # fmt: skip
    handshakes, echoes, moves = counts(gateway)
    assert run.answered == REQUESTS and run.rebinds >= 2
    assert run.extra_handshakes >= run.rebinds // 2 >= 1
    assert handshakes == 2 + run.extra_handshakes
    assert echoes == run.echo_rounds >= 1
    assert moves == 0
