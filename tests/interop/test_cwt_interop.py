"""CWT interop with pycose 1.1.0 and python-cwt: tokens we mint verify there,
tokens they make verify here (Sign1 ES256/EdDSA, Mac0 HMAC 256/64,
Encrypt0 AES-CCM-16-64-128). Keys cross over as encoded COSE_Keys.

python-cwt checks ``exp``/``nbf`` against the real clock, so the claims here
use the real time and expire an hour later; our verifier is given that same
time as ``now``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import cbor2
import cwt as pycwt
import pytest
from pycose.algorithms import AESCCM1664128, HMAC25664, EdDSA, Es256
from pycose.headers import IV, KID, Algorithm
from pycose.keys import CoseKey as PyCoseKey
from pycose.messages import CoseMessage, Enc0Message, Mac0Message, Sign1Message

from tokens.cnf import CnfKey
from tokens.cwt import Claims, TokenVerifier, mint
from tokens.errors import BadSignature
from tokens.keys import CoseKey, Ec2Key, KeySet, OkpKey, SymmetricKey
from tokens.params import Alg

pytestmark = pytest.mark.interop

ES = Ec2Key.generate(b"as-es")
ED = OkpKey.generate(b"as-ed")
MAC = SymmetricKey(b"as-mac", os.urandom(32), Alg.HMAC_256_64)
AES = SymmetricKey(b"as-rs", os.urandom(16), Alg.AES_CCM_16_64_128)
KEYS = [ES, ED, MAC, AES]
IDS = ["ES256", "EdDSA", "HMAC256/64", "AES-CCM-16-64-128"]

PYCOSE_ALG = {Alg.ES256: Es256, Alg.EDDSA: EdDSA, Alg.HMAC_256_64: HMAC25664}


def now_and_claims() -> tuple[float, Claims]:
    now = time.time()
    pop = SymmetricKey(b"pop", b"\x42" * 16, Alg.HMAC_256_64)
    claims = Claims(
        iss="as",
        aud="gw",
        exp=int(now) + 3600,
        nbf=int(now),  # python-cwt would add one otherwise
        iat=int(now),
        cti=os.urandom(8),
        cnf=CnfKey(pop),
        scope=cbor2.dumps([["/s/temp", 1]]),
    )
    return now, claims


def verifier() -> TokenVerifier:
    return TokenVerifier(
        audience="gw",
        issuer="as",
        keys=KeySet([ES.public(), ED.public(), MAC]),
        decryption_keys=KeySet([AES]),
    )


def shared(key: CoseKey) -> bytes:
    """The COSE_Key the other side gets: public for signatures, secret otherwise."""
    if key.alg in (Alg.ES256, Alg.EDDSA):
        return key.public().encode()
    return key.encode(include_private=True)


def private(key: CoseKey) -> bytes:
    return key.encode(include_private=True)


# --- python-cwt ------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=IDS)
@pytest.mark.parametrize("cwt_tag", [False, True])
def test_ours_verified_by_python_cwt(key: CoseKey, cwt_tag: bool) -> None:
    _, claims = now_and_claims()
    token = mint(claims, key, tagged=True, cwt_tag=cwt_tag)  # python-cwt needs the COSE tag
    decoded = pycwt.decode(token, pycwt.COSEKey.from_bytes(shared(key)))
    assert decoded == cbor2.loads(claims.encode())


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_python_cwt_verified_by_us(key: CoseKey) -> None:
    now, claims = now_and_claims()
    theirs = pycwt.COSEKey.from_bytes(private(key))
    token = pycwt.encode(claims.to_cbor(), theirs)
    assert verifier().verify(token, now) == claims
    tampered = bytearray(token)
    tampered[-1] ^= 1
    with pytest.raises(BadSignature) as info:
        verifier().verify(bytes(tampered), now)
    assert info.value.coap_code.dotted == "4.01"


# --- pycose ------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_ours_verified_by_pycose(key: CoseKey) -> None:
    _, claims = now_and_claims()
    msg: Any = CoseMessage.decode(mint(claims, key, tagged=True))
    msg.key = PyCoseKey.decode(shared(key))
    if isinstance(msg, Enc0Message):
        payload = msg.decrypt()
    elif isinstance(msg, Mac0Message):
        assert msg.verify_tag()
        payload = msg.payload
    else:
        assert isinstance(msg, Sign1Message) and msg.verify_signature()
        payload = msg.payload
    assert Claims.decode(payload) == claims
    assert msg.uhdr[KID] == key.kid


@pytest.mark.parametrize("key", KEYS, ids=IDS)
@pytest.mark.parametrize("tag", [True, False])
def test_pycose_verified_by_us(key: CoseKey, tag: bool) -> None:
    now, claims = now_and_claims()
    pk = PyCoseKey.decode(private(key))
    payload = claims.encode()
    msg: Any
    if key.alg == Alg.AES_CCM_16_64_128:
        msg = Enc0Message(
            phdr={Algorithm: AESCCM1664128},
            uhdr={KID: key.kid, IV: os.urandom(13)},
            payload=payload,
            key=pk,
        )
        token = msg.encode(tag=tag)
    elif key.alg == Alg.HMAC_256_64:
        msg = Mac0Message(phdr={Algorithm: HMAC25664}, uhdr={KID: key.kid}, payload=payload, key=pk)
        token = msg.encode(tag=tag)
    else:
        msg = Sign1Message(
            phdr={Algorithm: PYCOSE_ALG[key.alg]}, uhdr={KID: key.kid}, payload=payload, key=pk
        )
        token = msg.encode(tag=tag)
    assert verifier().verify(token, now) == claims
