"""COSE keys with their algorithm pinned, and key sets looked up by kid.

COSE_Key encoding per RFC 9052 §7 and RFC 9053 §7 (EC2 P-256, OKP Ed25519,
Symmetric). A key object is bound to exactly one algorithm at construction;
messages whose protected ``alg`` differs are refused (RFC 9052 §3.1 and the
"algorithms are pinned by the key" rule of this project). Key material never
appears in ``repr`` or in error messages.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from . import cbor
from .errors import (
    AlgorithmMismatch,
    BadSignature,
    MalformedError,
    UnknownKey,
    UnsupportedPopKey,
)
from .params import Alg, Curve, KeyParam, KeyType

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_P256 = ec.SECP256R1()

#: Tag length in bytes per MAC algorithm (RFC 9053 §3.1).
MAC_TAG_LENGTH = {Alg.HMAC_256_64: 8, Alg.HMAC_256_256: 32}
#: (key length, tag length, nonce length) per AEAD algorithm (RFC 9053 §4.2).
AEAD_PARAMS = {Alg.AES_CCM_16_64_128: (16, 8, 13)}


class CoseKey:
    """A COSE key bound to one algorithm. Subclasses implement the operations
    their algorithm allows; the rest raise :class:`AlgorithmMismatch`."""

    __slots__ = ("alg", "kid")

    kty: KeyType

    def __init__(self, alg: Alg, kid: bytes) -> None:
        self.alg = alg
        self.kid = kid

    def __repr__(self) -> str:  # never the key material
        return f"<{type(self).__name__} alg={self.alg.name} kid={self.kid.hex()}>"

    def check_alg(self, alg: Any) -> None:
        """Refuse a message whose protected ``alg`` is not this key's."""
        if alg != self.alg:
            raise AlgorithmMismatch(f"alg {alg!r} does not match the key's {self.alg.name}")

    # Operations; the signature/MAC input is the encoded *_structure.
    def sign(self, to_be_signed: bytes) -> bytes:
        raise AlgorithmMismatch(f"{self.alg.name} key cannot sign")

    def verify(self, to_be_signed: bytes, signature: bytes) -> None:
        raise AlgorithmMismatch(f"{self.alg.name} key cannot verify signatures")

    def mac(self, to_be_maced: bytes) -> bytes:
        raise AlgorithmMismatch(f"{self.alg.name} key cannot MAC")

    def verify_mac(self, to_be_maced: bytes, tag: bytes) -> None:
        raise AlgorithmMismatch(f"{self.alg.name} key cannot MAC")

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        raise AlgorithmMismatch(f"{self.alg.name} key cannot encrypt")

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        raise AlgorithmMismatch(f"{self.alg.name} key cannot decrypt")

    @property
    def has_private(self) -> bool:
        return False

    def public(self) -> CoseKey:
        """The public half (asymmetric keys); symmetric keys have none."""
        raise UnsupportedPopKey("symmetric keys have no public half")

    def to_cose(self, *, include_private: bool = False) -> dict[int, Any]:
        raise NotImplementedError

    def encode(self, *, include_private: bool = False) -> bytes:
        """Encoded COSE_Key (RFC 9052 §7)."""
        return cbor.encode(self.to_cose(include_private=include_private))


class Ec2Key(CoseKey):
    """P-256 key for ES256 (RFC 9053 §2.1); signatures are raw ``r || s``."""

    __slots__ = ("_priv", "_pub")
    kty = KeyType.EC2

    def __init__(
        self,
        kid: bytes,
        public_key: ec.EllipticCurvePublicKey,
        private_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        super().__init__(Alg.ES256, kid)
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise UnsupportedPopKey("only P-256 is supported for ES256")
        self._pub = public_key
        self._priv = private_key

    @classmethod
    def generate(cls, kid: bytes) -> Ec2Key:
        priv = ec.generate_private_key(_P256)
        return cls(kid, priv.public_key(), priv)

    @classmethod
    def from_private_bytes(cls, kid: bytes, d: bytes) -> Ec2Key:
        priv = ec.derive_private_key(int.from_bytes(d, "big"), _P256)
        return cls(kid, priv.public_key(), priv)

    @property
    def has_private(self) -> bool:
        return self._priv is not None

    def sign(self, to_be_signed: bytes) -> bytes:
        if self._priv is None:
            raise AlgorithmMismatch("public ES256 key cannot sign")
        r, s = decode_dss_signature(self._priv.sign(to_be_signed, _ECDSA_SHA256))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, to_be_signed: bytes, signature: bytes) -> None:
        if len(signature) != 64:
            raise BadSignature("ES256 signature must be 64 bytes")
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            self._pub.verify(der, to_be_signed, _ECDSA_SHA256)
        except InvalidSignature:
            raise BadSignature("signature does not verify") from None

    def public(self) -> Ec2Key:
        return Ec2Key(self.kid, self._pub)

    def to_cose(self, *, include_private: bool = False) -> dict[int, Any]:
        nums = self._pub.public_numbers()
        out: dict[int, Any] = {
            KeyParam.KTY: KeyType.EC2,
            KeyParam.CRV: Curve.P256,
            KeyParam.X: nums.x.to_bytes(32, "big"),
            KeyParam.Y: nums.y.to_bytes(32, "big"),
        }
        if self.kid:
            out[KeyParam.KID] = self.kid
        if include_private and self._priv is not None:
            out[KeyParam.D] = self._priv.private_numbers().private_value.to_bytes(32, "big")
        return {int(k): int(v) if isinstance(v, int) else v for k, v in out.items()}


class OkpKey(CoseKey):
    """Ed25519 key for EdDSA (RFC 9053 §2.2)."""

    __slots__ = ("_priv", "_pub")
    kty = KeyType.OKP

    def __init__(
        self,
        kid: bytes,
        public_key: ed25519.Ed25519PublicKey,
        private_key: ed25519.Ed25519PrivateKey | None = None,
    ) -> None:
        super().__init__(Alg.EDDSA, kid)
        self._pub = public_key
        self._priv = private_key

    @classmethod
    def generate(cls, kid: bytes) -> OkpKey:
        priv = ed25519.Ed25519PrivateKey.generate()
        return cls(kid, priv.public_key(), priv)

    @classmethod
    def from_private_bytes(cls, kid: bytes, d: bytes) -> OkpKey:
        priv = ed25519.Ed25519PrivateKey.from_private_bytes(d)
        return cls(kid, priv.public_key(), priv)

    @property
    def has_private(self) -> bool:
        return self._priv is not None

    def sign(self, to_be_signed: bytes) -> bytes:
        if self._priv is None:
            raise AlgorithmMismatch("public EdDSA key cannot sign")
        return self._priv.sign(to_be_signed)

    def verify(self, to_be_signed: bytes, signature: bytes) -> None:
        try:
            self._pub.verify(signature, to_be_signed)
        except InvalidSignature:
            raise BadSignature("signature does not verify") from None

    def public(self) -> OkpKey:
        return OkpKey(self.kid, self._pub)

    def to_cose(self, *, include_private: bool = False) -> dict[int, Any]:
        from cryptography.hazmat.primitives import serialization as ser

        out: dict[int, Any] = {
            int(KeyParam.KTY): int(KeyType.OKP),
            int(KeyParam.CRV): int(Curve.ED25519),
            int(KeyParam.X): self._pub.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw),
        }
        if self.kid:
            out[int(KeyParam.KID)] = self.kid
        if include_private and self._priv is not None:
            out[int(KeyParam.D)] = self._priv.private_bytes(
                ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption()
            )
        return out


_SHA256_BLOCK = 64


def _hmac_pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 states after ``K XOR ipad`` and ``K XOR opad`` (RFC 2104 §2;
    a key longer than the block is hashed first)."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


class SymmetricKey(CoseKey):
    """A symmetric key pinned to one of HMAC 256/64, HMAC 256/256
    (RFC 9053 §3.1) or AES-CCM-16-64-128 (RFC 9053 §4.2)."""

    __slots__ = ("_aead", "_inner", "_k", "_outer", "_tag_len")
    kty = KeyType.SYMMETRIC

    def __init__(self, kid: bytes, k: bytes, alg: Alg = Alg.HMAC_256_64) -> None:
        super().__init__(alg, kid)
        self._k = bytes(k)
        self._aead: AESCCM | None = None
        if alg in MAC_TAG_LENGTH:
            if len(k) < 16:
                raise UnsupportedPopKey("HMAC keys must be at least 128 bits")
            self._tag_len = MAC_TAG_LENGTH[alg]
            self._inner, self._outer = _hmac_pads(self._k)
        elif alg in AEAD_PARAMS:
            key_len, self._tag_len, _ = AEAD_PARAMS[alg]
            if len(k) != key_len:
                raise UnsupportedPopKey(f"{alg.name} needs a {key_len * 8}-bit key")
            self._aead = AESCCM(self._k, tag_length=self._tag_len)
        else:
            raise UnsupportedPopKey(f"algorithm {alg.name} is not a symmetric algorithm")

    @classmethod
    def generate(
        cls, kid: bytes, alg: Alg = Alg.HMAC_256_64, size: int | None = None
    ) -> SymmetricKey:
        if size is None:
            size = AEAD_PARAMS[alg][0] if alg in AEAD_PARAMS else 32
        return cls(kid, os.urandom(size), alg)

    @property
    def secret(self) -> bytes:
        """The raw key bytes (a secret: never log it)."""
        return self._k

    @property
    def has_private(self) -> bool:
        return True

    def mac(self, to_be_maced: bytes) -> bytes:
        if self._aead is not None:
            raise AlgorithmMismatch(f"{self.alg.name} key cannot MAC")
        # HMAC (RFC 2104 §2) from the two padded-key states hashed once per
        # key: copying a SHA-256 state is cheaper than OpenSSL's per-call
        # HMAC set-up, which dominates for the short inputs of a proof.
        inner = self._inner.copy()
        inner.update(to_be_maced)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[: self._tag_len]

    def verify_mac(self, to_be_maced: bytes, tag: bytes) -> None:
        if not hmac.compare_digest(self.mac(to_be_maced), tag):
            raise BadSignature("MAC does not verify")

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if self._aead is None:
            raise AlgorithmMismatch(f"{self.alg.name} key cannot encrypt")
        return self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if self._aead is None:
            raise AlgorithmMismatch(f"{self.alg.name} key cannot decrypt")
        if len(nonce) != AEAD_PARAMS[self.alg][2]:
            raise MalformedError(f"{self.alg.name} needs a {AEAD_PARAMS[self.alg][2]}-byte IV")
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError):
            raise BadSignature("ciphertext does not authenticate") from None

    def to_cose(self, *, include_private: bool = False) -> dict[int, Any]:
        out: dict[int, Any] = {int(KeyParam.KTY): int(KeyType.SYMMETRIC)}
        if self.kid:
            out[int(KeyParam.KID)] = self.kid
        out[int(KeyParam.ALG)] = int(self.alg)
        if include_private:
            out[int(KeyParam.K)] = self._k  # label -1 is "k" for kty Symmetric
        return out


def key_from_cose(
    value: Mapping[Any, Any] | bytes, *, default_alg: Alg | None = None, kid: bytes | None = None
) -> CoseKey:
    """Build a key from a decoded or encoded COSE_Key (RFC 9052 §7).

    The algorithm is the COSE_Key's ``alg`` if present, else ``default_alg``,
    else the curve's only algorithm (P-256 -> ES256, Ed25519 -> EdDSA). Unknown
    key types and curves raise :class:`UnsupportedPopKey`; wrong shapes raise
    :class:`MalformedError`.
    """
    m = cbor.as_map(
        cbor.decode(value, what="COSE_Key") if isinstance(value, bytes) else value, "COSE_Key"
    )
    kty = m.get(KeyParam.KTY)
    key_kid = m.get(KeyParam.KID, kid if kid is not None else b"")
    key_kid = cbor.as_bytes(key_kid, "COSE_Key kid")
    alg_v = m.get(KeyParam.ALG)
    alg: Alg | None = default_alg
    if alg_v is not None:
        try:
            alg = Alg(cbor.as_int(alg_v, "COSE_Key alg"))
        except ValueError:
            raise UnsupportedPopKey(f"algorithm {alg_v!r} not supported") from None
    try:
        if kty == KeyType.EC2:
            if m.get(KeyParam.CRV) != Curve.P256:
                raise UnsupportedPopKey("EC2 keys must be on P-256")
            if alg not in (None, Alg.ES256):
                raise UnsupportedPopKey("EC2 P-256 keys are used with ES256 only")
            x = cbor.as_bytes(m.get(KeyParam.X), "COSE_Key x")
            y = cbor.as_bytes(m.get(KeyParam.Y), "COSE_Key y")
            if len(x) != 32 or len(y) != 32:
                raise MalformedError("P-256 coordinates must be 32 bytes")
            d = m.get(KeyParam.D)
            if d is not None:
                k = Ec2Key.from_private_bytes(key_kid, cbor.as_bytes(d, "COSE_Key d"))
                if k.to_cose()[int(KeyParam.X)] != x:
                    raise MalformedError("COSE_Key d does not match x/y")
                return k
            pub = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), _P256
            ).public_key()
            return Ec2Key(key_kid, pub)
        if kty == KeyType.OKP:
            if m.get(KeyParam.CRV) != Curve.ED25519:
                raise UnsupportedPopKey("OKP keys must be Ed25519")
            if alg not in (None, Alg.EDDSA):
                raise UnsupportedPopKey("Ed25519 keys are used with EdDSA only")
            d = m.get(KeyParam.D)
            if d is not None:
                return OkpKey.from_private_bytes(key_kid, cbor.as_bytes(d, "COSE_Key d"))
            x = cbor.as_bytes(m.get(KeyParam.X), "COSE_Key x")
            return OkpKey(key_kid, ed25519.Ed25519PublicKey.from_public_bytes(x))
        if kty == KeyType.SYMMETRIC:
            k_bytes = cbor.as_bytes(m.get(KeyParam.K), "COSE_Key k")
            if alg is None:
                raise UnsupportedPopKey("symmetric COSE_Key needs an alg")
            return SymmetricKey(key_kid, k_bytes, alg)
    except ValueError as exc:  # cryptography: point not on curve, wrong length
        raise MalformedError("COSE_Key: invalid key material") from exc
    raise UnsupportedPopKey(f"key type {kty!r} not supported")


class KeySet:
    """Keys looked up by kid (RFC 9052 §3.1 ``kid``), several active at once
    for rotation. Lookup is exact: it never tries every key."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[CoseKey] = ()) -> None:
        self._keys: dict[bytes, CoseKey] = {}
        for k in keys:
            self.add(k)

    def add(self, key: CoseKey) -> None:
        if not key.kid:
            raise MalformedError("keys in a key set need a kid")
        self._keys[key.kid] = key

    def remove(self, kid: bytes) -> None:
        self._keys.pop(kid, None)

    def get(self, kid: Any) -> CoseKey:
        """The key for ``kid``; :class:`UnknownKey` if there is none."""
        key = self._keys.get(kid) if isinstance(kid, bytes) else None
        if key is None:
            raise UnknownKey("no key with this kid")
        return key

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[CoseKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def public(self) -> KeySet:
        """The verification keys only (what may be published)."""
        return KeySet(k.public() for k in self._keys.values() if k.kty != KeyType.SYMMETRIC)

    def encode_public(self) -> bytes:
        """COSE_KeySet of the public keys (RFC 9052 §7)."""
        return cbor.encode([k.to_cose() for k in self.public()])
