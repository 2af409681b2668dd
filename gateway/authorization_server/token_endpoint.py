"""The embedded ACE authorization server: the /token decision (RFC 9200 §5.8).

Sans-I/O: :meth:`AuthorizationServer.issue` takes the decoded request, the
client that the DTLS layer authenticated and ``now``; it returns the token
response or raises a :class:`~tokens.errors.TokenError` that knows its ACE
error and CoAP code. The CoAP resource around it only decodes and encodes.

Token shapes (docs/design.md "Wire formats"):

* symmetric PoP (no ``req_cnf``): the AS mints a fresh HMAC 256/64 key, puts
  it in the token's ``cnf`` and in the response's ``cnf``; the token is a
  COSE_Encrypt0 (AES-CCM-16-64-128) under the AS-RS key, so it is
  self-contained and confidential;
* asymmetric PoP (``req_cnf`` = a public COSE_Key, or the kid of the key
  registered for the client): the token is a COSE_Sign1 by the AS signing
  key with the device's public key in ``cnf`` (RFC 8747 §3.2).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.aif import Scope
from tokens.cwt import Claims, mint
from tokens.errors import (
    InvalidClient,
    InvalidScope,
    MalformedError,
    TokenError,
    UnsupportedGrantType,
    UnsupportedPopKey,
)
from tokens.keys import CoseKey, SymmetricKey, key_from_cose
from tokens.params import AceError, AceProfile, GrantType, KeyType, TokenType

#: Size of AS-minted PoP keys: 128 bits (HMAC 256/64 key, RFC 9053 §3.1) —
#: also the DTLS PSK of an RFC 9202 token-bound session.
POP_KEY_BYTES = 16
#: Size of PoP key identifiers minted by the AS: random, so unlinkable.
POP_KID_BYTES = 8
#: Size of token identifiers (cti, RFC 8392 §3.1.7).
CTI_BYTES = 8


class InvalidAudience(TokenError):
    """The requested audience is not one this client may get tokens for
    (RFC 9200 §5.8.3 ``invalid_request``; the RFC defines no finer code)."""

    ace_error = AceError.INVALID_REQUEST
    reason = "invalid_audience"


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What the registry says about an authenticated client."""

    client_id: str
    allowed_scope: Scope
    default_scope: Scope | None
    audiences: tuple[str, ...]
    public_key: CoseKey | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """The outcome of a token request, for the response and the audit log."""

    response: TokenResponse
    claims: Claims
    pop_kid: bytes

    @property
    def cti(self) -> bytes:
        assert self.claims.cti is not None
        return self.claims.cti


class AuthorizationServer:
    """Issues access tokens (RFC 9200 §5.8) for clients the caller has
    authenticated. Keys come through callables, so a key rotation in the
    key store is seen by the next request."""

    def __init__(
        self,
        *,
        issuer: str,
        audiences: tuple[str, ...],
        lifetime: int,
        signing_key: Callable[[], CoseKey],
        as_rs_key: Callable[[], CoseKey],
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not audiences:
            raise ValueError("the AS needs at least one audience")
        self.issuer = issuer
        self.audiences = audiences
        self.lifetime = lifetime
        self._signing_key = signing_key
        self._as_rs_key = as_rs_key
        self._random = random

    def issue(self, request: TokenRequest, client: ClientPolicy, now: float) -> IssuedToken:
        """Decide a token request (RFC 9200 §5.8.1 -> §5.8.2 or §5.8.3).

        Checks, in order: grant type (client_credentials only), ``client_id``
        equal to the authenticated identity, audience, scope (requested must
        be a subset of allowed; absent = the client's default), PoP key.
        """
        if request.grant_type != GrantType.CLIENT_CREDENTIALS:
            raise UnsupportedGrantType("only client_credentials is supported")
        if request.client_id is not None and request.client_id != client.client_id:
            raise InvalidClient("client_id does not match the authenticated identity")
        audience = self._audience(request.audience, client)
        scope = self._scope(request, client)
        exp = int(now) + self.lifetime
        cti = self._random(CTI_BYTES)
        if request.req_cnf is None:
            return self._symmetric(
                client, audience, scope, int(now), exp, cti, request.scope is not None
            )
        device_key = self._requested_key(request.req_cnf, client)
        claims = Claims(
            iss=self.issuer,
            sub=client.client_id,
            aud=audience,
            exp=exp,
            iat=int(now),
            cti=cti,
            cnf=cnf_mod.CnfKey(device_key),
            scope=scope.encode(),
        )
        token = mint(claims, self._signing_key())
        response = TokenResponse(
            access_token=token,
            expires_in=self.lifetime,
            # the kid proofs must name (RFC 8747 §3.4), also when the AS
            # derived it because req_cnf carried none
            cnf=cnf_mod.CnfKid(device_key.kid).to_cbor(),
            ace_profile=AceProfile.COAP_DTLS,
            token_type=TokenType.POP,
            scope=scope.encode() if request.scope is None else None,
        )
        return IssuedToken(response, claims, device_key.kid)

    def _no_nul(self, size: int) -> bytes:
        """Random bytes without 0x00: the PoP key and its kid become the PSK
        and (in ``{8: {1: {1: 4, 2: kid}}}``) the psk_identity of an RFC 9202
        session, and C-string based DTLS clients (DTLSSocket, libcoap's
        ``-u``/``-k``) cut them at a NUL byte. Costs 0.7 bits of 128."""
        out = bytearray()
        while len(out) < size:
            out += self._random(size - len(out)).replace(b"\x00", b"")
        return bytes(out)

    def _audience(self, requested: str | None, client: ClientPolicy) -> str:
        allowed = [a for a in client.audiences if a in self.audiences] or (
            list(self.audiences) if not client.audiences else []
        )
        if not allowed:
            raise InvalidAudience("client may not get tokens for any audience of this AS")
        if requested is None:
            return allowed[0]
        if requested not in allowed:
            raise InvalidAudience("audience not allowed for this client")
        return requested

    @staticmethod
    def _scope(request: TokenRequest, client: ClientPolicy) -> Scope:
        if request.scope is None:
            scope = client.default_scope or client.allowed_scope
        else:
            scope = Scope.from_scope_param(request.scope)
            if not scope.is_subset_of(client.allowed_scope):
                raise InvalidScope("requested scope exceeds what the client may have")
        if not len(scope):
            raise InvalidScope("empty scope")
        return scope

    def _requested_key(self, req_cnf: dict[object, object], client: ClientPolicy) -> CoseKey:
        """The device's public key from ``req_cnf`` (RFC 9201 §5): a COSE_Key
        (must equal the registered key if one is registered) or a kid naming
        the registered key."""
        try:
            confirmation = cnf_mod.decode(req_cnf)
        except UnsupportedPopKey:
            raise
        except TokenError as exc:
            raise MalformedError(f"req_cnf: {exc.description}") from None
        if isinstance(confirmation, cnf_mod.CnfKid):
            if client.public_key is None or confirmation.kid != client.public_key.kid:
                raise UnsupportedPopKey("req_cnf kid does not name this client's registered key")
            return client.public_key
        if not isinstance(confirmation, cnf_mod.CnfKey):
            raise UnsupportedPopKey("req_cnf must be a COSE_Key or a kid")
        key = confirmation.key
        if key.kty == KeyType.SYMMETRIC:
            raise UnsupportedPopKey("symmetric PoP keys are minted by the AS; omit req_cnf")
        if key.has_private:
            raise UnsupportedPopKey("req_cnf must not carry a private key")
        if client.public_key is not None and client.public_key.encode() != key.encode():
            raise UnsupportedPopKey("req_cnf key differs from the client's registered key")
        if not key.kid:
            # A kid is how proofs name their key: derive one that is stable
            # for this key (RFC 8747 §3.4), so the device can compute it too.
            key = key_from_cose(key.encode(), kid=_thumbprint_kid(key))
        return key

    def _symmetric(
        self,
        client: ClientPolicy,
        audience: str,
        scope: Scope,
        iat: int,
        exp: int,
        cti: bytes,
        scope_requested: bool,
    ) -> IssuedToken:
        pop = SymmetricKey(self._no_nul(POP_KID_BYTES), self._no_nul(POP_KEY_BYTES))
        confirmation = cnf_mod.CnfKey(pop)
        claims = Claims(
            iss=self.issuer,
            sub=client.client_id,
            aud=audience,
            exp=exp,
            iat=iat,
            cti=cti,
            cnf=confirmation,
            scope=scope.encode(),
        )
        token = mint(claims, self._as_rs_key())
        response = TokenResponse(
            access_token=token,
            expires_in=self.lifetime,
            cnf=confirmation.to_cbor(),
            ace_profile=AceProfile.COAP_DTLS,
            token_type=TokenType.POP,
            scope=None if scope_requested else scope.encode(),
        )
        return IssuedToken(response, claims, pop.kid)


def _thumbprint_kid(key: CoseKey) -> bytes:
    """First 8 bytes of SHA-256 over the deterministic COSE_Key encoding."""
    return hashlib.sha256(key.encode()).digest()[:8]


def client_policy(
    client_id: str,
    scope_text: str,
    default_scope_text: str | None,
    audiences: tuple[str, ...],
    public_key: bytes | None,
) -> ClientPolicy:
    """Build a :class:`ClientPolicy` from registry fields (text scopes as
    configured, COSE_Key bytes)."""
    return ClientPolicy(
        client_id=client_id,
        allowed_scope=Scope.parse(scope_text),
        default_scope=Scope.parse(default_scope_text) if default_scope_text else None,
        audiences=audiences,
        public_key=key_from_cose(public_key) if public_key else None,
    )


__all__ = [
    "CTI_BYTES",
    "POP_KEY_BYTES",
    "AuthorizationServer",
    "ClientPolicy",
    "InvalidAudience",
    "IssuedToken",
    "client_policy",
]
