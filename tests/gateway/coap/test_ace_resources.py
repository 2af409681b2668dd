"""The ACE endpoint resources without sockets (RFC 9200 §5.8, §5.9,
§5.10.1): each decodes, calls its decision and encodes; refusals carry
their CoAP code and ACE error and are audited without secrets. The remote
stands for a DTLS session (its PSK identity and address); the DTLS side is
tested in tests/integration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiocoap
import cbor2
import pytest
from aiocoap.numbers.codes import Code

from gateway.authorization_server.introspection import Introspection
from gateway.authorization_server.token_endpoint import AuthorizationServer, ClientPolicy
from gateway.coap.ace_resources import (
    MAX_ACE_PAYLOAD,
    AuthzInfoResource,
    IntrospectResource,
    TokenResource,
    WhoAmIResource,
    token_from_authz_info,
)
from gateway.errors import GatewayError
from gateway.resource_server.token_intake import TokenIntake, TrustedIssuer
from tests.gateway.embedded_as import AS_RS, NOW, SENSOR, SIGNING, authorization_server
from tokens.ace import IntrospectionRequest, IntrospectionResponse, TokenRequest, TokenResponse
from tokens.aif import Scope
from tokens.errors import MalformedError
from tokens.keys import KeySet
from tokens.params import CONTENT_FORMAT_ACE_CBOR, AceError

RS = ClientPolicy("rs-1", Scope.parse("/introspect:POST"), None, (), None)


@dataclass
class SessionRemote:
    psk_identity: bytes | None
    hostinfo: str = "192.0.2.1:40000"


class Clients:
    def client_for_identity(self, identity: bytes) -> ClientPolicy | None:
        return {b"sensor-1": SENSOR, b"rs-1": RS}.get(identity)


def post(payload: bytes, identity: bytes | None = b"sensor-1", cf: int | None = 19):
    msg = aiocoap.Message(code=aiocoap.POST, payload=payload, content_format=cf)
    msg.remote = SessionRemote(identity)
    return msg


@pytest.fixture
def audit() -> list[dict[str, Any]]:
    return []


def server() -> AuthorizationServer:
    return authorization_server("rs-1")


def token_resource(audit: list) -> TokenResource:
    return TokenResource(server(), Clients(), lambda: NOW, lambda **kw: audit.append(kw))


def ace_error(resp: aiocoap.Message) -> int | None:
    """The ``error`` (30) of an RFC 9200 §5.8.3 error map."""
    if resp.opt.content_format != CONTENT_FORMAT_ACE_CBOR:
        return None
    return cbor2.loads(resp.payload).get(30)


async def test_token_issued_to_the_session_client_and_audited_without_secrets(audit):
    resp = await token_resource(audit).render_post(post(TokenRequest().encode()))
    assert resp.code == Code.CREATED and resp.opt.content_format == CONTENT_FORMAT_ACE_CBOR
    answer = TokenResponse.decode(resp.payload)
    assert answer.access_token and answer.cnf
    (record,) = audit
    assert record["decision"] == "issue" and record["client_id"] == "sensor-1"
    assert record["peer"] == "192.0.2.1:40000" and set(record) >= {"kid", "cti"}
    assert answer.access_token.hex() not in repr(record)


@pytest.mark.parametrize(
    "request_, code, error",
    [
        (post(b"\xa0", identity=None), Code.UNAUTHORIZED, AceError.INVALID_CLIENT),
        (post(b"\xa0", identity=b"stranger"), Code.UNAUTHORIZED, AceError.INVALID_CLIENT),
        (post(b"\xa0", cf=50), Code.UNSUPPORTED_CONTENT_FORMAT, None),
        (post(b"\x00" * (MAX_ACE_PAYLOAD + 1)), Code.REQUEST_ENTITY_TOO_LARGE, None),
        (post(b""), Code.BAD_REQUEST, AceError.INVALID_REQUEST),
        (post(b"\xff"), Code.BAD_REQUEST, AceError.INVALID_REQUEST),
    ],
    ids=["no-session-client", "unknown-client", "content-format", "too-large", "empty", "bad"],
)
async def test_token_refusals_carry_code_and_ace_error(audit, request_, code, error):
    resp = await token_resource(audit).render_post(request_)
    assert resp.code == code
    assert ace_error(resp) == error
    assert [r["decision"] for r in audit] == ["deny"]


async def test_a_payload_above_the_limit_gets_4_13_naming_the_limit(audit):
    resp = await token_resource(audit).render_post(post(b"\x00" * (MAX_ACE_PAYLOAD + 1)))
    assert resp.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert resp.opt.size1 == MAX_ACE_PAYLOAD  # RFC 7959 §2.9.3
    assert [(r["decision"], r["reason"]) for r in audit] == [("deny", "too_large")]


def introspect_resource(audit: list, revoked: set[bytes]) -> IntrospectResource:
    decide = Introspection(
        issuer="as",
        audiences=lambda: ("rs-1",),
        keys=lambda: KeySet([SIGNING]),
        decryption_keys=lambda: KeySet([AS_RS]),
        is_revoked=revoked.__contains__,
        leeway=lambda: 0.0,
    )
    return IntrospectResource(decide, Clients(), lambda: NOW, lambda **kw: audit.append(kw))


async def test_introspection_for_an_allowed_resource_server_only(audit):
    issued = server().issue(TokenRequest(), SENSOR, NOW)
    body = IntrospectionRequest(token=issued.response.access_token).encode()
    revoked: set[bytes] = set()
    resource = introspect_resource(audit, revoked)
    active = await resource.render_post(post(body, identity=b"rs-1"))
    assert active.code == Code.CONTENT and IntrospectionResponse.decode(active.payload).active
    revoked.add(issued.cti)
    inactive = await resource.render_post(post(body, identity=b"rs-1"))
    assert not IntrospectionResponse.decode(inactive.payload).active
    refused = await resource.render_post(post(body, identity=b"sensor-1"))  # no such scope
    assert refused.code == Code.UNAUTHORIZED
    assert ace_error(refused) == AceError.INVALID_CLIENT
    assert [r["decision"] for r in audit] == ["active", "inactive", "deny"]


def test_authz_info_payload_forms():
    token = server().issue(TokenRequest(), SENSOR, NOW).response.access_token
    assert token_from_authz_info(token) == token
    assert token_from_authz_info(cbor2.dumps(token)) == token
    assert token_from_authz_info(cbor2.dumps({1: token})) == token
    for bad in (cbor2.dumps({2: b"x"}), cbor2.dumps(7)):
        with pytest.raises(MalformedError):
            token_from_authz_info(bad)


async def test_authz_info_accepts_a_token_and_refuses_without_an_ace_body(audit):
    issuer = TrustedIssuer(name="as", keys=KeySet([SIGNING]), decryption_keys=KeySet([AS_RS]))
    intake = TokenIntake(audience="rs-1", issuers=[issuer], leeway=0)
    resource = AuthzInfoResource(
        lambda token, now, remote: intake.accept(token, now),
        lambda: NOW,
        lambda **kw: audit.append(kw),
    )
    token = server().issue(TokenRequest(), SENSOR, NOW).response.access_token
    created = await resource.render_post(post(token, identity=None))
    assert created.code == Code.CREATED
    refused = await resource.render_post(post(token[:-4], identity=None))
    assert refused.code in (Code.BAD_REQUEST, Code.UNAUTHORIZED)
    assert ace_error(refused) is None  # §5.10.1.1: no ACE error map
    assert [r["decision"] for r in audit] == ["accept", "deny"]
    assert audit[0]["client_id"] == "sensor-1"


async def test_whoami_refuses_outside_the_authorizing_site():
    request = aiocoap.Message(code=aiocoap.GET)
    request.remote = SessionRemote(b"sensor-1")
    with pytest.raises(GatewayError):
        await WhoAmIResource().render_get(request)
