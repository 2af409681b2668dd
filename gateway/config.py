"""Gateway configuration: one TOML file plus environment overrides, parsed into
frozen dataclasses.

The schema is the dataclasses below: each field carries its help text, range
and checks, so parsing, the default file written by ``acegw init``
(:mod:`gateway.runtime.config_docs`) and the reference in ``docs/config.md`` come
from one place. A bad configuration fails at start with a
:class:`~gateway.errors.ConfigError` naming the key and the problem (unknown
key, wrong type, out of range, missing file); nothing is checked with
``assert``.

Environment overrides: ``ACEGW_<SECTION>_<KEY>`` (upper case) sets ``KEY`` in
``[section]``, e.g. ``ACEGW_SERVER_PORT=5685`` or ``ACEGW_AS_TOKEN_LIFETIME=600``.
Values are read as the key's type (booleans: true/false/1/0/yes/no/on/off;
lists: comma-separated). Variables whose second word is not a section name
(``ACEGW_MASTER_KEY``, ``ACEGW_CONFIG``, other tools' variables) are not
overrides and are ignored here; an unknown key within a known section is an
error. Arrays of tables (``[[routes]]``, ``[[rs.issuers]]``) cannot be set
from the environment.

Relative paths are relative to the directory of the configuration file.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from tokens.params import AIF_METHOD_BITS, Alg

from .errors import ConfigError

ENV_PREFIX = "ACEGW_"
#: Default file name looked up by the CLI (``--dir DIR`` means ``DIR/acegw.toml``).
CONFIG_FILE_NAME = "acegw.toml"


_REGISTRY_FILE = Path("registry.sqlite3")
_MASTER_KEY_FILE = Path("master.key")
_KEYS_DIR = Path("keys")


class _Invalid(Exception):
    """Raised by a field check; the message says what is wrong (no secrets)."""


@dataclass(frozen=True)
class _Opt:
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    #: ``check(value, base_dir) -> value`` may normalise or raise :class:`_Invalid`.
    check: Callable[[Any, Path], Any] | None = None
    #: TOML name when it differs from the attribute (``as`` is a keyword).
    name: str | None = None
    #: Never echo the value in messages (e.g. upstream auth headers).
    secret: bool = False
    #: Shown commented out in the default file instead of as a value.
    example: str | None = None


def _opt(default: Any = MISSING, help: str = "", **kw: Any) -> Any:
    meta = {"opt": _Opt(help=help, **kw)}
    if isinstance(default, dict):
        frozen = MappingProxyType(dict(default))
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


# --- checks -------------------------------------------------------------------


def _ip_literal(value: str, _base: Path) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _Invalid("must be an IP address literal such as '::' or '0.0.0.0'") from None
    return value


def _nonempty(value: str, _base: Path) -> str:
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _existing_parent(value: Path, _base: Path) -> Path:
    if not value.parent.is_dir():
        raise _Invalid(f"directory {value.parent} does not exist")
    return value


def _existing_file(value: Path, _base: Path) -> Path:
    if not value.is_file():
        raise _Invalid(f"file {value} does not exist")
    return value


def _optional_file(value: str, base: Path) -> str:
    if not value:
        return ""
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise _Invalid(f"file {p} does not exist")
    return str(p)


def _coaps_uri(value: str, _base: Path) -> str:
    if value and not value.startswith("coaps://"):
        raise _Invalid("must be a coaps://host:port URI")
    return value.rstrip("/")


def split_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9100"`` / ``"[::1]:9100"`` -> (host, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise _Invalid("must be 'host:port' (IPv6 as '[::1]:9100'), or 'off'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise _Invalid("an IPv6 address needs brackets, e.g. '[::1]:9100'")
    _ip_literal(host, Path())
    port = int(port_s)
    if not 0 < port < 65536:
        raise _Invalid("port must be between 1 and 65535")
    return host, port


def _postgres_url(value: str, _base: Path) -> str:
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise _Invalid("must be a postgresql:// URL, or empty for the SQLite file")
    return value


def _listen(value: str, _base: Path) -> str:
    if value in ("", "off"):
        return "off"
    split_host_port(value)
    return value


def _audit_sink(value: str, base: Path) -> str:
    if value in ("stdout", "stderr", "off"):
        return value
    p = Path(value)
    p = p if p.is_absolute() else base / p
    if not p.parent.is_dir():
        raise _Invalid(f"directory {p.parent} does not exist")
    return str(p)


def _route_prefix(value: str, _base: Path) -> str:
    if not value.startswith("/") or any(c in value for c in "?#") or "//" in value:
        raise _Invalid("must be a path starting with '/' (no '?', '#' or '//')")
    return value.rstrip("/") or "/"


def _http_url(value: str, _base: Path) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise _Invalid("must not have a query or fragment")
    return value.rstrip("/")


def _methods(value: tuple[str, ...], _base: Path) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(m.upper() for m in value))
    bad = [m for m in out if m not in AIF_METHOD_BITS]
    if bad or not out:
        raise _Invalid(f"methods must be among {', '.join(AIF_METHOD_BITS)}")
    return out


def _header_names(value: Mapping[str, str], _base: Path) -> Mapping[str, str]:
    for name in value:
        if not name or any(c in name for c in " \t\r\n:") or not name.isascii():
            raise _Invalid("header names must be non-empty ASCII tokens")
    for v in value.values():
        if any(c in v for c in "\r\n"):
            raise _Invalid("header values must not contain line breaks")
    return value


def _upper(value: str, _base: Path) -> str:
    return value.upper()


# --- the schema -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: where the CoAP/DTLS service listens."""

    bind: str = _opt(
        "::",
        "IP address for the CoAP over DTLS port. '::' accepts IPv6 and (on Linux, "
        "dual-stack) IPv4; use '0.0.0.0' on hosts without IPv6.",
        check=_ip_literal,
    )
    port: int = _opt(
        5684,
        "UDP port for CoAP over DTLS (RFC 7252 §12.7 coaps); 0 = any free port.",
        min=0,
        max=65535,
    )
    workers: int = _opt(
        1, "Worker processes sharing the port with SO_REUSEPORT; 0 = one per CPU.", min=0, max=256
    )
    drain_timeout: float = _opt(
        10.0,
        "Seconds SIGTERM waits for requests in flight (no new handshakes meanwhile) before "
        "closing every session with close_notify.",
        min=0,
        max=3600,
    )
    gc_threshold: int = _opt(
        50000,
        "Allocations between young-generation garbage collections in a serving process "
        "(Python's default is 700; at that rate the collector costs about 40% of a "
        "worker's CPU under load). 0 = leave Python's setting.",
        min=0,
        max=10_000_000,
    )


@dataclass(frozen=True)
class DtlsConfig:
    """``[dtls]``: DTLS session limits."""

    max_sessions: int = _opt(
        10000, "Established DTLS sessions kept per worker.", min=1, max=1_000_000
    )
    idle_timeout: float = _opt(
        300.0, "Seconds without traffic before a session is dropped.", min=1, max=86400
    )
    max_handshakes: int = _opt(
        500,
        "Half-open handshakes allowed at once per worker (flood protection).",
        min=1,
        max=100_000,
    )
    address_handshake_share: float = _opt(
        0.2,
        "Share of max_handshakes one source address may hold half-open at once (at least 1): "
        "one address cannot fill the table, and a NAT with many devices still gets 100 of 500.",
        min=0.001,
        max=1,
    )
    handshake_timeout: float = _opt(
        10.0, "Seconds a handshake may take before its state is dropped.", min=0.1, max=600
    )


@dataclass(frozen=True)
class AsConfig:
    """``[as]``: the embedded ACE authorization server (RFC 9200 §5.8)."""

    enabled: bool = _opt(
        True,
        "Serve /token and /introspect. false = external-AS mode: only tokens from "
        "[[rs.issuers]] are accepted.",
    )
    issuer: str = _opt("acegw", "The 'iss' claim of tokens this AS issues.", check=_nonempty)
    audiences: tuple[str, ...] = _opt(
        (),
        "Audiences this AS issues tokens for. Empty = just [rs] audience.",
        example='audiences = ["acegw"]',
    )
    token_lifetime: int = _opt(
        3600, "Token lifetime in seconds ('expires_in', RFC 9200 §5.8.2).", min=10, max=604800
    )
    signing_alg: str = _opt(
        "ES256", "Algorithm of new AS signing keys: ES256 or EdDSA.", choices=("ES256", "EdDSA")
    )
    trl_admins: tuple[str, ...] = _opt(
        (),
        "Client ids that see the whole token revocation list at /revoke/trl (RFC 9770 "
        "administrators); other clients see the tokens of their audiences (a client that may "
        "POST /introspect: a resource server) or their own.",
        example='trl_admins = ["ops-console"]',
    )

    @property
    def alg(self) -> Alg:
        """``signing_alg`` as a COSE algorithm."""
        return Alg.ES256 if self.signing_alg == "ES256" else Alg.EDDSA


@dataclass(frozen=True)
class IssuerConfig:
    """One ``[[rs.issuers]]`` entry: an external AS whose tokens are accepted."""

    name: str = _opt(help="The issuer's 'iss' value.", check=_nonempty)
    keys_file: str = _opt(
        "",
        "COSE_KeySet (CBOR) file with the issuer's verification keys and, for "
        "encrypted tokens, the AS-RS key. Required without as_uri; with it, optional "
        "(the AS-RS key of encrypted tokens, and keys trusted before the first fetch).",
        check=_optional_file,
    )
    as_uri: str = _opt(
        "",
        "coaps://host:port of the issuer's AS. Set: the gateway follows it over DTLS-PSK "
        "(its revocation list, RFC 9770; its key set; introspection, RFC 9200 §5.9).",
        check=_coaps_uri,
    )
    identity: str = _opt("", "This gateway's PSK identity at that AS (registered there as an RS).")
    psk_file: str = _opt(
        "",
        "File (mode 0600) with this gateway's PSK at that AS, as hex text.",
        check=_optional_file,
    )
    keys_url: str = _opt(
        "",
        "Where the AS's key set is fetched: coaps:// (over the same DTLS identity) or "
        "http(s)://. Empty: as_uri + /.well-known/ace-keys.",
    )
    keys_refresh: float = _opt(
        300.0,
        "Seconds between key set fetches (also fetched on an unknown kid, at most every "
        "keys_min_interval).",
        min=1,
        max=86400,
    )
    keys_min_interval: float = _opt(
        10.0, "Least seconds between two key set fetches caused by unknown kids.", min=0.1, max=3600
    )
    trl_path: str = _opt("/revoke/trl", "url-path of the AS's TRL endpoint (RFC 9770 §10).")
    introspect_path: str = _opt("/introspect", "url-path of the AS's introspection endpoint.")
    max_staleness: float = _opt(
        60.0,
        "Seconds the TRL may go unfollowed (observation lost, AS unreachable) before "
        "on_stale applies; tokens are introspected on first use meanwhile.",
        min=1,
        max=86400,
    )
    on_stale: str = _opt(
        "fail-closed",
        "Past max_staleness with neither TRL nor introspection: fail-closed refuses this "
        "issuer's tokens (4.01), fail-open accepts them (reported in /readyz and metrics).",
        choices=("fail-closed", "fail-open"),
    )


@dataclass(frozen=True)
class RsConfig:
    """``[rs]``: the resource server side (RFC 9200 §5.10)."""

    audience: str = _opt(
        "acegw", "This gateway's audience name ('aud' it accepts).", check=_nonempty
    )
    issuers: tuple[IssuerConfig, ...] = _opt(
        (),
        "External authorization servers ([[rs.issuers]] name, keys_file or as_uri ...).",
        example='[[rs.issuers]]\n# name = "as.example"\n# keys_file = "as-example-keys.cbor"',
    )
    max_tokens_per_client: int = _opt(
        4, "Valid tokens kept per client; the oldest goes first.", min=1, max=1000
    )
    leeway: float = _opt(30.0, "Seconds of clock skew allowed on exp/nbf/iat.", min=0, max=600)


@dataclass(frozen=True)
class RegistryConfig:
    """``[registry]``: the client registry (SQLite, or PostgreSQL shared by instances)."""

    path: Path = _opt(  # noqa: RUF009 - returns a dataclasses.field
        _REGISTRY_FILE,
        "SQLite database file of clients and revocations.",
        check=_existing_parent,
    )
    url: str = _opt(
        "",
        "PostgreSQL registry shared by several instances (postgresql://user@host/db; give the "
        "password in PGPASSWORD or ~/.pgpass); empty: the SQLite file at path.",
        check=_postgres_url,
    )
    master_key_file: Path = _opt(  # noqa: RUF009 - returns a dataclasses.field
        _MASTER_KEY_FILE,
        "Master key file (mode 0600) that encrypts PSKs; ignored when ACEGW_MASTER_KEY is set.",
    )
    poll_interval: float = _opt(
        0.5,
        "How often Registry.poll() looks for changes made by other processes (tools"
        " that hold a registry open). A running gateway does not use it: housekeeping"
        " applies the change log every 0.25 s, and on PostgreSQL as soon as notified.",
        min=0.05,
        max=60,
    )

    @property
    def location(self) -> str | Path:
        """What :func:`gateway.registry.store.open_store` opens: the URL, else the file."""
        return self.url or self.path


@dataclass(frozen=True)
class KeysConfig:
    """``[keys]``: the key directory (AS signing keys, AS-RS keys)."""

    dir: Path = _opt(  # noqa: RUF009 - returns a dataclasses.field
        _KEYS_DIR,
        "Key directory; created with mode 0700 on first start. With a PostgreSQL registry the"
        " keys live in the database: this directory is only imported into one that has none.",
        check=_existing_parent,
    )


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: Prometheus metrics and /healthz over HTTP."""

    listen: str = _opt(
        "127.0.0.1:9100", "host:port of the metrics HTTP server, or 'off'.", check=_listen
    )

    @property
    def enabled(self) -> bool:
        return self.listen != "off"

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]


@dataclass(frozen=True)
class LoggingConfig:
    """``[logging]``: operational logs (stderr)."""

    level: str = _opt(
        "INFO",
        "DEBUG, INFO, WARNING or ERROR.",
        check=_upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    json: bool = _opt(True, "One JSON object per line (false = plain text).")


@dataclass(frozen=True)
class AuditConfig:
    """``[audit]``: one record per authentication/authorization decision."""

    path: str = _opt("stdout", "File path, or 'stdout', 'stderr' or 'off'.", check=_audit_sink)
    sample_success: float = _opt(
        1.0,
        "Fraction of successful decisions recorded (failures are always recorded).",
        min=0,
        max=1,
    )


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: rate limits and overload protection."""

    device_rate: float = _opt(
        10.0, "Requests per second per device (token bucket rate).", min=0.001, max=1_000_000
    )
    device_burst: int = _opt(20, "Token bucket size per device.", min=1, max=1_000_000)
    max_in_flight: int = _opt(
        1024,
        "Requests in flight per worker, every request counted (proxied ones also against "
        "this cap on upstream requests); more get 5.03 with Max-Age 1, before any "
        "authorization work.",
        min=1,
        max=1_000_000,
    )
    client_rates: Mapping[str, float] = _opt(
        {},
        "Per-client request rates overriding device_rate ([limits.client_rates] id = rate).",
        example='[limits.client_rates]\n# "sensor-0001" = 0.5',
    )
    ace_rate: float = _opt(
        5.0,
        "Requests per second per authenticated identity (the DTLS session's PSK identity) to "
        "/token, /authz-info and /introspect; devices sharing an address do not share it.",
        min=0.001,
        max=1_000_000,
    )
    ace_burst: int = _opt(
        10, "Token bucket size per identity for the ACE endpoints.", min=1, max=1_000_000
    )
    max_body: int = _opt(
        1024 * 1024,
        "Largest request body (after Block1 reassembly) on any path; more gets 4.13.",
        min=1024,
        max=64 * 1024 * 1024,
    )
    lockout_failures: int = _opt(
        10,
        "Failed handshakes or proofs naming one identity from one address that ban that "
        "(identity, address) pair; the identity keeps working from its other addresses.",
        min=1,
        max=1_000_000,
    )
    lockout_identities: int = _opt(
        5,
        "Different identities failing from one address that ban the address (credential "
        "stuffing); identities that authenticated from it within lockout_trust are still let in.",
        min=1,
        max=1_000_000,
    )
    lockout_window: float = _opt(
        60.0,
        "Seconds within which lockout_failures (or lockout_identities) must occur.",
        min=1,
        max=86400,
    )
    lockout_seconds: float = _opt(
        300.0,
        "How long a ban lasts; it lifts by itself (or: acegw bans lift).",
        min=1,
        max=86400 * 7,
    )
    lockout_trust: float = _opt(
        86400.0,
        "Seconds an identity stays trusted at an address after a completed handshake from it "
        "(an address ban does not refuse it).",
        min=0,
        max=86400 * 365,
    )


@dataclass(frozen=True)
class RouteConfig:
    """One ``[[routes]]`` entry: a CoAP path prefix forwarded to an HTTP upstream."""

    prefix: str = _opt(help="CoAP path prefix, e.g. '/temp'.", check=_route_prefix)
    upstream: str = _opt(
        help="Base URL of the HTTP service; the rest of the path is appended.", check=_http_url
    )
    methods: tuple[str, ...] = _opt(
        ("GET", "POST", "PUT", "DELETE"), "CoAP methods forwarded on this route.", check=_methods
    )
    timeout: float = _opt(
        10.0, "Upstream timeout in seconds (5.04 when exceeded).", min=0.1, max=600
    )
    max_body: int = _opt(
        65536, "Largest request or response body in bytes.", min=0, max=16 * 1024 * 1024
    )
    headers: Mapping[str, str] = _opt(
        {},
        "Extra HTTP headers sent upstream. Values may use {client_id}, {sub}, {scope}, {cti} "
        "and {kid} of the authorized request (docs/proxy.md).",
        check=_header_names,
        secret=True,
    )
    auth: str = _opt(
        "none",
        "How the gateway authenticates itself upstream: none; bearer ('Authorization: "
        "Bearer <secret>'); api_key ('<api_key_header>: <secret>'); jwt (a short-lived JWT "
        "per device signed with jwt_key_file).",
        choices=("none", "bearer", "api_key", "jwt"),
    )
    secret_env: str = _opt(
        "", "Environment variable holding the bearer token or API key (auth = bearer/api_key)."
    )
    secret_file: str = _opt(
        "", "File holding the bearer token or API key; used when secret_env is empty."
    )
    api_key_header: str = _opt("X-API-Key", "Header name for auth = api_key.")
    jwt_key_file: str = _opt(
        "",
        "PEM private key signing the per-device JWTs (auth = jwt): EC P-256 means ES256, "
        "RSA (2048 bits or more) means RS256.",
    )
    jwt_issuer: str = _opt("acegw", "'iss' of the JWTs minted for this route.")
    jwt_audience: str = _opt("", "'aud' of the JWTs minted for this route; empty = upstream.")
    jwt_kid: str = _opt("", "'kid' header of the minted JWTs; empty = none.")
    jwt_lifetime: int = _opt(
        300,
        "Lifetime of a minted JWT in seconds; it is reused for the same device and scope "
        "until shortly before it expires.",
        min=30,
        max=86400,
    )
    ca_file: str = _opt(
        "", "PEM CA bundle that verifies an https upstream; empty = the system CAs."
    )
    client_cert: str = _opt("", "PEM client certificate (chain) for mutual TLS with the upstream.")
    client_key: str = _opt("", "PEM private key of client_cert; empty = in client_cert.")
    pool_size: int = _opt(
        16, "Upstream connections (requests in flight) for this route.", min=1, max=10000
    )
    queue_size: int = _opt(
        64,
        "Requests waiting for a connection; beyond that 5.03 with Max-Age.",
        min=0,
        max=100_000,
    )
    busy_max_age: int = _opt(
        2, "Max-Age (seconds) of the 5.03 sent when the queue is full.", min=0, max=3600
    )
    breaker_failures: int = _opt(
        5,
        "Consecutive upstream failures that open the circuit breaker; 0 = no breaker.",
        min=0,
        max=1000,
    )
    breaker_reset: float = _opt(
        30.0,
        "Seconds an open breaker answers 5.03 before it lets one probe request through.",
        min=0.1,
        max=3600,
    )
    cache_bytes: int = _opt(
        0,
        "Bytes of GET responses cached for this route (Max-Age/ETag honoured, keyed by the "
        "client's scope); 0 = no cache.",
        min=0,
        max=1 << 30,
    )


#: TOML section name -> schema; also the order of the default file.
SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "dtls": DtlsConfig,
    "as": AsConfig,
    "rs": RsConfig,
    "registry": RegistryConfig,
    "keys": KeysConfig,
    "metrics": MetricsConfig,
    "logging": LoggingConfig,
    "audit": AuditConfig,
    "limits": LimitsConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``as_`` is the ``[as]`` section."""

    server: ServerConfig = field(default_factory=ServerConfig)
    dtls: DtlsConfig = field(default_factory=DtlsConfig)
    as_: AsConfig = field(default_factory=AsConfig)
    rs: RsConfig = field(default_factory=RsConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    routes: tuple[RouteConfig, ...] = ()
    #: The file this was loaded from (``None`` when built from a mapping).
    source: Path | None = None
    #: Directory relative paths were resolved against.
    base_dir: Path = Path(".")

    @property
    def audiences(self) -> tuple[str, ...]:
        """Audiences the embedded AS issues tokens for."""
        return self.as_.audiences or (self.rs.audience,)


_ATTR = {"as": "as_"}


# --- parsing --------------------------------------------------------------------


class _Ctx:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.env_origin: dict[str, str] = {}

    def error(self, key: str, problem: str) -> ConfigError:
        var = self.env_origin.get(key)
        where = f"environment variable {var} ({key})" if var else f"{self.source}: {key}"
        return ConfigError(f"{where}: {problem}", key=key)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], _Opt, Any]]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        opt = f.metadata.get("opt")
        if opt is not None:
            out[opt.name or f.name] = (f, opt, hints[f.name])
    return out


def _unknown(ctx: _Ctx, key: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ctx.error(key, f"unknown key{hint}")


def _table(cls: type, data: Any, prefix: str, ctx: _Ctx) -> Any:
    if not isinstance(data, dict):
        raise ctx.error(prefix, f"expected a table, got {_kind(data)}")
    fields = _fields(cls)
    for name in data:
        if name not in fields:
            raise _unknown(ctx, f"{prefix}.{name}", name, list(fields))
    kwargs = {}
    for name, (f, opt, tp) in fields.items():
        key = f"{prefix}.{name}"
        if name in data:
            kwargs[f.name] = _value(tp, data[name], key, opt, ctx)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ctx.error(key, "missing (required)")
        elif tp is Path:  # defaults are relative to the config file too
            kwargs[f.name] = _value(tp, str(f.default), key, opt, ctx)
    return cls(**kwargs)


def _value(tp: Any, v: Any, key: str, opt: _Opt, ctx: _Ctx) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    shown = f" {v!r}" if isinstance(v, int | float | str) and len(repr(v)) <= 40 else ""
    if opt.secret:
        shown = ""
    if tp is bool:
        if not isinstance(v, bool):
            raise ctx.error(key, f"expected a boolean (true/false), got {_kind(v)}{shown}")
        out: Any = v
    elif tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ctx.error(key, f"expected an integer, got {_kind(v)}{shown}")
        out = v
    elif tp is float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ctx.error(key, f"expected a number, got {_kind(v)}{shown}")
        out = float(v)
    elif tp is str:
        if not isinstance(v, str):
            raise ctx.error(key, f"expected a string, got {_kind(v)}{shown}")
        out = v
    elif tp is Path:
        if not isinstance(v, str) or not v:
            raise ctx.error(key, f"expected a non-empty path string, got {_kind(v)}{shown}")
        p = Path(v).expanduser()
        out = p if p.is_absolute() else ctx.base_dir / p
    elif origin is tuple and args[0] is str:
        if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
            raise ctx.error(key, f"expected an array of strings, got {_kind(v)}")
        out = tuple(v)
    elif origin is tuple and dataclasses.is_dataclass(args[0]):
        if not isinstance(v, list):
            raise ctx.error(key, f"expected an array of tables, got {_kind(v)}")
        item_cls = typing.cast(type, args[0])
        out = tuple(_table(item_cls, item, f"{key}[{i}]", ctx) for i, item in enumerate(v))
    elif origin is Mapping and args[1] is float:
        numbers = isinstance(v, dict) and all(
            isinstance(i, int | float) and not isinstance(i, bool) and i > 0 for i in v.values()
        )
        if not numbers:
            raise ctx.error(key, f"expected a table of positive numbers, got {_kind(v)}")
        out = MappingProxyType({k: float(i) for k, i in v.items()})
    elif origin is Mapping:
        if not isinstance(v, dict) or not all(isinstance(i, str) for i in v.values()):
            raise ctx.error(key, f"expected a table of strings, got {_kind(v)}")
        out = MappingProxyType(dict(v))
    else:  # pragma: no cover - a schema bug, not a config error
        raise TypeError(f"unsupported config type {tp!r} for {key}")
    is_number = isinstance(out, int | float) and not isinstance(out, bool)
    if is_number and (
        (opt.min is not None and out < opt.min) or (opt.max is not None and out > opt.max)
    ):
        raise ctx.error(key, f"must be between {_num(opt.min)} and {_num(opt.max)}, got {v!r}")
    if opt.check is not None:
        try:
            out = opt.check(out, ctx.base_dir)
        except _Invalid as exc:
            raise ctx.error(key, str(exc)) from None
    if opt.choices is not None and out not in opt.choices:
        raise ctx.error(key, f"must be one of {', '.join(opt.choices)}, got {out!r}")
    return out


def _num(x: float | None) -> str:
    if x is None:
        return "any"
    return str(int(x)) if float(x).is_integer() else str(x)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _env_value(tp: Any, text: str, key: str, ctx: _Ctx) -> Any:
    """Turn an environment string into the TOML value the key's type expects."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    t = text.strip()
    if tp is bool:
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise ctx.error(key, "expected a boolean (true/false/1/0/yes/no/on/off)")
    if tp is int:
        try:
            return int(t, 10)
        except ValueError:
            raise ctx.error(key, f"expected an integer, got {t!r}") from None
    if tp is float:
        try:
            return float(t)
        except ValueError:
            raise ctx.error(key, f"expected a number, got {t!r}") from None
    if tp in (str, Path):
        return text
    if origin is tuple and args[0] is str:
        return [p.strip() for p in text.split(",") if p.strip()]
    raise ctx.error(key, "cannot be set from the environment; use the config file")


def _apply_env(data: dict[str, Any], env: Mapping[str, str], ctx: _Ctx) -> None:
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        section, _, name = var[len(ENV_PREFIX) :].lower().partition("_")
        if section == "routes":
            raise ConfigError(
                f"environment variable {var}: [[routes]] cannot be set from the environment",
                key="routes",
            )
        cls = SECTIONS.get(section)
        if cls is None:
            continue
        key = f"{section}.{name}"
        ctx.env_origin[key] = var
        fields = _fields(cls)
        if name not in fields:
            raise _unknown(ctx, key, name, list(fields))
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ctx.error(section, f"expected a table, got {_kind(table)}")
        table[name] = _env_value(fields[name][2], env[var], key, ctx)


def parse_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> Config:
    """Build a :class:`Config` from parsed TOML ``data`` plus ``env``
    overrides (``os.environ`` when ``None``; pass ``{}`` to ignore it)."""
    ctx = _Ctx(str(source) if source is not None else "config", base_dir)
    raw: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    _apply_env(raw, os.environ if env is None else env, ctx)
    known = [*SECTIONS, "routes"]
    for name in raw:
        if name not in known:
            raise _unknown(ctx, name, name, known)
    sections = {
        _ATTR.get(name, name): _table(cls, raw.get(name, {}), name, ctx)
        for name, cls in SECTIONS.items()
    }
    route_opt = _Opt(help="routes")
    routes = _value(tuple[RouteConfig, ...], raw.get("routes", []), "routes", route_opt, ctx)
    config = Config(**sections, routes=routes, source=source, base_dir=base_dir)
    _cross_check(config, ctx)
    return config


def _cross_check(config: Config, ctx: _Ctx) -> None:
    """Rules that involve more than one key."""
    if not config.as_.enabled and not config.rs.issuers:
        raise ctx.error(
            "rs.issuers",
            "external-AS mode (as.enabled = false) needs at least one [[rs.issuers]] entry",
        )
    if config.dtls.max_handshakes > config.dtls.max_sessions:
        raise ctx.error("dtls.max_handshakes", "must not exceed dtls.max_sessions")
    names = [i.name for i in config.rs.issuers]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ctx.error(f"rs.issuers[{i}].name", f"duplicate issuer {name!r}")
        if config.as_.enabled and name == config.as_.issuer:
            raise ctx.error(f"rs.issuers[{i}].name", "same as as.issuer of the embedded AS")
    for i, issuer in enumerate(config.rs.issuers):
        if not issuer.as_uri and not issuer.keys_file:
            raise ctx.error(f"rs.issuers[{i}].keys_file", "needed when as_uri is not set")
        if issuer.as_uri and not (issuer.identity and issuer.psk_file):
            raise ctx.error(f"rs.issuers[{i}].identity", "as_uri needs identity and psk_file")
        if issuer.keys_url and not issuer.keys_url.startswith(("coaps://", "http://", "https://")):
            raise ctx.error(f"rs.issuers[{i}].keys_url", "must be a coaps:// or http(s):// URL")
    prefixes = [r.prefix for r in config.routes]
    for i, prefix in enumerate(prefixes):
        if prefix in prefixes[:i]:
            raise ctx.error(f"routes[{i}].prefix", f"duplicate route prefix {prefix!r}")


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the TOML file at ``path`` with environment overrides
    (``os.environ`` when ``env`` is ``None``)."""
    path = Path(path).expanduser().absolute()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (run 'acegw init --dir DIR')") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return parse_config(data, base_dir=path.parent, env=env, source=path)
