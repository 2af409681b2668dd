"""The simulated device: a sans-I/O state machine (no sockets, no clock).

A device goes handshake -> ``POST /token`` -> ``POST /authz-info`` -> protected
requests with a Proof option (DESIGN "Flow" and "Per-request proof"), renews
its token before it expires, and reconnects after faults. With the scenario's
``auth = "none"`` it skips ACE altogether: handshake -> requests without
Proof option (for plain CoAPS servers, e.g. as a benchmark baseline). Its driver
(:mod:`device_sim.worker`, or a test) feeds it events with the current time
and carries out the :attr:`Device.actions` it queues; :attr:`Device.deadline`
says when it wants :meth:`Device.timer` called. So one event loop can drive
thousands of devices and tests can run it without sockets or sleeping.

Events: :meth:`start`, :meth:`timer`, :meth:`connected`, :meth:`closed`,
:meth:`connect_error`, :meth:`datagram` (a decrypted CoAP message),
:meth:`raw_datagram` (handshake flood only), :meth:`stop`.

Actions (tuples): ``("connect", fresh_socket)``, ``("send", coap_bytes)``,
``("close", abrupt, keep_socket)``, ``("raw_open",)``, ``("raw", datagram)``,
``("flood_start",)`` and ``("flood_stop",)`` (half-open flood, run by the driver).

The driver connects with :attr:`Device.identity` and :attr:`Device.psk`,
which are the device's own except while a ``token_theft`` device steals a
token as its victim or a ``lockout_abuse`` device names its victims.

CoAP (RFC 7252): every request is confirmable, with NSTART = 1 (one
outstanding exchange, §4.7), retransmitted after a random initial timeout in
[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR] that doubles each time, at most
MAX_RETRANSMIT times (§4.2); an empty ACK switches to waiting for a separate
response (§5.2.2), which is acknowledged if confirmable.

Freshness (RFC 9175 §2.4, DESIGN "Replay window"): a 4.01 carrying an Echo
option is answered by repeating the request with that Echo value both as an
option and inside the proof, with the next sequence number. The sequence
number (piv) belongs to the PoP key and is never reused, across
reconnections and tokens that share the key.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any

from tokens import cbor
from tokens import cnf as cnf_mod
from tokens.ace import CreationHints, ErrorResponse, TokenRequest, TokenResponse
from tokens.errors import TokenError
from tokens.keys import CoseKey, Ec2Key, OkpKey, SymmetricKey
from tokens.params import CONTENT_FORMAT_ACE_CBOR, AceError, Method
from tokens.proof import ProofedRequest, build_proof
from tokens.token_hash import token_hash

from . import coap
from .coap import CoapFormatError, CoapMessage, MessageType, OptionNumber
from .device_state import (
    Exchange,
    LockoutWatch,
    PopKey,
    Prepared,
    RequestMix,
    TokenState,
    path_options,
)
from .dtls_client import (
    HS_HELLO_VERIFY_REQUEST,
    HS_SERVER_HELLO,
    client_hello,
    handshake_messages,
    hello_verify_cookie,
)
from .scenario import DeviceSpec, RequestSpec, Scenario
from .stats import Recorder

__all__ = ["BLOCK_SIZE", "Device"]


def _option_number(option: tuple[int, bytes]) -> int:
    return option[0]


# phases
IDLE = "idle"
CONNECTING = "connecting"
BACKOFF = "backoff"
READY = "ready"
FLOOD = "flood"
STOPPED = "stopped"

# exchange kinds
TOKEN = "token"
AUTHZ = "authz_info"
REQUEST = "request"
ATTACK = "attack"
LOCKOUT = "lockout"
HALF_OPEN = "half_open"
TRL = "trl"
PROBE = "trl_probe"

_CF_ACE = coap.encode_uint(CONTENT_FORMAT_ACE_CBOR)
#: application/ace-trl+cbor (RFC 9770 §15.2) and the Observe option (RFC 7641 §2)
CONTENT_FORMAT_ACE_TRL_CBOR = 262
_OBSERVE = 6
_ACCEPT = 17
#: TRL response parameters full_set and diff_set (RFC 9770 §12)
_FULL_SET, _DIFF_SET = 0, 1
#: hashes of its own recent tokens a device keeps to recognise them on the TRL
_OWN_HASHES = 8
#: Block1 size exponent and size (RFC 7959 §2.2: 2**(4+6) = 1024 bytes); one
#: block fits a DTLS record of tinydtls (about 1,400 bytes).
BLOCK_SZX = 6
BLOCK_SIZE = 1024
_INF = math.inf
#: Request-level attacks: the device runs the normal flow, its requests attack.
_REQUEST_ATTACKS = frozenset(
    {
        "replayed_proof",
        "tampered_proof",
        "scope_violation",
        "oversized_payload",
        "expired_token_reuse",
        "malformed_cbor",
        "abrupt_disconnect",
        "token_theft",
        "request_flood",
    }
)
#: Attack kinds whose requests carry a valid proof, so a 4.01 with Echo is
#: answered first (RFC 9175 §2.4) and the answer after it is judged.
_ECHO_ATTACKS = frozenset({"scope_violation", "oversized_payload", "token_theft", "request_flood"})
#: Alerts a server sends when the Finished check fails (RFC 5246 §7.2.2):
#: bad_record_mac, handshake_failure, decrypt_error.
_WRONG_KEY_ALERTS = frozenset({"fatal_alert_20", "fatal_alert_40", "fatal_alert_51"})
_MALFORMED = (b"\xff\xfe\xfd", b"\xa1\x09", b"\x9f\x01\x02", b"\xa2\x01\x02\x01", b"\x1c")


class Device:
    """One simulated device (see the module docstring)."""

    def __init__(
        self,
        spec: DeviceSpec,
        scenario: Scenario,
        rec: Recorder,
        *,
        role: str | None = None,
        start_at: float = 0.0,
        mix: RequestMix | None = None,
        rng: random.Random | None = None,
        run_start: float | None = None,
        run_end: float = math.inf,
        victims: list[DeviceSpec] | None = None,
        watch: LockoutWatch | None = None,
        unable: str | None = None,
    ) -> None:
        """``run_start``/``run_end``: the run's span on the device's clock
        (stages, and whether an expiry can happen before the end);
        ``victims``: the devices a ``token_theft`` (first one) or
        ``lockout_abuse`` device attacks, with ``watch`` judging the latter;
        ``unable``: why the driver cannot give this attacker what its kind
        needs (it then runs as a quiet attacker and reports the reason)."""
        self.spec = spec
        self.sc = scenario
        self.rec = rec
        self.role = role
        self.mix = mix or RequestMix(scenario.requests)
        self.rng = rng or random.Random(scenario.seed * 1_000_003 + spec.index)
        self.identity = spec.client_id.encode()
        self.psk = spec.psk
        if role == "wrong_psk":  # deterministic: a test peer may know it
            self.psk = spec.psk[:-1] + bytes((spec.psk[-1] ^ 0x01,))
        self.run_start = start_at if run_start is None else run_start
        self.run_end = run_end
        self.victims = list(victims or [])
        self.watch = watch
        self.unable = unable
        self.actions: list[tuple[Any, ...]] = []
        self.timers: dict[str, float] = {"start": start_at}
        self.phase = IDLE
        self.session = False
        self.exchange: Exchange | None = None
        self.token: TokenState | None = None
        self._pending_token: TokenState | None = None
        self._device_pop: PopKey | None = None
        self._mid = self.rng.randrange(1 << 16)
        self._tok = self.rng.randrange(1 << 32)
        self._next_at = 0.0
        self._due = False
        self._renew_due = False
        self._hs_started = 0.0
        self._failures = 0
        self._fresh_socket = False
        self._reuploaded_at = -_INF
        self._upload_later: TokenState | None = None
        # attack state
        self._stash: tuple[ProofedRequest, list[Any], bytes, bytes | None] | None = None
        self._abrupt_pending = False
        self._flood_state = 0
        self._flip = False
        self._seq = 0
        self._answered = False
        self._psk_refusals = 0
        self._noted = False
        self._stolen: TokenState | None = None
        self._theft_stage = 0
        self._burst_left = 0
        self._victim = 0
        self._named = 0
        #: set by a LockoutWatch when an attacker named this device
        self.named_by: str | None = None
        # Token Revocation List (observe_trl): the observation's CoAP token on
        # this session, hashes of own recent tokens, those seen revoked, the
        # revoked token still to be tried once, and whether one is replaced
        self._trl_token: bytes | None = None
        self._trl_due = False
        self._own_hashes: list[bytes] = []
        self._revoked_seen: set[bytes] = set()
        self._probe: TokenState | None = None
        self._retoken = False
        #: tokens this device saw revoked / replaced after a revocation
        self.trl_revoked = 0
        self.trl_retokens = 0
        self.tokens_fetched = 0
        # what the report counts per device
        self.ever_connected = False
        self.got_token = False
        self.succeeded = False

    # --- helpers ---------------------------------------------------------------------

    @property
    def deadline(self) -> float:
        """When :meth:`timer` should be called next (``inf``: never)."""
        return min(self.timers.values()) if self.timers else _INF

    @property
    def interval(self) -> float:
        if self.role is not None:
            return self.sc.attack_interval or self.sc.interval
        return self.sc.interval

    def _schedule_next(self, now: float) -> None:
        """Plan the next request: Poisson arrivals at ``rate``, or a fixed
        think time after the previous one."""
        if self.sc.think_time is not None or (self.role is not None and self.sc.attack_interval):
            self._next_at = now + self.interval * (0.5 + self.rng.random())
        elif self.sc.stages:  # piecewise constant rate: memoryless, redrawn per stage
            t = max(now, self._next_at)
            while True:
                rate, until = self.sc.rate_at(t - self.run_start)
                at = t + self.rng.expovariate(rate)
                if at < self.run_start + until:
                    break
                t = self.run_start + until
            self._next_at = at
        else:
            base = max(self._next_at, now - self.interval)
            self._next_at = base + self.rng.expovariate(1.0 / self.interval)
            if self._next_at < now:
                self._next_at = now
        self.timers["next"] = self._next_at

    def _new_mid_token(self) -> tuple[int, bytes]:
        self._mid = (self._mid + 1) & 0xFFFF
        self._tok = (self._tok + 1) & 0xFFFFFFFF
        return self._mid, self._tok.to_bytes(4, "big")

    def _send(
        self,
        kind: str,
        code: int,
        options: list[Any],
        payload: bytes,
        now: float,
        token: bytes | None = None,
    ) -> Exchange:
        """Start a confirmable exchange (NSTART = 1: there is none outstanding)."""
        mid, new_token = self._new_mid_token()
        token = token or new_token
        data = coap.encode(CoapMessage(MessageType.CON, code, mid, token, options, payload))
        ex = Exchange(kind, mid, token, data, now)
        ex.timeout = self.sc.transmission.initial_timeout(self.rng)
        self.exchange = ex
        self.timers["retransmit"] = now + ex.timeout
        self.actions.append(("send", data))
        self.rec.count(f"sent_{kind}")
        return ex

    def _transmit(
        self,
        kind: str,
        code: int,
        options: list[Any],
        payload: bytes,
        now: float,
        *,
        token: bytes | None = None,
        num: int = 0,
    ) -> Exchange:
        """Send a request, block-wise (Block1, RFC 7959 §2.5) when the payload
        does not fit one :data:`BLOCK_SIZE` block: block ``num`` now, the
        next one when the gateway answers 2.31 Continue. The first block
        carries Size1 with the whole size (RFC 7959 §4)."""
        if num == 0 and len(payload) <= BLOCK_SIZE:
            return self._send(kind, code, options, payload, now)
        start = num * BLOCK_SIZE
        more = start + BLOCK_SIZE < len(payload)
        block1 = coap.encode_uint((num << 4) | (8 if more else 0) | BLOCK_SZX)
        opts = [*options, (int(OptionNumber.BLOCK1), block1)]
        if num == 0:
            opts.append((int(OptionNumber.SIZE1), coap.encode_uint(len(payload))))
        opts.sort(key=_option_number)
        ex = self._send(kind, code, opts, payload[start : start + BLOCK_SIZE], now, token)
        ex.blocks = (code, options, payload, num)
        return ex

    def _backoff(self, now: float, fresh_socket: bool = False) -> None:
        """Wait before reconnecting: exponential from the scenario's minimum to
        its maximum with consecutive failures, with jitter."""
        lo, hi = self.sc.reconnect_backoff
        delay = min(hi, lo * (2 ** min(self._failures, 16)))
        self._failures += 1
        self.phase = BACKOFF
        self.session = False
        self._trl_token = None
        self._fresh_socket = self._fresh_socket or fresh_socket
        self._drop_exchange(now)
        self.timers.pop("next", None)
        self.timers.pop("renew", None)
        self.timers["reconnect"] = now + delay * (0.5 + self.rng.random() / 2)

    def _drop_exchange(self, now: float) -> None:
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            self.timers.pop("retransmit", None)
            self.timers.pop("response", None)
            self.rec.count("exchanges_aborted")
            if ex.kind == REQUEST:
                self._request_result(False, now, "aborted", prepared=ex.request)

    # --- events ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Nothing to do but wait for the ``start`` timer; kept for symmetry."""

    def stop(self, now: float) -> None:
        """The run is over: close the session with close_notify, no timers."""
        if self.exchange is not None:
            self.exchange = None
            self.rec.count("exchanges_abandoned_at_stop")
        if self.phase in (CONNECTING, READY) or self.session:
            self.actions.append(("close", False, False))
        elif self.phase == FLOOD:
            self.actions.append(("close", True, False))
        if self.role == "half_open_flood":
            self.actions.append(("flood_stop",))
        self.timers.clear()
        self.phase = STOPPED
        self.session = False

    def timer(self, now: float) -> None:
        """Run every timer that is due."""
        while self.timers:
            name, at = min(self.timers.items(), key=lambda kv: kv[1])
            if at > now:
                return
            del self.timers[name]
            getattr(self, "_on_" + name)(now)

    def connected(self, now: float) -> None:
        """The DTLS handshake completed."""
        if self.phase != CONNECTING:
            return
        self.timers.pop("handshake", None)
        self.session = True
        self.rec.handshake_done(now)
        role = self.role
        if role == "wrong_psk":
            self.rec.attack("wrong_psk", "connected", self._id, now, route="DTLS handshake")
            self.actions.append(("close", False, False))
            self._after_attempt(now)
            return
        if role == "lockout_abuse":
            victim = self.victims[self._victim].client_id
            self.rec.attack(
                role, "connected", self._id, now, request=f"wrong PSK accepted for {victim}"
            )
            self.actions.append(("close", False, False))
            self._lockout_next(now, failed=False)
            return
        if role == "half_open_flood":
            self.rec.attack(role, "honest_handshake_served", self._id, now)
            self.actions.append(("close", False, False))
            self.phase = BACKOFF
            self.session = False
            self.timers["canary"] = now + self.interval
            return
        self.ever_connected = True
        self.rec.latency("handshake", now - self._hs_started)
        self._op("handshake", True)
        self._failures = 0
        self.phase = READY
        self._fresh_socket = False
        self._resume(now)

    def closed(self, now: float, reason: str) -> None:
        """The session ended from the gateway's side (close_notify or a fatal
        alert), or the handshake was refused with an alert."""
        if self.phase == CONNECTING:
            self.timers.pop("handshake", None)
            self.rec.count("handshakes_failed")
            refusal = self._refusal(reason)
            if self._handshake_failed(refusal, now):
                return
            self._backoff(now, fresh_socket=True)
        elif self.phase == READY:
            self.rec.count("sessions_closed_by_gateway")
            self._error(f"session_{reason}")
            self._backoff(now)

    def _refusal(self, reason: str) -> str:
        """Why the gateway refused a handshake, from what it sent and what
        this device saw before: no gateway at all (ICMP port unreachable);
        ``locked_out`` when the same identity and key completed a handshake
        before (locked out, disabled or re-keyed since); ``wrong_psk`` for a
        close_notify or a bad_record_mac/handshake_failure/decrypt_error alert
        (the keys differ, or the identity is unknown to a gateway that answers
        both alike, as RFC 4279 §2 recommends); ``unknown_identity`` for
        another fatal alert (a gateway that says it does not know the
        identity, e.g. unknown_psk_identity)."""
        if reason == "port_unreachable":
            return reason
        if reason != "close_notify" and not reason.startswith("fatal_alert"):
            return reason
        if self.ever_connected:
            return "locked_out"
        if reason == "close_notify" or reason in _WRONG_KEY_ALERTS:
            self._psk_refusals += 1
            return "wrong_psk"
        return "unknown_identity"

    def _handshake_failed(self, refusal: str, now: float) -> bool:
        """A handshake failed (``refusal``: see :meth:`_refusal`, or
        ``timeout``). True when the role took over what happens next."""
        role = self.role
        if role == "wrong_psk":
            answer = "port_unreachable" if refusal == "port_unreachable" else "handshake_failed"
            self.rec.attack(role, answer, self._id, now, route="DTLS handshake")
            self._after_attempt(now)
            return True
        if role == "lockout_abuse":
            self._lockout_next(now, failed=True)
            return True
        if role == "half_open_flood":
            answer = "honest_handshake_failed" if refusal == "timeout" else refusal
            self.rec.attack(role, answer, self._id, now, request=f"handshake: {refusal}")
            self.phase = BACKOFF
            self.timers["canary"] = now + self.interval
            return True
        self._error(f"handshake_{refusal}")
        self._op("handshake", False)
        if self.named_by is not None and refusal == "locked_out":
            self._victim_outcome("victim_locked_out", "DTLS handshake", now)
        if self._abrupt_pending:
            self._judge_abrupt("not_recovered", now)
        return False

    def connect_error(self, now: float, reason: str) -> None:
        """The driver could not open a socket (e.g. out of file descriptors)."""
        self._error(f"socket_{reason}")
        self.timers.pop("handshake", None)
        self._backoff(now, fresh_socket=True)

    def datagram(self, data: bytes, now: float) -> None:
        """A CoAP message arrived on the session."""
        try:
            msg = coap.decode(data)
        except CoapFormatError:
            self._error("coap_unparsable")
            return
        ex = self.exchange
        mtype = msg.mtype
        if mtype in (MessageType.ACK, MessageType.RST):
            if ex is None or msg.mid != ex.mid:
                self.rec.count("stray_messages")
                return
            if mtype == MessageType.RST:
                self._finish(ex, now)
                self._fail(ex, "reset", now)
                return
            if msg.code == 0:  # empty ACK: a separate response follows (§5.2.2)
                if not ex.acked:
                    ex.acked = True
                    self.timers.pop("retransmit", None)
                    self.timers["response"] = now + self.sc.response_timeout
                return
        elif msg.is_request or msg.is_empty:
            if mtype == MessageType.CON:  # not a server: reset (RFC 7252 §4.2)
                rst = CoapMessage(MessageType.RST, 0, msg.mid)
                self.actions.append(("send", coap.encode(rst)))
            return
        else:  # separate response (CON or NON)
            if mtype == MessageType.CON:
                ack = CoapMessage(MessageType.ACK, 0, msg.mid)
                self.actions.append(("send", coap.encode(ack)))
            if self._trl_token is not None and msg.token == self._trl_token:
                self._trl_notification(msg, now)
                if self.exchange is None and self.phase == READY:
                    self._idle(now)
                return
            if ex is None or msg.token != ex.token:
                self.rec.count("stray_messages")
                return
        if msg.token != ex.token:
            self.rec.count("stray_messages")
            return
        self._finish(ex, now)
        self._answer(ex, msg, now)
        if self.exchange is None and self.phase == READY:
            self._idle(now)

    def raw_datagram(self, data: bytes, now: float) -> None:
        """A datagram on the flood socket (handshake_flood role)."""
        if self.phase != FLOOD:
            return
        for htype, body in handshake_messages(data):
            if self._flood_state == 1:
                if htype == HS_HELLO_VERIFY_REQUEST:
                    cookie = hello_verify_cookie(body) or b""
                    self._flood_state = 2
                    self.timers.pop("flood_wait", None)
                    self.rec.attack("handshake_flood", "hello_verify_request", self._id, now)
                    self.actions.append(("raw", client_hello(cookie, sequence=1)))
                    return
                if htype == HS_SERVER_HELLO:
                    self._flood_state = 3
                    self.timers.pop("flood_wait", None)
                    self.rec.attack("handshake_flood", "server_hello", self._id, now)
                    return
            elif self._flood_state == 2 and htype == HS_SERVER_HELLO:
                self._flood_state = 3
                self.rec.count("half_open_handshakes")
                return

    @property
    def _id(self) -> str:
        return self.spec.client_id

    def _error(self, kind: str) -> None:
        """An error of a normal device; an attacker's own failures are only
        counted (they are judged as attack outcomes instead)."""
        if self.role is None:
            self.rec.error(kind)
        else:
            self.rec.count("attacker_errors")

    def _op(self, phase: str, ok: bool, code: str = "", now: float = 0.0) -> None:
        """A normal device's handshake, token request or upload ended
        (``code``: the answer of a failed one). A refused token request or
        upload of a device named in a lockout abuse is that attempt's answer."""
        if self.role is not None:
            return
        self.rec.outcome(phase, ok)
        if not ok and code and self.named_by is not None and phase != "handshake":
            path = self.sc.token_path if phase == "token" else self.sc.authz_info_path
            answer = _victim_answer(code)
            self._victim_outcome(answer, f"POST {path}", now, code)

    def _request_result(
        self,
        ok: bool,
        now: float,
        outcome: str,
        latency: float | None = None,
        *,
        prepared: Prepared | None = None,
        reason: str = "",
    ) -> None:
        """A protected request ended: ``outcome`` is its response code, or
        ``timeout``, ``reset`` or ``aborted``; ``reason`` the gateway's
        diagnostic. Requests of attacking devices (their normal traffic
        between attacks) are counted apart, so latencies and the error rate
        describe normal devices."""
        if self.role is not None:
            self.rec.count("attacker_requests_ok" if ok else "attacker_requests_failed")
            return
        route = prepared.route if prepared is not None else "?"
        self.rec.request(self.rec.route(route), now, outcome, latency, ok)
        if not ok:
            self.rec.error(f"request_{outcome} ({reason})" if reason else f"request_{outcome}")
        if self.named_by is not None:
            answer = "victim_kept_working" if ok else _victim_answer(outcome)
            self._victim_outcome(answer, route, now, outcome, reason)

    def _victim_outcome(
        self, answer: str, route: str, now: float, code: str = "", reason: str = ""
    ) -> None:
        """Judge the lockout-abuse attempt that named this device."""
        attacker, self.named_by = self.named_by, None
        got = f" got {code}" + (f" ({reason})" if reason else "") if code else ""
        self.rec.attack(
            "lockout_abuse",
            answer,
            self._id,
            now,
            route=route,
            request=f"named by {attacker} in wrong-PSK handshakes;{got}",
        )

    # --- timers ---------------------------------------------------------------------------

    def _on_start(self, now: float) -> None:
        self._next_at = now
        role = self.role
        if role is not None and self.unable:
            self.rec.cannot_attack(role, self.unable)
            self.phase = STOPPED
            return
        if role == "handshake_flood":
            self.phase = FLOOD
            self._on_next(now)
            return
        if role == "half_open_flood":
            self.actions.append(("flood_start",))
            self.phase = BACKOFF
            self.timers["canary"] = now + min(1.0, self.interval)
            return
        if role == "lockout_abuse":
            self._named = 0
            self._lockout_attempt(now)
            return
        if role == "token_theft" and self.victims:
            victim = self.victims[0]  # steal its token: connect as it, once
            self._theft_stage = 1
            self.identity, self.psk = victim.client_id.encode(), victim.psk
        self._connect(now)

    def _connect(self, now: float) -> None:
        self.phase = CONNECTING
        self.session = False
        self._trl_token = None
        self._trl_due = self.sc.observe_trl and self.role is None
        self.actions.append(("connect", self._fresh_socket))
        self._fresh_socket = False
        self._hs_started = now
        self.rec.count("handshakes_started")
        self.timers["handshake"] = now + self.sc.handshake_timeout

    def _on_handshake(self, now: float) -> None:
        """No handshake within the timeout."""
        self.rec.count("handshakes_failed")
        self.actions.append(("close", True, False))
        if self._handshake_failed("timeout", now):
            return
        self._backoff(now, fresh_socket=True)

    def _after_attempt(self, now: float) -> None:
        """wrong_psk: try again (from a fresh port) after the attack interval."""
        self.phase = BACKOFF
        self.session = False
        self._fresh_socket = True
        self.timers["reconnect"] = now + max(self.interval, 0.1)

    # --- lockout abuse and the half-open flood's honest handshakes ---------------------

    def _lockout_attempt(self, now: float) -> None:
        """A handshake naming the current victim, with a wrong key, from a
        fresh port of the attacker's own address."""
        victim = self.victims[self._victim]
        self.identity = victim.client_id.encode()
        self.psk = victim.psk[:-1] + bytes((victim.psk[-1] ^ 0x01,))
        self._fresh_socket = True
        self._connect(now)

    def _lockout_next(self, now: float, *, failed: bool) -> None:
        """One naming handshake ended; after ``lockout_attempts`` of them
        the victim is watched, and the next victim follows an interval later."""
        self.phase = BACKOFF
        self.session = False
        self._named += 1
        if self._named < self.sc.lockout_attempts:
            self.timers["lockout"] = now + 0.02
            return
        victim = self.victims[self._victim].client_id
        if self.watch is not None:
            self.watch.named(victim, self._id)
        self.rec.count("lockout_victims_named")
        self._named = 0
        self._victim = (self._victim + 1) % len(self.victims)
        self.timers["lockout"] = now + self.interval

    def _on_lockout(self, now: float) -> None:
        self._lockout_attempt(now)

    def _on_canary(self, now: float) -> None:
        """half_open_flood: an honest handshake (own identity and key) from
        the device's other address while its flood runs."""
        self.identity, self.psk = self.spec.client_id.encode(), self.spec.psk
        self._fresh_socket = True
        self._connect(now)

    def _on_reconnect(self, now: float) -> None:
        self._connect(now)

    def _on_retransmit(self, now: float) -> None:
        ex = self.exchange
        if ex is None:
            return
        if ex.attempts >= self.sc.transmission.max_retransmit:
            self._finish(ex, now)
            self.rec.timeout(now)
            self._fail(ex, "timeout", now)
            return
        ex.attempts += 1
        ex.timeout *= 2
        ex.sent_at = now
        self.timers["retransmit"] = now + ex.timeout
        self.actions.append(("send", ex.data))
        self.rec.retransmission(now)

    def _on_response(self, now: float) -> None:
        """An empty ACK came but no separate response in time."""
        ex = self.exchange
        if ex is not None:
            self._finish(ex, now)
            self.rec.timeout(now)
            self._fail(ex, "timeout", now)

    def _on_next(self, now: float) -> None:
        self._schedule_next(now)
        if self.phase == FLOOD:
            self._flood(now)
        elif self.phase == READY:
            if self.exchange is not None:
                self._due = True
            else:
                self._act(now)

    def _on_renew(self, now: float) -> None:
        if self.phase != READY:
            return
        if self.exchange is not None:
            self._renew_due = True
        else:
            self._request_token(now)

    def _on_token_retry(self, now: float) -> None:
        if self.phase != READY:
            return
        if self.exchange is None:
            self._request_token(now)
        else:
            self._renew_due = True

    def _on_upload_retry(self, now: float) -> None:
        if self._upload_later is None or self.phase != READY:
            self._upload_later = None
        elif self.exchange is None:
            tok, self._upload_later = self._upload_later, None
            self._upload(tok, now)
        # else: _idle uploads it when the outstanding exchange ends

    def _on_flood_wait(self, now: float) -> None:
        if self._flood_state == 1:
            self.rec.attack("handshake_flood", "no_answer", self._id, now)
            self._flood_state = 0

    # --- the flow ---------------------------------------------------------------------------

    def _resume(self, now: float) -> None:
        """Session established: continue where the device was."""
        if self.sc.auth == "none":  # no ACE: straight to the request mix
            self._schedule_next(now)
            return
        tok = self.token
        if self.role == "malformed_cbor":
            self._schedule_next(now)
            return
        if tok is not None and (now < tok.renew_at or self.role == "expired_token_reuse"):
            if tok.uploaded:
                self._schedule_next(now)
                self._arm_renew(tok)
                if self._trl_due:
                    self._observe_trl(now)
            else:
                self._upload(tok, now)
        else:
            self._request_token(now)

    def _arm_renew(self, tok: TokenState) -> None:
        if self.role != "expired_token_reuse":
            self.timers["renew"] = tok.renew_at

    def _request_token(self, now: float) -> None:
        """RFC 9200 §5.8.1: client_credentials, our scope, optional req_cnf."""
        self._renew_due = False
        self.timers.pop("renew", None)
        self.timers.pop("token_retry", None)
        req_cnf = None
        if self.sc.pop != "symmetric":
            req_cnf = cnf_mod.CnfKey(self._asymmetric_pop().key.public()).to_cbor()
        scope = self.victims[0].scope if self._theft_stage == 1 else self.spec.scope
        body = TokenRequest(scope=scope, audience=self.sc.audience, req_cnf=req_cnf)
        options = [*path_options(self.sc.token_path), (12, _CF_ACE)]
        self._send(TOKEN, Method.POST, options, body.encode(), now)

    def _asymmetric_pop(self) -> PopKey:
        if self._device_pop is None:
            kid = os.urandom(8)
            key: CoseKey = Ec2Key.generate(kid) if self.sc.pop == "es256" else OkpKey.generate(kid)
            self._device_pop = PopKey(key)
        return self._device_pop

    def _upload(self, tok: TokenState, now: float) -> None:
        """RFC 9200 §5.10.1: POST the token to the RS's authz-info endpoint."""
        self._pending_token = tok
        options = [*path_options(self.sc.authz_info_path), (12, _CF_ACE)]
        self._send(AUTHZ, Method.POST, options, tok.access_token, now)

    def _idle(self, now: float) -> None:
        if self._probe is not None:
            self._send_probe(now)
        elif self._retoken and self.token is None and self._pending_token is None:
            self._request_token(now)
        elif self._trl_due and self.token is not None and self.token.uploaded:
            self._observe_trl(now)
        elif self._upload_later is not None and "upload_retry" not in self.timers:
            tok, self._upload_later = self._upload_later, None
            self._upload(tok, now)
        elif self._renew_due and self.role != "expired_token_reuse":
            self._request_token(now)
        elif self._due:
            self._due = False
            self._act(now)

    def _act(self, now: float) -> None:
        """One scheduled step in READY: renew, attack or a normal request."""
        tok = self.token
        role = self.role
        if self.sc.auth == "none":
            self._plain(self.mix.choose(self.rng), now)
            return
        if role == "malformed_cbor":
            options = [*path_options(self.sc.token_path), (12, _CF_ACE)]
            ex = self._send(ATTACK, Method.POST, options, self.rng.choice(_MALFORMED), now)
            ex.attack = role
            return
        if self._probe is not None or self._retoken:
            self._idle(now)
            return
        if tok is None:
            self._request_token(now)
            return
        renewing = self._upload_later is not None or "token_retry" in self.timers
        if role != "expired_token_reuse" and now >= tok.renew_at and not renewing:
            self._request_token(now)
            return
        if role in _REQUEST_ATTACKS:
            self._attack_step(role, tok, now)
            return
        self._protected(self.mix.choose(self.rng), tok, now)

    def _plain(self, prepared: Prepared, now: float) -> Exchange:
        """A request without Proof option (``auth = "none"``: the server has
        no ACE endpoints; the DTLS session is the only protection)."""
        prepared = self._filled(prepared, now)
        request = prepared.request
        ex = self._transmit(REQUEST, request.code, list(prepared.options), request.payload, now)
        ex.request = prepared
        return ex

    def _filled(self, prepared: Prepared, now: float) -> Prepared:
        """The request with its body template rendered for this device and
        request (``device_sim.templates``); as is without a template."""
        body = prepared.spec.body
        if body is None:
            return prepared
        self._seq += 1
        spec = self.spec
        epoch = now + self.rec.epoch_offset
        return prepared.with_payload(
            body.render(spec.client_id, spec.index, self._seq, self.rng, epoch)
        )

    def _protected(
        self,
        prepared: Prepared,
        tok: TokenState,
        now: float,
        *,
        echo: bytes | None = None,
        attack: str | None = None,
        tamper: bool = False,
        started: float | None = None,
    ) -> Exchange:
        """A request with the Proof option (DESIGN "Per-request proof")."""
        if echo is None:
            prepared = self._filled(prepared, now)
        request = prepared.request
        proof = build_proof(tok.pop.key, request, tok.pop.next_piv(), echo)
        if tamper:
            proof = proof[:-1] + bytes((proof[-1] ^ 0x01,))
        options = list(prepared.options)
        if echo is not None:
            options.append((int(OptionNumber.ECHO), echo))
        options.append((int(OptionNumber.PROOF), proof))
        kind = ATTACK if attack else REQUEST
        ex = self._transmit(kind, request.code, options, request.payload, now)
        ex.request = prepared
        ex.echo = echo
        ex.attack = attack
        if started is not None:
            ex.started = started
        if self.role == "replayed_proof" and attack is None:
            self._stash = (request, options, proof, echo)
        return ex

    def _attack_step(self, role: str, tok: TokenState, now: float) -> None:
        if role == "replayed_proof":
            stash, self._stash = self._stash, None
            if stash is None:  # first an accepted request, whose proof is kept
                self._protected(self.mix.choose(self.rng), tok, now)
                return
            request, options, _proof, _echo = stash
            ex = self._send(ATTACK, request.code, options, request.payload, now)
            ex.attack = role
        elif role == "tampered_proof":
            self._protected(self.mix.choose(self.rng), tok, now, attack=role, tamper=True)
        elif role == "scope_violation":
            prepared = RequestMix.prepare(RequestSpec(path=self.sc.scope_violation_path))
            self._protected(prepared, tok, now, attack=role)
        elif role == "oversized_payload":
            self._oversized(tok, now)
        elif role == "expired_token_reuse":
            if now < tok.exp + self.sc.expiry_leeway:
                self._protected(self.mix.choose(self.rng), tok, now)
            elif self._flip:
                self._flip = False
                options = [*path_options(self.sc.authz_info_path), (12, _CF_ACE)]
                ex = self._send(ATTACK, Method.POST, options, tok.access_token, now)
                ex.attack = role
            else:
                self._flip = True
                self._protected(self.mix.choose(self.rng), tok, now, attack=role)
        elif role == "abrupt_disconnect":
            if self._answered and not self._abrupt_pending:  # a session that served
                self._abrupt_pending = True
                self.actions.append(("close", True, True))
                self.rec.count("abrupt_disconnects")
                self.phase = BACKOFF
                self.session = False
                self.timers.pop("next", None)
                self.timers.pop("renew", None)
                self.timers["reconnect"] = now + self.sc.abrupt_pause
            else:
                self._protected(self.mix.choose(self.rng), tok, now)
        elif role == "token_theft":
            stolen = self._stolen
            if stolen is None:  # nothing stolen (see not_exercised): plain traffic
                self._protected(self.mix.choose(self.rng), tok, now)
            elif not stolen.uploaded:  # upload it on our own session (not judged)
                stolen.uploaded = True
                options = [*path_options(self.sc.authz_info_path), (12, _CF_ACE)]
                self._send(ATTACK, Method.POST, options, stolen.access_token, now)
            else:
                self._protected(self.mix.choose(self.rng), stolen, now, attack=role)
        elif role == "request_flood":
            if self._burst_left <= 0:
                self._burst_left = self.sc.flood_requests
            self._protected(self.mix.choose(self.rng), tok, now, attack=role)

    def _oversized(self, tok: TokenState, now: float) -> None:
        """A body of ``oversized_bytes``: by default a token request whose
        scope is a long byte string, else a request with a valid proof to
        ``oversized_path`` (with the method the mix uses there, or POST)."""
        sc = self.sc
        path = sc.oversized_path
        if path is None:
            body = b"\xa1\x09" + cbor.bstr(bytes(max(0, sc.oversized_bytes - 5)))
            options = [*path_options(sc.token_path), (12, _CF_ACE)]
            ex = self._transmit(ATTACK, Method.POST, options, body, now)
            ex.attack = "oversized_payload"
            return
        method = next((r.method for r in self.mix.items if r.path == path), Method.POST)
        spec = RequestSpec(method=method, path=path, payload_size=sc.oversized_bytes)
        self._protected(RequestMix.prepare(spec), tok, now, attack="oversized_payload")

    def _flood(self, now: float) -> None:
        """handshake_flood: a cookie-less ClientHello from a fresh port."""
        if self._flood_state == 1:
            self.rec.attack("handshake_flood", "no_answer", self._id, now)
        self._flood_state = 1
        self.actions.append(("raw_open",))
        self.actions.append(("raw", client_hello()))
        self.timers["flood_wait"] = now + min(2.0, self.interval, self.sc.response_timeout)

    # --- answers --------------------------------------------------------------------------------

    def _finish(self, ex: Exchange, now: float) -> None:
        self.exchange = None
        self.timers.pop("retransmit", None)
        self.timers.pop("response", None)

    def _fail(self, ex: Exchange, reason: str, now: float) -> None:
        """The exchange ended without a response (timeout or reset)."""
        self._stash = None
        if ex.kind == REQUEST:
            self._request_result(False, now, reason, prepared=ex.request)
            if self._abrupt_pending:
                self._judge_abrupt(reason, now)
        elif ex.kind == ATTACK and ex.attack:
            self._burst_left = 0
            self._judge(ex, reason, now)
        elif ex.kind == PROBE:
            self._probe_done(reason, now)
        else:
            self._error(f"{ex.kind}_{reason}")
            if ex.kind in (TOKEN, AUTHZ):
                self._op(ex.kind, False, reason, now)
                if self._theft_stage == 1:
                    self._theft_done(None, f"token request as the victim: {reason}", now)
                    return
        # a timeout most likely means the session is gone: handshake again
        self.actions.append(("close", False, False))
        self._backoff(now)

    def _answer(self, ex: Exchange, msg: CoapMessage, now: float) -> None:
        code = coap.code_text(msg.code)
        kind = ex.kind
        blocks = ex.blocks
        if blocks is not None and code == "2.31":  # Continue (RFC 7959 §2.9.1)
            method, options, payload, num = blocks
            if (num + 1) * BLOCK_SIZE < len(payload):
                nxt = self._transmit(
                    kind, method, options, payload, now, token=ex.token, num=num + 1
                )
                nxt.request, nxt.echo, nxt.attack, nxt.started = (
                    ex.request,
                    ex.echo,
                    ex.attack,
                    ex.started,
                )
                return
        if kind == REQUEST:
            self._request_answer(ex, msg, code, now)
        elif kind == ATTACK:
            self._attack_answer(ex, msg, code, now)
        elif kind == TOKEN:
            self._token_answer(ex, msg, code, now)
        elif kind == AUTHZ:
            self._authz_answer(code, msg, now, ex)
        elif kind == TRL:
            self._trl_answer(msg, code, now)
        elif kind == PROBE:
            self._probe_answer(ex, msg, code, now)

    def _token_answer(self, ex: Exchange, msg: CoapMessage, code: str, now: float) -> None:
        self.rec.code("token", code)
        if code != "2.01":
            self._error(_kind("token", code, msg))
            self._op("token", False, code, now)
            if self._theft_stage == 1:
                self._theft_done(None, f"token request as the victim: {code}", now)
                return
            self._retry_later(msg, now, "token_retry")
            return
        try:
            tr = TokenResponse.decode(msg.payload)
            if self.sc.pop == "symmetric":
                conf = cnf_mod.decode(tr.cnf) if tr.cnf is not None else None
                if not (isinstance(conf, cnf_mod.CnfKey) and isinstance(conf.key, SymmetricKey)):
                    raise TokenError("token response without a symmetric PoP key")
                pop = PopKey(conf.key)
            else:
                pop = self._asymmetric_pop()
        except TokenError:
            self._error("token_response_unusable")
            self._op("token", False)
            self._retry_later(msg, now, "token_retry")
            return
        lifetime = float(tr.expires_in) if tr.expires_in is not None else 3600.0
        sc = self.sc
        margin = min(sc.renew_before, lifetime / 2)
        tok = TokenState(tr.access_token, now + lifetime, now + lifetime - margin, pop)
        if self._theft_stage == 1:
            self._theft_done(tok, "", now)
            return
        if (sc.min_lifetime is not None and lifetime < sc.min_lifetime) or (
            sc.max_lifetime is not None and lifetime > sc.max_lifetime
        ):
            self._error("token_lifetime_unexpected")
        self.rec.latency("token", now - ex.started)
        self.rec.token_done(now)
        self._op("token", True)
        self.got_token = True
        self.tokens_fetched += 1
        if self.sc.observe_trl:
            recent = self._own_hashes[-(_OWN_HASHES - 1) :]
            self._own_hashes = [*recent, token_hash(tr.access_token)]
            if self._retoken:
                self._retoken = False
                self.trl_retokens += 1
                self.rec.count("trl_retokens")
        if self.role == "expired_token_reuse" and not self._noted:
            self._noted = True
            if tok.exp + sc.expiry_leeway >= self.run_end:
                self.rec.cannot_attack(
                    "expired_token_reuse",
                    f"tokens outlive the run (expires_in {lifetime:.0f} s + expiry_leeway "
                    f"{sc.expiry_leeway:.0f} s > the {max(0.0, self.run_end - now):.0f} s "
                    "left): shorten the gateway's token lifetime or run longer",
                )
        self._upload(tok, now)
        if self.token is not None:
            self.rec.count("renewals")

    def _theft_done(self, tok: TokenState | None, failure: str, now: float) -> None:
        """token_theft: the victim's token is stolen (or could not be): back
        to our own identity, on a new session."""
        self._theft_stage = 2
        self._stolen = tok
        if tok is None:
            self.rec.cannot_attack("token_theft", f"could not steal a token ({failure})")
        self.identity, self.psk = self.spec.client_id.encode(), self.spec.psk
        self.actions.append(("close", False, False))
        self.phase = BACKOFF
        self.session = False
        self._fresh_socket = True
        self.timers.pop("next", None)
        self.timers["reconnect"] = now + 0.01

    def _retry_later(self, msg: CoapMessage, now: float, timer: str) -> None:
        """Wait Max-Age (RFC 8516 §2 for 4.29) or the reconnect back-off."""
        max_age = msg.uint_option(OptionNumber.MAX_AGE)
        lo, hi = self.sc.reconnect_backoff
        delay = (
            float(max_age) if max_age is not None else min(hi, lo * 2 ** min(self._failures, 16))
        )
        self._failures += 1
        self.timers[timer] = now + delay * (1 + self.rng.random() / 4)

    def _authz_answer(self, code: str, msg: CoapMessage, now: float, ex: Exchange) -> None:
        self.rec.code("authz_info", code)
        tok = self._pending_token
        self._pending_token = None
        if code in ("4.29", "5.03") and tok is not None:  # same token, after Max-Age
            self._error(_kind("authz_info", code, msg))
            self._op("authz_info", False, code, now)
            self._upload_later = tok
            self._retry_later(msg, now, "upload_retry")
            return
        if code != "2.01" or tok is None:
            self._error(_kind("authz_info", code, msg))
            self._op("authz_info", False, code, now)
            self.token = None
            self.timers["token_retry"] = now + self.sc.reconnect_backoff[0]
            return
        self.rec.latency("authz_info", now - ex.started)
        self.rec.upload_done(now)
        self._op("authz_info", True)
        self._failures = 0
        tok.uploaded = True
        self.token = tok
        self._arm_renew(tok)
        if not self.succeeded and self.role is None:
            # a device that just got its token reports at once (then Poisson)
            self._next_at = self.timers["next"] = now
        elif "next" not in self.timers:
            self._schedule_next(now)

    def _request_answer(self, ex: Exchange, msg: CoapMessage, code: str, now: float) -> None:
        tok = self.token
        if code == "4.01" and ex.echo is None and tok is not None and ex.request is not None:
            echo = msg.option(OptionNumber.ECHO)
            if echo is not None:  # RFC 9175 §2.4: repeat with the Echo value
                self.rec.count("echo_challenges")
                self._protected(ex.request, tok, now, echo=echo, started=ex.started)
                return
        self._answered = True
        if self._abrupt_pending:  # any answer: the gateway serves the new session
            self._judge_abrupt("recovered", now)
        if code.startswith("2."):
            self._request_result(True, now, code, now - ex.started, prepared=ex.request)
            self.succeeded = True
            return
        self._request_result(
            False, now, code, now - ex.started, prepared=ex.request, reason=_reason(msg)
        )
        self._stash = None
        if code in ("4.29", "5.03"):  # RFC 8516 §2: come back after Max-Age
            self._due = False
            max_age = msg.uint_option(OptionNumber.MAX_AGE)
            self.timers["next"] = self._next_at = now + float(max_age if max_age else 1)
        elif code == "4.01" and tok is not None and self.role != "expired_token_reuse":
            # the gateway no longer knows the token (restart, eviction): upload
            # it again once, else fetch a new one
            if now - self._reuploaded_at > self.sc.interval * 4 and now < tok.exp:
                self._reuploaded_at = now
                self._upload(tok, now)
            else:
                self.token = None
                self._request_token(now)

    def _attack_answer(self, ex: Exchange, msg: CoapMessage, code: str, now: float) -> None:
        kind = ex.attack
        if kind is None:  # a step that is not judged (token_theft's upload)
            return
        tok = self._stolen if kind == "token_theft" else self.token
        if (
            code == "4.01"
            and ex.echo is None
            and ex.request is not None
            and kind in _ECHO_ATTACKS
            and tok is not None
        ):
            echo = msg.option(OptionNumber.ECHO)
            if echo is not None:  # a valid proof needs fresh Echo first
                self.rec.count("echo_challenges")
                self._protected(ex.request, tok, now, echo=echo, attack=kind)
                return
        if kind == "request_flood":
            self._burst_left -= 1
            if code.startswith("2.") and self._burst_left > 0 and self.token is not None:
                self._protected(self.mix.choose(self.rng), self.token, now, attack=kind)
                return
            n = self.sc.flood_requests - self._burst_left
            self._burst_left = 0
            if code.startswith("2."):
                self.rec.attack(
                    kind,
                    "no_limit",
                    self._id,
                    now,
                    route=ex.request.route if ex.request else "",
                    request=f"{n} requests back to back, every one answered 2.xx",
                )
                return
            if code == "4.29":
                self.rec.count("flood_requests_before_limit", n)
        self._judge(ex, code, now, _reason(msg))

    def _judge(self, ex: Exchange, answer: str, now: float, reason: str = "") -> None:
        """Record an attack attempt's answer with what was sent."""
        kind = ex.attack or ""
        route = ex.request.route if ex.request is not None else _route_of(ex.data)
        request = _describe(kind, ex)
        if reason:
            request = f"{request}; diagnostic: {reason}" if request else f"diagnostic: {reason}"
        self.rec.attack(kind, answer, self._id, now, route=route, request=request)

    def _judge_abrupt(self, answer: str, now: float) -> None:
        self._abrupt_pending = False
        self.rec.attack(
            "abrupt_disconnect",
            answer,
            self._id,
            now,
            request="silent disconnect, new handshake from the same port, next request",
        )

    # --- the Token Revocation List (RFC 9770) ---------------------------------------------

    def _observe_trl(self, now: float) -> None:
        """RFC 9770 §7, §11: a full query with Observe: 0 (RFC 7641 §3.1) over
        this device's own session; the AS answers with its own tokens' hashes."""
        self._trl_due = False
        options = [
            (_OBSERVE, b""),
            *path_options(self.sc.trl_path),
            (_ACCEPT, coap.encode_uint(CONTENT_FORMAT_ACE_TRL_CBOR)),
        ]
        self._send(TRL, Method.GET, options, b"", now)

    def _trl_answer(self, msg: CoapMessage, code: str, now: float) -> None:
        """The answer to the registration: 2.05 with Observe is an observation."""
        self.rec.count(f"trl_answer_{code}")
        if code != "2.05":
            self._error(_kind("trl", code, msg))
            return
        if msg.option(_OBSERVE) is not None:
            self._trl_token = msg.token
            self.rec.count("trl_observations")
        else:
            self._error("trl_not_observed")
        self._trl_payload(msg, now)

    def _trl_notification(self, msg: CoapMessage, now: float) -> None:
        """A notification (RFC 7641 §4.2); one without Observe ends the
        observation, which is registered again when the device is idle."""
        self.rec.count("trl_notifications")
        if msg.option(_OBSERVE) is None:
            self._trl_token = None
            self._trl_due = True
            self.rec.count("trl_observations_ended")
        if coap.code_text(msg.code) == "2.05":
            self._trl_payload(msg, now)

    def _trl_payload(self, msg: CoapMessage, now: float) -> None:
        """The hashes a full (``full_set``) or diff (``diff_set`` added)
        response lists (RFC 9770 §7, §8); own tokens among them are revoked."""
        try:
            body = cbor.as_map(cbor.decode(msg.payload, what="TRL response"), "TRL response")
            listed: set[bytes] = set()
            if _FULL_SET in body:
                listed.update(cbor.as_list(body[_FULL_SET], "full_set"))
            for entry in cbor.as_list(body.get(_DIFF_SET, []), "diff_set"):
                listed.update(cbor.as_list(cbor.as_list(entry, "diff entry")[1], "added"))
        except (TokenError, IndexError, TypeError):
            self._error("trl_unparsable")
            return
        for h in self._own_hashes:
            if h in listed and h not in self._revoked_seen:
                self._revoked_seen.add(h)
                self.trl_revoked += 1
                self.rec.count("trl_revocations_seen")
                self._trl_revoke(h, now)

    def _trl_revoke(self, h: bytes, now: float) -> None:
        """Drop the token whose hash ``h`` the TRL lists, if it is the one in
        use (or being uploaded); try it once (:meth:`_send_probe`), then fetch
        a new token and upload it."""
        for tok in (self.token, self._pending_token, self._upload_later):
            if tok is not None and token_hash(tok.access_token) == h:
                break
        else:
            return
        if self.token is tok:
            self.token = None
        if self._pending_token is tok:
            self._pending_token = None
        if self._upload_later is tok:
            self._upload_later = None
        self.timers.pop("renew", None)
        self._probe = tok if tok.uploaded else None
        self._retoken = True

    def _send_probe(self, now: float) -> None:
        """One request with the revoked token after the notification: the
        gateway must refuse it (a 2.xx is counted as accepted)."""
        tok = self._probe
        assert tok is not None
        ex = self._protected(self.mix.choose(self.rng), tok, now)
        ex.kind = PROBE

    def _probe_answer(self, ex: Exchange, msg: CoapMessage, code: str, now: float) -> None:
        tok = self._probe
        if code == "4.01" and ex.echo is None and tok is not None and ex.request is not None:
            echo = msg.option(OptionNumber.ECHO)
            if echo is not None:  # answer the freshness challenge: judge what follows
                again = self._protected(ex.request, tok, now, echo=echo, started=ex.started)
                again.kind = PROBE
                return
        self._probe_done(code, now)

    def _probe_done(self, answer: str, now: float) -> None:
        self._probe = None
        self.rec.count("trl_revoked_token_requests")
        self.rec.count(f"trl_revoked_token_answer_{answer}")
        if answer.startswith("2."):
            self.rec.count("trl_revoked_token_accepted")
            self.rec.error(f"trl_revoked_token_accepted_{answer}")


# --- what a refusal says ------------------------------------------------------------------

#: What an attack request carries, for findings.
_REQUEST_TEXT = {
    "replayed_proof": "the exact Proof option of an accepted request, again",
    "tampered_proof": "valid request, one bit of the Proof MAC/signature flipped",
    "scope_violation": "valid proof for a path outside the token's scope",
    "oversized_payload": "body larger than the gateway accepts",
    "malformed_cbor": "body that is not a CBOR map",
    "expired_token_reuse": "proof or upload of a token past its exp",
    "token_theft": "another device's token and PoP key, on this device's DTLS session",
    "request_flood": "burst of valid requests back to back",
}


def _describe(kind: str, ex: Exchange) -> str:
    text = _REQUEST_TEXT.get(kind, "")
    if ex.blocks is not None:
        text += f" ({len(ex.blocks[2])} bytes, block-wise)"
    return text


def _route_of(data: bytes) -> str:
    """``METHOD /path`` of an encoded request (for findings)."""
    try:
        msg = coap.decode(data)
    except CoapFormatError:
        return "?"
    path = "/".join(v.decode("utf-8", "replace") for n, v in msg.options if n == 11)
    try:
        method = Method(msg.code).name
    except ValueError:
        method = coap.code_text(msg.code)
    return f"{method} /{path}"


def _reason(msg: CoapMessage) -> str:
    """The gateway's reason for a refusal, from its diagnostic payload: an
    ACE error (RFC 9200 §5.8.3) with its description, AS Request Creation
    Hints (§5.3: the token is unknown), or a short UTF-8 diagnostic (RFC
    7252 §5.5.2). Printable text, at most 60 characters; empty if none."""
    payload = msg.payload
    if not payload:
        return ""
    if msg.uint_option(OptionNumber.CONTENT_FORMAT) == CONTENT_FORMAT_ACE_CBOR:
        try:
            err = ErrorResponse.decode(payload)
        except TokenError:
            err = None
        if err is not None:
            try:
                name = AceError(err.error).name.lower()
            except ValueError:
                name = f"ace error {err.error}"
            desc = err.error_description or ""
            return _printable(f"{name}: {desc}" if desc else name)
        try:
            CreationHints.decode(payload)
            return "unknown token (AS request creation hints)"
        except TokenError:
            return "unparsable ACE payload"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return _printable(text)


def _printable(text: str) -> str:
    out = "".join(c if c.isprintable() else " " for c in text).strip()
    return out[:60]


def _victim_answer(outcome: str) -> str:
    """A lockout-abuse attempt's answer from a named device's failure."""
    if outcome == "4.01":
        return "victim_locked_out"
    if outcome in ("timeout", "reset", "aborted", "4.29", "5.03"):
        return "victim_timeout"
    return f"victim_{outcome}"


def _kind(phase: str, code: str, msg: CoapMessage) -> str:
    """An error kind: ``phase_code`` with the gateway's reason, if any."""
    reason = _reason(msg)
    return f"{phase}_{code} ({reason})" if reason else f"{phase}_{code}"
