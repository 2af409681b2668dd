"""The embedded AS's introspection decision (RFC 9200 §5.9.2), sans-I/O:
a token of this AS is active when it verifies for one of the AS audiences
and is not revoked; anything else is inactive, with no reason given (the
response must not help a prober). The /introspect resource
(:mod:`gateway.coap.ace_resources`) authenticates the caller first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tokens.ace import IntrospectionResponse
from tokens.cwt import TokenVerifier
from tokens.errors import TokenError, WrongAudience
from tokens.keys import KeySet


class Introspection:
    """``introspection(token, now) -> IntrospectionResponse``.

    ``keys`` / ``decryption_keys`` are asked at each call, so rotated AS keys
    apply at once; ``is_revoked`` reads the revocation list by ``cti``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audiences: Callable[[], Sequence[str]],
        keys: Callable[[], KeySet],
        decryption_keys: Callable[[], KeySet],
        is_revoked: Callable[[bytes], bool],
        leeway: Callable[[], float],
    ) -> None:
        self._issuer = issuer
        self._audiences = audiences
        self._keys = keys
        self._decryption_keys = decryption_keys
        self._is_revoked = is_revoked
        self._leeway = leeway

    def __call__(self, token: bytes, now: float) -> IntrospectionResponse:
        keys, dec = self._keys(), self._decryption_keys()
        for audience in self._audiences():
            verifier = TokenVerifier(
                audience=audience,
                keys=keys,
                decryption_keys=dec,
                issuer=self._issuer,
                leeway=self._leeway(),
            )
            try:
                claims = verifier.verify(token, now)
            except WrongAudience:
                continue
            except TokenError:
                return IntrospectionResponse.inactive()
            if claims.cti is not None and self._is_revoked(claims.cti):
                return IntrospectionResponse.inactive()
            # the RS needs the PoP key (symmetric included): introspection runs over DTLS
            return IntrospectionResponse(
                active=True,
                iss=claims.iss,
                sub=claims.sub,
                aud=claims.aud if isinstance(claims.aud, str) else audience,
                exp=claims.exp,
                iat=claims.iat,
                cti=claims.cti,
                scope=claims.scope,
                cnf=None if claims.cnf is None else claims.cnf.to_cbor(),
            )
        return IntrospectionResponse.inactive()


__all__ = ["Introspection"]
