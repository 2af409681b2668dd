"""The parts of a simulated device's state: a PoP key with its sequence
number, a token it holds, its one outstanding confirmable exchange
(RFC 7252 §4.2), the scenario's request mix prepared once for all devices,
and the watch that judges a lockout-abuse attack by its victims.
"""

from __future__ import annotations

import bisect
import random
from typing import Any

from tokens.keys import CoseKey
from tokens.proof import MAX_PIV, ProofedRequest

from . import coap
from .coap import OptionNumber
from .scenario import RequestSpec

__all__ = [
    "Exchange",
    "LockoutWatch",
    "PopKey",
    "Prepared",
    "RequestMix",
    "TokenState",
    "path_options",
]


class PopKey:
    """A proof-of-possession key and its sequence number (the proof's piv),
    which only ever grows for this key."""

    __slots__ = ("key", "piv")

    def __init__(self, key: CoseKey) -> None:
        self.key = key
        self.piv = 0

    def next_piv(self) -> int:
        piv = self.piv
        if piv > MAX_PIV:
            raise OverflowError("sequence numbers of this PoP key are used up")
        self.piv = piv + 1
        return piv


class TokenState:
    """A token the device holds: expiry and renewal time on its own clock."""

    __slots__ = ("access_token", "exp", "pop", "renew_at", "uploaded")

    def __init__(self, access_token: bytes, exp: float, renew_at: float, pop: PopKey) -> None:
        self.access_token = access_token
        self.exp = exp
        self.renew_at = renew_at
        self.pop = pop
        self.uploaded = False


class Exchange:
    """One outstanding confirmable request (RFC 7252 §4.2)."""

    __slots__ = (
        "acked",
        "attack",
        "attempts",
        "blocks",
        "data",
        "echo",
        "kind",
        "mid",
        "request",
        "sent_at",
        "started",
        "timeout",
        "token",
    )

    def __init__(self, kind: str, mid: int, token: bytes, data: bytes, now: float) -> None:
        self.kind = kind
        self.mid = mid
        self.token = token
        self.data = data
        self.sent_at = now
        self.started = now
        self.attempts = 0
        self.timeout = 0.0
        self.acked = False
        self.echo: bytes | None = None
        self.request: Prepared | None = None
        self.attack: str | None = None
        #: Block1 transfer state (RFC 7959 §2.5): (code, options, payload, num).
        self.blocks: tuple[int, list[tuple[int, bytes]], bytes, int] | None = None


class Prepared:
    """One entry of the request mix ready to send: the parts its proof
    covers, its Uri-Path/Content-Format/Uri-Query options, and its route
    (``METHOD /path``, the key of the per-route statistics)."""

    __slots__ = ("options", "request", "route", "spec")

    def __init__(
        self, spec: RequestSpec, request: ProofedRequest, options: list[tuple[int, bytes]]
    ) -> None:
        self.spec = spec
        self.request = request
        self.options = options
        self.route = spec.route

    def with_payload(self, payload: bytes) -> Prepared:
        """The same request with another body (a body template's rendering)."""
        r = self.request
        request = ProofedRequest(r.code, r.path, r.query, r.content_format, payload)
        out = Prepared.__new__(Prepared)
        out.spec, out.request, out.options, out.route = self.spec, request, self.options, self.route
        return out


class RequestMix:
    """The scenario's request mix, prepared once for all devices: weighted
    choice, Uri-Path/Content-Format/Uri-Query options and payload bytes."""

    def __init__(self, requests: tuple[RequestSpec, ...]) -> None:
        self.items = requests
        self.cumulative: list[float] = []
        total = 0.0
        for r in requests:
            total += r.weight
            self.cumulative.append(total)
        self.total = total
        self.prepared = [self.prepare(r) for r in requests]

    @staticmethod
    def prepare(r: RequestSpec) -> Prepared:
        payload = bytes(r.payload_size)
        request = ProofedRequest(
            code=r.method,
            path=r.segments,
            query=r.query,
            content_format=r.content_format,
            payload=payload,
        )
        options = [(int(OptionNumber.URI_PATH), s.encode()) for s in r.segments]
        if r.content_format is not None:
            options.append((int(OptionNumber.CONTENT_FORMAT), coap.encode_uint(r.content_format)))
        options.extend((int(OptionNumber.URI_QUERY), q.encode()) for q in r.query)
        return Prepared(r, request, options)

    def choose(self, rng: random.Random) -> Prepared:
        if len(self.prepared) == 1:
            return self.prepared[0]
        i = bisect.bisect_right(self.cumulative, rng.random() * self.total)
        return self.prepared[min(i, len(self.prepared) - 1)]


class LockoutWatch:
    """Judges ``lockout_abuse``: an attacker names a victim in wrong-PSK
    handshakes (:meth:`named`); the victim's next outcome (a request, or a
    refused handshake) is the attempt's answer. ``devices`` maps client ids
    to the victims' devices (any object with a ``named_by`` attribute)."""

    def __init__(self) -> None:
        self.devices: dict[str, Any] = {}

    def named(self, victim: str, attacker: str) -> bool:
        """``attacker`` finished naming ``victim``; False if the victim is
        not a device of this worker."""
        dev = self.devices.get(victim)
        if dev is None:
            return False
        dev.named_by = attacker
        return True


def path_options(path: str) -> list[tuple[int, bytes]]:
    return [(int(OptionNumber.URI_PATH), s.encode()) for s in path.split("/") if s]
