"""The resource server's token intake: /authz-info (RFC 9200 §5.10.1).

:class:`TokenIntake` verifies an uploaded token and turns it into an
:class:`~gateway.resource_server.token_store.AccessToken`, with the response codes in the
order RFC 9200 §5.10.1.1 lists them: unparsable token 4.00, bad signature or
issuer 4.01, expired 4.01, wrong audience 4.03, unknown scope 4.00. Tokens
come from the embedded AS or, in external-AS mode, from configured issuers;
the key id in the token's COSE header picks the issuer (never tried in turn).
Sans-I/O: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.resource_server.token_store import AccessToken
from tokens import cnf as cnf_mod
from tokens.aif import Scope
from tokens.cwt import Claims, TokenVerifier, decode_unverified
from tokens.errors import (
    AuthenticationError,
    Expired,
    InvalidScope,
    MalformedError,
    Revoked,
    TokenError,
    UnknownKey,
)
from tokens.keys import KeySet


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """An issuer whose tokens this resource server accepts."""

    name: str
    keys: KeySet  # signature / MAC keys
    decryption_keys: KeySet  # AS-RS keys for Encrypt0 tokens


class TokenIntake:
    """Verifies access tokens for one audience (RFC 9200 §5.10.1.1)."""

    def __init__(
        self,
        *,
        audience: str,
        issuers: list[TrustedIssuer],
        leeway: float = 30.0,
        is_revoked: Callable[[bytes], bool] = lambda cti: False,
        is_client_enabled: Callable[[str], bool] = lambda client_id: True,
        cut_off: Callable[[str, float | None], bool] = lambda client_id, iat: False,
    ) -> None:
        """``cut_off(sub, iat)``: whether a token issued then predates the
        client's last disable (refused like a disabled client)."""
        self.audience = audience
        self._issuers = issuers
        self._verifiers = [
            TokenVerifier(
                audience=audience,
                keys=i.keys,
                decryption_keys=i.decryption_keys,
                issuer=i.name,
                leeway=leeway,
            )
            for i in issuers
        ]
        self._is_revoked = is_revoked
        self._is_client_enabled = is_client_enabled
        self._cut_off = cut_off

    def _verifier_for(self, token: bytes) -> TokenVerifier:
        if len(self._verifiers) == 1:
            return self._verifiers[0]
        kid = decode_unverified(token).kid
        for issuer, verifier in zip(self._issuers, self._verifiers, strict=True):
            if kid is not None and (kid in issuer.keys or kid in issuer.decryption_keys):
                return verifier
        raise UnknownKey("no trusted issuer has this key id")

    def accept(self, token: bytes, now: float) -> AccessToken:
        """Verify ``token`` and return what authorization needs, or raise the
        :class:`TokenError` whose CoAP code RFC 9200 §5.10.1.1 prescribes."""
        claims = self._verifier_for(token).verify(token, now)
        if claims.exp is not None and claims.exp <= now:
            # Within the leeway the signature check passes, but a token that
            # this RS would refuse on every request is no use to store.
            raise Expired("token expired")
        return self._access_token(claims)

    def _access_token(self, claims: Claims) -> AccessToken:
        if claims.scope is None:
            raise InvalidScope("token has no scope")
        try:
            scope = Scope.from_scope_param(claims.scope)
        except TokenError as exc:
            raise InvalidScope(f"token scope: {exc.description}") from None
        confirmation = claims.cnf
        if not isinstance(confirmation, cnf_mod.CnfKey):
            raise MalformedError("token cnf must carry the PoP key (COSE_Key)")
        pop_key = confirmation.key
        if not pop_key.kid:
            raise MalformedError("token PoP key has no kid")
        if claims.cti is None or claims.sub is None or claims.exp is None:
            raise MalformedError("token lacks cti, sub or exp")
        if self._is_revoked(claims.cti):
            raise Revoked("token revoked")
        if not self._is_client_enabled(claims.sub):
            raise SubjectDisabled("client disabled")
        if self._cut_off(claims.sub, claims.iat):
            raise TokenCutOff(CUT_OFF_MESSAGE)
        return AccessToken(
            kid=pop_key.kid,
            pop_key=pop_key,
            client_id=claims.sub,
            scope=scope,
            exp=float(claims.exp),
            cti=claims.cti,
            issuer=claims.iss or "",
            claims=claims,
        )


class SubjectDisabled(AuthenticationError):
    """The token's subject is disabled or unknown in the registry (4.01)."""

    reason = "client_disabled"


#: What a device is told of a token issued before its client's cut-off.
CUT_OFF_MESSAGE = (
    "token issued before the client's last cut-off (disabled, deleted or rights narrowed); "
    "request a new token"
)


class TokenCutOff(SubjectDisabled):
    """The token was issued at or before its client's cut-off: the client was
    disabled or deleted since, or its scope or audiences were narrowed
    (4.01; the device asks for a new token, RFC 9200 §5.10.1.1)."""

    reason = "token_cut_off"
