"""COSE single-recipient messages: COSE_Sign1, COSE_Mac0, COSE_Encrypt0
(RFC 9052 §4.2, §6.2, §5.2) with the header rules of RFC 9052 §3.

Decoding accepts tagged and untagged input (a wrong tag is an error),
requires ``alg`` in the protected bucket and pins it to the key, refuses
labels present in both buckets and any ``crit`` label not processed here.
Encoding produces untagged messages unless asked otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import cbor2

from . import cbor
from .errors import AlgorithmMismatch, CriticalHeaderError, MalformedError
from .keys import AEAD_PARAMS, CoseKey
from .params import Alg, CoseTag, HeaderLabel

#: Header labels whose meaning this module implements (RFC 9052 §3.1).
UNDERSTOOD_LABELS = frozenset(int(h) for h in HeaderLabel)
_CRIT_OK = UNDERSTOOD_LABELS - {int(HeaderLabel.CRIT)}

# Plain-int labels for the hot paths (an IntEnum key costs more to look up).
_ALG = int(HeaderLabel.ALG)
_CRIT = int(HeaderLabel.CRIT)
_KID = int(HeaderLabel.KID)
_IV = int(HeaderLabel.IV)
_TAG_BY_INT = {int(t): t for t in CoseTag}

_SIGN1_PREFIX = b"\x84\x6aSignature1"  # ["Signature1", ...] (RFC 9052 §4.4)
_MAC0_PREFIX = b"\x84\x64MAC0"  # ["MAC0", ...] (RFC 9052 §6.3)
_ENC0_PREFIX = b"\x83\x68Encrypt0"  # ["Encrypt0", ...] (RFC 9052 §5.3)


def sig_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """Sig_structure for COSE_Sign1 (RFC 9052 §4.4), hand-encoded."""
    return _SIGN1_PREFIX + cbor.bstr(protected) + cbor.bstr(external_aad) + cbor.bstr(payload)


def mac_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """MAC_structure for COSE_Mac0 (RFC 9052 §6.3), hand-encoded."""
    return _MAC0_PREFIX + cbor.bstr(protected) + cbor.bstr(external_aad) + cbor.bstr(payload)


def enc_structure(protected: bytes, external_aad: bytes) -> bytes:
    """Enc_structure for COSE_Encrypt0 (RFC 9052 §5.3), hand-encoded."""
    return _ENC0_PREFIX + cbor.bstr(protected) + cbor.bstr(external_aad)


@dataclass(frozen=True, slots=True)
class CoseMessage:
    """A decoded, not yet verified COSE_Sign1 / COSE_Mac0 / COSE_Encrypt0.

    ``last`` is the signature, the MAC tag, or the ciphertext.
    ``payload`` is ``None`` for a detached payload (RFC 9052 §2).
    """

    tag: CoseTag
    protected_bytes: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes | None
    last: bytes

    @property
    def alg(self) -> Any:
        return self.protected.get(_ALG)

    @property
    def kid(self) -> bytes | None:
        """kid from either bucket (RFC 9052 §3.1: kid may be unprotected)."""
        kid = self.protected.get(_KID, self.unprotected.get(_KID))
        return kid if isinstance(kid, bytes) else None

    def header(self, label: int) -> Any:
        if label in self.protected:
            return self.protected[label]
        return self.unprotected.get(label)

    # --- verification (RFC 9052 §4.4, §6.3, §5.3) -----------------------

    def verify_signature(
        self, key: CoseKey, external_aad: bytes = b"", detached_payload: bytes | None = None
    ) -> bytes:
        """Verify a COSE_Sign1 with ``key``; return the payload."""
        self._expect(CoseTag.SIGN1)
        key.check_alg(self.alg)
        payload = self._payload(detached_payload)
        key.verify(sig_structure(self.protected_bytes, external_aad, payload), self.last)
        return payload

    def verify_mac(
        self, key: CoseKey, external_aad: bytes = b"", detached_payload: bytes | None = None
    ) -> bytes:
        """Verify a COSE_Mac0 with ``key``; return the payload."""
        self._expect(CoseTag.MAC0)
        key.check_alg(self.alg)
        payload = self._payload(detached_payload)
        key.verify_mac(mac_structure(self.protected_bytes, external_aad, payload), self.last)
        return payload

    def verify(
        self, key: CoseKey, external_aad: bytes = b"", detached_payload: bytes | None = None
    ) -> bytes:
        """Verify a Sign1 or Mac0 message, whichever this is; return the payload."""
        if self.tag == CoseTag.SIGN1:
            return self.verify_signature(key, external_aad, detached_payload)
        if self.tag == CoseTag.MAC0:
            return self.verify_mac(key, external_aad, detached_payload)
        raise MalformedError("expected COSE_Sign1 or COSE_Mac0")

    def decrypt(self, key: CoseKey, external_aad: bytes = b"") -> bytes:
        """Decrypt a COSE_Encrypt0 with ``key``; return the plaintext."""
        self._expect(CoseTag.ENCRYPT0)
        key.check_alg(self.alg)
        iv = self.header(_IV)
        if not isinstance(iv, bytes):
            raise MalformedError("COSE_Encrypt0 without an IV")
        return key.decrypt(iv, self.last, enc_structure(self.protected_bytes, external_aad))

    def _expect(self, tag: CoseTag) -> None:
        if self.tag != tag:
            raise MalformedError(f"expected {tag.name}, got {self.tag.name}")

    def _payload(self, detached: bytes | None) -> bytes:
        if self.payload is None:
            if detached is None:
                raise MalformedError("detached payload not supplied")
            return detached
        if detached is not None:
            raise MalformedError("payload is both attached and detached")
        return self.payload


_ARITY = {CoseTag.SIGN1: 4, CoseTag.MAC0: 4, CoseTag.ENCRYPT0: 3}

#: Protected buckets that are just ``{1: alg}`` for an algorithm we know (what
#: :func:`encode_protected` writes), decoded once: such a header is looked up
#: instead of decoded, and the message gets a fresh copy of the map (callers
#: may change theirs). Built by the decoder itself, so it gives the same map.
_KNOWN_PROTECTED: dict[bytes, dict[Any, Any]] = {
    enc: cbor.decode(enc) for enc in (cbor.encode({_ALG: int(alg)}) for alg in Alg)
}

# CoseMessage is a frozen dataclass; decode() fills a new one through the slot
# descriptors, which skips the generated __init__'s six object.__setattr__ calls.
_new = object.__new__
_set_tag = CoseMessage.__dict__["tag"].__set__
_set_protected_bytes = CoseMessage.__dict__["protected_bytes"].__set__
_set_protected = CoseMessage.__dict__["protected"].__set__
_set_unprotected = CoseMessage.__dict__["unprotected"].__set__
_set_payload = CoseMessage.__dict__["payload"].__set__
_set_last = CoseMessage.__dict__["last"].__set__


def decode(
    data: bytes | Any,
    expected: CoseTag | tuple[CoseTag, ...],
    *,
    what: str = "COSE message",
) -> CoseMessage:
    """Parse a COSE message of one of the ``expected`` types.

    ``data`` is encoded bytes or an already decoded CBOR value. Tagged input
    must carry the tag of an expected type (RFC 9052 §2); untagged input is
    taken as the first expected type (the context fixes the type).
    """
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if type(data) is list:  # already decoded (the usual case inside tokens)
        value: Any = data
    elif isinstance(data, bytes | bytearray):
        value = cbor.decode(bytes(data), what=what)
    else:
        value = data
    kind = kinds[0]
    if isinstance(value, cbor2.CBORTag):
        if value.tag not in kinds:
            raise MalformedError(f"{what}: unexpected CBOR tag {value.tag}")
        kind = _TAG_BY_INT[value.tag]
        value = value.value
    arity = _ARITY[kind]
    if not isinstance(value, list) or len(value) != arity:
        raise MalformedError(f"{what}: expected a {arity}-element array")
    protected_bytes = value[0]
    if not isinstance(protected_bytes, bytes):
        raise MalformedError(f"{what}: protected header must be a byte string")
    if protected_bytes:
        known = _KNOWN_PROTECTED.get(protected_bytes)
        if known is not None:
            protected = known.copy()
        else:
            protected = cbor.decode(protected_bytes, what=f"{what} protected header")
            if not isinstance(protected, dict):
                raise MalformedError(f"{what}: protected header must be a map")
    else:
        protected = {}  # RFC 9052 §3: zero-length bstr is the empty map
    unprotected = value[1]
    if not isinstance(unprotected, dict):
        raise MalformedError(f"{what}: unprotected header must be a map")
    _check_headers(protected, unprotected, what)
    if arity == 3:  # COSE_Encrypt0
        payload: bytes | None = None
        last = value[2]
        if not isinstance(last, bytes):
            raise MalformedError(f"{what}: ciphertext must be a byte string")
    else:
        payload = value[2]
        if payload is not None and not isinstance(payload, bytes):
            raise MalformedError(f"{what}: payload must be a byte string or nil")
        last = value[3]
        if not isinstance(last, bytes):
            raise MalformedError(f"{what}: tag/signature must be a byte string")
    msg: CoseMessage = _new(CoseMessage)
    _set_tag(msg, kind)
    _set_protected_bytes(msg, protected_bytes)
    _set_protected(msg, protected)
    _set_unprotected(msg, unprotected)
    _set_payload(msg, payload)
    _set_last(msg, last)
    return msg


def _check_headers(protected: dict[Any, Any], unprotected: dict[Any, Any], what: str) -> None:
    """Header rules of RFC 9052 §3 and §3.1."""
    if _ALG not in protected:
        if _ALG in unprotected:
            raise AlgorithmMismatch(f"{what}: alg must be in the protected header")
        raise MalformedError(f"{what}: no alg in the protected header")
    if unprotected:
        for label in unprotected:
            if label in protected:
                raise MalformedError(f"{what}: header label {label!r} in both buckets")
        if _CRIT in unprotected:
            raise MalformedError(f"{what}: crit must be protected")
    crit = protected.get(_CRIT)
    if crit is not None:
        if not isinstance(crit, list) or not crit:
            raise MalformedError(f"{what}: crit must be a non-empty array")
        for label in crit:
            # type check first: a label may be any CBOR item, even an unhashable array
            if type(label) is not int or label not in _CRIT_OK:
                raise CriticalHeaderError(f"{what}: critical header {label!r} not understood")
            if label not in protected:
                raise MalformedError(f"{what}: crit names {label!r} which is absent")


# --- encoding ---------------------------------------------------------------


def encode_protected(key: CoseKey, extra: dict[int, Any] | None = None) -> bytes:
    """Protected header bucket: the key's alg plus ``extra`` (RFC 9052 §3)."""
    hdr: dict[int, Any] = {int(HeaderLabel.ALG): int(key.alg)}
    if extra:
        hdr.update(extra)
    return cbor.encode(hdr)


def _finish(tag: CoseTag, items: list[Any], tagged: bool) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, items) if tagged else items)


def _unprotected(
    key: CoseKey, unprotected: dict[int, Any] | None, with_kid: bool
) -> dict[int, Any]:
    hdr: dict[int, Any] = {}
    if with_kid and key.kid:
        hdr[int(HeaderLabel.KID)] = key.kid
    if unprotected:
        hdr.update(unprotected)
    return hdr


def sign1(
    key: CoseKey,
    payload: bytes,
    *,
    protected: dict[int, Any] | None = None,
    unprotected: dict[int, Any] | None = None,
    external_aad: bytes = b"",
    detached: bool = False,
    tagged: bool = False,
    with_kid: bool = True,
) -> bytes:
    """Create a COSE_Sign1 (RFC 9052 §4.2, §4.4)."""
    prot = encode_protected(key, protected)
    sig = key.sign(sig_structure(prot, external_aad, payload))
    items = [prot, _unprotected(key, unprotected, with_kid), None if detached else payload, sig]
    return _finish(CoseTag.SIGN1, items, tagged)


def mac0(
    key: CoseKey,
    payload: bytes,
    *,
    protected: dict[int, Any] | None = None,
    unprotected: dict[int, Any] | None = None,
    external_aad: bytes = b"",
    detached: bool = False,
    tagged: bool = False,
    with_kid: bool = True,
) -> bytes:
    """Create a COSE_Mac0 (RFC 9052 §6.2, §6.3)."""
    prot = encode_protected(key, protected)
    tag = key.mac(mac_structure(prot, external_aad, payload))
    items = [prot, _unprotected(key, unprotected, with_kid), None if detached else payload, tag]
    return _finish(CoseTag.MAC0, items, tagged)


def encrypt0(
    key: CoseKey,
    plaintext: bytes,
    *,
    protected: dict[int, Any] | None = None,
    unprotected: dict[int, Any] | None = None,
    external_aad: bytes = b"",
    iv: bytes | None = None,
    tagged: bool = False,
    with_kid: bool = True,
) -> bytes:
    """Create a COSE_Encrypt0 (RFC 9052 §5.2, §5.3) with a random IV unless
    one is given (deterministic output is only for test vectors)."""
    if key.alg not in AEAD_PARAMS:
        raise AlgorithmMismatch(f"{key.alg.name} is not an AEAD algorithm")
    if iv is None:
        iv = os.urandom(AEAD_PARAMS[key.alg][2])
    prot = encode_protected(key, protected)
    ct = key.encrypt(iv, plaintext, enc_structure(prot, external_aad))
    unprot = _unprotected(key, unprotected, with_kid)
    unprot[int(HeaderLabel.IV)] = iv
    return _finish(CoseTag.ENCRYPT0, [prot, unprot, ct], tagged)
