"""CBOR diagnostic notation (RFC 8949 §8, with the RFC 8610 Appendix G
extensions: ``/ comments /`` and ``<< embedded CBOR >>``) for the firmware
notes, annotated with the names of ACE, CWT and COSE labels.

Only what the vectors contain is supported: integers, byte and text strings,
arrays, maps, tags, true/false/null. A *context* names what a value is (a
token request, a COSE_Key, ...); it picks the label names for map keys and
array positions, which byte strings hold embedded CBOR, and comments on
values (``4 / HMAC 256/64 /``). Output is deterministic.
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

__all__ = ["diag"]

#: Lines longer than this are broken up (maps and arrays one item per line).
WIDTH = 76

_ALGS = {
    4: "HMAC 256/64",
    5: "HMAC 256/256",
    10: "AES-CCM-16-64-128",
    -7: "ES256",
    -8: "EdDSA",
}
_KTY = {1: "OKP", 2: "EC2", 4: "Symmetric"}
_CRV = {1: "P-256", 6: "Ed25519"}
_METHODS = ["GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "iPATCH"]


def _alg(v: Any) -> str | None:
    return _ALGS.get(v) if type(v) is int else None


def _date(v: Any) -> str | None:
    if type(v) is not int:
        return None
    return datetime.datetime.fromtimestamp(v, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _methods(v: Any) -> str | None:
    if type(v) is not int:
        return None
    return ",".join(m for i, m in enumerate(_METHODS) if v >> i & 1) or None


def _method_code(v: Any) -> str | None:
    return _METHODS[v - 1] if type(v) is int and 1 <= v <= 7 else None


@dataclass(frozen=True)
class Ctx:
    """How to annotate one kind of CBOR item."""

    #: map key or array index -> label name
    labels: dict[Any, str] = field(default_factory=dict)
    #: map key or array index -> context of that member (for nested items,
    #: and for byte strings that hold embedded CBOR)
    children: dict[Any, str] = field(default_factory=dict)
    #: map key or array index -> comment on the member's value
    values: dict[Any, Callable[[Any], str | None]] = field(default_factory=dict)
    #: context of every element (arrays of like items)
    each: str | None = None


_ACE = {
    1: "access_token",
    2: "expires_in",
    4: "req_cnf",
    5: "audience",
    8: "cnf",
    9: "scope",
    24: "client_id",
    30: "error",
    32: "error_description",
    33: "grant_type",
    34: "token_type",
    38: "ace_profile",
    39: "cnonce",
    40: "exi",
    41: "rs_cnf",
}
_ACE_ERRORS = {
    1: "invalid_request",
    2: "invalid_client",
    3: "invalid_grant",
    4: "unauthorized_client",
    5: "unsupported_grant_type",
    6: "invalid_scope",
    7: "unsupported_pop_key",
    8: "incompatible_ace_profiles",
}
_CLAIMS = {
    1: "iss",
    2: "sub",
    3: "aud",
    4: "exp",
    5: "nbf",
    6: "iat",
    7: "cti",
    8: "cnf",
    9: "scope",
    38: "ace_profile",
    39: "cnonce",
    40: "exi",
}
_HEADERS = {1: "alg", 2: "crit", 3: "content type", 4: "kid", 5: "IV", 6: "Partial IV"}

CONTEXTS: dict[str, Ctx] = {
    "token_request": Ctx(
        labels=_ACE,
        children={4: "cnf", 9: "aif"},
        values={33: lambda v: {2: "client_credentials"}.get(v)},
    ),
    "token_response": Ctx(
        labels=_ACE,
        children={1: "token", 8: "cnf", 9: "aif"},
        values={
            34: lambda v: {1: "Bearer", 2: "PoP"}.get(v),
            38: lambda v: {1: "coap_dtls"}.get(v),
        },
    ),
    "ace_error": Ctx(labels=_ACE, values={30: _ACE_ERRORS.get}),
    "creation_hints": Ctx(labels={1: "AS", 2: "kid", 5: "audience", 9: "scope", 39: "cnonce"}),
    "cnf": Ctx(labels={1: "COSE_Key", 2: "Encrypted_COSE_Key", 3: "kid"}, children={1: "cose_key"}),
    "cose_key": Ctx(),  # chosen by kty, see _key_ctx
    "cose_key_symmetric": Ctx(
        labels={1: "kty", 2: "kid", 3: "alg", -1: "k"},
        values={1: _KTY.get, 3: _alg},
    ),
    "cose_key_ec2": Ctx(
        labels={1: "kty", 2: "kid", 3: "alg", -1: "crv", -2: "x", -3: "y", -4: "d"},
        values={1: _KTY.get, 3: _alg, -1: _CRV.get},
    ),
    "cose_key_okp": Ctx(
        labels={1: "kty", 2: "kid", 3: "alg", -1: "crv", -2: "x", -4: "d"},
        values={1: _KTY.get, 3: _alg, -1: _CRV.get},
    ),
    "claims": Ctx(
        labels=_CLAIMS,
        children={8: "cnf", 9: "aif"},
        values={4: _date, 5: _date, 6: _date, 38: lambda v: {1: "coap_dtls"}.get(v)},
    ),
    "protected": Ctx(labels=_HEADERS, values={1: _alg}),
    "unprotected": Ctx(labels=_HEADERS),
    # an untagged token: Encrypt0 or Sign1, chosen by length (see _dispatch)
    "token": Ctx(),
    "encrypt0": Ctx(
        labels={0: "protected", 1: "unprotected", 2: "ciphertext || tag"},
        children={0: "protected", 1: "unprotected"},
    ),
    "sign1": Ctx(
        labels={0: "protected", 1: "unprotected", 2: "payload", 3: "signature"},
        children={0: "protected", 1: "unprotected", 2: "claims"},
    ),
    "proof": Ctx(
        labels={0: "protected", 1: "unprotected", 2: "payload: detached", 3: "tag or signature"},
        children={0: "protected", 1: "unprotected"},
    ),
    "detached": Ctx(
        labels={
            0: "layout version",
            1: "method",
            2: "Uri-Path",
            3: "Uri-Query",
            4: "Content-Format",
            5: "SHA-256(payload)[:16]",
            6: "piv",
            7: "Echo",
        },
        values={1: _method_code},
    ),
    "mac_structure": Ctx(
        labels={0: "context", 1: "body_protected", 2: "external_aad", 3: "payload"},
        children={1: "protected", 3: "detached"},
    ),
    "sig_structure": Ctx(
        labels={0: "context", 1: "body_protected", 2: "external_aad", 3: "payload"},
        children={1: "protected", 3: "detached"},
    ),
    "sig_structure_token": Ctx(
        labels={0: "context", 1: "body_protected", 2: "external_aad", 3: "payload"},
        children={1: "protected", 3: "claims"},
    ),
    "enc_structure": Ctx(
        labels={0: "context", 1: "protected", 2: "external_aad"},
        children={1: "protected"},
    ),
    "aif": Ctx(each="aif_entry"),
    "aif_entry": Ctx(labels={0: "toid", 1: "methods"}, values={1: _methods}),
}


def _dispatch(ctx_name: str | None, value: Any) -> str | None:
    """Contexts that depend on the value: a COSE_Key by its kty, a token by
    its array length."""
    if ctx_name == "cose_key":
        kty = value.get(1) if isinstance(value, dict) else None
        names = {4: "cose_key_symmetric", 2: "cose_key_ec2", 1: "cose_key_okp"}
        return names.get(kty) if isinstance(kty, int) else None
    if ctx_name == "token" and isinstance(value, list):
        return {3: "encrypt0", 4: "sign1"}.get(len(value))
    return ctx_name


def _embedded(data: bytes) -> tuple[bool, Any]:
    """``(True, item)`` when ``data`` is exactly one CBOR item."""
    fp = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(fp).decode()
    except Exception:
        return False, None
    return fp.tell() == len(data), item


def _atom(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)
    raise TypeError(f"no diagnostic notation for {type(value).__name__}")


def _render(value: Any, ctx_name: str | None, indent: int) -> str:
    if isinstance(value, bytes) and ctx_name in CONTEXTS and value:
        # a byte string whose context is a structure: embedded CBOR
        ok, inner = _embedded(value)
        if not ok:
            return _atom(value)
        return "<< " + _render(inner, ctx_name, indent + 3) + " >>"
    ctx_name = _dispatch(ctx_name, value)
    ctx = CONTEXTS.get(ctx_name) if ctx_name else None
    if isinstance(value, cbor2.CBORTag):
        return f"{value.tag}(" + _render(value.value, ctx_name, indent) + ")"
    if isinstance(value, list | tuple):
        items = [_member(i, v, ctx, indent + 2, key=False) for i, v in enumerate(value)]
        return _group("[", "]", items, indent)
    if isinstance(value, dict):
        items = [_member(k, v, ctx, indent + 2, key=True) for k, v in value.items()]
        return _group("{", "}", items, indent)
    return _atom(value)


def _member(index: Any, value: Any, ctx: Ctx | None, indent: int, *, key: bool) -> str:
    child = None
    label = None
    comment = None
    if ctx is not None:
        child = ctx.children.get(index, ctx.each)
        label = ctx.labels.get(index)
        fn = ctx.values.get(index)
        comment = fn(value) if fn is not None else None
    text = _render(value, child, indent)
    if comment:
        text = f"{text} / {comment} /"
    if key:
        text = f"{_atom(index)}: {text}"
    if label:
        text = f"/ {label} / {text}"
    return text


def _group(open_: str, close: str, items: list[str], indent: int) -> str:
    flat = open_ + ", ".join(items) + close
    if "\n" not in flat and indent + len(flat) <= WIDTH:
        return flat
    pad = " " * (indent + 2)
    return open_ + "\n" + ",\n".join(pad + i for i in items) + "\n" + " " * indent + close


def diag(value: Any, ctx: str | None = None) -> str:
    """Diagnostic notation of ``value`` (decoded CBOR, or encoded ``bytes``
    when ``ctx`` names a structure), annotated for context ``ctx``."""
    return _render(value, ctx, 0)
