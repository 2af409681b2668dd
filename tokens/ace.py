"""ACE messages in ``application/ace+cbor`` (RFC 9200, RFC 9201).

Codecs for the token endpoint (RFC 9200 §5.8: request, response, error
response), the introspection endpoint (§5.9) and the AS Request Creation
Hints (§5.3). Every message is a CBOR map keyed by the integer abbreviations
of :mod:`tokens.params`; each is a frozen dataclass with ``decode(data)`` and
``encode()``.

Decoding is strict where it matters and lenient where OAuth says so:

* the input must be exactly one CBOR map (no trailing bytes, at most
  :data:`MAX_MESSAGE` bytes), with integer or text keys and no key twice
  (RFC 8949 §5.6: a map with duplicate keys is not valid);
* a known parameter with the wrong CBOR type raises
  :class:`~tokens.errors.MalformedError` (4.00, ``invalid_request``) naming
  the parameter, a missing required one likewise;
* unknown integer parameters are ignored (RFC 6749 §3.1/§3.2: the server
  ignores unrecognized request parameters; no parameter may appear more than
  once). A known parameter whose value is CBOR null is a wrong type, not an
  omission (only ``ace_profile`` has a meaning for null, RFC 9200 §5.8.1).
  Text keys are ignored too, except a
  text key spelling a known parameter name (``"scope"``): RFC 9200 §5 requires
  the abbreviations in CBOR, and silently dropping such a parameter would hand
  out a token for something the client did not ask for.

Values that another module interprets stay raw: ``req_cnf``, ``cnf`` and
``rs_cnf`` are the decoded maps (``tokens.cnf`` reads them), ``scope`` is the
byte or text string (:mod:`tokens.aif` reads it; see :meth:`TokenRequest.aif_scope`).
Secrets (tokens, ``cnf`` maps that may carry a symmetric PoP key) are left out
of ``repr`` and never appear in error messages.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

import cbor2

from . import cbor
from .aif import Scope
from .errors import MalformedError, TokenError
from .params import (
    AceError,
    CoapCode,
    CreationHint,
    GrantType,
    IntrospectionParam,
    Param,
)

#: Largest ACE message accepted (bytes). A token request with a COSE_Key is
#: ~150 bytes and a token response with a typical token ~300.
MAX_MESSAGE = 4096
#: Upper bound (exclusive) of integers read as uint / int: 64-bit, no bignums.
_UINT_LIMIT = 1 << 64

_E = TypeVar("_E", bound=IntEnum)

#: Text spellings of known parameters, refused as keys (see module docstring).
_KNOWN_NAMES = frozenset(
    name.lower() for enum in (Param, IntrospectionParam, CreationHint) for name in enum.__members__
)
_MISSING: Any = object()
_SELF_DESCRIBE = b"\xd9\xd9\xf7"  # tag 55799 (RFC 8949 §3.4.6), which cbor2 strips


# --- decoding helpers ---------------------------------------------------------


def _pair_count(data: bytes, what: str) -> int:
    """Number of key/value pairs the top-level map header announces (or, for an
    indefinite-length map, that it holds). ``data`` is known well-formed."""
    while data.startswith(_SELF_DESCRIBE):
        data = data[3:]
    first = data[0]
    if first >> 5 != 5:
        raise MalformedError(f"{what}: expected an untagged map")
    info = first & 0x1F
    if info < 24:
        return info
    if 24 <= info <= 27:
        size = 1 << (info - 24)
        return int.from_bytes(data[1 : 1 + size], "big")
    # Indefinite length (RFC 8949 §3.2.2): walk the pairs up to the "break".
    fp = io.BytesIO(data)
    fp.seek(1)
    decoder = cbor2.CBORDecoder(fp)
    pairs = 0
    try:
        while data[fp.tell()] != 0xFF:
            decoder.decode()
            decoder.decode()
            pairs += 1
    except Exception as exc:  # already validated; belt and braces
        raise MalformedError(f"{what}: not well-formed CBOR") from exc
    return pairs


def _decode_params(data: bytes, what: str, limit: int) -> dict[int, Any]:
    """Decode an ``application/ace+cbor`` map (RFC 9200 §5): one CBOR map with
    integer (or ignored text) keys, none repeated."""
    value = cbor.decode(data, what=what, limit=limit)
    params = cbor.as_map(value, what)
    if _pair_count(bytes(data), what) != len(params):
        raise MalformedError(f"{what}: a parameter appears more than once")
    out: dict[int, Any] = {}
    for key, val in params.items():
        if isinstance(key, str):
            if key in _KNOWN_NAMES:
                raise MalformedError(f"{what}: parameter {key!r} must use its integer abbreviation")
            continue
        if isinstance(key, bool) or not isinstance(key, int):
            raise MalformedError(f"{what}: parameter keys must be integers or text")
        out[key] = val
    return out


def _name(key: IntEnum) -> str:
    return key.name.lower()


def _uint(value: Any, what: str) -> int:
    n = cbor.as_uint(value, what)
    if n >= _UINT_LIMIT:
        raise MalformedError(f"{what}: larger than 64 bits")
    return n


def _int(value: Any, what: str) -> int:
    n = cbor.as_int(value, what)
    if not -_UINT_LIMIT <= n < _UINT_LIMIT:
        raise MalformedError(f"{what}: larger than 64 bits")
    return n


def _scope(value: Any, what: str) -> bytes | str:
    """RFC 9200 §5.8.1: ``scope`` is a text or byte string."""
    if not isinstance(value, bytes | str):
        raise MalformedError(f"{what}: expected a byte or text string")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise MalformedError(f"{what}: expected true or false")
    return value


def _text_or_int(value: Any, what: str) -> int | str:
    if isinstance(value, str):
        return value
    return _int(value, what)


def _enum(enum: type[_E], value: int) -> int:
    """The enum member for a known value, the plain int otherwise."""
    try:
        return enum(value)
    except ValueError:
        return value


class _Reader:
    """Typed access to the parameters of one decoded message."""

    def __init__(self, params: dict[int, Any], what: str) -> None:
        self.params = params
        self.what = what

    def get(self, key: IntEnum, conv: Any, *, required: bool = False) -> Any:
        value = self.params.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise MalformedError(f"{self.what}: {_name(key)} is missing")
            return None
        return conv(value, f"{self.what}: {_name(key)}")


def _encode(items: dict[int, Any]) -> bytes:
    """Encode the parameters that are set (RFC 6749 §3.2: absent, not null)."""
    return cbor.encode({int(k): v for k, v in items.items() if v is not None})


# --- token endpoint (RFC 9200 §5.8) -------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TokenRequest:
    """Access token request (RFC 9200 §5.8.1).

    ``grant_type`` is OPTIONAL in ACE (unlike RFC 6749) and defaults to
    ``client_credentials`` when absent (RFC 9200 §5.8.1); unknown grant types
    are kept as integers for the AS to refuse with ``unsupported_grant_type``.
    ``ace_profile`` is True when the client sent ``ace_profile: null`` to ask
    which profile to use (RFC 9200 §5.8.4.3); any other value is malformed.
    ``req_cnf`` is the raw ``cnf``-style map of RFC 9201 §5.
    """

    grant_type: int = GrantType.CLIENT_CREDENTIALS
    client_id: str | None = None
    scope: bytes | str | None = None
    audience: str | None = None
    req_cnf: dict[Any, Any] | None = field(default=None, repr=False)
    cnonce: bytes | None = None
    ace_profile: bool = False

    @classmethod
    def decode(cls, data: bytes, *, limit: int = MAX_MESSAGE) -> TokenRequest:
        r = _Reader(_decode_params(data, "token request", limit), "token request")
        grant_type = r.get(Param.GRANT_TYPE, _int)
        ace_profile = Param.ACE_PROFILE in r.params
        if ace_profile and r.params[Param.ACE_PROFILE] is not None:
            raise MalformedError("token request: ace_profile must be null in a request")
        return cls(
            grant_type=(
                GrantType.CLIENT_CREDENTIALS if grant_type is None else _enum(GrantType, grant_type)
            ),
            client_id=r.get(Param.CLIENT_ID, cbor.as_text),
            scope=r.get(Param.SCOPE, _scope),
            audience=r.get(Param.AUDIENCE, cbor.as_text),
            req_cnf=r.get(Param.REQ_CNF, cbor.as_map),
            cnonce=r.get(Param.CNONCE, cbor.as_bytes),
            ace_profile=ace_profile,
        )

    def encode(self) -> bytes:
        """The request map; ``grant_type`` is always sent (RFC 6749 §4.4.2
        servers require it), ``ace_profile`` as null when set."""
        items: dict[int, Any] = {
            Param.GRANT_TYPE: int(self.grant_type),
            Param.CLIENT_ID: self.client_id,
            Param.SCOPE: self.scope,
            Param.AUDIENCE: self.audience,
            Param.REQ_CNF: self.req_cnf,
            Param.CNONCE: self.cnonce,
        }
        out = {int(k): v for k, v in items.items() if v is not None}
        if self.ace_profile:
            out[Param.ACE_PROFILE] = None
        return cbor.encode(out)

    def aif_scope(self) -> Scope | None:
        """The requested scope as AIF (:meth:`Scope.from_scope_param`), or None
        when the client asked for the default scope. Raises InvalidScope."""
        return None if self.scope is None else Scope.from_scope_param(self.scope)


@dataclass(frozen=True, kw_only=True)
class TokenResponse:
    """Successful access token response (RFC 9200 §5.8.2, RFC 9201 §5).

    ``expires_in`` is RECOMMENDED, so optional; ``token_type`` defaults to PoP
    in ACE when absent (RFC 9200 §5.8.4.2) and is kept None then.
    ``cnf`` may carry a symmetric PoP key: it never appears in ``repr``.
    """

    access_token: bytes = field(repr=False)
    expires_in: int | None = None
    cnf: dict[Any, Any] | None = field(default=None, repr=False)
    rs_cnf: dict[Any, Any] | None = field(default=None, repr=False)
    ace_profile: int | None = None
    token_type: int | None = None
    scope: bytes | str | None = None

    @classmethod
    def decode(cls, data: bytes, *, limit: int = MAX_MESSAGE) -> TokenResponse:
        r = _Reader(_decode_params(data, "token response", limit), "token response")
        return cls(
            access_token=r.get(Param.ACCESS_TOKEN, cbor.as_bytes, required=True),
            expires_in=r.get(Param.EXPIRES_IN, _uint),
            cnf=r.get(Param.CNF, cbor.as_map),
            rs_cnf=r.get(Param.RS_CNF, cbor.as_map),
            ace_profile=r.get(Param.ACE_PROFILE, _int),
            token_type=r.get(Param.TOKEN_TYPE, _int),
            scope=r.get(Param.SCOPE, _scope),
        )

    def encode(self) -> bytes:
        return _encode(
            {
                Param.ACCESS_TOKEN: self.access_token,
                Param.EXPIRES_IN: self.expires_in,
                Param.CNF: self.cnf,
                Param.RS_CNF: self.rs_cnf,
                Param.ACE_PROFILE: None if self.ace_profile is None else int(self.ace_profile),
                Param.TOKEN_TYPE: None if self.token_type is None else int(self.token_type),
                Param.SCOPE: self.scope,
            }
        )

    def aif_scope(self) -> Scope | None:
        """The granted scope as AIF, or None when the AS did not say (then it
        is the requested one, RFC 9200 §5.8.2)."""
        return None if self.scope is None else Scope.from_scope_param(self.scope)


@dataclass(frozen=True, kw_only=True)
class ErrorResponse:
    """Error response of the token and introspection endpoints (RFC 9200
    §5.8.3, §5.9.3). ``error`` is an :class:`AceError` when the code is known,
    the plain integer otherwise."""

    error: int
    error_description: str | None = None
    error_uri: str | None = None

    @classmethod
    def from_exception(cls, exc: TokenError, *, with_description: bool = True) -> ErrorResponse:
        """The answer to a request that raised ``exc``: its ACE error code
        (``invalid_request`` for errors that define none) and its description
        (which, by the rule of :mod:`tokens.errors`, holds no secret)."""
        error = exc.ace_error if exc.ace_error is not None else AceError.INVALID_REQUEST
        return cls(error=error, error_description=exc.description if with_description else None)

    @property
    def coap_code(self) -> CoapCode:
        """4.01 for ``invalid_client``, 4.00 for every other error (RFC 9200 §5.8.3)."""
        if self.error == AceError.INVALID_CLIENT:
            return CoapCode.UNAUTHORIZED
        return CoapCode.BAD_REQUEST

    @classmethod
    def decode(cls, data: bytes, *, limit: int = MAX_MESSAGE) -> ErrorResponse:
        r = _Reader(_decode_params(data, "error response", limit), "error response")
        return cls(
            error=_enum(AceError, r.get(Param.ERROR, _int, required=True)),
            error_description=r.get(Param.ERROR_DESCRIPTION, cbor.as_text),
            error_uri=r.get(Param.ERROR_URI, cbor.as_text),
        )

    def encode(self) -> bytes:
        return _encode(
            {
                Param.ERROR: int(self.error),
                Param.ERROR_DESCRIPTION: self.error_description,
                Param.ERROR_URI: self.error_uri,
            }
        )


# --- introspection endpoint (RFC 9200 §5.9) -----------------------------------


@dataclass(frozen=True, kw_only=True)
class IntrospectionRequest:
    """Introspection request (RFC 9200 §5.9.1, RFC 7662 §2.1). The RFC 7662
    ``token_type_hint`` is a name (text) there and has an abbreviation key
    here; both text and integer values are accepted."""

    token: bytes = field(repr=False)
    token_type_hint: int | str | None = None

    @classmethod
    def decode(cls, data: bytes, *, limit: int = MAX_MESSAGE) -> IntrospectionRequest:
        what = "introspection request"
        r = _Reader(_decode_params(data, what, limit), what)
        return cls(
            token=r.get(IntrospectionParam.TOKEN, cbor.as_bytes, required=True),
            token_type_hint=r.get(IntrospectionParam.TOKEN_TYPE_HINT, _text_or_int),
        )

    def encode(self) -> bytes:
        return _encode(
            {
                IntrospectionParam.TOKEN: self.token,
                IntrospectionParam.TOKEN_TYPE_HINT: self.token_type_hint,
            }
        )


@dataclass(frozen=True, kw_only=True)
class IntrospectionResponse:
    """Introspection response (RFC 9200 §5.9.2, RFC 7662 §2.2). ``active`` is
    required; the other members describe an active token (an AS answers an
    inactive one with ``active`` alone, RFC 7662 §2.2). Times are NumericDate
    (integer or float seconds, RFC 8392 §2)."""

    active: bool
    iss: str | None = None
    sub: str | None = None
    aud: str | None = None
    exp: int | float | None = None
    nbf: int | float | None = None
    iat: int | float | None = None
    cti: bytes | None = None
    scope: bytes | str | None = None
    cnf: dict[Any, Any] | None = field(default=None, repr=False)
    rs_cnf: dict[Any, Any] | None = field(default=None, repr=False)
    exi: int | None = None
    ace_profile: int | None = None
    client_id: str | None = None
    token_type: int | None = None
    cnonce: bytes | None = None

    @classmethod
    def inactive(cls) -> IntrospectionResponse:
        """The answer for an unknown, expired or revoked token (RFC 7662 §2.2)."""
        return cls(active=False)

    @classmethod
    def decode(cls, data: bytes, *, limit: int = MAX_MESSAGE) -> IntrospectionResponse:
        what = "introspection response"
        r = _Reader(_decode_params(data, what, limit), what)
        p = IntrospectionParam
        return cls(
            active=r.get(p.ACTIVE, _bool, required=True),
            iss=r.get(p.ISS, cbor.as_text),
            sub=r.get(p.SUB, cbor.as_text),
            aud=r.get(p.AUD, cbor.as_text),
            exp=r.get(p.EXP, cbor.as_number),
            nbf=r.get(p.NBF, cbor.as_number),
            iat=r.get(p.IAT, cbor.as_number),
            cti=r.get(p.CTI, cbor.as_bytes),
            scope=r.get(p.SCOPE, _scope),
            cnf=r.get(p.CNF, cbor.as_map),
            rs_cnf=r.get(p.RS_CNF, cbor.as_map),
            exi=r.get(p.EXI, _uint),
            ace_profile=r.get(p.ACE_PROFILE, _int),
            client_id=r.get(p.CLIENT_ID, cbor.as_text),
            token_type=r.get(p.TOKEN_TYPE, _int),
            cnonce=r.get(p.CNONCE, cbor.as_bytes),
        )

    def encode(self) -> bytes:
        p = IntrospectionParam
        return _encode(
            {
                p.ACTIVE: self.active,
                p.ISS: self.iss,
                p.SUB: self.sub,
                p.AUD: self.aud,
                p.EXP: self.exp,
                p.NBF: self.nbf,
                p.IAT: self.iat,
                p.CTI: self.cti,
                p.SCOPE: self.scope,
                p.CNF: self.cnf,
                p.RS_CNF: self.rs_cnf,
                p.EXI: self.exi,
                p.ACE_PROFILE: None if self.ace_profile is None else int(self.ace_profile),
                p.CLIENT_ID: self.client_id,
                p.TOKEN_TYPE: None if self.token_type is None else int(self.token_type),
                p.CNONCE: self.cnonce,
            }
        )

    def aif_scope(self) -> Scope | None:
        """The token's scope as AIF, or None when absent."""
        return None if self.scope is None else Scope.from_scope_param(self.scope)


# --- AS Request Creation Hints (RFC 9200 §5.3) --------------------------------


@dataclass(frozen=True, kw_only=True)
class CreationHints:
    """AS Request Creation Hints (RFC 9200 §5.3, Table 2), sent by the RS with
    4.01 to a request that lacks a valid token. Every member is optional."""

    as_uri: str | None = None
    kid: bytes | None = None
    audience: str | None = None
    scope: bytes | str | None = None
    cnonce: bytes | None = None

    @classmethod
    def decode(cls, data: bytes, *, limit: int = MAX_MESSAGE) -> CreationHints:
        what = "creation hints"
        r = _Reader(_decode_params(data, what, limit), what)
        return cls(
            as_uri=r.get(CreationHint.AS, cbor.as_text),
            kid=r.get(CreationHint.KID, cbor.as_bytes),
            audience=r.get(CreationHint.AUDIENCE, cbor.as_text),
            scope=r.get(CreationHint.SCOPE, _scope),
            cnonce=r.get(CreationHint.CNONCE, cbor.as_bytes),
        )

    def encode(self) -> bytes:
        return _encode(
            {
                CreationHint.AS: self.as_uri,
                CreationHint.KID: self.kid,
                CreationHint.AUDIENCE: self.audience,
                CreationHint.SCOPE: self.scope,
                CreationHint.CNONCE: self.cnonce,
            }
        )
