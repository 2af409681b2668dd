"""The ``cnf`` (confirmation) claim and parameter of RFC 8747, and the RFC 9202
§4 ``psk_identity`` that names a token's proof-of-possession key by its kid.

A ``cnf`` value is a CBOR map with exactly one confirmation method
(RFC 8747 §3.1):

* ``{1: COSE_Key}`` -> :class:`CnfKey` (RFC 8747 §3.2): a public key for
  asymmetric PoP, or the symmetric PoP key itself (only ever inside an
  encrypted token or a DTLS-protected response);
* ``{2: COSE_Encrypt0}`` -> :class:`CnfEncryptedKey` (RFC 8747 §3.3): a
  COSE_Key encrypted for the recipient, opened with a key found by kid;
* ``{3: kid}`` -> :class:`CnfKid` (RFC 8747 §3.4).

:class:`CnfRedactedKey` is what a symmetric :class:`CnfKey` becomes when it is
shown to someone who did not ask for the secret (``acegw token decode``).

Nothing here logs or puts key material into a ``repr`` or an error message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from . import cbor, cose
from .errors import MalformedError, TokenError, UnsupportedPopKey
from .keys import AEAD_PARAMS, MAC_TAG_LENGTH, CoseKey, KeySet, SymmetricKey, key_from_cose
from .params import Alg, Claim, Cnf, CoseTag, Curve, KeyParam, KeyType

__all__ = [
    "CnfEncryptedKey",
    "CnfKey",
    "CnfKid",
    "CnfRedactedKey",
    "Confirmation",
    "decode",
    "encode",
    "parse_psk_identity",
    "psk_identity_for_kid",
]

#: Algorithm given to a symmetric COSE_Key that carries no ``alg``: the
#: per-request Proof's default MAC (see docs/design.md "Wire formats").
DEFAULT_SYMMETRIC_ALG = Alg.HMAC_256_64

_COSE_KEY = int(Cnf.COSE_KEY)
_ENCRYPTED_COSE_KEY = int(Cnf.ENCRYPTED_COSE_KEY)
_KID = int(Cnf.KID)
_KEY_KTY = int(KeyParam.KTY)
_KEY_KID = int(KeyParam.KID)
_KEY_ALG = int(KeyParam.ALG)
_KEY_CRV = int(KeyParam.CRV)
_KEY_X = int(KeyParam.X)
_KEY_Y = int(KeyParam.Y)
_KEY_D = int(KeyParam.D)
_KEY_K = int(KeyParam.K)
_KTY_SYMMETRIC = int(KeyType.SYMMETRIC)
_ALG_BY_INT = {int(a): a for a in Alg}


class CnfKey:
    """Confirmation by a COSE_Key (RFC 8747 §3.2).

    An asymmetric key is encoded as its public half only; a symmetric key is
    encoded with its secret ``k``, so such a ``cnf`` must travel encrypted.

    **Lazy key objects.** A ``CnfKey`` decoded from a token (:func:`decode`)
    that carries an EC2 public key or a symmetric key does not build the key
    object at once: loading a P-256 point costs about as much as the rest of a
    token's claims validation, building a symmetric key object (an AES-CCM
    context above all) is not free either, and most token verifications never
    use the PoP key (the gateway needs it once per token upload, not per token
    check). What is checked when the ``cnf`` is decoded, and what is deferred:

    * eager (in :func:`decode`, raising there), EC2: the map shape, ``kty``,
      that there is no private ``d``, ``crv`` = P-256, ``alg`` absent or
      ES256, a byte-string ``kid``, and byte-string ``x``/``y`` of 32 bytes
      each; symmetric: everything :func:`~tokens.keys.key_from_cose` and
      :class:`~tokens.keys.SymmetricKey` check (byte-string ``kid`` and ``k``,
      a symmetric ``alg`` or the default one, the key length it needs), with
      the same errors, so building the key later cannot fail;
    * deferred to the first access of :attr:`key` (or of anything that needs
      the key object: :meth:`to_cbor`, ``==``): building the key object, and
      for EC2 the point itself, i.e. that (x, y) is on the curve. An invalid
      point raises :class:`~tokens.errors.MalformedError` (4.00) from that
      access, and again from every later one (nothing is cached on failure).

    :attr:`kid`, :attr:`alg` and :attr:`kty` never load the key. Ed25519 keys
    are cheap and are always built eagerly, as is a key passed to the
    constructor.
    """

    __slots__ = ("_alg", "_key", "_kid", "_kty", "_src")

    _key: CoseKey | None
    # Only while the key is not built (``_key`` is None):
    _kty: KeyType
    _alg: Alg
    _kid: bytes
    #: What the key is built from: the shape-checked EC2 COSE_Key map, or the
    #: symmetric secret ``k``.
    _src: Any

    def __init__(self, key: CoseKey) -> None:
        self._key = key

    @classmethod
    def _deferred(cls, kty: KeyType, alg: Alg, kid: bytes, src: Any) -> CnfKey:
        """A ``CnfKey`` whose key, already checked by :func:`_check_ec2_public`
        or :func:`_check_symmetric`, is built on first use."""
        self = cls.__new__(cls)
        self._key = None
        self._kty = kty
        self._alg = alg
        self._kid = kid
        self._src = src
        return self

    @property
    def key(self) -> CoseKey:
        """The PoP key; a key from a decoded ``cnf`` is built here, on first
        access (an EC2 point is validated then: on the curve)."""
        key = self._key
        if key is None:
            if self._kty is KeyType.EC2:
                key = key_from_cose(self._src)
            else:
                key = SymmetricKey(self._kid, self._src, self._alg)
            self._key = key
            self._src = None
        return key

    @property
    def kid(self) -> bytes:
        """The key's kid (``b""`` if it has none), without loading the key."""
        key = self._key
        return key.kid if key is not None else self._kid

    @property
    def alg(self) -> Alg:
        """The algorithm the key is pinned to, without loading the key."""
        key = self._key
        return key.alg if key is not None else self._alg

    @property
    def kty(self) -> KeyType:
        """The COSE key type, without loading the key."""
        key = self._key
        return key.kty if key is not None else self._kty

    def to_cbor(self) -> dict[int, Any]:
        """The ``cnf`` map value ``{1: COSE_Key}``."""
        return {_COSE_KEY: _key_map(self.key)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CnfKey):
            return NotImplemented
        return self.alg == other.alg and _key_map(self.key) == _key_map(other.key)

    def __hash__(self) -> int:
        return hash((CnfKey, self.alg, self.kid))

    def __repr__(self) -> str:  # the key's repr carries no key material
        if self._key is not None:
            return f"CnfKey(key={self._key!r})"
        if self._kty is KeyType.EC2:
            return f"CnfKey(<EC2 alg=ES256 kid={self._kid.hex()}, point not loaded>)"
        # what the built key's repr will say (nothing about it is unchecked)
        return f"CnfKey(key=<SymmetricKey alg={self._alg.name} kid={self._kid.hex()}>)"


@dataclass(frozen=True, slots=True)
class CnfKid:
    """Confirmation by key identifier (RFC 8747 §3.4)."""

    kid: bytes

    def to_cbor(self) -> dict[int, Any]:
        """The ``cnf`` map value ``{3: kid}``."""
        return {_KID: self.kid}

    def __repr__(self) -> str:
        return f"CnfKid(kid={self.kid.hex()})"


@dataclass(frozen=True, slots=True)
class CnfEncryptedKey:
    """Confirmation by an Encrypted_COSE_Key (RFC 8747 §3.3): a COSE_Encrypt0
    whose plaintext is a COSE_Key. Held as the three parts of the
    COSE_Encrypt0 array; :meth:`open` decrypts it."""

    protected: bytes
    unprotected: dict[Any, Any]
    ciphertext: bytes

    @classmethod
    def seal(
        cls,
        key: CoseKey,
        kek: CoseKey,
        *,
        iv: bytes | None = None,
        external_aad: bytes = b"",
    ) -> CnfEncryptedKey:
        """Encrypt ``key`` (its public half if asymmetric, its secret if
        symmetric) under ``kek``, naming ``kek`` by its kid (RFC 8747 §3.3)."""
        plaintext = cbor.encode(_key_map(key))
        items = cbor2.loads(cose.encrypt0(kek, plaintext, iv=iv, external_aad=external_aad))
        return cls(items[0], items[1], items[2])

    def open(
        self,
        keys: KeySet | CoseKey,
        *,
        external_aad: bytes = b"",
        symmetric_alg: Alg = DEFAULT_SYMMETRIC_ALG,
    ) -> CoseKey:
        """Decrypt the COSE_Key (RFC 8747 §3.3, RFC 9052 §5.3). With a
        :class:`KeySet` the key is the one named by the message's kid (none:
        :class:`~tokens.errors.UnknownKey`); a :class:`CoseKey` is used as
        given."""
        msg = cose.decode(self.to_cbor()[_ENCRYPTED_COSE_KEY], CoseTag.ENCRYPT0, what="cnf")
        kek = keys.get(msg.kid) if isinstance(keys, KeySet) else keys
        plaintext = msg.decrypt(kek, external_aad)
        return _key_from_map(cbor.decode(plaintext, what="cnf COSE_Key"), symmetric_alg)

    def to_cbor(self) -> dict[int, Any]:
        """The ``cnf`` map value ``{2: COSE_Encrypt0}`` (untagged array)."""
        return {_ENCRYPTED_COSE_KEY: [self.protected, self.unprotected, self.ciphertext]}

    def __repr__(self) -> str:
        return f"CnfEncryptedKey(<{len(self.ciphertext)} bytes>)"


@dataclass(frozen=True, slots=True)
class CnfRedactedKey:
    """A COSE_Key confirmation shown without its secret: key type, kid and
    algorithm only. Encodes to a COSE_Key without ``k``; it cannot prove
    anything and exists for display."""

    kty: int
    kid: bytes
    alg: int | None

    def to_cbor(self) -> dict[int, Any]:
        m: dict[int, Any] = {int(KeyParam.KTY): self.kty}
        if self.kid:
            m[int(KeyParam.KID)] = self.kid
        if self.alg is not None:
            m[int(KeyParam.ALG)] = self.alg
        return {_COSE_KEY: m}

    def __repr__(self) -> str:
        return f"CnfRedactedKey(kty={self.kty}, kid={self.kid.hex()}, alg={self.alg})"


Confirmation = CnfKey | CnfKid | CnfEncryptedKey | CnfRedactedKey


def encode(value: Confirmation) -> dict[int, Any]:
    """The CBOR-ready ``cnf`` map (RFC 8747 §3.1)."""
    return value.to_cbor()


def decode(value: Any, *, symmetric_alg: Alg = DEFAULT_SYMMETRIC_ALG) -> Confirmation:
    """Parse a decoded ``cnf`` map (RFC 8747 §3.1): exactly one confirmation
    method, of a known kind and shape. ``symmetric_alg`` is the algorithm of
    a symmetric COSE_Key that names none.

    Raises :class:`~tokens.errors.MalformedError` for a wrong shape and
    :class:`~tokens.errors.UnsupportedPopKey` for a key of an unsupported
    type or algorithm."""
    if not isinstance(value, dict):
        raise MalformedError("cnf: expected a map")
    if len(value) != 1:
        raise MalformedError("cnf: expected exactly one confirmation method")
    ((method, inner),) = value.items()
    if type(method) is not int:
        raise MalformedError("cnf: unknown confirmation method")
    if method == _COSE_KEY:
        if not isinstance(inner, dict):
            raise MalformedError("cnf COSE_Key: expected a map")
        m: dict[Any, Any] = inner
        kty = m.get(_KEY_KTY)
        if type(kty) is int:
            if kty == _KTY_SYMMETRIC:
                kid, k, alg = _check_symmetric(m, symmetric_alg)
                return CnfKey._deferred(KeyType.SYMMETRIC, alg, kid, k)
            if _check_ec2_public(m):
                return CnfKey._deferred(KeyType.EC2, Alg.ES256, m.get(_KEY_KID, b""), dict(m))
        return CnfKey(_key_from_map(m, symmetric_alg))
    if method == _KID:
        kid = cbor.as_bytes(inner, "cnf kid")
        if not kid:
            raise MalformedError("cnf: empty kid")
        return CnfKid(kid)
    if method == _ENCRYPTED_COSE_KEY:
        if isinstance(inner, cbor2.CBORTag):
            if inner.tag != CoseTag.ENCRYPT0:
                raise MalformedError("cnf: Encrypted_COSE_Key must be a COSE_Encrypt0")
            inner = inner.value
        msg = cose.decode(inner, CoseTag.ENCRYPT0, what="cnf Encrypted_COSE_Key")
        return CnfEncryptedKey(msg.protected_bytes, msg.unprotected, msg.last)
    raise MalformedError("cnf: unknown confirmation method")


def redact(value: Confirmation) -> Confirmation:
    """``value`` with any symmetric secret withheld (for display)."""
    if isinstance(value, CnfKey) and value.kty == KeyType.SYMMETRIC:
        return CnfRedactedKey(int(KeyType.SYMMETRIC), value.kid, int(value.alg))
    return value


def _key_map(key: CoseKey) -> dict[int, Any]:
    """COSE_Key map for a ``cnf``: secret ``k`` for symmetric keys, public
    parts only for asymmetric ones (RFC 8747 §3.2)."""
    return key.to_cose(include_private=key.kty == KeyType.SYMMETRIC)


def _check_ec2_public(m: dict[Any, Any]) -> bool:
    """Whether ``m`` is an EC2 public COSE_Key with the shape
    :func:`~tokens.keys.key_from_cose` accepts, all but the point itself
    (RFC 9053 §7.1.1: P-256, 32-byte x and y; RFC 8747 §3.2: public only).
    ``False`` for any other key type (decoded eagerly by the caller); raises
    what ``key_from_cose`` would raise for a malformed EC2 key."""
    kty = m.get(_KEY_KTY)
    if type(kty) is not int or kty != KeyType.EC2:
        return False
    if _KEY_D in m:
        raise MalformedError("cnf: an asymmetric COSE_Key must be the public key")
    kid = m.get(_KEY_KID, b"")
    if type(kid) is not bytes:
        raise MalformedError("COSE_Key kid: expected a byte string")
    alg = m.get(_KEY_ALG)
    if alg is not None:
        if type(alg) is not int:
            raise MalformedError("COSE_Key alg: expected an integer")
        if alg != Alg.ES256:
            raise UnsupportedPopKey("EC2 P-256 keys are used with ES256 only")
    crv = m.get(_KEY_CRV)
    if type(crv) is not int or crv != Curve.P256:
        raise UnsupportedPopKey("EC2 keys must be on P-256")
    x, y = m.get(_KEY_X), m.get(_KEY_Y)
    if type(x) is not bytes or type(y) is not bytes:
        raise MalformedError("COSE_Key x/y: expected byte strings")
    if len(x) != 32 or len(y) != 32:
        raise MalformedError("P-256 coordinates must be 32 bytes")
    return True


def _check_symmetric(m: dict[Any, Any], default_alg: Alg) -> tuple[bytes, bytes, Alg]:
    """``(kid, k, alg)`` of a kty Symmetric COSE_Key (RFC 9053 §7.3) after
    every check :func:`~tokens.keys.key_from_cose` with ``default_alg`` and
    :class:`~tokens.keys.SymmetricKey` make, in their order and with their
    errors, without building the key (so a deferred :class:`CnfKey` builds
    it later without failing)."""
    kid = m.get(_KEY_KID, b"")
    if not isinstance(kid, bytes):
        raise MalformedError("COSE_Key kid: expected a byte string")
    alg_v = m.get(_KEY_ALG)
    if alg_v is None:
        alg = default_alg
    else:
        known = _ALG_BY_INT.get(alg_v) if type(alg_v) is int else None
        alg = known if known is not None else _alg_param(alg_v)
    k = m.get(_KEY_K)
    if not isinstance(k, bytes):
        raise MalformedError("COSE_Key k: expected a byte string")
    if alg in MAC_TAG_LENGTH:
        if len(k) < 16:
            raise UnsupportedPopKey("HMAC keys must be at least 128 bits")
    elif alg in AEAD_PARAMS:
        key_len = AEAD_PARAMS[alg][0]
        if len(k) != key_len:
            raise UnsupportedPopKey(f"{alg.name} needs a {key_len * 8}-bit key")
    else:
        raise UnsupportedPopKey(f"algorithm {alg.name} is not a symmetric algorithm")
    return kid, k, alg


def _alg_param(alg_v: Any) -> Alg:
    """A COSE_Key ``alg`` as :func:`~tokens.keys.key_from_cose` reads it."""
    try:
        return Alg(cbor.as_int(alg_v, "COSE_Key alg"))
    except ValueError:
        raise UnsupportedPopKey(f"algorithm {alg_v!r} not supported") from None


def _key_from_map(value: Any, symmetric_alg: Alg) -> CoseKey:
    m = cbor.as_map(value, "cnf COSE_Key")
    kty = m.get(int(KeyParam.KTY))
    if kty == KeyType.SYMMETRIC and type(kty) is int:
        return key_from_cose(m, default_alg=symmetric_alg)
    if int(KeyParam.D) in m:
        raise MalformedError("cnf: an asymmetric COSE_Key must be the public key")
    return key_from_cose(m)


# --- RFC 9202 §4: psk_identity naming the PoP key ---------------------------

# {8: {1: {1: 4, 2: kid}}}: map(1) 8 map(1) 1 map(2) 1 4 2 <bstr kid>
_PSK_IDENTITY_PREFIX = b"\xa1\x08\xa1\x01\xa2\x01\x04\x02"


def psk_identity_for_kid(kid: bytes) -> bytes:
    """The ``psk_identity`` a client sends to name a symmetric PoP key by kid:
    the CBOR encoding of ``{cnf: {COSE_Key: {kty: Symmetric, kid: kid}}}``
    (RFC 9202 §4)."""
    if not kid:
        raise ValueError("kid must not be empty")
    return _PSK_IDENTITY_PREFIX + cbor.bstr(kid)


def parse_psk_identity(data: bytes) -> bytes | None:
    """The kid if ``data`` is exactly the RFC 9202 §4 structure
    ``{8: {1: {1: 4, 2: kid}}}``, else ``None``. Never raises: a psk_identity
    may also be a client id or a whole token, and the caller decides."""
    if not isinstance(data, bytes) or len(data) > 512:
        return None
    if data.startswith(_PSK_IDENTITY_PREFIX):  # our own encoding: no decoder needed
        try:
            kid = cbor.decode(data[len(_PSK_IDENTITY_PREFIX) :], what="kid")
        except TokenError:
            return None
        return kid if isinstance(kid, bytes) and kid else None
    if not data or data[0] != 0xA1:  # not a one-entry map: not this structure
        return None
    try:
        value = cbor.decode(data, what="psk_identity")
    except TokenError:
        return None
    key = _only_entry(_only_entry(value, int(Claim.CNF)), _COSE_KEY)
    if not (isinstance(key, dict) and len(key) == 2):
        return None
    if any(type(k) is not int for k in key):
        return None
    kty, kid = key.get(int(KeyParam.KTY)), key.get(int(KeyParam.KID))
    if type(kty) is not int or kty != KeyType.SYMMETRIC:
        return None
    return kid if isinstance(kid, bytes) and kid else None


def _only_entry(value: Any, label: int) -> Any:
    """The value of a one-entry map whose key is the integer ``label``, else None."""
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ((k, v),) = value.items()
    return v if type(k) is int and k == label else None
