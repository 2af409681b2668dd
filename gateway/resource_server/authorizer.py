"""The per-request authorization decision of the resource server, sans-I/O
(in the style of h11's ``Connection``): :meth:`Authorizer.authorize` takes an
immutable :class:`RequestView` of one CoAP request and ``now`` and returns a
typed verdict, :class:`Allow` (with the :class:`AuthContext` the resources
get) or :class:`Refuse` (the error with its CoAP code and reason, and the
Echo, Max-Age or AS Request Creation Hints to attach). No CoAP library in
here: :mod:`gateway.coap.authorizing_site` builds the view and applies the
verdict.

A request to a protected path is authorized by exactly one of
(docs/authorization.md, docs/design.md "Request path"):

* a valid Proof option (65001) on a client's DTLS session, checked in this
  order: parse (4.00) -> token by kid (4.01 with AS Request Creation Hints,
  RFC 9200 §5.3) -> MAC/signature (4.01) -> replay window / Echo (4.01 with
  an Echo option, RFC 9175 §2.4) -> token exp, revocation, client enabled and
  bound to this session (4.01) -> rate limit (4.29, RFC 8516) -> scope for
  path and method (4.03 / 4.05, RFC 9200 §5.10.2);
* an RFC 9202 DTLS session whose psk_identity names the token's PoP key: no
  Proof option (one there is refused with 4.00), then the same checks from
  "token exp" on.

The order is written once, here. A warm request (a canonical Mac0 proof of
the token whose proofs verified on this identity before, its standing
current) takes the same checks with what is remembered about the token: the
MAC check (``tokens._mac0``), the replay window and the rate limit's bucket
are C primitives; the order is this module's. The sequence number is
committed once the proof verified and the window accepts it, before the
policy checks, so even a refused request's proof cannot be replayed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from gateway.errors import GatewayError
from gateway.resource_server.auth_context import AuthContext
from gateway.resource_server.lockout import Lockout
from gateway.resource_server.rate_limits import RateLimiter, TooManyRequests
from gateway.resource_server.token_intake import CUT_OFF_MESSAGE, SubjectDisabled, TokenCutOff
from gateway.resource_server.token_store import AccessToken, TokenStore
from tokens import cnf as cnf_mod
from tokens.ace import CreationHints
from tokens.errors import (
    EchoRequired,
    Expired,
    MalformedError,
    Revoked,
    TokenError,
    UnknownKey,
)
from tokens.keys import SymmetricKey
from tokens.params import CONTENT_FORMAT_OPTION, ECHO_OPTION, URI_QUERY_OPTION, CoapCode
from tokens.proof import mac_proof_check, parse_proof
from tokens.replay import FreshnessGuard

log = logging.getLogger(__name__)

#: The ACE endpoints: served without a token, rate limited per identity.
ACE_ENDPOINTS = frozenset({("token",), ("introspect",), ("authz-info",)})
#: Paths served without authorization (the ACE endpoints, /.well-known/core).
UNPROTECTED = ACE_ENDPOINTS | {(".well-known", "core")}
#: Refusal reasons that count as a failed proof towards the lockout.
FAILED_PROOF = frozenset(
    {
        "malformed",
        "unknown_kid",
        "bad_signature",
        "alg_mismatch",
        "replay",
        "token_not_bound_to_session",
    }
)


class MissingToken(GatewayError):
    """No proof and no token-bound session: 4.01 with Request Creation Hints."""

    coap_code = CoapCode.UNAUTHORIZED
    reason = "no_token"


class AmbiguousAuthorization(GatewayError):
    """A Proof option on a token-bound session: exactly one may authorize."""

    coap_code = CoapCode.BAD_REQUEST
    reason = "proof_on_token_session"


class SessionMismatch(GatewayError):
    """The proof's token belongs to another client than the DTLS session's
    (a stolen token and key used from another device's session)."""

    coap_code = CoapCode.UNAUTHORIZED
    reason = "token_not_bound_to_session"


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the authorizer sees of one request: the parts a Proof covers
    (method code, Uri-Path, Uri-Query, Content-Format, the payload whose
    SHA-256 digest it covers, the Echo value; docs/design.md "Wire formats"),
    the Proof option values as received, and who sent it (the DTLS session's
    PSK identity and the peer's address, None when unknown)."""

    method: int
    path: tuple[str, ...]
    query: tuple[str, ...] = ()
    content_format: int | None = None
    payload: bytes = b""
    proofs: tuple[bytes, ...] = ()
    echo: bytes | None = None
    identity: bytes | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Allow:
    """Go ahead; ``context`` is who is asking (None on an unprotected path)."""

    context: AuthContext | None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer with ``error`` (its CoAP code, reason and description) and the
    option or payload it calls for: ``echo`` (4.01 + Echo, RFC 9175 §2.4),
    ``max_age`` (4.29, RFC 8516 §2) or ``hints`` (4.01 + AS Request Creation
    Hints, RFC 9200 §5.3; the AS URI is the transport's to fill in).
    ``failed_proof``: counts towards the lockout of the sender's pair."""

    error: TokenError | GatewayError
    echo: bytes | None = None
    max_age: int | None = None
    hints: CreationHints | None = None
    failed_proof: bool = False

    @property
    def code(self) -> CoapCode:
        return CoapCode(int(self.error.coap_code))

    @property
    def reason(self) -> str:
        return self.error.reason

    @property
    def answer_non(self) -> bool:
        """Whether a NON request gets this answer anyway (Echo and 4.29 are
        instructions, not a security verdict; docs/design.md "Errors")."""
        return self.echo is not None or self.max_age is not None


Verdict = Allow | Refuse
#: The verdict of every unprotected request that passes.
OPEN = Allow(None)


@dataclass
class Decisions:
    """Counters of authorization outcomes by reason (read by the metrics).

    ``proofs_verified``: Proof options whose MAC/signature verified and whose
    piv the replay window accepted; ``proofs_rejected``: requests carrying a
    Proof option refused before that point, by reason."""

    allowed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    proofs_verified: int = 0
    proofs_rejected: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def reject_proof(self, reason: str) -> None:
        self.proofs_rejected[reason] = self.proofs_rejected.get(reason, 0) + 1


class _Value(NamedTuple):
    """One option as ``tokens._mac0`` reads it (an object with ``value``)."""

    value: Any


#: The covered options of a request without Uri-Query, Content-Format, Echo.
_NO_OPTIONS: dict[int, list[_Value]] = {}


def covered_options(view: RequestView) -> Mapping[int, list[_Value]]:
    """Uri-Query, Content-Format and Echo of ``view`` in the shape the MAC
    check reads (option number -> options with a ``value``)."""
    if not view.query and view.content_format is None and view.echo is None:
        return _NO_OPTIONS
    options: dict[int, list[_Value]] = {}
    if view.query:
        options[URI_QUERY_OPTION] = [_Value(q) for q in view.query]
    if view.content_format is not None:
        options[CONTENT_FORMAT_OPTION] = [_Value(view.content_format)]
    if view.echo is not None:
        options[ECHO_OPTION] = [_Value(view.echo)]
    return options


class _Standing:
    """What authorization remembers about one held token between requests:
    the per-token answers (revoked, client enabled, rate) as of a registry
    version, the identity its proofs were last seen on, the methods its
    scope grants on the paths asked for, and the two verdicts a request can
    get. Rebuilt when the token object, the registry version or the
    configuration changes."""

    __slots__ = (
        "by_proof",
        "by_session",
        "cut",
        "disabled",
        "identity",
        "mac_check",
        "masks",
        "rate",
        "revoked",
        "token",
        "version",
    )

    def __init__(self, token: AccessToken, version: int, authorizer: Authorizer) -> None:
        self.token = token
        self.version = version
        self.revoked = authorizer._is_revoked(token.cti)
        self.disabled = not authorizer._client_enabled(token.client_id)
        # issued before the client's last disable, delete or narrowing ("disable means disable")
        self.cut = authorizer._cut_off(token.client_id, token.claims.iat)
        self.rate = authorizer._device_rate(token.client_id)
        #: the client identity (not an RFC 9202 one) its proofs verified on
        self.identity: bytes | None = None
        self.by_proof = Allow(_context(token, "proof"))
        self.by_session = Allow(_context(token, "session"))
        #: Uri-Path -> the AIF method mask the scope grants there (RFC 9237 §2.3)
        self.masks: dict[tuple[str, ...], int] = {}
        #: the canonical Mac0 check of its proofs; None when it has none (an
        #: asymmetric PoP key) or every request of it is refused anyway
        self.mac_check: Any = None
        key = token.pop_key
        if isinstance(key, SymmetricKey) and not (self.revoked or self.disabled or self.cut):
            self.mac_check = mac_proof_check(key)

    def methods(self, path: tuple[str, ...]) -> int:
        """The AIF method mask the token's scope grants on ``path``."""
        mask = self.masks.get(path)
        if mask is None:
            mask = self.token.scope.allowed_methods(path)
            if len(self.masks) < _MAX_PATHS:
                self.masks[path] = mask
        return mask


#: Paths whose scope answer one token remembers.
_MAX_PATHS = 64


def _context(token: AccessToken, via: Literal["proof", "session"]) -> AuthContext:
    return AuthContext(
        client_id=token.client_id,
        kid=token.kid,
        cti=token.cti,
        scope=token.scope,
        issuer=token.issuer,
        via=via,
        token=token,
    )


class Authorizer:
    """The decision procedure (see the module docstring).

    ``version`` returns a number that changes whenever ``is_revoked`` or
    ``client_enabled`` may answer differently (the registry's in-memory
    version; it is read, never polled, here); their answers are remembered
    per token until it changes. Call :meth:`forget` when ``device_rate`` may
    answer differently (a configuration reload). ``ace_limits``: the rate
    limit of the ACE endpoints, per identity (else per address)."""

    def __init__(
        self,
        *,
        tokens: TokenStore,
        guard: FreshnessGuard,
        is_revoked: Callable[[bytes], bool],
        client_enabled: Callable[[str], bool],
        cut_off: Callable[[str, float | None], bool] = lambda client_id, iat: False,
        device_limits: RateLimiter,
        device_rate: Callable[[str], float | None] = lambda client_id: None,
        version: Callable[[], int],
        lockout: Lockout | None = None,
        ace_limits: RateLimiter | None = None,
        hints: CreationHints | None = None,
        unprotected: frozenset[tuple[str, ...]] = UNPROTECTED,
    ) -> None:
        self.tokens = tokens
        self.guard = guard
        self._is_revoked = is_revoked
        self._client_enabled = client_enabled
        #: whether a token issued at ``iat`` predates the client's last disable
        self._cut_off = cut_off
        self._limits = device_limits
        self._device_rate = device_rate
        self._version = version
        self.lockout = lockout
        self.ace_limits = ace_limits
        self.hints = hints if hints is not None else CreationHints()
        self.unprotected = unprotected
        self.decisions = Decisions()
        self._standing: dict[bytes, _Standing] = {}
        #: client identity -> the standing whose proofs last verified on it
        self._by_identity: dict[bytes, _Standing] = {}

    def forget(self) -> None:
        """Drop every remembered per-token answer (configuration reloaded)."""
        self._standing.clear()
        self._by_identity.clear()

    def authorize(self, view: RequestView, now: float) -> Verdict:
        """The verdict on one request (see the module docstring)."""
        path = view.path
        if path in self.unprotected:
            return self._unprotected(view, now)
        proofs = view.proofs
        identity = view.identity
        standing = self._by_identity.get(identity) if len(proofs) == 1 else None  # type: ignore[arg-type]
        if standing is not None:
            token = standing.token
            check = standing.mac_check
            lockout = self.lockout
            if not (
                check is None
                or token.exp <= now
                or (
                    lockout is not None
                    and now < lockout.ban_end
                    and lockout.banned(identity, view.address, now)  # type: ignore[arg-type]
                )
                or standing.version != self._version()
                or self.tokens.peek(token.kid) is not token
            ):
                code = view.method
                piv = check.check_options(
                    proofs[0], code, path, covered_options(view), view.payload
                )
                if piv is not None and self.guard.accept(token.kid, piv):
                    # the same checks as the general path from here on
                    self.decisions.proofs_verified += 1
                    wait = self._limits.wait(token.client_id, now, standing.rate)
                    if wait:
                        return self._refused(TooManyRequests(wait), view)
                    if code > 0 and standing.methods(path) >> (code - 1) & 1:
                        self.decisions.allowed += 1
                        return standing.by_proof
                    return self._scope_refusal(standing, path, code, view)
        try:
            verdict = self._authorize(view, now)
        except (TokenError, GatewayError) as exc:
            return self._refused(exc, view)
        if isinstance(verdict, Allow):
            self.decisions.allowed += 1
        return verdict

    def _unprotected(self, view: RequestView, now: float) -> Verdict:
        """The ACE endpoints' rate limit (4.29), per authenticated identity:
        they are only reached inside a DTLS session, whose PSK identity the
        handshake proved. Devices behind one NAT share an address, not a
        bucket. (A request without an identity falls back to its address.)"""
        if self.ace_limits is None or view.path not in ACE_ENDPOINTS:
            return OPEN
        key = ("address", view.address) if view.identity is None else ("identity", view.identity)
        wait = self.ace_limits.wait(key, now)
        if wait:
            return self._refused(TooManyRequests(wait), view)
        return OPEN

    def _authorize(self, view: RequestView, now: float) -> Verdict:
        """The general path: every check in order, each failure raised with
        its reason. A refusal before the proof is accepted counts as a
        rejected proof; one after (session, policy, rate, scope) does not, as
        on the warm path."""
        try:
            token, by_proof = self._authenticate(view, now)
        except (TokenError, GatewayError) as exc:
            if view.proofs:
                self.decisions.reject_proof(exc.reason)
            raise
        identity = view.identity
        # token theft: a proof is only good on a session of the token's client
        standing = self._standing.get(token.kid)
        seen = standing is not None and standing.token is token and identity == standing.identity
        if by_proof and not seen and _session_client(identity) != token.client_id:  # type: ignore[arg-type]
            raise SessionMismatch("token not issued to this session's client")
        version = self._version()
        if standing is None or standing.token is not token or standing.version != version:
            standing = self._standing[token.kid] = _Standing(token, version, self)
            if len(self._standing) > 2 * len(self.tokens) + 1024:
                self._prune()
        if by_proof and _bound_kid(identity) is None:  # type: ignore[arg-type]
            standing.identity = identity
            self._by_identity[identity] = standing  # type: ignore[index]
            if len(self._by_identity) > 2 * len(self.tokens) + 1024:
                self._prune()
        # exp, revocation, client enabled (RFC 9200 §5.10.1.1 order)
        if standing.token.exp <= now:
            raise Expired("token expired")
        if standing.revoked:
            raise Revoked("token revoked")
        if standing.disabled:
            raise SubjectDisabled("client disabled")
        if standing.cut:
            raise TokenCutOff(CUT_OFF_MESSAGE)
        self._limits.take(standing.token.client_id, now, rate=standing.rate)
        code = view.method
        if code < 1 or not standing.methods(view.path) >> (code - 1) & 1:  # AIF (RFC 9237 §2.3)
            standing.token.scope.check(view.path, code)  # raises 4.03 or 4.05, saying which
        return standing.by_proof if by_proof else standing.by_session

    def _scope_refusal(
        self, standing: _Standing, path: tuple[str, ...], code: int, view: RequestView
    ) -> Verdict:
        """4.03 or 4.05 (RFC 9200 §5.10.2), the scope saying which."""
        try:
            standing.token.scope.check(path, code)
        except TokenError as exc:
            return self._refused(exc, view)
        self.decisions.allowed += 1  # a mask the AIF bit cannot express
        return standing.by_proof

    def _refused(self, exc: TokenError | GatewayError, view: RequestView) -> Refuse:
        self.decisions.refuse(exc.reason)
        if isinstance(exc, EchoRequired):
            return Refuse(exc, echo=exc.echo, failed_proof=False)
        if isinstance(exc, TooManyRequests):
            return Refuse(exc, max_age=exc.max_age)
        hints = self.hints if isinstance(exc, MissingToken | UnknownKey) else None
        return Refuse(exc, hints=hints, failed_proof=exc.reason in FAILED_PROOF)

    def _prune(self) -> None:
        held = self.tokens.peek
        for kid in [k for k, s in self._standing.items() if held(k) is not s.token]:
            del self._standing[kid]
        current = self._standing.get
        stale = [i for i, s in self._by_identity.items() if current(s.token.kid) is not s]
        for identity in stale:
            del self._by_identity[identity]

    def _authenticate(self, view: RequestView, now: float) -> tuple[AccessToken, bool]:
        """Who is asking: the token of a token-bound session, or the token a
        verified, fresh Proof option names; and whether a proof said so."""
        identity = view.identity
        if identity is None:
            raise MissingToken("protected resources need a DTLS session")
        lockout = self.lockout
        if lockout is not None and now < lockout.ban_end:
            lockout.check(identity, view.address, now)
        proofs = view.proofs
        bound_kid = _bound_kid(identity)
        if bound_kid is not None and bound_kid in self.tokens:
            if proofs:
                raise AmbiguousAuthorization("token-bound session: send no Proof option")
            return self.tokens.get(bound_kid, now), False
        if not proofs:
            raise MissingToken("a Proof option is required")
        if len(proofs) > 1:
            raise MalformedError("more than one Proof option")
        proof = parse_proof(proofs[0])
        token = self.tokens.peek(proof.kid)
        if token is None:
            raise UnknownKey("no token for this key id: get one from the AS")
        proof.verify_parts(
            token.pop_key,
            view.method,
            view.path,
            view.query,
            view.content_format,
            view.payload,
            view.echo,
        )
        self.guard.commit(token.kid, proof.piv, view.echo, now)
        self.decisions.proofs_verified += 1
        return token, True


@functools.lru_cache(maxsize=65536)
def _bound_kid(identity: bytes) -> bytes | None:
    """The PoP kid an RFC 9202 psk_identity names (cached per identity)."""
    return cnf_mod.parse_psk_identity(identity)


def _session_client(identity: bytes) -> str | None:
    """The client id a (non-RFC 9202) PSK identity names."""
    try:
        return identity.decode("utf-8")
    except UnicodeDecodeError:
        return None


def client_label(identity: bytes | None) -> str | None:
    """The client id of an identity for an audit record; None for an RFC
    9202 identity (its kid is recorded instead) or bytes that are no text."""
    if identity is None or _bound_kid(identity) is not None:
        return None
    return _session_client(identity)


__all__ = [
    "ACE_ENDPOINTS",
    "FAILED_PROOF",
    "OPEN",
    "UNPROTECTED",
    "Allow",
    "Authorizer",
    "Decisions",
    "Refuse",
    "RequestView",
    "Verdict",
    "covered_options",
]
