"""The authorization layer in front of every protected resource.

:class:`AuthorizingSite` wraps the aiocoap site (like aiocoap's OSCORE site
wrapper): for a protected path it authorizes the request as received, before
the site dispatches it, and hands the result to the resource through
:data:`gateway.resource_server.auth_context.CURRENT`. The ACE endpoints (/token,
/introspect, /authz-info) and /.well-known/core are not protected.

A request is authorized by exactly one of (docs/design.md "Wire formats"):

* a valid Proof option (65001) on a client's DTLS session, checked in this
  order: parse (4.00) -> token by kid (4.01 with AS Request Creation Hints,
  RFC 9200 §5.3) -> MAC/signature (4.01) -> replay window / Echo (4.01 with
  an Echo option, RFC 9175 §2.4) -> token exp, revocation, client enabled and
  bound to this session (4.01) -> rate limit (4.29, RFC 8516) -> scope for
  path and method (4.03 / 4.05, RFC 9200 §5.10.2);
* an RFC 9202 DTLS session whose psk_identity names the token's PoP key: no
  Proof option (one there is refused with 4.00), then the same checks from
  "token exp" on.

A warm request (a canonical Mac0 proof of the token whose proofs verified
on this session before, its standing current) is decided in one step: its
:class:`Admission` (in C when ``gateway.resource_server._admission`` is built) runs the proof
check, the window, the rate limit and the remembered scope mask in one call.

The sequence number is committed once the proof verified and the window
accepts it, before the policy checks, so even a refused request's proof
cannot be replayed. NON requests that fail a security check get no response
(RFC 7967 No-Response semantics, docs/design.md "Errors"). Block-wise requests
are reassembled first: the proof covers the whole body (docs/authorization.md).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import aiocoap
import aiocoap.interfaces
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type

from gateway.coap.ace_resources import error_response, peer_of
from gateway.errors import GatewayError
from gateway.resource_server.auth_context import CURRENT, AuthContext
from gateway.resource_server.lockout import Lockout
from gateway.resource_server.rate_limits import RateLimiter, TooManyRequests
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
from tokens.params import CONTENT_FORMAT_ACE_CBOR, PROOF_OPTION, CoapCode
from tokens.proof import covered, mac_proof_check, parse_proof
from tokens.replay import FreshnessGuard

log = logging.getLogger(__name__)

#: Paths served without authorization (the ACE endpoints themselves).
UNPROTECTED = frozenset({("token",), ("introspect",), ("authz-info",), (".well-known", "core")})
_WELL_KNOWN = (".well-known", "core")
#: Largest request body (after Block1 reassembly) accepted on any path.
DEFAULT_MAX_BODY = 1024 * 1024
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
#: Option numbers aiocoap knows; others that are critical get 4.02.
_KNOWN_OPTIONS = frozenset(int(o) for o in OptionNumber.__members__.values()) | {PROOF_OPTION}


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


class BadOption(GatewayError):
    """An unrecognised critical option (RFC 7252 §5.4.1: 4.02)."""

    coap_code = CoapCode.BAD_OPTION
    reason = "bad_option"


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


class Admission:
    """The one-step path of one held token's canonical Mac0 proofs: the
    checks after the token's standing, in the order in docs/authorization.md, with the objects
    that make them. ``gateway.resource_server._admission.Admission`` is its C twin (the one
    used when built), held by the tests to the same answers. :meth:`admit`
    says what the caller is to do:

    * None: the proof did not verify or the window refused its piv; nothing
      changed, the general path decides and says why;
    * 0.0: admitted (piv committed, one token spent, the scope grants the
      method on the path);
    * > 0: piv committed, rate limited: 4.29 with this many seconds to wait
      (RFC 8516 §2);
    * -1.0: piv committed and token spent, but the scope's answer for the
      path is not remembered or refuses: ask the scope (4.03 / 4.05)."""

    __slots__ = ("client_id", "kid", "limiter", "masks", "rate", "verifier", "windows")

    def __init__(
        self,
        verifier: Any,
        windows: Any,
        kid: bytes,
        limiter: Any,
        client_id: str,
        rate: float | None,
        masks: dict[tuple[str, ...], int],
    ) -> None:
        self.verifier = verifier
        self.windows = windows
        self.kid = kid
        self.limiter = limiter
        self.client_id = client_id
        self.rate = rate
        self.masks = masks

    def admit(
        self,
        option_value: bytes,
        code: int,
        path: tuple[str, ...],
        options: Any,
        payload: bytes,
        now: float,
    ) -> float | None:
        """The verdict for one request (see the class docstring)."""
        code = int(code)
        piv = self.verifier.check_options(option_value, code, path, options, payload)
        if piv is None or not self.windows.accept(self.kid, piv):
            return None
        wait: float = self.limiter.wait(self.client_id, now, self.rate)
        if wait:
            return wait
        mask = self.masks.get(path)
        if mask is None or not 1 <= code <= 63 or not mask >> (code - 1) & 1:
            return -1.0
        return 0.0


if TYPE_CHECKING:
    _Admission = Admission
else:
    try:
        from gateway.resource_server._admission import Admission as _Admission
    except ImportError:  # built by `pip install` (setup.py); Python stands in
        _Admission = Admission

#: Whether the one-step path runs in C (``gateway.resource_server._admission``).
ACCELERATED = _Admission is not Admission


class _Standing:
    """What authorization remembers about one held token between requests:
    the per-token answers (revoked, client enabled, rate) as of a registry
    version, the identity its proofs were last seen on, the methods its
    scope grants on the paths asked for, and the two :class:`AuthContext`
    values a request can get. Rebuilt when the token object, the registry
    version or the configuration changes."""

    __slots__ = (
        "admission",
        "by_proof",
        "by_session",
        "disabled",
        "identity",
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
        self.rate = authorizer._device_rate(token.client_id)
        #: the client identity (not an RFC 9202 one) its proofs verified on
        self.identity: bytes | None = None
        self.by_proof = _context(token, "proof")
        self.by_session = _context(token, "session")
        #: Uri-Path -> the AIF method mask the scope grants there (RFC 9237 §2.3)
        self.masks: dict[tuple[str, ...], int] = {}
        #: the one-step path of its Mac0 proofs; None when it has none (an
        #: asymmetric PoP key) or every request of it is refused anyway
        self.admission: Admission | _Admission | None = None
        key = token.pop_key
        if isinstance(key, SymmetricKey) and not (self.revoked or self.disabled):
            self.admission = _Admission(
                mac_proof_check(key),
                authorizer.guard,
                token.kid,
                authorizer._limits,
                token.client_id,
                self.rate,
                self.masks,
            )

    def learn_methods(self, path: tuple[str, ...]) -> int:
        """The method mask the token's scope grants on ``path``, for a path
        not in :attr:`masks` yet (callers look there first); remembered."""
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
    """The decision procedure; no CoAP in it beyond reading the request.

    ``version`` returns a number that changes whenever ``is_revoked`` or
    ``client_enabled`` may answer differently (the registry's version); their
    answers are remembered per token until it changes. Call :meth:`forget`
    when ``device_rate`` may answer differently (a configuration reload)."""

    def __init__(
        self,
        *,
        tokens: TokenStore,
        guard: FreshnessGuard,
        is_revoked: Callable[[bytes], bool],
        client_enabled: Callable[[str], bool],
        session_client: Callable[[bytes], str | None],
        device_limits: RateLimiter,
        device_rate: Callable[[str], float | None] = lambda client_id: None,
        version: Callable[[], int],
        lockout: Lockout | None = None,
        hints: Callable[[aiocoap.Message], CreationHints],
        clock: Callable[[], float],
    ) -> None:
        self.tokens = tokens
        self.guard = guard
        self._is_revoked = is_revoked
        self._client_enabled = client_enabled
        self._session_client = session_client
        self._limits = device_limits
        self._device_rate = device_rate
        self._version = version
        self.lockout = lockout
        self.hints = hints
        self._clock = clock
        self.decisions = Decisions()
        self._standing: dict[bytes, _Standing] = {}
        #: client identity -> the standing whose proofs last verified on it
        self._by_identity: dict[bytes, _Standing] = {}

    def forget(self) -> None:
        """Drop every remembered per-token answer (configuration reloaded)."""
        self._standing.clear()
        self._by_identity.clear()

    def authorize(
        self, request: aiocoap.Message, path: tuple[str, ...] | None = None
    ) -> AuthContext:
        """Authorize ``request`` (see the module docstring) or raise the error
        whose CoAP code is the answer. ``path``: its Uri-Path, if at hand.

        The common request is decided here in fewer steps: a canonical Mac0
        proof of the token whose proofs verified on this client identity
        before, whose standing is current and lets it through, with no ban
        anywhere. Whenever any of that does not hold, or a check fails before
        the piv is committed, nothing has changed and the general path
        decides, and says why; after the commit, the rate limit (4.29) and
        the scope (4.03 / 4.05) raise as in :meth:`_pass`."""
        now = self._clock()
        if path is None:
            path = tuple(request.opt.uri_path)
        proofs = request.opt._options.get(PROOF_OPTION, ())  # aiocoap 0.4.17's option dict
        identity: bytes | None = getattr(request.remote, "psk_identity", None)
        standing = self._by_identity.get(identity) if len(proofs) == 1 else None  # type: ignore[arg-type]
        if standing is not None:
            token = standing.token
            admission = standing.admission  # None: not a Mac0 key, or refused
            lockout = self.lockout
            if not (
                admission is None
                or token.exp <= now
                or (lockout is not None and now < lockout.ban_end)
                or standing.version != self._version()
                or self.tokens.peek(token.kid) is not token
            ):
                verdict = admission.admit(
                    proofs[0].value, request.code, path, request.opt._options, request.payload, now
                )
                if verdict is not None:
                    self.decisions.proofs_verified += 1
                    if verdict:
                        if verdict > 0:
                            raise TooManyRequests(verdict)
                        self._scope(standing, path, int(request.code))
                    return standing.by_proof
        return self._authorize(request, identity, path, proofs, now)

    def _authorize(
        self,
        request: aiocoap.Message,
        identity: bytes | None,
        path: tuple[str, ...],
        proof_options: Any,
        now: float,
    ) -> AuthContext:
        """The general path: every check in the order in docs/authorization.md, each failure
        raised with its reason."""
        try:
            token, by_proof = self._authenticate(request, identity, path, proof_options, now)
        except (TokenError, GatewayError) as exc:
            if proof_options:
                self.decisions.reject_proof(exc.reason)
            raise
        # token theft: a proof is only good on a session of the token's client
        standing = self._standing.get(token.kid)
        seen = standing is not None and standing.token is token and identity == standing.identity
        if by_proof and not seen and self._session_client(identity) != token.client_id:  # type: ignore[arg-type]
            raise SessionMismatch("token not issued to this session's client")
        # exp, revocation, client enabled (RFC 9200 §5.10.1.1 / docs/authorization.md order)
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
        self._admit(standing, path, int(request.code), now)
        return standing.by_proof if by_proof else standing.by_session

    def _admit(self, standing: _Standing, path: tuple[str, ...], code: int, now: float) -> None:
        """The checks after authentication, in the order in docs/authorization.md: exp,
        revocation, client enabled (4.01), then :meth:`_pass`."""
        if standing.token.exp <= now:
            raise Expired("token expired")
        if standing.revoked:
            raise Revoked("token revoked")
        if standing.disabled:
            raise Revoked("client disabled")
        self._pass(standing, path, code, now)

    def _pass(self, standing: _Standing, path: tuple[str, ...], code: int, now: float) -> None:
        """The last checks, for a token that is current, held and refused
        by nothing: device rate limit (4.29), then :meth:`_scope`."""
        self._limits.take(standing.token.client_id, now, rate=standing.rate)
        self._scope(standing, path, code)

    @staticmethod
    def _scope(standing: _Standing, path: tuple[str, ...], code: int) -> None:
        """The scope for path and method (4.03 / 4.05, RFC 9200 §5.10.2)."""
        mask = standing.masks.get(path)
        if mask is None:
            mask = standing.learn_methods(path)
        if not mask >> (code - 1) & 1:  # AIF bit (RFC 9237 §2.3)
            standing.token.scope.check(path, code)  # raises 4.03 or 4.05, saying which

    def _prune(self) -> None:
        held = self.tokens.peek
        for kid in [k for k, s in self._standing.items() if held(k) is not s.token]:
            del self._standing[kid]
        current = self._standing.get
        stale = [i for i, s in self._by_identity.items() if current(s.token.kid) is not s]
        for identity in stale:
            del self._by_identity[identity]

    def _authenticate(
        self,
        request: aiocoap.Message,
        identity: bytes | None,
        path: tuple[str, ...],
        proof_options: Any,
        now: float,
    ) -> tuple[AccessToken, bool]:
        """Who is asking: the token of a token-bound session, or the token a
        verified, fresh Proof option names (the order in docs/authorization.md); and
        whether a proof said so."""
        if identity is None:
            raise MissingToken("protected resources need a DTLS session")
        lockout = self.lockout
        if lockout is not None and now < lockout.ban_end:
            address = getattr(request.remote, "address", None)
            lockout.check(identity, address[0] if address else None, now)
        bound_kid = _bound_kid(identity)
        if bound_kid is not None and bound_kid in self.tokens:
            if proof_options:
                raise AmbiguousAuthorization("token-bound session: send no Proof option")
            return self.tokens.get(bound_kid, now), False
        if not proof_options:
            raise MissingToken("a Proof option is required")
        if len(proof_options) > 1:
            raise MalformedError("more than one Proof option")
        proof = parse_proof(proof_options[0].value)
        token = self.tokens.peek(proof.kid)
        if token is None:
            raise UnknownKey("no token for this key id: get one from the AS")
        code, query, content_format, payload, echo = covered(
            request.code, request.opt._options, request.payload
        )
        proof.verify_parts(token.pop_key, code, path, query, content_format, payload, echo)
        self.guard.commit(token.kid, proof.piv, echo, now)
        self.decisions.proofs_verified += 1
        return token, True


class AuthorizingSite(aiocoap.interfaces.Resource):  # type: ignore[misc]
    """Root resource: authorizes protected requests, then delegates to
    ``inner`` (an :class:`aiocoap.resource.Site`)."""

    def __init__(
        self,
        inner: Any,
        authorizer: Authorizer,
        audit: Callable[..., None],
        *,
        on_failure: Callable[[aiocoap.Message, str], None] | None = None,
        ace_limit: Callable[[aiocoap.Message], None] | None = None,
        unprotected: frozenset[tuple[str, ...]] = UNPROTECTED,
        max_body: int = DEFAULT_MAX_BODY,
        body_limit: Callable[[tuple[str, ...]], int | None] | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.authorizer = authorizer
        self._audit = audit
        self._on_failure = on_failure
        self._ace_limit = ace_limit
        self.unprotected = unprotected
        self.max_body = max_body
        #: Uri-Path -> a tighter limit of the resource there (a proxy route's)
        self._body_limit = body_limit
        # An audit sink that is off stays off (AuditLog's sink is fixed when
        # it opens; a closed one drops records): no record is built for it.
        self._audit_enabled = bool(getattr(audit, "enabled", True))

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return True

    def oversized(self, request: aiocoap.Message) -> aiocoap.Message | None:
        """4.13 with Size1 (RFC 7959 §2.9.3) for a body above ``max_body`` or
        above the limit ``body_limit`` gives its path, judged by Size1 and
        by where the block ends, before block-wise assembly spools it; None
        when it fits. Whatever is the root resource calls this first."""
        block1 = request.opt.block1
        size = len(request.payload)
        if block1 is not None:
            size += block1.block_number * block1.size
        size = max(request.opt.size1 or 0, size)
        if not size:
            return None
        limit = self.max_body
        if self._body_limit is not None:
            tighter = self._body_limit(tuple(request.opt.uri_path))
            if tighter is not None and tighter < limit:
                limit = tighter
        if size > limit:
            return aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE, size1=limit)
        return None

    async def render_to_pipe(self, pipe: Any) -> None:
        refusal = self.oversized(pipe.request)
        if refusal is not None:
            pipe.add_response(refusal, is_last=True)
            return
        await aiocoap.interfaces.Resource._render_to_pipe(self, pipe)

    def get_resources_as_linkheader(self) -> Any:
        return self.inner.get_resources_as_linkheader()

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        options = request.opt._options  # aiocoap 0.4.17: number -> options
        for number in options:
            if number & 1 and number not in _KNOWN_OPTIONS:
                unknown = min(n for n in options if n & 1 and n not in _KNOWN_OPTIONS)
                return _error(request, BadOption(f"critical option {unknown} not supported"))
        path = tuple(request.opt.uri_path)
        if path in self.unprotected:
            if self._ace_limit is not None and path in UNPROTECTED and path != _WELL_KNOWN:
                try:
                    self._ace_limit(request)
                except TooManyRequests as exc:
                    self.authorizer.decisions.refuse(exc.reason)
                    return _error(request, exc)
            return await self.inner.render(request)
        try:
            auth = self.authorizer.authorize(request, path)
        except (TokenError, GatewayError) as exc:
            return self._refuse(request, exc)
        self.authorizer.decisions.allowed += 1
        if self._audit_enabled:
            self._audit(
                event="request",
                decision="allow",
                reason="ok",
                peer=peer_of(request),
                client_id=auth.client_id,
                kid=auth.kid.hex(),
                cti=auth.cti.hex(),
                resource="/" + "/".join(path),
                method=str(request.code),
                via=auth.via,
            )
        # The proof is verified and committed: resources never need it, and
        # aiocoap's site dispatch copies every option of the request. It is
        # put back afterwards: the request leaves this layer as it came (the
        # Block2 cache keys continuations on the request as received).
        proofs = options.pop(PROOF_OPTION, None)
        reset = CURRENT.set(auth)
        try:
            return await self.inner.render(request)
        finally:
            CURRENT.reset(reset)
            if proofs is not None:
                options[proofs[0].number] = proofs

    def _refuse(self, request: aiocoap.Message, exc: TokenError | GatewayError) -> aiocoap.Message:
        self.authorizer.decisions.refuse(exc.reason)
        identity: bytes | None = getattr(request.remote, "psk_identity", None)
        proof = request.opt.get_option(PROOF_OPTION)
        kid = None
        if proof:
            try:
                kid = parse_proof(proof[0].value).kid.hex()
            except TokenError:
                kid = None
        self._audit(
            event="request",
            decision="deny",
            reason=exc.reason,
            code=CoapCode(int(exc.coap_code)).dotted,
            peer=peer_of(request),
            client_id=_client_label(identity),
            kid=kid,
            resource="/" + "/".join(request.opt.uri_path),
            method=str(request.code),
        )
        if exc.reason in FAILED_PROOF and self._on_failure is not None:
            self._on_failure(request, exc.reason)
        answered_anyway = isinstance(exc, EchoRequired | TooManyRequests)
        if request.mtype == Type.NON and not answered_anyway:
            # silence for NON requests failing security checks
            return aiocoap.Message(code=Code(int(exc.coap_code)), no_response=26)
        hints = None
        if isinstance(exc, MissingToken | UnknownKey):
            hints = self.authorizer.hints(request)
        return _error(request, exc, hints)


@functools.lru_cache(maxsize=65536)
def _bound_kid(identity: bytes) -> bytes | None:
    """The PoP kid an RFC 9202 psk_identity names (cached per identity)."""
    return cnf_mod.parse_psk_identity(identity)


def _client_label(identity: bytes | None) -> str | None:
    if identity is None or _bound_kid(identity) is not None:
        return None
    try:
        return identity.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _error(
    request: aiocoap.Message, exc: TokenError | GatewayError, hints: CreationHints | None = None
) -> aiocoap.Message:
    code = Code(int(exc.coap_code))
    if isinstance(exc, EchoRequired):
        return aiocoap.Message(code=code, echo=exc.echo)
    if isinstance(exc, TooManyRequests):
        return aiocoap.Message(code=code, max_age=exc.max_age)
    if hints is not None:
        return aiocoap.Message(
            code=code, payload=hints.encode(), content_format=CONTENT_FORMAT_ACE_CBOR
        )
    return error_response(exc, ace_body=False)


__all__ = ["ACCELERATED", "UNPROTECTED", "Admission", "Authorizer", "AuthorizingSite", "Decisions"]
