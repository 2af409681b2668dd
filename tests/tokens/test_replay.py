"""Replay windows (RFC 8613 §7.4 style), stateless Echo values (RFC 9175) and
the guard that starts a window with an Echo; the gateway-restart property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokens.echo import ECHO_LENGTH, EchoIssuer
from tokens.errors import (
    AuthenticationError,
    EchoRequired,
    InvalidEcho,
    ReplayError,
    TokenError,
)
from tokens.keys import KeySet, SymmetricKey
from tokens.params import CoapCode, Method
from tokens.proof import MAX_PIV, ProofedRequest, build_proof, parse_proof
from tokens.replay import ACCELERATED, WINDOW_SIZE, FreshnessGuard, ReplayWindow, Windows

try:
    from tokens import _window
except ImportError:  # test_the_c_window_is_built says so
    _window = None  # type: ignore[assignment]

#: the Python reference and, when built, its C twin (which the guard uses)
WINDOW_CLASSES = [ReplayWindow] + ([_window.Window] if _window is not None else [])

SECRET_A = b"A" * 32
SECRET_B = b"B" * 32
KID = b"dev-1"
T0 = 1_800_000_000.0


def accepted(window: ReplayWindow, piv: int) -> bool:
    """check-then-commit, as the gateway does it."""
    try:
        window.check(piv)
    except ReplayError:
        return False
    window.commit(piv)
    return True


# --- ReplayWindow -----------------------------------------------------------


@pytest.mark.parametrize("make", WINDOW_CLASSES)
def test_window_starts_with_initial_and_all_lower_seen(make):
    w = make(100)
    assert w.top == 100
    for piv in (100, 99, 37, 36, 0):
        with pytest.raises(ReplayError) as exc_info:
            w.check(piv)
        assert exc_info.value.coap_code == CoapCode.UNAUTHORIZED
    assert accepted(w, 101)


@pytest.mark.parametrize("make", WINDOW_CLASSES)
def test_window_in_order_duplicate_reordered(make):
    w = make(0)
    assert accepted(w, 1)
    assert accepted(w, 3)
    assert not accepted(w, 3)  # duplicate
    assert accepted(w, 2)  # late but inside the window
    assert not accepted(w, 2)
    assert w.top == 3


@pytest.mark.parametrize("make", WINDOW_CLASSES)
def test_window_size_boundary(make):
    w = make(0)
    w.commit(1000)
    assert accepted(w, 1000 - (WINDOW_SIZE - 1))  # oldest slot still inside
    with pytest.raises(ReplayError, match="below"):
        w.check(1000 - WINDOW_SIZE)


@pytest.mark.parametrize("make", WINDOW_CLASSES)
def test_window_large_jump_forgets_everything_below(make):
    w = make(5)
    w.commit(MAX_PIV)
    assert w.top == MAX_PIV
    assert not accepted(w, 6)
    assert accepted(w, MAX_PIV - 1)


@pytest.mark.parametrize("make", WINDOW_CLASSES)
def test_commit_rechecks(make):
    w = make(0)
    w.check(7)
    w.check(7)  # two concurrent requests with the same piv both pass check ...
    w.commit(7)
    with pytest.raises(ReplayError):
        w.commit(7)  # ... but only one commits


@pytest.mark.parametrize("make", WINDOW_CLASSES)
def test_window_memory_is_small(make):
    assert not hasattr(make(1), "__dict__")


@pytest.mark.parametrize("make", WINDOW_CLASSES)
@settings(max_examples=300)
@given(
    initial=st.integers(0, 1000),
    pivs=st.lists(st.integers(0, 1200), max_size=200),
)
def test_window_matches_reference_model(make, initial, pivs):
    """Any interleaving (reordered, duplicated): each piv is accepted at most
    once, exactly when it is unseen, above the initial one and within the
    window of the highest piv accepted so far."""
    w = make(initial)
    seen: set[int] = set()
    top = initial
    for piv in pivs:
        expected = piv > initial and piv not in seen and piv > top - WINDOW_SIZE
        assert accepted(w, piv) == expected, piv
        if expected:
            seen.add(piv)
            top = max(top, piv)
    assert w.top == top


@pytest.mark.parametrize("make", WINDOW_CLASSES)
@settings(max_examples=100)
@given(
    initial=st.integers(0, 2**32),
    steps=st.lists(st.integers(1, 2**20), max_size=100),
)
def test_in_order_unique_pivs_always_accepted(make, initial, steps):
    w = make(initial)
    piv = initial
    for step in steps:
        piv += step
        assert accepted(w, piv)


@pytest.mark.parametrize("make", WINDOW_CLASSES)
@settings(max_examples=100)
@given(
    pivs=st.lists(st.integers(1, WINDOW_SIZE - 1), min_size=1, max_size=60).flatmap(
        lambda xs: st.permutations(xs + xs)  # every piv delivered twice, any order
    )
)
def test_reordered_duplicates_within_window_accepted_once(make, pivs):
    w = make(0)
    winners = [p for p in pivs if accepted(w, p)]
    assert sorted(winners) == sorted(set(pivs))


def test_the_c_window_is_built():
    """`pip install` builds tokens._window; without it every request's replay
    check would run the Python reference."""
    assert ACCELERATED
    assert FreshnessGuard.__mro__[1].__module__ == "tokens._window"
    g = guard()
    open_window(g, KID, 0, T0)
    assert type(g._windows[KID]).__module__ == "tokens._window"


@settings(max_examples=300, deadline=None)
@given(
    initial=st.integers(0, 2**64 - 1),
    steps=st.lists(
        st.tuples(st.sampled_from(["accept", "check", "commit"]), st.integers(-200, 200)),
        max_size=120,
    ),
    far=st.integers(0, 2**64 - 1),
)
def test_c_window_answers_as_the_reference(initial, steps, far):
    """The same calls on both give the same answers, errors (and messages),
    ``top`` and ``repr``, across the whole 64-bit range."""
    ours, ref = _window.Window(initial, 5.0), ReplayWindow(initial, 5.0)
    for name, offset in [*steps, ("accept", far - initial)]:
        piv = min(max(ours.top + offset, 0), 2**64 - 1)
        answers = []
        for window in (ours, ref):
            try:
                answers.append(("ok", getattr(window, name)(piv)))
            except ReplayError as exc:
                answers.append(("refused", str(exc)))
        assert answers[0] == answers[1], (name, piv)
        assert ours.top == ref.top and repr(ours) == repr(ref)
        assert ours.used == ref.used
    assert ours.opened_at == ref.opened_at == 5.0


def test_c_window_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="negative"):
        _window.Window(-1)
    with pytest.raises(OverflowError):
        _window.Window(2**64)
    w = _window.Window(10)
    with pytest.raises(TypeError):
        w.accept("11")
    with pytest.raises(ValueError):
        w.accept(-1)
    assert w.top == 10 and w.accept(11)
    # made without __init__: every piv counts as seen
    blank = _window.Window.__new__(_window.Window)
    assert not blank.accept(0) and not blank.accept(2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["open", "accept", "drop"]), st.integers(0, 5), st.integers(0, 90)
        ),
        max_size=150,
    )
)
def test_c_windows_accept_as_the_reference(ops):
    """FreshnessGuard's base: the same windows opened, accepted on and dropped
    give the same answers and the same least-recently-used order."""
    ours, ref = _window.Windows(), Windows()
    for op, k, piv in ops:
        kid = bytes([k])
        if op == "open":
            ours._windows[kid], ref._windows[kid] = _window.Window(piv), ReplayWindow(piv)
        elif op == "drop":
            ours._windows.pop(kid, None)
            ref._windows.pop(kid, None)
        else:
            assert ours.accept(kid, piv) == ref.accept(kid, piv), (kid, piv)
        assert list(ours._windows) == list(ref._windows)
        assert [(w.top, w.used) for w in ours._windows.values()] == [
            (w.top, w.used) for w in ref._windows.values()
        ]
    with pytest.raises(TypeError):
        _window.Windows().accept(b"k")
    mixed = _window.Windows()
    mixed._windows[b"k"] = ReplayWindow(1)
    with pytest.raises(TypeError):
        mixed.accept(b"k", 2)


# --- EchoIssuer ---------------------------------------------------------------


def test_echo_round_trip():
    issuer = EchoIssuer(SECRET_A)
    echo = issuer.issue(KID, T0)
    assert len(echo) == ECHO_LENGTH <= 40  # RFC 9175 §2.2
    assert issuer.verify(echo, KID, T0 + 1.5) == pytest.approx(T0, abs=0.001)
    assert issuer.issue(KID, T0 + 0.01) != echo


def test_echo_freshness_boundary():
    issuer = EchoIssuer(SECRET_A, freshness=30)
    echo = issuer.issue(KID, T0)
    issuer.verify(echo, KID, T0 + 30)
    with pytest.raises(InvalidEcho, match="stale") as exc_info:
        issuer.verify(echo, KID, T0 + 30.002)
    assert exc_info.value.coap_code == CoapCode.UNAUTHORIZED


def test_echo_from_the_future_is_refused():
    issuer = EchoIssuer(SECRET_A)
    with pytest.raises(InvalidEcho):
        issuer.verify(issuer.issue(KID, T0 + 5), KID, T0)


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes((data[i] ^ 1,)) + data[i + 1 :]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda e: EchoIssuer(SECRET_A).issue(b"dev-2", T0), id="other-kid"),
        pytest.param(lambda e: EchoIssuer(SECRET_B).issue(KID, T0), id="other-secret"),
        pytest.param(lambda e: _flip(e, 0), id="time-changed"),
        pytest.param(lambda e: _flip(e, ECHO_LENGTH - 1), id="mac-changed"),
        pytest.param(lambda e: e[:-1], id="short"),
        pytest.param(lambda e: e + b"\x00", id="long"),
        pytest.param(lambda e: b"", id="empty"),
    ],
)
def test_forged_echo_is_refused(make):
    issuer = EchoIssuer(SECRET_A)
    echo = make(issuer.issue(KID, T0))
    with pytest.raises(InvalidEcho) as exc_info:
        issuer.verify(echo, KID, T0 + 1)
    assert type(exc_info.value) is InvalidEcho
    assert exc_info.value.coap_code == CoapCode.UNAUTHORIZED


def test_echo_issuer_arguments_and_repr():
    with pytest.raises(ValueError):
        EchoIssuer(b"short")
    with pytest.raises(ValueError):
        EchoIssuer(SECRET_A, freshness=0)
    text = repr(EchoIssuer(SECRET_A))
    assert "AAAA" not in text and "4141" not in text


# --- FreshnessGuard -----------------------------------------------------------


def guard(secret: bytes = SECRET_A, **kw: int) -> FreshnessGuard:
    return FreshnessGuard(EchoIssuer(secret), **kw)


def echo_of(g: FreshnessGuard, kid: bytes, piv: int, now: float) -> bytes:
    with pytest.raises(EchoRequired) as exc_info:
        g.check(kid, piv, None, now)
    assert exc_info.value.coap_code == CoapCode.UNAUTHORIZED
    return exc_info.value.echo


def open_window(g: FreshnessGuard, kid: bytes, piv: int, now: float) -> None:
    echo = echo_of(g, kid, piv, now)
    g.check(kid, piv + 1, echo, now + 0.01)
    g.commit(kid, piv + 1, echo, now + 0.01)


def test_guard_first_request_needs_echo_then_window_runs():
    g = guard()
    echo = echo_of(g, KID, 10, T0)
    with pytest.raises(EchoRequired):
        g.commit(KID, 10, None, T0)  # commit never bypasses the Echo rule
    g.check(KID, 11, echo, T0 + 0.1)
    g.commit(KID, 11, echo, T0 + 0.1)
    assert KID in g and len(g) == 1
    g.commit(KID, 12, None, T0 + 0.2)  # no Echo needed any more
    for piv in (11, 12, 10, 3):
        with pytest.raises(ReplayError):
            g.check(KID, piv, None, T0 + 0.3)


def test_guard_window_ignores_echo_once_open():
    g = guard()
    open_window(g, KID, 0, T0)
    g.commit(KID, 5, b"garbage", T0 + 1000)  # echo inside the proof, not checked
    with pytest.raises(ReplayError):
        g.commit(KID, 5, EchoIssuer(SECRET_A).issue(KID, T0 + 1000), T0 + 1000)


@pytest.mark.parametrize(
    ("echo_kid", "echo_secret", "echo_time", "now"),
    [
        pytest.param(b"dev-2", SECRET_A, T0, T0 + 1, id="other-kid"),
        pytest.param(KID, SECRET_B, T0, T0 + 1, id="other-secret"),
        pytest.param(KID, SECRET_A, T0, T0 + 31, id="stale"),
    ],
)
def test_guard_refuses_bad_echo_with_a_new_one(echo_kid, echo_secret, echo_time, now):
    g = guard()
    bad = EchoIssuer(echo_secret).issue(echo_kid, echo_time)
    for step in (g.check, g.commit):
        with pytest.raises(EchoRequired) as exc_info:
            step(KID, 1, bad, now)
        assert isinstance(exc_info.value.__cause__, InvalidEcho)
        fresh = exc_info.value.echo
        assert fresh != bad
        EchoIssuer(SECRET_A).verify(fresh, KID, now)  # the new one is good
    assert KID not in g


def test_guard_echo_is_per_kid():
    g = guard()
    echo = echo_of(g, KID, 1, T0)
    with pytest.raises(EchoRequired):
        g.commit(b"dev-2", 2, echo, T0)
    g.commit(KID, 2, echo, T0)


def test_guard_commit_rechecks_after_await():
    g = guard()
    open_window(g, KID, 0, T0)
    g.check(KID, 9, None, T0)
    g.check(KID, 9, None, T0)
    g.commit(KID, 9, None, T0)
    with pytest.raises(ReplayError):
        g.commit(KID, 9, None, T0)


def test_guard_two_requests_with_one_echo_open_one_window():
    g = guard()
    echo = echo_of(g, KID, 1, T0)
    g.check(KID, 5, echo, T0)
    g.check(KID, 4, echo, T0)
    g.commit(KID, 5, echo, T0)
    with pytest.raises(ReplayError):
        g.commit(KID, 4, echo, T0)  # below the window the first one opened


def test_guard_eviction_gives_used_windows_a_second_chance():
    """Requests on an open window reorder nothing; when a window beyond
    ``max_windows`` opens, the oldest one not used since it was last passed
    over goes, and a used one is kept as the newest (CLOCK)."""
    g = guard(max_windows=3)
    for n, kid in enumerate((b"a", b"b", b"c")):
        open_window(g, kid, 0, T0 + n)
    assert g.accept(b"a", 2) and g.accept(b"c", 2)  # b was not used
    open_window(g, b"d", 0, T0 + 3)
    assert list(g._windows) == [b"c", b"a", b"d"]  # a passed over, b gone, c untouched
    assert [w.used for w in g._windows.values()] == [True, False, False]
    open_window(g, b"e", 0, T0 + 4)  # c was used: kept; a was not since: gone
    assert list(g._windows) == [b"d", b"c", b"e"]
    assert not g.accept(b"a", 3) and not g.accept(b"b", 3)
    g.commit(b"d", 3, None, T0 + 5)  # the general path marks use the same way
    open_window(g, b"f", 0, T0 + 6)  # d passed over (kept as newest), c gone
    assert list(g._windows) == [b"e", b"d", b"f"]


def test_guard_lru_bound():
    g = guard(max_windows=2)
    open_window(g, b"a", 0, T0)
    open_window(g, b"b", 0, T0 + 1)
    g.commit(b"a", 5, None, T0 + 2)  # "a" is now the most recently used
    open_window(g, b"c", 0, T0 + 3)
    assert len(g) == 2
    assert b"a" in g and b"c" in g and b"b" not in g
    with pytest.raises(EchoRequired):
        g.check(b"b", 10, None, T0 + 4)


@pytest.mark.parametrize("how", ["evicted", "forgotten"])
def test_opening_request_cannot_be_replayed_after_its_window_went(how):
    g = guard(max_windows=1)
    echo = echo_of(g, KID, 1, T0)
    g.commit(KID, 2, echo, T0 + 0.5)  # the captured opening request: (2, echo)
    if how == "evicted":
        open_window(g, b"other", 0, T0 + 1)
    else:
        g.forget(KID, T0 + 1)
    assert KID not in g
    with pytest.raises(EchoRequired, match="superseded"):
        g.check(KID, 2, echo, T0 + 2)  # the echo is still fresh, but refused
    with pytest.raises(EchoRequired):
        g.commit(KID, 2, echo, T0 + 2)
    # The honest device recovers with a new Echo.
    fresh = echo_of(g, KID, 3, T0 + 3)
    g.commit(KID, 3, fresh, T0 + 3)
    assert KID in g


def test_stale_windows_evict_without_raising_the_floor():
    g = guard(max_windows=1)
    open_window(g, b"a", 0, T0)
    open_window(g, b"b", 0, T0 + 100)  # "a" evicted long after its Echo expired
    echo = EchoIssuer(SECRET_A).issue(b"a", T0 + 99)  # issued before the eviction
    g.commit(b"a", 5, echo, T0 + 100)


def test_guard_arguments():
    with pytest.raises(ValueError):
        guard(max_windows=0)


# --- restart: the sans-I/O gateway path end to end ---------------------------

HMAC = SymmetricKey(KID, b"\x11" * 32)
KEYS = KeySet([HMAC])
REQ = ProofedRequest(Method.POST, ("actuators", "valve"), (), 60, b"\xf5")


def gateway_accepts(g: FreshnessGuard, option: bytes, echo: bytes | None, now: float) -> None:
    """docs/authorization.md's order: parse -> key by kid -> proof -> replay/freshness -> commit."""
    proof = parse_proof(option)
    key = KEYS.get(proof.kid)
    proof.verify(key, REQ, echo)
    g.check(proof.kid, proof.piv, echo, now)
    g.commit(proof.kid, proof.piv, echo, now)


class Device:
    """The device side: a sequence number that only grows, and the Echo dance."""

    def __init__(self) -> None:
        self.piv = 0

    def send(self, g: FreshnessGuard, now: float) -> tuple[bytes, bytes | None]:
        """Send REQ; on 4.01 + Echo repeat once with it. Returns what was
        accepted: (option, echo)."""
        self.piv += 1
        option = build_proof(HMAC, REQ, self.piv)
        try:
            gateway_accepts(g, option, None, now)
            return option, None
        except EchoRequired as exc:
            echo = exc.echo
        self.piv += 1
        option = build_proof(HMAC, REQ, self.piv, echo)
        gateway_accepts(g, option, echo, now + 0.05)
        return option, echo


@pytest.mark.parametrize("which", ["with-echo", "without-echo"])
def test_proof_captured_before_restart_is_refused_after_it(which):
    device = Device()
    before = guard(SECRET_A)  # gateway process A
    opening = device.send(before, T0)  # opened the window, carries A's Echo
    plain = device.send(before, T0 + 1)  # a later request without Echo
    assert opening[1] is not None and plain[1] is None
    captured = opening if which == "with-echo" else plain
    for option, echo in (opening, plain):  # replays to A are refused too
        with pytest.raises(ReplayError):
            gateway_accepts(before, option, echo, T0 + 2)

    after = guard(SECRET_B)  # restart: new secret, no windows, within A's freshness
    with pytest.raises(EchoRequired) as exc_info:
        gateway_accepts(after, *captured, T0 + 3)
    assert exc_info.value.coap_code == CoapCode.UNAUTHORIZED
    assert KID not in after

    device.send(after, T0 + 4)  # the honest device recovers with B's Echo
    assert KID in after

    for option, echo in (opening, plain):
        with pytest.raises(AuthenticationError) as exc_info:
            gateway_accepts(after, option, echo, T0 + 5)
        assert type(exc_info.value) is ReplayError  # now below the new window
    device.send(after, T0 + 6)  # and normal traffic goes on without Echo


def test_gateway_path_errors_are_token_errors():
    g = guard()
    with pytest.raises(TokenError):
        gateway_accepts(g, b"\x84", None, T0)
