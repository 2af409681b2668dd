"""Who may use the operator endpoints of the admin HTTP port.

* Live state (``/sessions``, ``/lockouts``, ``/tokens``) answers loopback
  peers only, whatever ``[metrics] listen`` says: the port may be opened to
  a Prometheus server elsewhere, device ids and addresses are not for it.
* State changes (``POST /lockouts/lift``) need, in addition, the admin token:
  ``Authorization: Bearer <token>`` with the contents of ``admin.token`` in
  the state directory (next to the configuration file), written by
  ``acegw init`` with mode 0600, so only the gateway's own user can read it.
  Without a readable token file every state change is refused.

There is no switch to open these to other hosts: an operator elsewhere
uses SSH to the gateway host.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from gateway.config import Config
from gateway.errors import GatewayError

#: File name of the admin token in the state directory.
ADMIN_TOKEN_FILE = "admin.token"


def admin_token_path(config: Config) -> Path | None:
    """``admin.token`` next to the configuration file (None without a file)."""
    return None if config.source is None else Path(config.source).parent / ADMIN_TOKEN_FILE


def create_admin_token(path: Path) -> bool:
    """Write a fresh token (256 bits, hex) to ``path`` with mode 0600, unless
    the file exists; True if written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise GatewayError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_hex(32) + "\n")
    return True


def read_admin_token(path: Path | None) -> str | None:
    """The token in ``path``; None if there is no readable, non-empty file."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback address."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def refusal(peer: str | None, authorization: str | None, token_file: Path | None) -> str | None:
    """Why a state change from ``peer`` with the ``Authorization`` header
    value ``authorization`` is refused, or None if it may go on."""
    if not is_loopback(peer):
        return "state changes are accepted from loopback only"
    expected = read_admin_token(token_file)
    if expected is None:
        return f"no admin token file ({token_file or ADMIN_TOKEN_FILE}); run 'acegw init'"
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), expected):
        return "missing or wrong admin token"
    return None


__all__ = [
    "ADMIN_TOKEN_FILE",
    "admin_token_path",
    "create_admin_token",
    "is_loopback",
    "read_admin_token",
    "refusal",
]
