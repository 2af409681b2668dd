"""The sans-I/O authorizer: every verdict from a RequestView and ``now``,
without a socket (docs/authorization.md order)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from gateway.resource_server.authorizer import (
    OPEN,
    Allow,
    Authorizer,
    Refuse,
    RequestView,
)
from gateway.resource_server.lockout import Lockout
from gateway.resource_server.rate_limits import RateLimiter
from gateway.resource_server.token_store import AccessToken, TokenStore
from tokens.ace import CreationHints
from tokens.aif import Scope
from tokens.cnf import psk_identity_for_kid
from tokens.cwt import Claims
from tokens.echo import EchoIssuer
from tokens.keys import SymmetricKey
from tokens.params import CoapCode
from tokens.proof import ProofedRequest, build_proof
from tokens.replay import FreshnessGuard

NOW = 1_800_000_000.0
GET, PUT = 1, 3
KID = b"kid-sensor-1"
KEY = SymmetricKey(KID, bytes(range(32)))
OTHER_KEY = SymmetricKey(KID, bytes(32))


class World:
    """An authorizer with one held token (``sensor-1``, ``/temp:GET``)."""

    def __init__(self, *, rate: float = 1000.0, burst: int = 1000) -> None:
        self.tokens = TokenStore()
        self.revoked: set[bytes] = set()
        self.disabled: set[str] = set()
        #: client id -> cut-off time (tokens issued at or before it are refused)
        self.cutoffs: dict[str, float] = {}
        self.version = 0
        self.echo = EchoIssuer(os.urandom(32))
        self.guard = FreshnessGuard(self.echo)
        self.lockout = Lockout(max_failures=2)
        self.token = self.hold(KEY, "sensor-1", "/temp:GET")
        self.authorizer = Authorizer(
            tokens=self.tokens,
            guard=self.guard,
            is_revoked=lambda cti: cti in self.revoked,
            client_enabled=lambda client_id: client_id not in self.disabled,
            cut_off=lambda client_id, iat: iat is None or iat <= self.cutoffs.get(client_id, -1),
            device_limits=RateLimiter(rate, burst),
            version=lambda: self.version,
            lockout=self.lockout,
            ace_limits=RateLimiter(1.0, 1),
            hints=CreationHints(audience="rs"),
        )
        self.piv = 0

    def hold(self, key: SymmetricKey, client_id: str, scope: str, exp: float = NOW + 600):
        token = AccessToken(
            kid=key.kid,
            pop_key=key,
            client_id=client_id,
            scope=Scope.parse(scope),
            exp=exp,
            cti=b"cti-" + key.kid,
            issuer="as",
            claims=Claims(sub=client_id, iat=int(NOW) - 10),
        )
        self.tokens.add(token)
        return token

    def view(self, path=("temp",), method=GET, *, key=KEY, piv=None, echo=None, **kw):
        """A request from sensor-1's session with a proof of ``key``."""
        if piv is None:
            self.piv += 1
            piv = self.piv
        parts = {k: kw.pop(k) for k in ("query", "content_format", "payload") if k in kw}
        proofed = ProofedRequest(code=method, path=path, **parts)
        proof = build_proof(key, proofed, piv, echo)
        fields = {
            "method": method,
            "path": path,
            "proofs": (proof,),
            "echo": echo,
            "identity": b"sensor-1",
            "address": "192.0.2.1",
            **parts,
        }
        fields.update(kw)
        return RequestView(**fields)

    def open_window(self) -> None:
        """The first proof gets 4.01 + Echo; the repeat with it opens the window."""
        first = self.authorizer.authorize(self.view(), NOW)
        assert isinstance(first, Refuse) and first.echo is not None
        allowed = self.authorizer.authorize(self.view(echo=first.echo), NOW)
        assert isinstance(allowed, Allow)


def refused(verdict, code: CoapCode, reason: str) -> Refuse:
    assert isinstance(verdict, Refuse), verdict
    assert (verdict.code, verdict.reason) == (code, reason)
    return verdict


@pytest.fixture
def world() -> World:
    return World()


def test_a_fresh_proof_gets_an_echo_then_allows(world):
    first = world.authorizer.authorize(world.view(), NOW)
    refusal = refused(first, CoapCode.UNAUTHORIZED, "echo_required")
    assert refusal.echo and refusal.answer_non and not refusal.failed_proof
    allowed = world.authorizer.authorize(world.view(echo=refusal.echo), NOW)
    assert isinstance(allowed, Allow)
    assert allowed.context is not None
    assert (allowed.context.client_id, allowed.context.via) == ("sensor-1", "proof")


def test_no_session_and_no_proof_get_hints(world):
    for view in (
        replace(world.view(), identity=None),
        replace(world.view(), proofs=()),
    ):
        refusal = refused(world.authorizer.authorize(view, NOW), CoapCode.UNAUTHORIZED, "no_token")
        assert refusal.hints == CreationHints(audience="rs")
        assert not refusal.failed_proof


def test_malformed_and_doubled_proofs_are_400_and_count(world):
    garbage = replace(world.view(), proofs=(b"\x01\x02",))
    refusal = refused(world.authorizer.authorize(garbage, NOW), CoapCode.BAD_REQUEST, "malformed")
    assert refusal.failed_proof
    view = world.view()
    doubled = replace(view, proofs=view.proofs * 2)
    refused(world.authorizer.authorize(doubled, NOW), CoapCode.BAD_REQUEST, "malformed")


def test_unknown_kid_gets_hints_and_counts(world):
    stranger = SymmetricKey(b"nobody", bytes(32))
    refusal = refused(
        world.authorizer.authorize(world.view(key=stranger), NOW),
        CoapCode.UNAUTHORIZED,
        "unknown_kid",
    )
    assert refusal.hints is not None and refusal.failed_proof


@pytest.mark.parametrize("warm", [False, True])
def test_bad_mac_and_replay_are_refused_cold_and_warm(world, warm):
    if warm:
        world.open_window()
    else:  # a window, but the identity's proofs never verified before
        world.guard.commit(KID, 0, world.echo.issue(KID, NOW), NOW)
    tampered = replace(world.view(), payload=b"changed")
    refusal = refused(
        world.authorizer.authorize(tampered, NOW), CoapCode.UNAUTHORIZED, "bad_signature"
    )
    assert refusal.failed_proof
    fresh = world.view()
    assert isinstance(world.authorizer.authorize(fresh, NOW), Allow)
    refused(world.authorizer.authorize(fresh, NOW), CoapCode.UNAUTHORIZED, "replay")


def test_every_covered_part_is_checked(world):
    world.open_window()
    full = {"query": ("a=1",), "content_format": 60, "payload": b"\x01"}
    ok = world.view(("temp",), GET, **full)
    assert isinstance(world.authorizer.authorize(ok, NOW), Allow)
    for change in ({"query": ("a=2",)}, {"content_format": 0}, {"payload": b"\x02"}):
        wrong = replace(world.view(("temp",), GET, **full), **change)
        refused(world.authorizer.authorize(wrong, NOW), CoapCode.UNAUTHORIZED, "bad_signature")


def test_a_proof_on_another_clients_session_is_token_theft(world):
    world.open_window()  # the window is the token's, not the session's
    thief = replace(world.view(), identity=b"sensor-2")
    refusal = refused(
        world.authorizer.authorize(thief, NOW),
        CoapCode.UNAUTHORIZED,
        "token_not_bound_to_session",
    )
    assert refusal.failed_proof


@pytest.mark.parametrize("warm", [False, True])
def test_expired_revoked_disabled_and_cut_off(world, warm):
    world.open_window()
    if not warm:
        world.authorizer.forget()
    later = world.token.exp + 1
    refused(world.authorizer.authorize(world.view(), later), CoapCode.UNAUTHORIZED, "expired")
    world.revoked.add(world.token.cti)
    world.version += 1
    refused(world.authorizer.authorize(world.view(), NOW), CoapCode.UNAUTHORIZED, "revoked")
    world.revoked.clear()
    world.disabled.add("sensor-1")
    world.version += 1
    refused(world.authorizer.authorize(world.view(), NOW), CoapCode.UNAUTHORIZED, "client_disabled")
    world.disabled.clear()
    world.cutoffs["sensor-1"] = NOW - 5  # enabled again, or its rights narrowed, after issue
    world.version += 1
    refused(world.authorizer.authorize(world.view(), NOW), CoapCode.UNAUTHORIZED, "token_cut_off")
    world.cutoffs["sensor-1"] = NOW - 20  # a cut-off before the token was issued
    world.version += 1
    assert isinstance(world.authorizer.authorize(world.view(), NOW), Allow)


@pytest.mark.parametrize("warm", [False, True])
def test_scope_path_and_method(world, warm):
    world.open_window()
    if not warm:
        world.authorizer.forget()
    refused(
        world.authorizer.authorize(world.view(("admin",)), NOW), CoapCode.FORBIDDEN, "scope_path"
    )
    refused(
        world.authorizer.authorize(world.view(("temp",), PUT), NOW),
        CoapCode.METHOD_NOT_ALLOWED,
        "scope_method",
    )


def test_rate_limit_is_429_with_max_age_answered_to_non():
    world = World(rate=0.5, burst=1)
    world.open_window()  # spends the one token
    refusal = refused(
        world.authorizer.authorize(world.view(), NOW), CoapCode.TOO_MANY_REQUESTS, "rate_limited"
    )
    assert refusal.max_age == 2 and refusal.answer_non


def test_token_bound_session_allows_without_proof_and_refuses_one(world):
    identity = psk_identity_for_kid(KID)
    bound = RequestView(method=GET, path=("temp",), identity=identity, address="192.0.2.1")
    allowed = world.authorizer.authorize(bound, NOW)
    assert isinstance(allowed, Allow) and allowed.context.via == "session"
    with_proof = replace(world.view(), identity=identity)
    refused(
        world.authorizer.authorize(with_proof, NOW),
        CoapCode.BAD_REQUEST,
        "proof_on_token_session",
    )


def test_a_banned_pair_is_refused_before_its_proof_is_looked_at(world):
    world.open_window()
    for _ in range(world.lockout.max_failures):
        world.lockout.failure(b"sensor-1", "192.0.2.1", NOW)
    verdict = world.authorizer.authorize(world.view(), NOW)
    assert isinstance(verdict, Refuse) and verdict.reason == "locked_out"
    elsewhere = replace(world.view(), address="192.0.2.2")
    assert isinstance(world.authorizer.authorize(elsewhere, NOW), Allow)


def test_a_ban_elsewhere_keeps_a_warm_device_on_the_warm_path(world):
    """A peer that gets its own pair banned (failing handshakes costs it
    nothing but a key guess) must not send every other device's requests
    down the general path for the ban's length."""
    world.open_window()
    for _ in range(world.lockout.max_failures):
        world.lockout.failure(b"intruder", "198.51.100.9", NOW)
    assert world.lockout.ban_end > NOW

    def general_path(view, now):
        raise AssertionError("a warm request took the general path")

    world.authorizer._authorize = general_path
    assert isinstance(world.authorizer.authorize(world.view(), NOW), Allow)
    # the banned pair itself still leaves the warm path and is refused there
    for _ in range(world.lockout.max_failures):
        world.lockout.failure(b"sensor-1", "192.0.2.1", NOW)
    with pytest.raises(AssertionError, match="general path"):
        world.authorizer.authorize(world.view(), NOW)


def test_unprotected_paths_are_open_and_ace_endpoints_rate_limited(world):
    token_request = RequestView(method=2, path=("token",), identity=b"sensor-1")
    assert world.authorizer.authorize(token_request, NOW) is OPEN
    refusal = refused(
        world.authorizer.authorize(token_request, NOW), CoapCode.TOO_MANY_REQUESTS, "rate_limited"
    )
    assert refusal.max_age == 1
    other = replace(token_request, identity=b"sensor-2")  # its own bucket
    assert world.authorizer.authorize(other, NOW) is OPEN
    core = RequestView(method=GET, path=(".well-known", "core"))
    assert all(world.authorizer.authorize(core, NOW) is OPEN for _ in range(3))


def test_decisions_are_counted(world):
    world.open_window()
    world.authorizer.authorize(world.view(("admin",)), NOW)
    decisions = world.authorizer.decisions
    assert decisions.allowed == 1
    assert decisions.refused == {"echo_required": 1, "scope_path": 1}
    assert decisions.proofs_verified == 2
    assert decisions.proofs_rejected == {"echo_required": 1}


def test_warm_and_cold_paths_give_the_same_verdicts():
    """The warm path (remembered standing) and the general path answer every
    request alike, and count it alike (a policy refusal after the proof
    verified is no rejected proof on either path)."""
    cases = [
        (("temp",), GET, {}),
        (("admin",), GET, {}),
        (("temp",), PUT, {}),
        (("temp",), GET, {"payload": b"x", "content_format": 0, "query": ("q",)}),
    ]
    answers = []
    counted = []
    for forget in (False, True):
        world = World()
        world.open_window()
        row = []
        for path, method, parts in cases:
            if forget:
                world.authorizer._by_identity.clear()
            verdict = world.authorizer.authorize(world.view(path, method, **parts), NOW)
            row.append(type(verdict).__name__ + getattr(verdict, "reason", ""))
        answers.append(row)
        counted.append(world.authorizer.decisions)
    assert answers[0] == answers[1] == ["Allow", "Refusescope_path", "Refusescope_method", "Allow"]
    assert counted[0] == counted[1]
    assert counted[1].proofs_rejected == {"echo_required": 1}  # the Echo round only
    assert counted[1].proofs_verified == 1 + len(cases)
