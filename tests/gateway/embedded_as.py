"""Tokens of an embedded AS for the sans-I/O tests: its keys, a client's
policy and :func:`issue` (RFC 9200 §5.8 responses minted at :data:`NOW`)."""

from __future__ import annotations

from gateway.authorization_server.token_endpoint import (
    AuthorizationServer,
    ClientPolicy,
    IssuedToken,
)
from tokens.ace import TokenRequest
from tokens.aif import Scope
from tokens.keys import Ec2Key, SymmetricKey
from tokens.params import Alg

NOW = 1_800_000_000.0
ISSUER = "as"
SIGNING = Ec2Key.generate(b"as-sign")
AS_RS = SymmetricKey.generate(b"as-rs", Alg.AES_CCM_16_64_128)
SENSOR = ClientPolicy("sensor-1", Scope.parse("/temp:GET"), None, (), None)


def authorization_server(
    audience: str = "rs", *, lifetime: float = 600, as_rs: SymmetricKey = AS_RS
) -> AuthorizationServer:
    """The AS, its tokens encrypted under ``as_rs`` (COSE_Encrypt0)."""
    return AuthorizationServer(
        issuer=ISSUER,
        audiences=(audience,),
        lifetime=lifetime,
        signing_key=lambda: SIGNING,
        as_rs_key=lambda: as_rs,
    )


def issue(
    audience: str = "rs",
    *,
    client: ClientPolicy = SENSOR,
    request: TokenRequest | None = None,
    lifetime: float = 600,
    as_rs: SymmetricKey = AS_RS,
) -> IssuedToken:
    server = authorization_server(audience, lifetime=lifetime, as_rs=as_rs)
    return server.issue(request or TokenRequest(), client, NOW)
