"""The one-step authorization path (gateway.resource_server._admission, the C twin of
gateway.resource_server.authorizer.Admission): the same verdicts and the same effects on
the replay window and the rate limit as its Python reference, on real
proofs, windows and buckets."""

from __future__ import annotations

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.resource_server.authorizer import ACCELERATED, Admission
from gateway.resource_server.rate_limits import RateLimiter
from tokens.echo import EchoIssuer
from tokens.keys import SymmetricKey
from tokens.params import Alg
from tokens.proof import ProofedRequest, build_proof, mac_proof_check
from tokens.replay import FreshnessGuard

try:
    from gateway.resource_server import _admission
except ImportError:  # test_the_c_admission_is_built_and_checks_its_arguments says so
    _admission = None  # type: ignore[assignment]

KID = b"dev-1"
KEY = SymmetricKey(KID, b"\x11" * 32, Alg.HMAC_256_64)
OTHER = SymmetricKey(KID, b"\x12" * 32, Alg.HMAC_256_64)
PATHS = [("whoami",), ("admin",), ("temp", "c")]
#: the scope's remembered answers: GET on /whoami, nothing on /admin
MASKS = {("whoami",): 0b1, ("admin",): 0}


def _setup(cls: type) -> tuple[object, FreshnessGuard, RateLimiter]:
    guard = FreshnessGuard(EchoIssuer(b"e" * 32))
    echo = EchoIssuer(b"e" * 32).issue(KID, 100.0)
    guard.commit(KID, 10, echo, 100.0)  # the window opens at piv 10
    limiter = RateLimiter(rate=2.0, burst=4)
    admission = cls(mac_proof_check(KEY), guard, KID, limiter, "client", None, dict(MASKS))
    return admission, guard, limiter


def _request(
    code: int, path: tuple[str, ...], piv: int, key: SymmetricKey
) -> tuple[aiocoap.Message, bytes]:
    message = aiocoap.Message(code=code, uri_path=path, payload=b"\x01")
    proof = build_proof(key, ProofedRequest(code, path, payload=b"\x01"), piv)
    return message, proof


STEPS = st.lists(
    st.tuples(
        st.integers(-3, 3),  # piv relative to the last one sent
        st.sampled_from(PATHS),
        st.sampled_from([Code.GET, Code.POST, Code.DELETE]),
        st.booleans(),  # signed with the wrong key
        st.floats(0.0, 2.0, allow_nan=False),  # seconds since the last request
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS)
def test_c_admission_answers_as_the_reference(steps):
    ours, our_guard, our_limiter = _setup(_admission.Admission)
    ref, ref_guard, ref_limiter = _setup(Admission)
    piv, now = 10, 100.0
    for offset, path, code, wrong_key, elapsed in steps:
        piv, now = max(piv + offset, 0), now + elapsed
        message, proof = _request(code, path, piv, OTHER if wrong_key else KEY)
        args = (proof, code, path, message.opt._options, message.payload, now)
        verdict = ours.admit(*args)
        assert verdict == ref.admit(*args)
        if wrong_key:
            assert verdict is None
        assert our_guard._windows[KID].top == ref_guard._windows[KID].top
        assert [(b.tokens, b.at) for b in our_limiter._buckets.values()] == [
            (b.tokens, b.at) for b in ref_limiter._buckets.values()
        ]


@pytest.mark.parametrize("implementation", ["c", "python"])
def test_verdicts(implementation):
    """Each verdict, and what it leaves behind."""
    cls = _admission.Admission if implementation == "c" else Admission
    admission, guard, limiter = _setup(cls)

    def admit(code, path, piv, now, key=KEY):
        message, proof = _request(code, path, piv, key)
        return admission.admit(proof, code, path, message.opt._options, message.payload, now)

    assert admit(Code.GET, ("whoami",), 11, 100.0) == 0.0  # admitted
    left = limiter._buckets["client"].tokens
    assert admit(Code.GET, ("whoami",), 11, 100.0) is None  # replayed: nothing spent
    assert limiter._buckets["client"].tokens == left
    assert admit(Code.GET, ("whoami",), 12, 100.0, OTHER) is None  # bad MAC
    assert guard._windows[KID].top == 11
    assert admit(Code.DELETE, ("whoami",), 12, 100.0) == -1.0  # method: ask the scope
    assert admit(Code.GET, ("admin",), 13, 100.0) == -1.0  # path refused: ask the scope
    assert admit(Code.GET, ("temp", "c"), 14, 100.0) == -1.0  # not remembered: ask
    assert guard._windows[KID].top == 14
    assert admit(Code.GET, ("whoami",), 15, 100.0) == pytest.approx(0.5)  # burst 4 spent
    assert admit(Code.GET, ("whoami",), 16, 100.5) == 0.0  # refilled at 2/s
    assert list(limiter._buckets) == ["client"]
    wide_mask = {("whoami",): 1 << 70 | 1}  # wider than a C long
    verifier = mac_proof_check(KEY)
    wide = cls(verifier, guard, KID, limiter, "client", None, wide_mask)
    message, proof = _request(Code.GET, ("whoami",), 17, KEY)
    args = (proof, Code.GET, ("whoami",), message.opt._options, message.payload, 101.0)
    assert wide.admit(*args) == 0.0  # GET's bit, whatever the width


def test_the_c_admission_is_built_and_checks_its_arguments():
    """`pip install` builds gateway.resource_server._admission; without it every warm request
    would run the Python sequence."""
    assert ACCELERATED
    with pytest.raises(TypeError):
        _admission.Admission(None, None, KID, None, "c", None, "not a dict")
    blank = _admission.Admission.__new__(_admission.Admission)
    with pytest.raises(TypeError):
        blank.admit(b"", 1, (), {}, b"", 0.0)
    admission, _, _ = _setup(_admission.Admission)
    with pytest.raises(TypeError):
        admission.admit(b"", 1)
    with pytest.raises(TypeError):
        admission.admit(b"", "GET", (), {}, b"", 0.0)
