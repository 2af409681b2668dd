"""The Proof option against pycose 1.1.0 (RFC 9052 COSE_Mac0 / COSE_Sign1 with
a detached payload = our detached content): what we build, pycose verifies;
what pycose builds with the same headers, we accept."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from pycose.algorithms import HMAC25664, EdDSA, Es256
from pycose.headers import KID, Algorithm, PartialIV
from pycose.keys import CoseKey as PycoseKey
from pycose.messages import Mac0Message, Sign1Message

from tokens.errors import BadSignature
from tokens.keys import Ec2Key, OkpKey, SymmetricKey
from tokens.params import Alg, Method
from tokens.proof import ProofedRequest, build_proof, detached_content, encode_piv, parse_proof

pytestmark = pytest.mark.interop

HMAC = SymmetricKey(b"dev-1", bytes(range(32)), Alg.HMAC_256_64)
EC = Ec2Key.generate(b"dev-ec")
ED = OkpKey.generate(b"dev-ed")
REQ = ProofedRequest(Method.PUT, ("sensors", "temp"), ("unit=c",), 60, b"\x18\x2a")
ECHO = b"\x00\x01\x02\x03echo"
PIV = 1234


def pycose_key(key: Any) -> PycoseKey:
    return PycoseKey.from_dict(key.to_cose(include_private=True))


PYCOSE_ALG = {Alg.HMAC_256_64: HMAC25664, Alg.ES256: Es256, Alg.EDDSA: EdDSA}


@pytest.mark.parametrize("echo", [None, ECHO])
def test_pycose_verifies_our_mac0(echo):
    option = build_proof(HMAC, REQ, PIV, echo)
    msg = Mac0Message.decode(cbor2.dumps(cbor2.CBORTag(17, cbor2.loads(option))))
    assert msg.phdr == {Algorithm: HMAC25664}
    assert msg.uhdr == {KID: HMAC.kid, PartialIV: encode_piv(PIV)}
    assert msg.payload is None
    msg.key = pycose_key(HMAC)
    msg.payload = detached_content(REQ, PIV, echo)  # pycose Mac0 has no detached mode
    assert msg.verify_tag()
    msg.payload = detached_content(REQ, PIV + 1, echo)
    assert not msg.verify_tag()


@pytest.mark.parametrize("key", [EC, ED], ids=["es256", "eddsa"])
@pytest.mark.parametrize("echo", [None, ECHO])
def test_pycose_verifies_our_sign1(key, echo):
    option = build_proof(key, REQ, PIV, echo)
    msg = Sign1Message.decode(cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(option))))
    assert msg.phdr == {Algorithm: PYCOSE_ALG[key.alg]}
    assert msg.uhdr == {KID: key.kid, PartialIV: encode_piv(PIV)}
    msg.key = PycoseKey.from_dict(key.public().to_cose())
    assert msg.verify_signature(detached_payload=detached_content(REQ, PIV, echo))
    assert not msg.verify_signature(detached_payload=detached_content(REQ, PIV, b"x"))


def test_we_accept_pycose_mac0():
    content = detached_content(REQ, PIV, ECHO)
    msg = Mac0Message(
        phdr={Algorithm: HMAC25664},
        uhdr={KID: HMAC.kid, PartialIV: encode_piv(PIV)},
        payload=content,
        key=pycose_key(HMAC),
    )
    attached = cbor2.loads(msg.encode(tag=False))
    option = cbor2.dumps([attached[0], attached[1], None, attached[3]])  # detach
    parsed = parse_proof(option)
    assert (parsed.kid, parsed.piv) == (HMAC.kid, PIV)
    parsed.verify(HMAC, REQ, ECHO)
    with pytest.raises(BadSignature):
        parsed.verify(HMAC, REQ, None)


@pytest.mark.parametrize("key", [EC, ED], ids=["es256", "eddsa"])
def test_we_accept_pycose_sign1(key):
    content = detached_content(REQ, PIV, ECHO)
    msg = Sign1Message(
        phdr={Algorithm: PYCOSE_ALG[key.alg]},
        uhdr={KID: key.kid, PartialIV: encode_piv(PIV)},
        payload=None,
        key=pycose_key(key),
    )
    option = msg.encode(tag=False, detached_payload=content)
    parsed = parse_proof(option)
    assert (parsed.kid, parsed.piv, parsed.alg) == (key.kid, PIV, int(key.alg))
    parsed.verify(key.public(), REQ, ECHO)
    with pytest.raises(BadSignature):
        parsed.verify(key.public(), ProofedRequest(Method.GET, ("sensors", "temp")), ECHO)
