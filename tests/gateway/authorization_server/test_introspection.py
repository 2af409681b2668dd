"""The embedded AS's introspection decision (RFC 9200 §5.9.2) without
sockets: active for its own unrevoked tokens of an AS audience, inactive
with nothing else said for anything else."""

from __future__ import annotations

from gateway.authorization_server.introspection import Introspection
from tests.gateway.embedded_as import AS_RS, NOW, SIGNING, issue
from tokens import cnf as cnf_mod
from tokens.ace import IntrospectionResponse
from tokens.keys import KeySet, SymmetricKey
from tokens.params import Alg


def mint(audience: str = "rs-1", as_rs: SymmetricKey = AS_RS) -> tuple[bytes, bytes]:
    """A token of the AS, encrypted under the AS-RS key (COSE_Encrypt0)."""
    issued = issue(audience, as_rs=as_rs)
    return issued.response.access_token, issued.cti


class Keys:
    def __init__(self) -> None:
        self.decryption = KeySet([AS_RS])
        self.revoked: set[bytes] = set()

    def introspection(self) -> Introspection:
        return Introspection(
            issuer="as",
            audiences=lambda: ("rs-1", "rs-2"),
            keys=lambda: KeySet([SIGNING]),
            decryption_keys=lambda: self.decryption,
            is_revoked=self.revoked.__contains__,
            leeway=lambda: 0.0,
        )


def test_an_own_token_is_active_with_its_claims_and_pop_key():
    token, cti = mint("rs-2")
    answer = Keys().introspection()(token, NOW + 1)
    assert answer.active and (answer.iss, answer.sub, answer.aud) == ("as", "sensor-1", "rs-2")
    assert answer.cti == cti and answer.exp == NOW + 600
    key = cnf_mod.decode(answer.cnf).key  # the RS needs the PoP key (over DTLS)
    assert isinstance(key, SymmetricKey)
    assert IntrospectionResponse.decode(answer.encode()).active


def test_revoked_expired_foreign_audience_and_unknown_key_are_inactive():
    keys = Keys()
    introspect = keys.introspection()
    token, cti = mint()
    assert introspect(token, NOW + 600).active is False  # expired
    assert introspect(mint("other-rs")[0], NOW).active is False
    stranger = SymmetricKey.generate(b"as-rs", Alg.AES_CCM_16_64_128)  # same kid, other key
    assert introspect(mint(as_rs=stranger)[0], NOW).active is False
    assert introspect(b"\x84garbage", NOW).active is False
    keys.revoked.add(cti)
    inactive = introspect(token, NOW)
    assert inactive == IntrospectionResponse.inactive()  # nothing else said


def test_keys_are_asked_at_each_call():
    keys = Keys()
    introspect = keys.introspection()
    token, _ = mint()
    assert introspect(token, NOW).active
    keys.decryption = KeySet([SymmetricKey.generate(b"new", Alg.AES_CCM_16_64_128)])  # retired
    assert not introspect(token, NOW).active
