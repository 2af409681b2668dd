"""The one exception root of :mod:`gateway` and its subclasses.

Like :class:`tokens.errors.TokenError`, every gateway error knows the CoAP
response it maps to (RFC 7252 §5.9; 4.29 from RFC 8516) and, where RFC 9200
§5.8.3 defines one, the ACE error code, so errors are turned into responses
in one place. Operator-facing errors (configuration, registry, key store)
also carry the exit status the CLI uses: 2 for usage and configuration
problems, 1 for everything else.

Messages never contain key material, PSKs or whole tokens.
"""

from __future__ import annotations

from tokens.params import AceError, CoapCode


class GatewayError(Exception):
    """Root of every error raised by :mod:`gateway`."""

    coap_code: CoapCode = CoapCode.INTERNAL_SERVER_ERROR
    ace_error: AceError | None = None
    #: Short machine-readable reason, used for metrics labels and audit records.
    reason: str = "gateway_error"
    #: Process exit status when this error ends a CLI command.
    exit_status: int = 1

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.reason)
        self.description = description or self.reason


# --- operator errors: configuration and command line ------------------------


class ConfigError(GatewayError):
    """The configuration (file, environment, master key source) is invalid.
    ``key`` is the dotted config key at fault (e.g. ``"server.port"``), if any."""

    reason = "config"
    exit_status = 2

    def __init__(self, description: str = "", *, key: str | None = None) -> None:
        super().__init__(description)
        self.key = key


class MasterKeyError(ConfigError):
    """The master key is missing, malformed, stored insecurely, or not the key
    the registry was created with."""

    reason = "master_key"


class PortInUse(GatewayError):
    """The UDP port is already served by another process (a second
    ``acegw serve`` on it would take part of its traffic)."""

    reason = "port_in_use"
    exit_status = 2


class InvalidArgument(GatewayError):
    """A command-line or admin argument is malformed (bad hex, bad id)."""

    coap_code = CoapCode.BAD_REQUEST
    reason = "invalid_argument"
    exit_status = 2


# --- key store ----------------------------------------------------------------


class KeystoreError(GatewayError):
    """The key directory is unreadable, inconsistent or stored insecurely, or
    a key operation is not allowed (e.g. retiring the current signing key)."""

    reason = "keystore"


class UnknownKid(KeystoreError):
    """No key with this kid in the key directory."""

    reason = "unknown_kid"


# --- registry -----------------------------------------------------------------


class RegistryError(GatewayError):
    """The client registry cannot be read or written."""

    reason = "registry"


class ClientNotFound(RegistryError):
    """No client with this id (RFC 9200 §5.8.3 invalid_client when a peer
    presents it)."""

    coap_code = CoapCode.UNAUTHORIZED
    ace_error = AceError.INVALID_CLIENT
    reason = "unknown_client"


class ClientDisabled(RegistryError):
    """The client exists but is disabled (RFC 9200 §5.8.3 invalid_client)."""

    coap_code = CoapCode.UNAUTHORIZED
    ace_error = AceError.INVALID_CLIENT
    reason = "client_disabled"


class ClientExists(RegistryError):
    """A client with this id is already registered."""

    coap_code = CoapCode.BAD_REQUEST
    reason = "client_exists"


class CorruptRecord(RegistryError):
    """A stored secret does not authenticate under the master key: the record
    was altered, copied from another client, or the key is wrong."""

    reason = "corrupt_record"


# --- request handling (used by the resources and the HTTP upstream) -----------


class RateLimited(GatewayError):
    """The peer exceeded its request rate (RFC 8516 4.29 Too Many Requests)."""

    coap_code = CoapCode.TOO_MANY_REQUESTS
    reason = "rate_limited"


class Overloaded(GatewayError):
    """The gateway is at its global in-flight cap (5.03)."""

    coap_code = CoapCode.SERVICE_UNAVAILABLE
    reason = "overloaded"


class RequestTooLarge(GatewayError):
    """The request body exceeds the route's limit (4.13, RFC 7252 §5.9.2.9)."""

    coap_code = CoapCode.REQUEST_ENTITY_TOO_LARGE
    reason = "too_large"


class UpstreamError(GatewayError):
    """The upstream HTTP service could not be reached (5.02, RFC 8075 §7)."""

    coap_code = CoapCode.BAD_GATEWAY
    reason = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    """The upstream HTTP service did not answer in time (5.04, RFC 8075 §7)."""

    coap_code = CoapCode.GATEWAY_TIMEOUT
    reason = "upstream_timeout"


# --- HTTP proxy (gateway.proxy) ------------------------------------------------


class UpstreamBadResponse(UpstreamError):
    """The upstream answered, but not with something the gateway can map: not
    HTTP, a redirect, an encoding the gateway did not ask for (5.02)."""

    reason = "upstream_bad_response"


class UpstreamTooLarge(UpstreamBadResponse):
    """The upstream response body exceeds the route's ``max_body``: 5.02, never
    a truncated 2.05."""

    reason = "upstream_too_large"


class UpstreamTlsError(UpstreamError):
    """The upstream's TLS certificate did not verify, or the handshake failed (5.02)."""

    reason = "upstream_tls"


class UpstreamAuthRejected(UpstreamError):
    """The upstream refused the gateway's own credential (HTTP 401 or 407):
    the gateway's configuration is at fault, not the device (5.02)."""

    reason = "upstream_auth_rejected"


class UpstreamBusy(Overloaded):
    """The route's connection pool and wait queue are full (5.03 with Max-Age)."""

    reason = "upstream_busy"

    def __init__(self, description: str = "", *, max_age: int) -> None:
        super().__init__(description)
        self.max_age = max_age


class CircuitOpen(Overloaded):
    """The route's circuit breaker is open after repeated upstream failures
    (5.03; Max-Age = seconds until the next probe)."""

    reason = "circuit_open"

    def __init__(self, description: str = "", *, max_age: int) -> None:
        super().__init__(description)
        self.max_age = max_age


class ProxyRequestError(GatewayError):
    """A device request the proxy cannot map to HTTP (4.00, e.g. a ``..`` path
    segment)."""

    coap_code = CoapCode.BAD_REQUEST
    reason = "bad_proxy_request"


class UnmappableContentFormat(ProxyRequestError):
    """The request's Content-Format has no HTTP media type here (4.15)."""

    coap_code = CoapCode.UNSUPPORTED_CONTENT_FORMAT
    reason = "unsupported_content_format"


class NotAcceptable(ProxyRequestError):
    """The Accept option names a format the proxy cannot ask for or the
    upstream did not return (4.06, RFC 7252 §5.10.4)."""

    coap_code = CoapCode.NOT_ACCEPTABLE
    reason = "not_acceptable"


class RouteMethodNotAllowed(ProxyRequestError):
    """The method is not in the route's ``methods`` (4.05)."""

    coap_code = CoapCode.METHOD_NOT_ALLOWED
    reason = "method_not_allowed"


class ProxyingNotSupported(ProxyRequestError):
    """A Proxy-Uri or Proxy-Scheme option: the gateway is a reverse proxy only
    (5.05, RFC 7252 §5.10.2)."""

    coap_code = CoapCode.PROXYING_NOT_SUPPORTED
    reason = "proxying_not_supported"
