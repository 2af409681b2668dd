"""How the gateway authenticates itself to an upstream HTTP service.

Per route (``[[routes]] auth``): ``none``; ``bearer`` (``Authorization:
Bearer <secret>``) or ``api_key`` (``<api_key_header>: <secret>``) with a
static secret from an environment variable or a file; ``jwt``: a short-lived
JWT (RFC 7519) the gateway signs for each device, so a legacy API that
already checks JWTs can authorize by device. A TLS client certificate
(``client_cert``) works with any of them (see :mod:`gateway.proxy.upstream`).

The JWT is a JWS Compact Serialization (RFC 7515 §7.1) signed with ES256
(ECDSA P-256, RFC 7518 §3.4) or RS256 (RSASSA-PKCS1-v1_5 with SHA-256,
RFC 7518 §3.3), chosen by the key: the algorithm is pinned by the key file,
never configured separately. Claims: ``iss``, ``sub`` (the client id),
``client_id`` (RFC 9068 §2.2), ``aud`` (the upstream), ``scope`` (the
device's AIF scope in its text form), ``iat``, ``nbf``, ``exp``, ``jti``.
A token is reused for the same client and scope until shortly before it
expires.

Secrets (static keys, the signing key, minted tokens) never appear in logs,
reprs or error messages.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.config import RouteConfig
from gateway.errors import ConfigError
from gateway.resource_server.auth_context import AuthContext

#: Most (client, scope) JWTs kept per route.
JWT_CACHE_ENTRIES = 10_000
#: A cached JWT is replaced this long before it expires (at most; a tenth of
#: the lifetime when that is shorter).
JWT_REFRESH_MARGIN = 30.0


class UpstreamAuth(Protocol):
    """Headers that authenticate the gateway for one request."""

    #: Lower-case names of the headers this method sets (a route's own
    #: ``headers`` may not set them).
    header_names: frozenset[str]
    #: Whether the headers name the device (the response cache then keys on it).
    per_device: bool

    def headers(self, auth: AuthContext) -> dict[str, str]: ...


class NoAuth:
    """``auth = "none"``."""

    header_names: frozenset[str] = frozenset()
    per_device = False

    def headers(self, auth: AuthContext) -> dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return "NoAuth()"


class StaticHeaderAuth:
    """``auth = "bearer"`` / ``"api_key"``: one header with a static secret."""

    per_device = False

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._value = value
        self.header_names = frozenset({name.lower()})

    def headers(self, auth: AuthContext) -> dict[str, str]:
        return {self._name: self._value}

    def __repr__(self) -> str:
        return f"StaticHeaderAuth({self._name!r}, <secret>)"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class JwtSigner:
    """A private key pinned to one JWS algorithm (RFC 7518 §3.1)."""

    alg: str
    _key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @classmethod
    def from_pem(cls, data: bytes, *, key: str) -> JwtSigner:
        """ES256 for an EC P-256 key, RS256 for an RSA key of 2048 bits or
        more; anything else is a :class:`ConfigError`."""
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{key}: not an unencrypted PEM private key", key=key) from None
        if isinstance(private, ec.EllipticCurvePrivateKey):
            if not isinstance(private.curve, ec.SECP256R1):
                raise ConfigError(f"{key}: EC keys must be P-256 (ES256)", key=key)
            return cls("ES256", private)
        if isinstance(private, rsa.RSAPrivateKey):
            if private.key_size < 2048:
                raise ConfigError(f"{key}: RSA keys need at least 2048 bits", key=key)
            return cls("RS256", private)
        raise ConfigError(f"{key}: the key must be EC P-256 or RSA", key=key)

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature (RFC 7518 §3.4: ES256 is R || S, 32 bytes each)."""
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())

    def __repr__(self) -> str:
        return f"JwtSigner({self.alg}, <private key>)"


class JwtAuth:
    """``auth = "jwt"``: ``Authorization: Bearer <JWT>`` minted per device
    (``sub`` = client id) and cached per (client, scope) until
    :data:`JWT_REFRESH_MARGIN` before expiry. ``clock`` is the wall clock
    (``iat``/``exp`` are absolute times)."""

    header_names = frozenset({"authorization"})
    per_device = True

    def __init__(
        self,
        signer: JwtSigner,
        *,
        issuer: str,
        audience: str,
        lifetime: int,
        kid: str = "",
        clock: Callable[[], float],
        max_entries: int = JWT_CACHE_ENTRIES,
    ) -> None:
        self._signer = signer
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.margin = min(JWT_REFRESH_MARGIN, lifetime / 10)
        self._clock = clock
        self._max_entries = max_entries
        header: dict[str, str] = {"alg": signer.alg, "typ": "JWT"}
        if kid:
            header["kid"] = kid
        self._header = _b64url(json.dumps(header, separators=(",", ":")).encode())
        self._cache: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        #: Number of JWTs signed so far (metrics, tests).
        self.minted = 0

    @property
    def alg(self) -> str:
        return self._signer.alg

    def token_for(self, client_id: str, scope: str) -> str:
        """A JWT for this client and scope, fresh or from the cache."""
        now = self._clock()
        key = (client_id, scope)
        cached = self._cache.get(key)
        if cached is not None and now < cached[0] - self.margin:
            self._cache.move_to_end(key)
            return cached[1]
        iat = int(now)
        exp = iat + self.lifetime
        claims = {
            "iss": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": self.audience,
            "scope": scope,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": _b64url(secrets.token_bytes(12)),
        }
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}".encode("ascii")
        token = f"{self._header}.{payload}.{_b64url(self._signer.sign(signing_input))}"
        self.minted += 1
        self._cache[key] = (float(exp), token)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return token

    def headers(self, auth: AuthContext) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.token_for(auth.client_id, str(auth.scope))}

    def __repr__(self) -> str:
        return f"JwtAuth({self.alg}, aud={self.audience!r})"


def resolve_path(value: str, base_dir: Path, *, key: str) -> Path:
    """A configured file path (relative to the config file's directory) that
    must exist."""
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base_dir / p
    if not p.is_file():
        raise ConfigError(f"{key}: file {p} does not exist", key=key)
    return p


def _read_secret(route: RouteConfig, base_dir: Path, env: Mapping[str, str], key: str) -> str:
    if route.secret_env:
        value = env.get(route.secret_env)
        if not value:
            raise ConfigError(
                f"{key}.secret_env: environment variable {route.secret_env} is not set",
                key=f"{key}.secret_env",
            )
    elif route.secret_file:
        path = resolve_path(route.secret_file, base_dir, key=f"{key}.secret_file")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            raise ConfigError(
                f"{key}.secret_file: cannot read {path}", key=f"{key}.secret_file"
            ) from None
        value = lines[0].strip() if lines else ""
        if not value:
            raise ConfigError(f"{key}.secret_file: {path} is empty", key=f"{key}.secret_file")
    else:
        raise ConfigError(
            f"{key}: auth = {route.auth!r} needs secret_env or secret_file", key=f"{key}.auth"
        )
    if any(not (" " <= c <= "~") for c in value):
        # the error never shows the value
        raise ConfigError(
            f"{key}: the secret must be printable ASCII on one line", key=f"{key}.auth"
        )
    return value.strip()


def load_upstream_auth(
    route: RouteConfig,
    *,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float],
    key: str = "routes",
) -> UpstreamAuth:
    """The :class:`UpstreamAuth` of a route (secrets read now, at start).
    ``key`` names the route in errors (``routes[2]``)."""
    env = os.environ if env is None else env
    if route.auth == "none":
        return NoAuth()
    if route.auth in ("bearer", "api_key"):
        secret = _read_secret(route, base_dir, env, key)
        if route.auth == "bearer":
            return StaticHeaderAuth("Authorization", "Bearer " + secret)
        name = route.api_key_header
        if not name or not name.isascii() or any(c in name for c in " \t\r\n:"):
            raise ConfigError(
                f"{key}.api_key_header: must be a header name", key=f"{key}.api_key_header"
            )
        return StaticHeaderAuth(name, secret)
    if route.auth == "jwt":
        if not route.jwt_key_file:
            raise ConfigError(f"{key}: auth = 'jwt' needs jwt_key_file", key=f"{key}.jwt_key_file")
        path = resolve_path(route.jwt_key_file, base_dir, key=f"{key}.jwt_key_file")
        try:
            data = path.read_bytes()
        except OSError:
            raise ConfigError(
                f"{key}.jwt_key_file: cannot read {path}", key=f"{key}.jwt_key_file"
            ) from None
        signer = JwtSigner.from_pem(data, key=f"{key}.jwt_key_file")
        return JwtAuth(
            signer,
            issuer=route.jwt_issuer,
            audience=route.jwt_audience or route.upstream,
            lifetime=route.jwt_lifetime,
            kid=route.jwt_kid,
            clock=clock,
        )
    raise ConfigError(f"{key}.auth: unknown method", key=f"{key}.auth")  # pragma: no cover
