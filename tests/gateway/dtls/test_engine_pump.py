"""The one send loop and timer of the engine-backed DTLS servers
(:class:`gateway.dtls.endpoint.EnginePump`), on an injected clock: a real
engine and a real sans-I/O client, no socket, no sleeping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from dtls12 import DtlsServerEngine, EngineConfig, SessionEstablished, wire
from dtls12.client import DtlsClient
from dtls12.events import Event
from gateway.dtls.endpoint import EnginePump

PSKS = {b"dev-1": b"psk-of-device-01"}
PEER = ("192.0.2.1", 5000)


@dataclass
class Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Scheduler:
    """An injected clock and ``call_at``: time moves only when told."""

    now: float = 100.0
    timers: list[Timer] = field(default_factory=list)

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        self.timers.append(timer)
        return timer

    def armed(self) -> list[float]:
        return [t.when for t in self.timers if not t.cancelled]

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, firing what is due on the way, in order."""
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= to]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback()
        self.now = to


@dataclass
class Rig:
    scheduler: Scheduler
    engine: DtlsServerEngine
    pump: EnginePump
    sent: list[bytes]
    events: list[Event]
    flushes: list[float]

    def receive(self, datagrams: list[bytes], peer: tuple[str, int] = PEER) -> None:
        for datagram in datagrams:
            self.engine.receive_datagram(datagram, peer, self.scheduler.now)
        self.pump.pump()

    def take(self) -> list[bytes]:
        sent, self.sent[:] = list(self.sent), []
        return sent


def rig(on_event: Callable[[Rig, Event], None] | None = None) -> Rig:
    scheduler = Scheduler()
    engine = DtlsServerEngine(EngineConfig(), PSKS.get, now=scheduler.now)
    sent: list[bytes] = []
    events: list[Event] = []
    flushes: list[float] = []

    def send(datagram: bytes, address: object) -> None:
        sent.append(datagram)

    def handle(event: Event) -> None:
        events.append(event)
        if on_event is not None:
            on_event(built, event)

    pump = EnginePump(
        engine,
        send,
        handle,
        clock=lambda: scheduler.now,
        call_at=scheduler.call_at,
        after_timer=lambda: flushes.append(scheduler.now),
    )
    built = Rig(scheduler, engine, pump, sent, events, flushes)
    return built


def messages(datagrams: list[bytes]) -> list[tuple[int, int, bytes]]:
    """The records of ``datagrams`` without their sequence numbers (a
    retransmitted record gets a new one, RFC 6347 §4.1)."""
    return [
        (record.content_type, record.epoch, record.fragment)
        for datagram in datagrams
        for record in wire.parse_records(datagram, 0)[0]
    ]


def server_flight(r: Rig, client: DtlsClient, peer: tuple[str, int] = PEER) -> list[bytes]:
    """ClientHello, HelloVerifyRequest, ClientHello with the cookie: the
    server's flight (ServerHello .. ServerHelloDone) comes back."""
    armed = r.scheduler.armed()
    r.receive(client.connect(r.scheduler.now), peer)
    verify = r.take()
    assert len(verify) == 1 and r.scheduler.armed() == armed  # stateless: no timer
    r.receive(client.receive(verify[0], r.scheduler.now), peer)
    flight = r.take()
    assert flight
    return flight


def test_a_lost_flight_is_retransmitted_on_the_engines_timer_with_backoff():
    """RFC 6347 §4.2.4: the server's flight is sent again when its timer
    fires (1 s, then 2 s: doubled), from the one timer the pump keeps."""
    r = rig()
    client = DtlsClient(b"dev-1", PSKS[b"dev-1"])
    start = r.scheduler.now
    flight = server_flight(r, client)
    assert r.scheduler.armed() == [start + 1.0]
    r.scheduler.advance(start + 0.999)
    assert r.sent == [] and r.flushes == []
    r.scheduler.advance(start + 1.0)
    assert messages(r.take()) == messages(flight)  # the same flight again
    assert r.flushes == [start + 1.0]
    assert r.scheduler.armed() == [start + 3.0]  # doubled
    r.scheduler.advance(start + 3.0)
    assert messages(r.take()) == messages(flight)
    assert r.pump.timer_at == start + 7.0


def test_the_handshake_completes_and_the_retransmission_timer_goes():
    r = rig()
    client = DtlsClient(b"dev-1", PSKS[b"dev-1"])
    flight = server_flight(r, client)
    answer: list[bytes] = []
    for datagram in flight:
        answer += client.receive(datagram, r.scheduler.now)
    r.receive(answer)
    assert [type(e) for e in r.events] == [SessionEstablished]
    finished = r.take()
    for datagram in finished:
        client.receive(datagram, r.scheduler.now)
    assert client.established
    # the retransmission deadline passes with nothing sent; what is armed
    # then is the session's idle deadline, far later
    start = r.scheduler.now
    r.scheduler.advance(start + 10.0)
    assert r.sent == []
    assert all(at - start > 60.0 for at in r.scheduler.armed())


def test_one_timer_an_earlier_deadline_replaces_a_later_one():
    """Two peers' handshakes: the second flight's deadline is later, the
    armed timer stays; stop() cancels it and arms no other."""
    r = rig()
    start = r.scheduler.now
    server_flight(r, DtlsClient(b"dev-1", PSKS[b"dev-1"]))
    r.scheduler.now = start + 0.5
    server_flight(r, DtlsClient(b"dev-1", PSKS[b"dev-1"]), ("192.0.2.2", 1))
    assert r.scheduler.armed() == [start + 1.0]
    assert r.engine.next_deadline() == start + 1.0
    r.pump.stop()
    assert r.scheduler.armed() == []
    r.pump.pump()
    assert r.scheduler.armed() == []


def test_a_handler_may_send_and_a_failing_handler_does_not_stop_the_loop(caplog):
    """Events are handed over in order; a handler's send is pumped in the
    same loop (the nested pump returns at once); an exception is logged."""
    sent_from_handler: list[bool] = []

    def on_event(r: Rig, event: Event) -> None:
        if isinstance(event, SessionEstablished):
            sent_from_handler.append(r.engine.send(event.session, b"hello"))
            r.pump.pump()  # nested: returns, the outer loop sends it
            raise RuntimeError("handler bug")

    r = rig(on_event)
    client = DtlsClient(b"dev-1", PSKS[b"dev-1"])
    flight = server_flight(r, client)
    answer: list[bytes] = []
    for datagram in flight:
        answer += client.receive(datagram, r.scheduler.now)
    with caplog.at_level("ERROR"):
        r.receive(answer)
    assert sent_from_handler == [True]
    assert "DTLS event handler failed on SessionEstablished" in caplog.text
    for datagram in r.take():
        client.receive(datagram, r.scheduler.now)
    assert client.received == [b"hello"]


@pytest.mark.parametrize("late", [False, True])
def test_a_timer_that_fires_after_stop_does_nothing(late):
    """stop() cancels the armed retransmission timer, so a scheduler that
    honours cancel never runs it; one that runs it anyway (``late``) gets
    no retransmission and no flush."""
    r = rig()
    server_flight(r, DtlsClient(b"dev-1", PSKS[b"dev-1"]))
    (timer,) = [t for t in r.scheduler.timers if not t.cancelled]
    r.pump.stop()
    assert timer.cancelled and r.scheduler.armed() == [] and r.pump.timer_at is None
    if late:  # a scheduler that runs a callback already cancelled
        timer.callback()
    else:  # past the retransmission deadline: a cancelled timer stays unfired
        r.scheduler.advance(timer.when + 10.0)
        assert timer in r.scheduler.timers  # advance() removes what it fires
    assert r.sent == [] and r.flushes == []
