"""The one exception root of :mod:`tokens` and its subclasses.

Every error that can reach a peer knows the CoAP response code it maps to and,
where RFC 9200 §5.8.3 defines one, the ACE error code. Parsing untrusted bytes
raises only these (never a bare ``ValueError``, ``KeyError`` or cbor2 error).
Messages never contain key material or whole tokens.
"""

from __future__ import annotations

from .params import AceError, CoapCode


class TokenError(Exception):
    """Root of every error raised by :mod:`tokens`."""

    coap_code: CoapCode = CoapCode.BAD_REQUEST
    ace_error: AceError | None = AceError.INVALID_REQUEST
    #: Short machine-readable reason, used for metrics labels and audit records.
    reason: str = "invalid_request"

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.reason)
        self.description = description or self.reason


# --- 4.00: the input cannot be understood --------------------------------


class MalformedError(TokenError):
    """Bytes that are not the expected CBOR structure (RFC 9200 §5.8.3
    invalid_request; RFC 9200 §5.10.1.1: 4.00 for an unparsable token)."""

    reason = "malformed"


class CriticalHeaderError(MalformedError):
    """A COSE ``crit`` header names a parameter we do not process
    (RFC 9052 §3.1)."""

    reason = "unknown_critical_header"


class InvalidScope(TokenError):
    """The requested scope is unknown or exceeds what the client may have
    (RFC 9200 §5.8.3 invalid_scope; §5.10.1.1 4.00 for an unknown scope)."""

    ace_error = AceError.INVALID_SCOPE
    reason = "invalid_scope"


class UnsupportedPopKey(TokenError):
    """The ``req_cnf`` key is of a type or algorithm not supported
    (RFC 9200 §5.8.3 unsupported_pop_key)."""

    ace_error = AceError.UNSUPPORTED_POP_KEY
    reason = "unsupported_pop_key"


class UnsupportedGrantType(TokenError):
    """Grant type other than those the AS supports (RFC 9200 §5.8.3)."""

    ace_error = AceError.UNSUPPORTED_GRANT_TYPE
    reason = "unsupported_grant_type"


# --- 4.01: authentication failed ------------------------------------------


class AuthenticationError(TokenError):
    """Root of failures that mean "who you are or what you hold is not
    proven" (CoAP 4.01)."""

    coap_code = CoapCode.UNAUTHORIZED
    ace_error: AceError | None = None
    reason = "unauthorized"


class InvalidClient(AuthenticationError):
    """Client authentication failed (RFC 9200 §5.8.3 invalid_client, 4.01)."""

    ace_error = AceError.INVALID_CLIENT
    reason = "invalid_client"


class UnknownKey(AuthenticationError):
    """No key with this kid in the key set (never tries other keys)."""

    reason = "unknown_kid"


class AlgorithmMismatch(AuthenticationError):
    """The message's protected ``alg`` is not the algorithm its key is pinned to,
    or ``alg`` was only in the unprotected bucket (RFC 9052 §3.1)."""

    reason = "alg_mismatch"


class BadSignature(AuthenticationError):
    """Signature, MAC tag or AEAD tag does not verify (RFC 9052 §4.4, §6.3, §5.3)."""

    reason = "bad_signature"


class WrongIssuer(AuthenticationError):
    """The ``iss`` claim is not the expected issuer (RFC 8392 §3.1.1)."""

    reason = "wrong_issuer"


class Expired(AuthenticationError):
    """``exp`` has passed (RFC 8392 §3.1.4; RFC 9200 §5.10.1.1: 4.01)."""

    reason = "expired"


class NotYetValid(AuthenticationError):
    """``nbf`` is in the future (RFC 8392 §3.1.5)."""

    reason = "not_yet_valid"


class Revoked(AuthenticationError):
    """The token (cti) or its client was revoked."""

    reason = "revoked"


class ReplayError(AuthenticationError):
    """A Proof's sequence number was seen before or is below the replay
    window (RFC 8613 §7.4 style window)."""

    reason = "replay"


class EchoRequired(AuthenticationError):
    """No replay window exists for this PoP key yet: the peer must repeat the
    request with this Echo value inside the proof (RFC 9175 §2.4 item 3)."""

    reason = "echo_required"

    def __init__(self, echo: bytes, description: str = "") -> None:
        super().__init__(description or "freshness required: repeat with Echo")
        self.echo = echo


class InvalidEcho(AuthenticationError):
    """An Echo value that this gateway process did not issue for this kid, or
    that is older than the freshness period (RFC 9175 §2.3, §2.4)."""

    reason = "invalid_echo"


# --- 4.03 / 4.05: authenticated but not allowed ----------------------------


class WrongAudience(TokenError):
    """The ``aud`` claim does not name this resource server
    (RFC 8392 §3.1.3; RFC 9200 §5.10.1.1: 4.03)."""

    coap_code = CoapCode.FORBIDDEN
    ace_error: AceError | None = None
    reason = "wrong_audience"


class ScopeDenied(TokenError):
    """The token's scope has no entry for the requested path (4.03,
    RFC 9200 §5.10.2)."""

    coap_code = CoapCode.FORBIDDEN
    ace_error = None
    reason = "scope_path"


class MethodNotAllowed(TokenError):
    """The scope names the path but not the method (4.05, RFC 9200 §5.10.2)."""

    coap_code = CoapCode.METHOD_NOT_ALLOWED
    ace_error = None
    reason = "scope_method"
