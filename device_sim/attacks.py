"""The attack and fault kinds a scenario can mix in, the answer a correct
gateway gives to each, and how an observed answer is judged.

An *answer* is a short text: a CoAP response code (``"4.01"``), or for the
connection-level kinds an outcome (``"handshake_failed"``, ``"connected"``,
``"hello_verify_request"``, ``"server_hello"``, ``"recovered"``,
``"not_recovered"``), or ``"timeout"``.

Judgement of one attempt (:func:`judge`):

* ``expected``: the answer is one the kind expects (the gateway refused, or
  for a fault, recovered);
* ``finding``: the gateway *accepted* the attack (any 2.xx answer to an
  attack request, a completed handshake with a wrong key, a stateful answer to
  a cookie-less ClientHello, a request flood never limited), or let it cost
  an honest device its service (a device named by wrong-key handshakes
  locked out, an honest handshake not served during a half-open flood, no
  recovery after a disconnect). A finding is a result, never a latency
  sample, and fails the run's verdict;
* ``deviated``: refused, but with another code than expected (e.g. 4.00
  where 4.01 was expected): reported, fails the verdict only with
  ``--strict-attacks``;
* ``inconclusive``: no answer that says anything (timeout, 4.29/5.03 rate
  limiting): reported, never a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "AttackKind", "judge"]

EXPECTED = "expected"
FINDING = "finding"
DEVIATED = "deviated"
INCONCLUSIVE = "inconclusive"
OUTCOMES = (EXPECTED, FINDING, DEVIATED, INCONCLUSIVE)


@dataclass(frozen=True, slots=True)
class AttackKind:
    """One kind: what a device in this role does and what must come back."""

    name: str
    expected: frozenset[str]
    #: Answers that mean the gateway accepted the attack or let it cost an
    #: honest device its service (besides any 2.xx).
    accepted: frozenset[str]
    description: str
    #: What a load tester reads in a finding when the kind sends no request
    #: of its own (connection-level kinds).
    route: str = ""

    @property
    def expected_text(self) -> str:
        return " or ".join(sorted(self.expected))


def _k(
    name: str, expected: set[str], accepted: set[str], description: str, route: str = ""
) -> AttackKind:
    return AttackKind(name, frozenset(expected), frozenset(accepted), description, route)


KINDS: dict[str, AttackKind] = {
    k.name: k
    for k in (
        _k(
            "wrong_psk",
            {"handshake_failed"},
            {"connected"},
            "DTLS-PSK handshake with the device's identity and a wrong key "
            "(RFC 4279 §2): the Finished check must fail",
        ),
        _k(
            "expired_token_reuse",
            {"4.01"},
            set(),
            "keeps using its token (proofs and a new /authz-info upload) after "
            "'exp' (RFC 9200 §5.10.1.1: 4.01)",
        ),
        _k(
            "replayed_proof",
            {"4.01"},
            set(),
            "sends a request again with the exact Proof option of an accepted "
            "one (replay window: 4.01)",
        ),
        _k(
            "tampered_proof",
            {"4.01"},
            set(),
            "valid request whose Proof MAC/signature has one bit flipped (4.01)",
        ),
        _k(
            "scope_violation",
            {"4.03", "4.05"},
            set(),
            "valid proof for a path outside the token's scope (RFC 9200 §5.10.2: 4.03/4.05)",
        ),
        _k(
            "oversized_payload",
            {"4.13"},
            set(),
            "valid proof, payload larger than the gateway accepts (RFC 7252 §5.9.2.9: 4.13)",
        ),
        _k(
            "malformed_cbor",
            {"4.00"},
            set(),
            "POST to the token endpoint with bytes that are not a CBOR map "
            "(RFC 9200 §5.8.3: 4.00 invalid_request)",
        ),
        _k(
            "handshake_flood",
            {"hello_verify_request"},
            {"server_hello"},
            "ClientHello floods from fresh ports: a cookie-less ClientHello must "
            "get a stateless HelloVerifyRequest (RFC 6347 §4.2.1); half-open "
            "handshakes are then abandoned",
            "DTLS ClientHello",
        ),
        _k(
            "abrupt_disconnect",
            {"recovered"},
            {"not_recovered"},
            "drops its session without close_notify and handshakes again from "
            "the same port (RFC 6347 §4.2.8): the gateway must serve the new session "
            "(any answer to the next request counts, e.g. an upstream's 4.15)",
            "DTLS handshake + next request",
        ),
        _k(
            "token_theft",
            {"4.01"},
            set(),
            "gets a token as another device (its PSK stolen once), uploads it and "
            "sends requests with that token's PoP key on its own DTLS session: the "
            "token is not bound to this session (4.01)",
        ),
        _k(
            "request_flood",
            {"4.29"},
            {"no_limit"},
            "bursts of flood_requests valid requests back to back (NSTART 1): the "
            "device's rate limit must answer 4.29 (RFC 8516) within each burst",
        ),
        _k(
            "lockout_abuse",
            {"victim_kept_working"},
            {"victim_locked_out", "connected"},
            "from an address of its own, lockout_attempts wrong-PSK handshakes naming "
            "each of lockout_victims other devices: the named devices must keep "
            "working (their next request or handshake succeeds)",
            "DTLS handshake naming another device",
        ),
        _k(
            "half_open_flood",
            {"honest_handshake_served"},
            {"honest_handshake_failed"},
            "half_open_rate cookie-completing ClientHellos per second from one "
            "address, each abandoned after the cookie exchange; meanwhile the device "
            "handshakes honestly from another address every interval: each honest "
            "handshake must be served",
            "DTLS handshake during a half-open flood",
        ),
    )
}

_INCONCLUSIVE = frozenset(
    {"timeout", "4.29", "5.03", "no_answer", "victim_timeout", "port_unreachable"}
)


def judge(kind: str, answer: str) -> str:
    """Judge one attempt of ``kind`` that got ``answer`` (see module doc)."""
    spec = KINDS[kind]
    if answer in spec.expected:
        return EXPECTED
    if answer in spec.accepted or answer.startswith("2."):
        return FINDING
    if answer in _INCONCLUSIVE:
        return INCONCLUSIVE
    return DEVIATED
