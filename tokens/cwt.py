"""CBOR Web Tokens (RFC 8392): the claims set, minting, and verification as an
ACE resource server does it (RFC 9200 §5.10.1.1).

* :class:`Claims` is a CWT claims set with the registered claims typed and
  validated (RFC 8392 §3.1, RFC 8747 ``cnf``, RFC 9200 §5.10 ``scope``,
  ``exi``, ``ace_profile``, ``cnonce``); other claims are kept in ``extra``.
* :func:`mint` makes a COSE_Sign1 (ES256, EdDSA), COSE_Mac0 (HMAC 256/64,
  256/256) or COSE_Encrypt0 (AES-CCM-16-64-128) token, whichever the key's
  algorithm calls for; :func:`nest` wraps a signed token in a COSE_Encrypt0
  (RFC 8392 §7.1, Appendix A.6).
* :class:`TokenVerifier` checks a token against key sets, issuer, audience
  and time, in the order documented on :meth:`TokenVerifier.verify`.
* :func:`decode_unverified` shows headers and claims without any key, for
  operators (``acegw token decode``).

The message type of an untagged token is fixed by the key its kid names (the
key's algorithm pins Sign1, Mac0 or Encrypt0), never by trying keys or types.
The clock is a parameter: nothing here reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import cbor2

from . import cbor, cose
from . import cnf as cnf_mod
from .cnf import Confirmation
from .errors import (
    AlgorithmMismatch,
    Expired,
    MalformedError,
    NotYetValid,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
)
from .keys import CoseKey, KeySet
from .params import Alg, Claim, CoseTag, HeaderLabel

__all__ = [
    "DEFAULT_LEEWAY",
    "Claims",
    "TokenInfo",
    "TokenVerifier",
    "decode_unverified",
    "mint",
    "nest",
]

#: Default clock-skew allowance, in seconds, applied to ``exp`` and ``nbf``.
#: The verifier and the AS are servers with synchronised clocks; 30 s covers
#: the skew between AS and gateway instances while adding little to lifetimes
#: that are minutes to hours long.
DEFAULT_LEEWAY = 30.0

#: The COSE message each key algorithm is used with.
_KIND_BY_ALG: dict[Alg, CoseTag] = {
    Alg.ES256: CoseTag.SIGN1,
    Alg.EDDSA: CoseTag.SIGN1,
    Alg.HMAC_256_64: CoseTag.MAC0,
    Alg.HMAC_256_256: CoseTag.MAC0,
    Alg.AES_CCM_16_64_128: CoseTag.ENCRYPT0,
}
_COSE_TAGS = {int(t): t for t in (CoseTag.SIGN1, CoseTag.MAC0, CoseTag.ENCRYPT0)}
_CWT_TAG = int(CoseTag.CWT)
_IV = int(HeaderLabel.IV)
_CWT_TAG_HEAD = b"\xd8\x3d"  # tag(61) (RFC 8392 §6)
_EMPTY: Mapping[int | str, Any] = MappingProxyType({})


# --- the claims set ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Claims:
    """A CWT claims set (RFC 8392 §3). Registered claims are typed fields;
    any other claim (integer or text key) is in ``extra``.

    ``exp``, ``nbf`` and ``iat`` are NumericDates (RFC 8392 §2): integer or
    floating-point seconds since the epoch. ``aud`` is a text string or a
    tuple of them. ``scope`` is text or bytes (an encoded AIF scope,
    RFC 9237, is bytes).
    """

    iss: str | None = None
    sub: str | None = None
    aud: str | tuple[str, ...] | None = None
    exp: int | float | None = None
    nbf: int | float | None = None
    iat: int | float | None = None
    cti: bytes | None = None
    cnf: Confirmation | None = None
    scope: bytes | str | None = None
    exi: int | None = None
    ace_profile: int | None = None
    cnonce: bytes | None = None
    extra: Mapping[int | str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        for key in self.extra:
            if type(key) is int and key in _KNOWN_KEYS:
                raise ValueError(f"claim {key} has a field of its own; not allowed in extra")
            if type(key) not in (int, str):
                raise ValueError("claim keys are integers or text strings")

    # --- encoding (RFC 8392 §7.1 step 1) ---------------------------------

    def to_cbor(self) -> dict[int | str, Any]:
        """The claims set as a CBOR-ready map with integer claim keys."""
        m: dict[int | str, Any] = {}
        if self.iss is not None:
            m[1] = self.iss
        if self.sub is not None:
            m[2] = self.sub
        if self.aud is not None:
            m[3] = self.aud if isinstance(self.aud, str) else list(self.aud)
        if self.exp is not None:
            m[4] = self.exp
        if self.nbf is not None:
            m[5] = self.nbf
        if self.iat is not None:
            m[6] = self.iat
        if self.cti is not None:
            m[7] = self.cti
        if self.cnf is not None:
            m[8] = self.cnf.to_cbor()
        if self.scope is not None:
            m[9] = self.scope
        if self.ace_profile is not None:
            m[38] = self.ace_profile
        if self.cnonce is not None:
            m[39] = self.cnonce
        if self.exi is not None:
            m[40] = self.exi
        m.update(self.extra)
        return m

    def encode(self) -> bytes:
        """The encoded claims set (deterministic: canonical map order)."""
        return cbor.encode(self.to_cbor())

    # --- decoding (RFC 8392 §7.2 step 10, §3.1 types) ----------------------

    @classmethod
    def from_cbor(cls, value: Any, *, symmetric_alg: Alg = cnf_mod.DEFAULT_SYMMETRIC_ALG) -> Claims:
        """Validate a decoded claims map: each registered claim must have the
        type RFC 8392 §3.1 (and RFC 8747, RFC 9200 §5.10) gives it; claim keys
        are integers or text. Raises :class:`MalformedError` otherwise."""
        if not isinstance(value, dict):
            raise MalformedError("CWT claims: expected a map")
        vals: list[Any] = [None] * _N_FIELDS
        extra: dict[int | str, Any] | None = None
        for key, item in value.items():
            kind = type(key)
            if kind is int:
                spec = _SPEC_BY_KEY.get(key)
                if spec is not None:
                    index, exact, parse, name = spec
                    # the claim's usual type passes as it is; anything else is
                    # checked (and converted) by its parser
                    vals[index] = item if type(item) is exact else parse(item, name)
                    continue
                if key == _CNF:
                    vals[_CNF_INDEX] = cnf_mod.decode(item, symmetric_alg=symmetric_alg)
                    continue
            elif kind is not str:
                raise MalformedError("CWT claims: claim keys must be integers or text")
            if extra is None:
                extra = {}
            extra[key] = item
        if cls is not Claims:  # a subclass gets its own __init__ / __post_init__
            # (a present claim never decodes to None: absent ones keep their defaults)
            fields = {n: v for n, v in zip(_FIELD_NAMES, vals, strict=True) if v is not None}
            if extra is not None:
                fields["extra"] = extra
            return cls(**fields)
        # The loop above already enforces what __post_init__ checks (extra keys
        # are exact ints or strs, none of them a registered claim), so the
        # instance is filled through the slot descriptors directly.
        iss, sub, aud, exp, nbf, iat, cti, cnf, scope, ace_profile, cnonce, exi = vals
        claims: Claims = _new(Claims)
        _set_iss(claims, iss)
        _set_sub(claims, sub)
        _set_aud(claims, aud)
        _set_exp(claims, exp)
        _set_nbf(claims, nbf)
        _set_iat(claims, iat)
        _set_cti(claims, cti)
        _set_cnf(claims, cnf)
        _set_scope(claims, scope)
        _set_ace_profile(claims, ace_profile)
        _set_cnonce(claims, cnonce)
        _set_exi(claims, exi)
        _set_extra(claims, _EMPTY if extra is None else extra)
        return claims

    @classmethod
    def decode(cls, data: bytes, *, symmetric_alg: Alg = cnf_mod.DEFAULT_SYMMETRIC_ALG) -> Claims:
        """Decode and validate an encoded claims set."""
        return cls.from_cbor(cbor.decode(data, what="CWT claims"), symmetric_alg=symmetric_alg)

    def audience_includes(self, audience: str) -> bool:
        """Whether ``aud`` names ``audience`` (RFC 8392 §3.1.3; an array of
        audiences as RFC 9200 §5.8.1 allows)."""
        aud = self.aud
        if aud is None:
            return False
        if isinstance(aud, str):
            return aud == audience
        return audience in aud

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view for operators: claim names, bytes as hex,
        a ``cnf`` key shown without its secret."""
        out: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            v = getattr(self, name)
            if v is None:
                continue
            if name == "cnf":
                out[name] = _describe_cnf(v)
            elif name == "aud" and isinstance(v, tuple):
                out[name] = list(v)
            else:
                out[name] = _jsonable(v)
        for key, v in self.extra.items():
            out[str(key)] = _jsonable(v)
        return out


def _text(v: Any, what: str) -> str:
    if type(v) is not str:
        raise MalformedError(f"CWT claims: {what} must be a text string")
    return v


def _bytes(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise MalformedError(f"CWT claims: {what} must be a byte string")
    return v


def _numeric_date(v: Any, what: str) -> int | float:
    """NumericDate (RFC 8392 §2): an integer or a finite float."""
    t = type(v)
    if t is int:
        return int(v)
    if t is float and math.isfinite(v):
        return float(v)
    raise MalformedError(f"CWT claims: {what} must be a NumericDate")


def _aud(v: Any, what: str) -> str | tuple[str, ...]:
    if type(v) is str:
        return str(v)
    if type(v) is list and v and all(type(a) is str for a in v):
        return tuple(v)
    raise MalformedError("CWT claims: aud must be a text string or an array of them")


def _scope(v: Any, what: str) -> bytes | str:
    if type(v) is bytes or type(v) is str:
        return v
    raise MalformedError("CWT claims: scope must be a text or byte string")


def _uint(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:
        raise MalformedError(f"CWT claims: {what} must be an unsigned integer")
    return int(v)


def _int(v: Any, what: str) -> int:
    if type(v) is not int:
        raise MalformedError(f"CWT claims: {what} must be an integer")
    return int(v)


_FIELD_BY_KEY: dict[int, tuple[str, Callable[[Any, str], Any]]] = {
    int(Claim.ISS): ("iss", _text),
    int(Claim.SUB): ("sub", _text),
    int(Claim.AUD): ("aud", _aud),
    int(Claim.EXP): ("exp", _numeric_date),
    int(Claim.NBF): ("nbf", _numeric_date),
    int(Claim.IAT): ("iat", _numeric_date),
    int(Claim.CTI): ("cti", _bytes),
    int(Claim.SCOPE): ("scope", _scope),
    int(Claim.ACE_PROFILE): ("ace_profile", _int),
    int(Claim.CNONCE): ("cnonce", _bytes),
    int(Claim.EXI): ("exi", _uint),
}
_CNF = int(Claim.CNF)  # decoded by tokens.cnf
_KNOWN_KEYS = frozenset((*_FIELD_BY_KEY, _CNF))
_FIELD_NAMES = (
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "cti",
    "cnf",
    "scope",
    "ace_profile",
    "cnonce",
    "exi",
)


class _Never:
    """A type no decoded value has: claims whose every value needs its parser."""


#: The type a claim's value has in the common case, for which its parser would
#: return the value unchanged (a text ``iss``, an integer ``exp``, ...). ``exi``
#: must also be >= 0, so it always goes through its parser.
_EXACT_TYPE: dict[str, type] = {
    "iss": str,
    "sub": str,
    "aud": str,
    "exp": int,
    "nbf": int,
    "iat": int,
    "cti": bytes,
    "scope": bytes,
    "ace_profile": int,
    "cnonce": bytes,
    "exi": _Never,
}
_N_FIELDS = len(_FIELD_NAMES)
_CNF_INDEX = _FIELD_NAMES.index("cnf")
#: claim key -> (index in _FIELD_NAMES, exact type, parser, field name)
_SPEC_BY_KEY: dict[int, tuple[int, type, Callable[[Any, str], Any], str]] = {
    key: (_FIELD_NAMES.index(name), _EXACT_TYPE[name], parse, name)
    for key, (name, parse) in _FIELD_BY_KEY.items()
}
_new = object.__new__
(
    _set_iss,
    _set_sub,
    _set_aud,
    _set_exp,
    _set_nbf,
    _set_iat,
    _set_cti,
    _set_cnf,
    _set_scope,
    _set_ace_profile,
    _set_cnonce,
    _set_exi,
    _set_extra,
) = (Claims.__dict__[name].__set__ for name in (*_FIELD_NAMES, "extra"))


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return repr(v)


def _describe_cnf(c: Confirmation) -> dict[str, Any]:
    c = cnf_mod.redact(c)
    if isinstance(c, cnf_mod.CnfKid):
        return {"kid": c.kid.hex()}
    if isinstance(c, cnf_mod.CnfEncryptedKey):
        return {"encrypted_cose_key": f"{len(c.ciphertext)} bytes"}
    if isinstance(c, cnf_mod.CnfRedactedKey):
        return {"cose_key": {"kty": c.kty, "kid": c.kid.hex(), "alg": c.alg, "k": "<withheld>"}}
    return {"cose_key": _jsonable(c.key.to_cose())}


# --- minting (RFC 8392 §7.1) --------------------------------------------------


def mint(
    claims: Claims,
    key: CoseKey,
    *,
    tagged: bool = False,
    cwt_tag: bool = False,
    external_aad: bytes = b"",
    iv: bytes | None = None,
) -> bytes:
    """Create a CWT (RFC 8392 §7.1): COSE_Sign1 for an ES256/EdDSA key,
    COSE_Mac0 for an HMAC key, COSE_Encrypt0 for an AES-CCM key. The key's
    kid goes in the unprotected header, its algorithm in the protected one.

    Untagged by default (smaller; the verifier's key fixes the type).
    ``tagged`` adds the COSE tag (RFC 9052 §2); ``cwt_tag`` adds the CWT tag
    61 in front of it (RFC 8392 §6) and implies ``tagged``. ``iv`` fixes the
    Encrypt0 IV (test vectors only; random otherwise)."""
    return _protect(claims.encode(), key, tagged, cwt_tag, external_aad, iv)


def nest(
    token: bytes,
    key: CoseKey,
    *,
    tagged: bool = False,
    cwt_tag: bool = False,
    external_aad: bytes = b"",
    iv: bytes | None = None,
) -> bytes:
    """Encrypt a signed or MACed CWT into a COSE_Encrypt0 whose plaintext is
    that token (a nested CWT, RFC 8392 §7.1 step 7 and Appendix A.6)."""
    if _KIND_BY_ALG.get(key.alg) is not CoseTag.ENCRYPT0:
        raise ValueError("nesting needs an AEAD key")
    return _protect(bytes(token), key, tagged, cwt_tag, external_aad, iv)


def _protect(
    payload: bytes,
    key: CoseKey,
    tagged: bool,
    cwt_tag: bool,
    external_aad: bytes,
    iv: bytes | None,
) -> bytes:
    kind = _KIND_BY_ALG.get(key.alg)
    tagged = tagged or cwt_tag
    if kind is CoseTag.ENCRYPT0:
        out = cose.encrypt0(key, payload, external_aad=external_aad, iv=iv, tagged=tagged)
    elif iv is not None:
        raise ValueError("an IV is only used with an AEAD key")
    elif kind is CoseTag.SIGN1:
        out = cose.sign1(key, payload, external_aad=external_aad, tagged=tagged)
    elif kind is CoseTag.MAC0:
        out = cose.mac0(key, payload, external_aad=external_aad, tagged=tagged)
    else:
        raise ValueError(f"no CWT message type for {key.alg!r}")
    return _CWT_TAG_HEAD + out if cwt_tag else out


# --- verification (RFC 8392 §7.2, RFC 9200 §5.10.1.1) -------------------------


def _unwrap(value: Any, what: str) -> tuple[list[Any], CoseTag | None]:
    """Strip an optional CWT tag 61 and an optional COSE tag (RFC 8392 §6,
    RFC 9052 §2); return the message array and the COSE tag if there was one.
    Any other tag, or a second tag 61, is malformed."""
    if isinstance(value, cbor2.CBORTag) and value.tag == _CWT_TAG:
        value = value.value
    tag: CoseTag | None = None
    if isinstance(value, cbor2.CBORTag):
        tag = _COSE_TAGS.get(value.tag)
        if tag is None:
            raise MalformedError(f"{what}: unexpected CBOR tag {value.tag}")
        value = value.value
    if type(value) is not list or len(value) not in (3, 4):
        raise MalformedError(f"{what}: not a COSE_Sign1, COSE_Mac0 or COSE_Encrypt0")
    return value, tag


class TokenVerifier:
    """Verifies CWTs for one audience (RFC 8392 §7.2, RFC 9200 §5.10.1.1).

    ``keys`` holds the signature and MAC keys (Sign1/Mac0 tokens and the inner
    layer of nested ones), ``decryption_keys`` the AEAD keys of Encrypt0
    tokens. Both are looked up by kid only and read at each call, so adding or
    removing keys (rotation) takes effect at once. The issuer check is on
    unless ``accept_any_issuer=True`` is given explicitly; the audience check
    is always on. ``algorithms`` optionally restricts the accepted key
    algorithms. ``require_exp`` refuses tokens without ``exp`` (a token that
    uses ``exi`` only needs the caller to track first use; set it False then).
    """

    __slots__ = (
        "_algorithms",
        "_audience",
        "_dec_keys",
        "_external_aad",
        "_issuer",
        "_keys",
        "_leeway",
        "_require_exp",
        "_symmetric_alg",
    )

    def __init__(
        self,
        *,
        audience: str,
        keys: KeySet,
        decryption_keys: KeySet | None = None,
        issuer: str | None = None,
        accept_any_issuer: bool = False,
        leeway: float = DEFAULT_LEEWAY,
        algorithms: Iterable[Alg] | None = None,
        require_exp: bool = True,
        external_aad: bytes = b"",
        pop_symmetric_alg: Alg = cnf_mod.DEFAULT_SYMMETRIC_ALG,
    ) -> None:
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience is required")
        if issuer is None and not accept_any_issuer:
            raise ValueError("give the expected issuer, or accept_any_issuer=True")
        if issuer is not None and accept_any_issuer:
            raise ValueError("issuer and accept_any_issuer=True exclude each other")
        if not (leeway >= 0 and math.isfinite(leeway)):
            raise ValueError("leeway must be a finite number >= 0")
        self._audience = audience
        self._keys = keys
        self._dec_keys = decryption_keys if decryption_keys is not None else KeySet()
        self._issuer = issuer
        self._leeway = float(leeway)
        self._algorithms = frozenset(algorithms) if algorithms is not None else None
        self._require_exp = require_exp
        self._external_aad = external_aad
        self._symmetric_alg = pop_symmetric_alg

    @property
    def audience(self) -> str:
        return self._audience

    def verify(self, token: bytes, now: float) -> Claims:
        """Verify ``token`` at time ``now``; return its claims.

        Checks, in this order, each failing with its own error (the CoAP codes
        are those of RFC 9200 §5.10.1.1):

        1. CBOR and COSE structure: one CBOR item, optional tag 61, optional
           COSE tag 16/17/18, headers per RFC 9052 §3 (``alg`` protected,
           ``crit`` understood) -> :class:`MalformedError` 4.00
           (``alg`` only unprotected -> :class:`AlgorithmMismatch` 4.01);
        2. the kid (protected or unprotected) names a key: a 3-element
           message in ``decryption_keys``, a 4-element one in ``keys``
           -> :class:`UnknownKey` 4.01 (also for no kid);
        3. the key's algorithm is accepted, fits the message (an untagged
           message's type is the one the key's algorithm is used with; a
           COSE tag must agree) and equals the protected ``alg``
           -> :class:`AlgorithmMismatch` 4.01;
        4. signature / MAC / AEAD tag -> :class:`BadSignature` 4.01; an
           Encrypt0 plaintext that is itself a Sign1/Mac0 (RFC 8392 A.6) goes
           through steps 1-4 once more with ``keys``;
        5. claim types (RFC 8392 §3.1) -> :class:`MalformedError` 4.00;
        6. ``iss`` -> :class:`WrongIssuer` 4.01;
        7. ``exp``: expired when ``exp + leeway <= now`` (or absent while
           required) -> :class:`Expired` 4.01;
        8. ``nbf``: not yet valid when ``nbf - leeway > now``
           -> :class:`NotYetValid` 4.01;
        9. ``aud`` is, or is an array containing, our audience
           -> :class:`WrongAudience` 4.03.
        """
        payload = self._open(cbor.decode(token, what="token"), allow_encrypt=True)
        claims = Claims.from_cbor(payload, symmetric_alg=self._symmetric_alg)
        self.check_claims(claims, now)
        return claims

    def check_claims(self, claims: Claims, now: float) -> None:
        """Steps 6-9 of :meth:`verify` on already authenticated claims."""
        if self._issuer is not None and claims.iss != self._issuer:
            raise WrongIssuer("token issuer is not the expected one")
        leeway = self._leeway
        exp = claims.exp
        if exp is None:
            if self._require_exp:
                raise Expired("token has no exp claim")
        elif exp + leeway <= now:
            raise Expired("token has expired")
        nbf = claims.nbf
        if nbf is not None and nbf - leeway > now:
            raise NotYetValid("token is not valid yet")
        if not claims.audience_includes(self._audience):
            raise WrongAudience("token is not meant for this audience")

    def _open(self, value: Any, *, allow_encrypt: bool) -> Any:
        """Steps 1-4 for one COSE layer; returns the decoded payload (for an
        Encrypt0 around a Sign1/Mac0, the inner layer's payload)."""
        what = "token" if allow_encrypt else "nested token"
        items, tag = _unwrap(value, what)
        encrypted = len(items) == 3
        if encrypted and not allow_encrypt:
            raise MalformedError("nested token: only one level of nesting is supported")
        provisional = tag or (CoseTag.ENCRYPT0 if encrypted else CoseTag.SIGN1)
        msg = cose.decode(items, provisional, what=what)
        kid = msg.kid
        if kid is None:
            raise UnknownKey(f"{what} has no kid")
        key = (self._dec_keys if encrypted else self._keys).get(kid)
        alg = key.alg
        if self._algorithms is not None and alg not in self._algorithms:
            raise AlgorithmMismatch(f"algorithm {alg.name} is not accepted")
        kind = _KIND_BY_ALG.get(alg)
        if tag is not None and tag is not kind:
            raise AlgorithmMismatch(f"{tag.name} tag does not fit a {alg.name} key")
        if kind is None or (kind is CoseTag.ENCRYPT0) is not encrypted:
            raise AlgorithmMismatch(f"message does not fit a {alg.name} key")
        key.check_alg(msg.alg)
        aad = self._external_aad
        if encrypted:
            iv = msg.header(_IV)
            if type(iv) is not bytes:
                raise MalformedError(f"{what}: COSE_Encrypt0 without an IV")
            plaintext = key.decrypt(iv, msg.last, cose.enc_structure(msg.protected_bytes, aad))
            inner = cbor.decode(plaintext, what="CWT payload")
            if type(inner) is dict:
                return inner
            # RFC 8392 §7.2 step 9 / A.6: the plaintext is itself a CWT.
            return self._open(inner, allow_encrypt=False)
        payload = msg.payload
        if payload is None:
            raise MalformedError(f"{what}: detached payload")
        if kind is CoseTag.SIGN1:
            key.verify(cose.sig_structure(msg.protected_bytes, aad, payload), msg.last)
        else:
            key.verify_mac(cose.mac_structure(msg.protected_bytes, aad, payload), msg.last)
        return cbor.decode(payload, what="CWT claims")


# --- inspection without keys ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What :func:`decode_unverified` can tell about a token without a key.

    ``kind`` comes from the COSE tag, or for an untagged token from the
    array length and the (unverified) protected ``alg``; ``None`` when it
    cannot be told. ``claims`` is ``None`` for an Encrypt0 token.
    """

    kind: CoseTag | None
    cwt_tag: bool
    cose_tag: bool
    alg: Any
    kid: bytes | None
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    claims: Claims | None
    size: int

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view (no key material)."""
        alg = self.alg
        try:
            alg_name: Any = Alg(alg).name if type(alg) is int else _jsonable(alg)
        except ValueError:
            alg_name = alg
        return {
            "type": self.kind.name if self.kind is not None else None,
            "cwt_tag": self.cwt_tag,
            "cose_tag": self.cose_tag,
            "alg": alg_name,
            "kid": self.kid.hex() if self.kid is not None else None,
            "size": self.size,
            "protected": _jsonable(self.protected),
            "unprotected": _jsonable(self.unprotected),
            "claims": self.claims.describe() if self.claims is not None else None,
        }


def decode_unverified(token: bytes, *, reveal_keys: bool = False) -> TokenInfo:
    """Parse a token's structure and, for Sign1/Mac0, its claims, WITHOUT
    verifying anything (for display only; RFC 8392 §7.2 minus the checks).

    A symmetric ``cnf`` key is returned as a :class:`~tokens.cnf.CnfRedactedKey`
    unless ``reveal_keys`` is true. Malformed input raises :class:`MalformedError`.
    """
    value = cbor.decode(token, what="token")
    cwt_tag = isinstance(value, cbor2.CBORTag) and value.tag == CoseTag.CWT
    items, tag = _unwrap(value, "token")
    encrypted = len(items) == 3
    msg = cose.decode(items, tag or (CoseTag.ENCRYPT0 if encrypted else CoseTag.SIGN1))
    kind = tag
    if kind is None:
        if encrypted:
            kind = CoseTag.ENCRYPT0
        else:
            try:
                guessed = _KIND_BY_ALG.get(Alg(msg.alg)) if type(msg.alg) is int else None
            except ValueError:
                guessed = None
            kind = guessed if guessed in (CoseTag.SIGN1, CoseTag.MAC0) else None
    claims: Claims | None = None
    if not encrypted:
        if msg.payload is None:
            raise MalformedError("token: detached payload")
        claims = Claims.decode(msg.payload)
        if not reveal_keys and claims.cnf is not None:
            claims = replace(claims, cnf=cnf_mod.redact(claims.cnf))
    return TokenInfo(
        kind=kind,
        cwt_tag=cwt_tag,
        cose_tag=tag is not None,
        alg=msg.alg,
        kid=msg.kid,
        protected=msg.protected,
        unprotected=msg.unprotected,
        claims=claims,
        size=len(token),
    )
