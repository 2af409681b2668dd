"""/authz-info's token verification (RFC 9200 §5.10.1.1 codes) against
tokens the embedded AS mints: sans-I/O, ``now`` passed in."""

from __future__ import annotations

import pytest

from gateway.resource_server.token_intake import TokenIntake, TrustedIssuer
from tests.gateway.embedded_as import AS_RS, NOW, SIGNING, issue
from tokens.ace import TokenRequest
from tokens.aif import Scope
from tokens.errors import Expired, MalformedError, Revoked, TokenError, UnknownKey, WrongAudience
from tokens.keys import Ec2Key, KeySet, SymmetricKey
from tokens.params import Alg, CoapCode


def mint(audience: str = "rs") -> bytes:
    request = TokenRequest(scope=Scope.parse("/temp:GET").encode())
    return issue(audience, request=request).response.access_token


def intake(**kw) -> TokenIntake:
    issuer = TrustedIssuer(name="as", keys=KeySet([SIGNING]), decryption_keys=KeySet([AS_RS]))
    return TokenIntake(audience="rs", issuers=[issuer], leeway=0, **kw)


def test_a_minted_token_is_accepted_with_its_pop_key():
    access = intake().accept(mint(), NOW)
    assert (access.client_id, str(access.scope), access.issuer) == ("sensor-1", "/temp:GET", "as")
    assert isinstance(access.pop_key, SymmetricKey) and access.kid == access.pop_key.kid
    assert access.exp == NOW + 600


@pytest.mark.parametrize(
    "token, now, kw, error, code",
    [
        (b"\xff\x00", NOW, {}, MalformedError, CoapCode.BAD_REQUEST),
        (None, NOW + 601, {}, Expired, CoapCode.UNAUTHORIZED),
        ("other-rs", NOW, {}, WrongAudience, CoapCode.FORBIDDEN),
        (None, NOW, {"is_revoked": lambda cti: True}, Revoked, CoapCode.UNAUTHORIZED),
        (None, NOW, {"is_client_enabled": lambda cid: False}, TokenError, CoapCode.UNAUTHORIZED),
    ],
    ids=["unparsable", "expired", "wrong-audience", "revoked", "client-disabled"],
)
def test_refusals_carry_their_code(token, now, kw, error, code):
    data = mint() if token is None else mint(token) if isinstance(token, str) else token
    with pytest.raises(error) as info:
        intake(**kw).accept(data, now)
    assert info.value.coap_code == code


def test_a_token_from_an_untrusted_key_is_unknown():
    stranger = TrustedIssuer(
        name="as",
        keys=KeySet([Ec2Key.generate(b"other")]),
        decryption_keys=KeySet([SymmetricKey.generate(b"other-rs", Alg.AES_CCM_16_64_128)]),
    )
    with pytest.raises((UnknownKey, TokenError)) as info:
        TokenIntake(audience="rs", issuers=[stranger]).accept(mint(), NOW)
    assert info.value.coap_code == CoapCode.UNAUTHORIZED
