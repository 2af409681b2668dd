"""The ACE endpoints over real DTLS on loopback: /token (RFC 9200 §5.8),
/authz-info (§5.10.1), /introspect (§5.9) and the RFC 9202 kid identity."""

from __future__ import annotations

import asyncio

import cbor2
import pytest
from aiocoap.numbers.codes import Code

from tokens import cnf as cnf_mod
from tokens.ace import (
    ErrorResponse,
    IntrospectionRequest,
    IntrospectionResponse,
    TokenRequest,
    TokenResponse,
)
from tokens.aif import Scope
from tokens.cwt import Claims, TokenVerifier, mint
from tokens.keys import Ec2Key, SymmetricKey
from tokens.params import AceError, Alg

from .conftest import DEVICE_ID, DEVICE_PSK, DEVICE_SCOPE, device


def verifier(gw) -> TokenVerifier:
    return TokenVerifier(
        audience=gw.config.rs.audience,
        keys=gw.keystore.verification_keys(),
        decryption_keys=gw.keystore.decryption_keys(),
        issuer=gw.config.as_.issuer,
    )


async def get_token(dev, **request) -> TokenResponse:
    resp = await dev.post("/token", TokenRequest(**request).encode())
    assert resp.code == Code.CREATED, (resp.code, resp.payload)
    assert resp.opt.content_format == 19
    return TokenResponse.decode(resp.payload)


async def test_symmetric_pop_token_then_authz_info(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        tr = await get_token(dev, scope="/temp:GET")
        claims = verifier(gateway).verify(tr.access_token, gateway.clock())
        assert claims.sub == DEVICE_ID and claims.iss == gateway.config.as_.issuer
        assert Scope.from_scope_param(claims.scope) == Scope.parse("/temp:GET")
        assert tr.expires_in == gateway.config.as_.token_lifetime
        assert len(tr.access_token) <= 160
        # the PoP key the device got is the one inside the (encrypted) token
        pop = cnf_mod.decode(tr.cnf)
        assert isinstance(pop, cnf_mod.CnfKey) and isinstance(pop.key, SymmetricKey)
        assert pop.key.secret == claims.cnf.key.secret and len(pop.key.secret) == 16
        resp = await dev.post("/authz-info", tr.access_token)
        assert resp.code == Code.CREATED
        assert pop.key.kid in gateway.tokens
    audit = (gateway.config.base_dir / "audit.log").read_text()
    assert '"event":"token","decision":"issue"' in audit
    assert pop.key.secret.hex() not in audit and tr.access_token.hex() not in audit


async def test_default_scope_is_returned_when_none_requested(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        tr = await get_token(dev)
        assert Scope.from_scope_param(tr.scope) == Scope.parse(DEVICE_SCOPE)


async def test_asymmetric_pop_with_req_cnf(gateway):
    device_key = Ec2Key.generate(b"dev-key-1")
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        tr = await get_token(dev, req_cnf=cnf_mod.CnfKey(device_key.public()).to_cbor())
        # the device already holds its key: the AS names it by kid
        assert cnf_mod.decode(tr.cnf) == cnf_mod.CnfKid(b"dev-key-1")
        claims = verifier(gateway).verify(tr.access_token, gateway.clock())
        assert claims.cnf.key.encode() == device_key.public().encode()
        assert (await dev.post("/authz-info", tr.access_token)).code == Code.CREATED
        assert b"dev-key-1" in gateway.tokens


@pytest.mark.parametrize(
    "request_kwargs, error",
    [
        ({"scope": "/temp:GET,POST"}, AceError.INVALID_SCOPE),
        ({"scope": "/admin:GET"}, AceError.INVALID_SCOPE),
        ({"audience": "someone-else"}, AceError.INVALID_REQUEST),
        ({"grant_type": 0}, AceError.UNSUPPORTED_GRANT_TYPE),
        ({"req_cnf": {1: {1: 4, -1: b"k" * 16, 3: 4}}}, AceError.UNSUPPORTED_POP_KEY),
    ],
)
async def test_token_request_refusals(gateway, request_kwargs, error):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        resp = await dev.post("/token", TokenRequest(**request_kwargs).encode())
        assert resp.code == Code.BAD_REQUEST
        body = ErrorResponse.decode(resp.payload)
        assert body.error == error and body.error_description


async def test_client_id_mismatch_is_invalid_client(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        resp = await dev.post("/token", TokenRequest(client_id="sensor-2").encode())
        assert resp.code == Code.UNAUTHORIZED
        assert ErrorResponse.decode(resp.payload).error == AceError.INVALID_CLIENT


async def test_wrong_psk_fails_handshake_and_others_keep_working(gateway):
    async with device(gateway, DEVICE_ID.encode(), b"wrong-psk-000000") as bad:
        with pytest.raises((asyncio.TimeoutError, Exception)) as info:
            await bad.post("/token", TokenRequest().encode(), timeout=3)
        assert not isinstance(info.value, AssertionError)
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as good:
        await get_token(good)
    assert gateway.dtls.stats().handshakes_failed >= 1


async def test_disabled_client_is_refused(gateway):
    gateway.registry.add("sensor-2", psk=b"sensor-2-psk-abc", scope="/temp:GET")
    async with device(gateway, b"sensor-2", b"sensor-2-psk-abc") as dev:
        await get_token(dev)
        gateway.registry.disable("sensor-2")
        gateway.housekeeping(gateway.clock())  # what the 0.25 s task does
        assert gateway.dtls.remotes(b"sensor-2") == []
        with pytest.raises((asyncio.TimeoutError, Exception)) as info:
            await dev.post("/token", TokenRequest().encode(), timeout=5)
        assert not isinstance(info.value, AssertionError)


@pytest.mark.parametrize(
    "payload, content_format, code",
    [
        (b"\xff\xfe", 19, Code.BAD_REQUEST),  # malformed CBOR
        (cbor2.dumps([1, 2, 3]), 19, Code.BAD_REQUEST),  # not a map
        (cbor2.dumps({9: 12345}), 19, Code.BAD_REQUEST),  # scope of the wrong type
        (cbor2.dumps({5: ["a"]}), 19, Code.BAD_REQUEST),  # audience of the wrong type
        (b"", 19, Code.BAD_REQUEST),  # empty
        (cbor2.dumps({9: "/temp:GET"}), 50, Code.UNSUPPORTED_CONTENT_FORMAT),  # JSON
        (b"\xa1\x09\x59\x10\x00" + b"a" * 4096, 19, Code.REQUEST_ENTITY_TOO_LARGE),
    ],
)
async def test_hostile_token_requests(gateway, payload, content_format, code):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        resp = await dev.post("/token", payload, content_format=content_format)
        assert resp.code == code
        await get_token(dev)  # and the gateway keeps serving


def _mint(gw, *, key=None, **overrides) -> bytes:
    now = int(gw.clock())
    pop = SymmetricKey(b"pop-kid-1", b"p" * 16)
    claims = dict(
        iss=gw.config.as_.issuer,
        sub=DEVICE_ID,
        aud=gw.config.rs.audience,
        exp=now + 600,
        iat=now,
        cti=b"cti-1",
        cnf=cnf_mod.CnfKey(pop),
        scope=Scope.parse("/temp:GET").encode(),
    )
    claims.update(overrides)
    return mint(Claims(**claims), key or gw.keystore.as_rs_key())


async def test_authz_info_codes_in_rfc_order(gateway):
    now = int(gateway.clock())
    other_key = SymmetricKey(gateway.keystore.as_rs_key().kid, b"x" * 16, Alg.AES_CCM_16_64_128)
    unknown_kid = SymmetricKey(b"nobody", b"x" * 16, Alg.AES_CCM_16_64_128)
    tampered = bytearray(_mint(gateway))
    tampered[-3] ^= 0x40
    cases = [
        (b"\x01\x02", Code.BAD_REQUEST),  # not a token
        (cbor2.dumps(["not", "cose"]), Code.BAD_REQUEST),
        (bytes(tampered), Code.UNAUTHORIZED),  # AEAD tag fails
        (_mint(gateway, key=other_key), Code.UNAUTHORIZED),  # wrong key, same kid
        (_mint(gateway, key=unknown_kid), Code.UNAUTHORIZED),
        (_mint(gateway, iss="evil-as"), Code.UNAUTHORIZED),
        (_mint(gateway, exp=now - 3600), Code.UNAUTHORIZED),
        (_mint(gateway, exp=now - 10), Code.UNAUTHORIZED),  # expired, within the leeway
        (_mint(gateway, aud="another-rs"), Code.FORBIDDEN),
        (_mint(gateway, scope=b"\x82\x01\x02"), Code.BAD_REQUEST),  # unknown scope
        (_mint(gateway), Code.CREATED),
    ]
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        for token, code in cases:
            resp = await dev.post("/authz-info", token)
            assert resp.code == code, (token.hex(), resp.code, resp.payload)
        # wrapped in a byte string, or an ace+cbor map: same token accepted
        assert (await dev.post("/authz-info", cbor2.dumps(_mint(gateway)))).code == Code.CREATED
        wrapped = cbor2.dumps({1: _mint(gateway)})
        assert (await dev.post("/authz-info", wrapped)).code == Code.CREATED


async def test_new_token_for_same_pop_key_supersedes(gateway):
    first = _mint(gateway, cti=b"first")
    second = _mint(gateway, cti=b"second")
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        assert (await dev.post("/authz-info", first)).code == Code.CREATED
        assert (await dev.post("/authz-info", second)).code == Code.CREATED
    assert gateway.tokens.peek(b"pop-kid-1").cti == b"second" and len(gateway.tokens) == 1


async def test_revoked_token_and_disabled_subject_refused(gateway):
    gateway.registry.revoke(b"cti-revoked", gateway.clock() + 600)
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        resp = await dev.post("/authz-info", _mint(gateway, cti=b"cti-revoked"))
        assert resp.code == Code.UNAUTHORIZED
        resp = await dev.post("/authz-info", _mint(gateway, sub="ghost"))
        assert resp.code == Code.UNAUTHORIZED


async def test_rfc9202_kid_identity_session_and_teardown_on_expiry(gateway):
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        tr = await get_token(dev)
        assert (await dev.post("/authz-info", tr.access_token)).code == Code.CREATED
    pop = cnf_mod.decode(tr.cnf).key
    identity = cnf_mod.psk_identity_for_kid(pop.kid)
    async with device(gateway, identity, pop.secret) as bound:
        # the handshake with the token's PoP key succeeds; the session is a
        # token session, not a client session, so /token refuses it
        resp = await bound.post("/token", TokenRequest().encode())
        assert resp.code == Code.UNAUTHORIZED
        assert len(gateway.dtls.remotes(identity)) == 1
        # when the token expires the session is torn down (RFC 9202 §5)
        gateway.housekeeping(gateway.clock() + gateway.config.as_.token_lifetime + 1)
        assert gateway.dtls.remotes(identity) == []
        assert pop.kid not in gateway.tokens


async def test_introspection_for_a_resource_server_client(gateway):
    gateway.registry.add("rs-1", psk=b"rs-1-psk-abcdefg", scope="/introspect:POST")
    async with device(gateway, DEVICE_ID.encode(), DEVICE_PSK) as dev:
        tr = await get_token(dev)
        # a device may not introspect
        resp = await dev.post("/introspect", IntrospectionRequest(token=tr.access_token).encode())
        assert resp.code == Code.UNAUTHORIZED
    async with device(gateway, b"rs-1", b"rs-1-psk-abcdefg") as rs:
        resp = await rs.post("/introspect", IntrospectionRequest(token=tr.access_token).encode())
        assert resp.code == Code.CONTENT
        info = IntrospectionResponse.decode(resp.payload)
        assert info.active and info.sub == DEVICE_ID and info.cti
        resp = await rs.post("/introspect", IntrospectionRequest(token=b"\x84garbage").encode())
        assert IntrospectionResponse.decode(resp.payload).active is False
        gateway.registry.revoke(info.cti, info.exp)
        resp = await rs.post("/introspect", IntrospectionRequest(token=tr.access_token).encode())
        assert IntrospectionResponse.decode(resp.payload).active is False


def test_pop_kids_and_keys_never_contain_nul(gateway):
    """They become an RFC 9202 psk_identity and PSK; C-string DTLS clients
    would cut them at a NUL. The random source here yields mostly zeros."""
    from gateway.authorization_server.token_endpoint import POP_KEY_BYTES

    draws = iter([b"\x00" * 15 + b"\x01", b"\x00\x02" * 8, b"\x03" * 16] * 10)
    gateway.authorization_server._random = lambda n: next(draws)[:n]
    key = gateway.authorization_server._no_nul(POP_KEY_BYTES)
    assert len(key) == POP_KEY_BYTES and b"\x00" not in key
    assert key.startswith(b"\x01\x02")
