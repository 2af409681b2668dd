"""The one place an error becomes a CoAP response (RFC 7252 §5.9).

Every error of the project (:class:`~tokens.errors.TokenError`,
:class:`~gateway.errors.GatewayError`) carries its CoAP code, a short
reason and, where RFC 9200 §5.8.3 defines one, its ACE error;
:func:`error_response` renders it, with what the refusal calls for: an Echo
option (RFC 9175 §2.4), Max-Age (RFC 8516 §2 for 4.29, RFC 7252 §5.9.3.4 for
5.03), Size1 (RFC 7959 §2.9.3) or AS Request Creation Hints (RFC 9200 §5.3).
"""

from __future__ import annotations

from typing import Protocol

import aiocoap
from aiocoap.numbers.codes import Code

from tokens.ace import CreationHints, ErrorResponse
from tokens.params import CONTENT_FORMAT_ACE_CBOR, AceError

#: Longest diagnostic payload (RFC 7252 §5.5.2: short, human readable).
MAX_DIAGNOSTIC = 128


class Renderable(Protocol):
    """What every error of the project has."""

    coap_code: int
    ace_error: AceError | None
    reason: str
    description: str


def error_response(
    error: Renderable,
    *,
    ace_body: bool = True,
    echo: bytes | None = None,
    max_age: int | None = None,
    size1: int | None = None,
    hints: CreationHints | None = None,
) -> aiocoap.Message:
    """The response for ``error``: with ``echo`` just the Echo option; with
    ``hints`` the hints as application/ace+cbor; else, when ``ace_body`` and
    the error has an ACE error, the RFC 9200 §5.8.3 CBOR map; else a short
    diagnostic payload. ``max_age`` and ``size1`` are set when given."""
    code = Code(int(error.coap_code))
    if echo is not None:
        message = aiocoap.Message(code=code, echo=echo)
    elif hints is not None:
        message = aiocoap.Message(
            code=code, payload=hints.encode(), content_format=CONTENT_FORMAT_ACE_CBOR
        )
    elif max_age is not None and size1 is None and code == Code.TOO_MANY_REQUESTS:
        message = aiocoap.Message(code=code)
    elif ace_body and error.ace_error is not None:
        body = ErrorResponse(error=error.ace_error, error_description=error.description)
        message = aiocoap.Message(
            code=code, payload=body.encode(), content_format=CONTENT_FORMAT_ACE_CBOR
        )
    else:
        message = aiocoap.Message(
            code=code, payload=error.description.encode("utf-8")[:MAX_DIAGNOSTIC]
        )
    if max_age is not None:
        message.opt.max_age = max_age
    if size1 is not None:
        message.opt.size1 = size1
    return message


__all__ = ["MAX_DIAGNOSTIC", "Renderable", "error_response"]
