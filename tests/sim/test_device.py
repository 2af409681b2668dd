"""The device state machine alone: no sockets, an injected clock, a gateway
played by the test (RFC 7252 retransmission, RFC 9175 Echo, renewal,
reconnection)."""

from __future__ import annotations

import itertools
import random

import pytest

from device_sim import coap
from device_sim.coap import CoapMessage, MessageType, OptionNumber
from device_sim.device import Device
from device_sim.scenario import DeviceSpec, Scenario
from device_sim.stats import Recorder
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.keys import SymmetricKey
from tokens.proof import ProofedRequest, parse_proof

POP = SymmetricKey(b"pop-1", b"k" * 16)


class Harness:
    """Drives one device with a fake clock and records what it sends."""

    def __init__(self, **scenario: object) -> None:
        defaults: dict[str, object] = {"rate": 1.0, "renew_before": 20.0}
        defaults.update(scenario)
        self.sc = Scenario(**defaults)  # type: ignore[arg-type]
        self.rec = Recorder()
        spec = DeviceSpec(0, "dev-0", b"p" * 16, "/whoami:GET")
        self.dev = Device(spec, self.sc, self.rec, start_at=0.0, rng=random.Random(7))
        self.now = 0.0
        self.actions: list[tuple[object, ...]] = []

    def advance(self, until: float, respond: object = None) -> None:
        """Fire the device's timers up to ``until`` (the clock jumps). With
        ``respond`` (a callable), every message sent is passed to it at once,
        as a gateway answering instantly would."""
        while self.dev.deadline <= until:
            self.now = max(self.now, self.dev.deadline)
            self.dev.timer(self.now)
            self._collect()
            while respond is not None:  # answers may trigger more messages at once
                msgs = self.sent()
                if not msgs:
                    break
                for msg in msgs:
                    respond(msg)  # type: ignore[operator]
        self.now = until

    def _collect(self) -> None:
        self.actions.extend(self.dev.actions)
        self.dev.actions.clear()

    def sent(self) -> list[CoapMessage]:
        """CoAP messages sent since the last call (decoded), oldest first."""
        self._collect()
        out = [coap.decode(a[1]) for a in self.actions if a[0] == "send"]  # type: ignore[arg-type]
        self.actions = [a for a in self.actions if a[0] != "send"]
        return out

    def other_actions(self) -> list[tuple[object, ...]]:
        self._collect()
        out, self.actions = self.actions, []
        return out

    def reply(
        self, req: CoapMessage, code: int, payload: bytes = b"", options: list | None = None
    ) -> None:
        msg = CoapMessage(MessageType.ACK, code, req.mid, req.token, options or [], payload)
        self.dev.datagram(coap.encode(msg), self.now)
        self._collect()

    def connect(self) -> None:
        self.advance(0.0)
        assert ("connect", False) in self.other_actions()
        self.now = 0.01
        self.dev.connected(self.now)

    def ready(self, expires_in: int = 100) -> None:
        """Handshake, token (symmetric PoP key POP), upload."""
        self.connect()
        (token_req,) = self.sent()
        assert token_req.code == 2 and token_req.mtype == MessageType.CON
        assert _path(token_req) == "/token"
        assert token_req.option(OptionNumber.CONTENT_FORMAT) == b"\x13"
        assert TokenRequest.decode(token_req.payload).scope == "/whoami:GET"
        body = TokenResponse(
            access_token=b"T" * 40, expires_in=expires_in, cnf=cnf_mod.CnfKey(POP).to_cbor()
        )
        self.reply(token_req, 0x41, body.encode())
        (upload,) = self.sent()
        assert _path(upload) == "/authz-info" and upload.payload == b"T" * 40
        self.reply(upload, 0x41)


def _path(msg: CoapMessage) -> str:
    return "/" + "/".join(v.decode() for n, v in msg.options if n == OptionNumber.URI_PATH)


def _verify(msg: CoapMessage, echo: bytes | None) -> int:
    proof = parse_proof(msg.option(OptionNumber.PROOF))
    assert proof.kid == POP.kid
    request = ProofedRequest(code=msg.code, path=tuple(_path(msg).split("/")[1:]))
    proof.verify(POP, request, echo)  # raises if the proof does not cover this
    return proof.piv


def test_flow_requests_carry_proofs_with_growing_piv():
    h = Harness()
    h.ready()
    pivs = []

    def gateway(msg: CoapMessage) -> None:
        pivs.append(_verify(msg, None))
        h.reply(msg, 0x45)

    h.advance(5.0, gateway)
    assert len(pivs) >= 2 and pivs == list(range(len(pivs)))
    assert h.rec.counters["requests_ok"] == len(pivs)
    assert h.rec.histograms["request"].count == len(pivs)
    assert h.dev.got_token and h.dev.succeeded


def test_token_is_renewed_before_expiry():
    h = Harness(rate=0.05, renew_before=20.0)
    h.ready(expires_in=100)
    renewed: list[float] = []

    def gateway(msg: CoapMessage) -> None:
        if _path(msg) == "/token":
            renewed.append(h.now)
        else:
            h.reply(msg, 0x45)

    h.advance(99.0, gateway)
    renewed_at = renewed[0] if renewed else None
    assert renewed_at is not None and 79.0 <= renewed_at <= 82.0  # exp 100.01 - 20


def test_confirmable_retransmission_follows_rfc7252():
    h = Harness(rate=0.2)
    h.ready()
    sends: list[tuple[float, CoapMessage]] = []
    h.advance(150.0, lambda msg: sends.append((h.now, msg)))
    first = sends[0][1]
    same = [t for t, m in sends if m.mid == first.mid]
    assert all(m.token == first.token for t, m in sends if m.mid == first.mid)
    assert len(same) == 5  # the original and MAX_RETRANSMIT = 4 retransmissions
    gaps = [b - a for a, b in itertools.pairwise(same)]
    assert 2.0 <= gaps[0] <= 3.0  # ACK_TIMEOUT * [1, ACK_RANDOM_FACTOR] (RFC 7252 §4.2)
    for a, b in itertools.pairwise(gaps):
        assert b == pytest.approx(2 * a)  # the timeout doubles each time
    assert h.rec.counters["retransmissions"] == 4 and h.rec.counters["timeouts"] == 1
    assert h.rec.errors["request_timeout"] == 1
    actions = h.other_actions()
    close = actions.index(("close", False, False))  # the session is presumed dead...
    assert ("connect", False) in actions[close:]  # ...and opened again after a back-off


def test_echo_challenge_is_answered_with_echo_inside_the_proof():
    h = Harness()
    h.ready()
    h.advance(3.0)
    req = h.sent()[0]
    piv = _verify(req, None)
    echo = b"\x01\x02fresh-echo"
    h.reply(req, 0x81, options=[(int(OptionNumber.ECHO), echo)])
    (again,) = h.sent()
    assert again.option(OptionNumber.ECHO) == echo
    assert _verify(again, echo) == piv + 1  # same request, next sequence number
    with pytest.raises(Exception):  # noqa: B017 - a proof without the Echo must not verify
        _verify(again, None)
    h.reply(again, 0x45)
    assert h.rec.counters["echo_challenges"] == 1 and h.rec.counters["requests_ok"] == 1
    assert h.rec.errors == {}


def test_separate_response_is_acknowledged():
    h = Harness(rate=0.5)
    h.ready()
    seen: list[CoapMessage] = []

    def gateway(msg: CoapMessage) -> None:
        seen.append(msg)
        if len(seen) == 1:  # RFC 7252 §5.2.2: empty ACK now, response later
            h.dev.datagram(coap.encode(CoapMessage(MessageType.ACK, 0, msg.mid)), h.now)

    h.advance(25.0, gateway)
    req = seen[0]
    assert [m.mid for m in seen].count(req.mid) == 1  # not retransmitted after the ACK
    late = CoapMessage(MessageType.CON, 0x45, 4242, req.token, [], b"x")
    h.dev.datagram(coap.encode(late), h.now)
    (ack,) = [m for m in h.sent() if m.mtype == MessageType.ACK]
    assert ack.mid == 4242 and ack.code == 0 and not ack.token
    assert h.rec.counters["requests_ok"] == 1 and h.rec.errors == {}


def test_reconnect_after_the_gateway_drops_the_session():
    h = Harness(reconnect_backoff=(0.5, 4.0))
    h.ready()
    pivs: list[int] = []

    def gateway(msg: CoapMessage) -> None:
        pivs.append(_verify(msg, None))
        h.reply(msg, 0x45)

    h.advance(3.0, gateway)
    last_piv = pivs[-1]
    dropped_at = h.now
    h.dev.closed(h.now, "close_notify")
    assert h.other_actions() == []
    h.advance(h.now + 5)
    connects = [a for a in h.other_actions() if a[0] == "connect"]
    assert connects == [("connect", False)]  # same socket: same source port
    h.dev.connected(h.now)
    h.advance(h.now + 3)
    msgs = h.sent()
    # the token is still valid: no new /token, requests go on with a later piv
    assert msgs and all(_path(m) == "/whoami" for m in msgs)
    assert _verify(msgs[0], None) > last_piv
    # the gateway lost its replay window: Echo, then success
    h.reply(msgs[0], 0x81, options=[(int(OptionNumber.ECHO), b"e2")])
    (again,) = h.sent()
    h.reply(again, 0x45)
    assert h.rec.counters["sessions_closed_by_gateway"] == 1
    assert h.rec.counters["handshakes_ok"] == 2 and h.dev.session
    assert h.now - dropped_at < 10


def test_rate_limit_answer_waits_max_age():
    h = Harness(rate=2.0)
    h.ready()
    sent_at: list[float] = []
    max_age = [(int(OptionNumber.MAX_AGE), coap.encode_uint(7))]

    def gateway(msg: CoapMessage) -> None:
        sent_at.append(h.now)
        h.reply(msg, 0x9D if len(sent_at) == 1 else 0x45, options=max_age)

    h.advance(20.0, gateway)
    assert sent_at[1] - sent_at[0] == pytest.approx(7.0)
    assert h.rec.errors == {"request_4.29": 1}


def test_asymmetric_renewal_keeps_the_key_and_its_sequence_numbers():
    h = Harness(pop="es256", rate=0.5, renew_before=20.0)
    h.connect()
    (token_req,) = h.sent()
    req_cnf = TokenRequest.decode(token_req.payload).req_cnf
    key = cnf_mod.decode(req_cnf).key
    pivs: list[int] = []
    token_requests: list[CoapMessage] = [token_req]

    def gateway(msg: CoapMessage) -> None:
        path = _path(msg)
        if path == "/token":
            token_requests.append(msg)
            h.reply(msg, 0x41, TokenResponse(access_token=b"U" * 30, expires_in=60).encode())
        elif path == "/authz-info":
            h.reply(msg, 0x41)
        else:
            proof = parse_proof(msg.option(OptionNumber.PROOF))
            assert proof.kid == key.kid
            proof.verify(key, ProofedRequest(code=1, path=("whoami",)), None)
            pivs.append(proof.piv)
            h.reply(msg, 0x45)

    gateway(token_req)
    h.advance(100.0, gateway)
    assert len(token_requests) >= 3  # renewed twice (exp 60, renew 20 s before)
    assert all(cnf_mod.decode(TokenRequest.decode(m.payload).req_cnf).key.kid == key.kid
               for m in token_requests)  # fmt: skip
    assert pivs == list(range(len(pivs)))  # never restarts with a new token
