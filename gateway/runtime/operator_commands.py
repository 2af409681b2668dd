"""The ``acegw`` commands that look at or steer the running gateway and the
operators' audit trail: ``sessions list``, ``lockouts list / lift`` (alias
``bans``), ``audit tail / search``, ``token decode --config`` and the
held-token count of ``keys retire``; and :func:`audited`, which records
every changing command in the registry (:mod:`gateway.registry.operator_audit`).

Nothing printed holds a PSK, a key, a PoP key or a whole token.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.config import Config
from gateway.errors import ConfigError, GatewayError, InvalidArgument
from gateway.operations.admin_client import AdminClient, NoAnswer
from gateway.registry.operator_audit import OperatorAction, OperatorAudit
from tokens.aif import Scope
from tokens.cnf import CnfKey, psk_identity_for_kid
from tokens.cwt import Claims, TokenVerifier, decode_unverified
from tokens.errors import TokenError, WrongAudience

Command = Callable[[argparse.Namespace, TextIO], int]
ConfigOf = Callable[[argparse.Namespace], Config]


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


# --- the operators' audit trail -----------------------------------------------------------


def audited(action: str, target: Callable[[argparse.Namespace], str | None], config_of: ConfigOf):
    """Wrap a changing command: after it ran, one audit record (action,
    target, operator, time, outcome, and ``args.audit_detail`` if the
    command set it). A refused command is recorded with its reason."""

    def wrap(command: Command) -> Command:
        def run(args: argparse.Namespace, out: TextIO) -> int:
            args.audit_detail = {}
            try:
                status = command(args, out)
            except GatewayError as exc:
                _record(args, config_of, action, target(args), f"refused: {exc.description}")
                raise
            _record(args, config_of, action, target(args), "ok")
            return status

        run.__name__ = command.__name__
        run.__doc__ = command.__doc__
        return run

    return wrap


def _record(
    args: argparse.Namespace, config_of: ConfigOf, action: str, target: str | None, outcome: str
) -> None:
    try:
        config = config_of(args)
        with OperatorAudit(config.registry.location) as trail:
            trail.record(action, target, outcome, getattr(args, "audit_detail", None) or {})
    except GatewayError as exc:
        if outcome == "ok":  # done but not recorded: say so, fail the command
            raise GatewayError(f"{action} done, but not audited: {exc.description}") from None


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """``10m``, ``2h``, ``3d`` (ago), an ISO 8601 date or time (UTC unless
    it says otherwise), or epoch seconds."""
    now = time.time() if now is None else now
    m = _RELATIVE.fullmatch(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgument(
            f"{text!r} is not a time: use 10m, 2h, 3d, 2025-01-31, 2025-01-31T12:00 or epoch"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _print_actions(actions: list[OperatorAction], out: TextIO, as_json: bool) -> None:
    if as_json:
        json.dump([a.to_json() for a in actions], out, indent=2)
        out.write("\n")
        return
    if not actions:
        print("no audit records", file=out)
        return
    for a in actions:
        detail = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(a.detail.items()))
        print(
            f"{_ts(a.at)}  {a.operator:16} {a.action:18} {a.target or '-':24} {a.outcome}"
            + (f"  {detail}" if detail else ""),
            file=out,
        )


def cmd_audit_tail(args: argparse.Namespace, out: TextIO, config_of: ConfigOf) -> int:
    """The newest operator actions."""
    with OperatorAudit(config_of(args).registry.location) as trail:
        _print_actions(trail.search(limit=args.lines), out, args.json)
    return 0


def cmd_audit_search(args: argparse.Namespace, out: TextIO, config_of: ConfigOf) -> int:
    """Operator actions by target (``--client``), action, operator, time."""
    with OperatorAudit(config_of(args).registry.location) as trail:
        found = trail.search(
            target=args.client,
            action=args.action,
            operator=args.operator,
            since=None if args.since is None else parse_when(args.since),
            until=None if args.until is None else parse_when(args.until),
            limit=args.limit,
        )
    _print_actions(found, out, args.json)
    return 0


# --- live state ---------------------------------------------------------------------------


def _who(item: dict[str, Any]) -> str:
    if "client_id" in item:
        return str(item["client_id"])
    if "kid" in item:
        return f"kid:{item['kid']}"
    if "identity_len" in item:
        return f"token identity ({item['identity_len']} bytes)"
    return "-"


def cmd_sessions_list(args: argparse.Namespace, out: TextIO, config_of: ConfigOf) -> int:
    """The running gateway's DTLS sessions, every worker (``GET /sessions``)."""
    sessions = AdminClient(config_of(args)).get("/sessions", client=args.client)["sessions"]
    if args.json:
        json.dump(sessions, out, indent=2)
        out.write("\n")
        return 0
    if not sessions:
        print("no sessions" + (f" of {args.client}" if args.client else ""), file=out)
        return 0
    print(f"{'ADDRESS':26} {'IDENTITY':34} {'AGE':>8} {'WORKER':>6}  TOKENS (cti until)", file=out)
    for s in sessions:
        age = "-" if s.get("age") is None else f"{s['age']:.0f}s"
        tokens = ", ".join(f"{t['cti']} {_ts(t['exp'])}" for t in s.get("tokens", [])) or "-"
        print(f"{s['address']:26} {_who(s):34} {age:>8} {s['worker']!s:>6}  {tokens}", file=out)
    return 0


def cmd_lockouts_list(args: argparse.Namespace, out: TextIO, config_of: ConfigOf) -> int:
    """The lockout bans in force on every worker (``GET /lockouts``)."""
    bans = AdminClient(config_of(args)).get("/lockouts")["bans"]
    if args.json:
        json.dump(bans, out, indent=2)
        out.write("\n")
        return 0
    if not bans:
        print("no bans in force", file=out)
        return 0
    print(f"{'scope':8} {'address':40} {'identity':34} {'until (UTC)':26} worker", file=out)
    for ban in bans:
        who = "(identities not trusted there)" if ban["scope"] == "address" else _who(ban)
        print(
            f"{ban['scope']:8} {ban['address']:40} {who:34} {_ts(ban['until']):26} "
            f"{ban.get('worker', '-')}",
            file=out,
        )
    return 0


def lift_target(args: argparse.Namespace) -> tuple[str | None, bytes | None]:
    """The (address, PSK identity) a ``lockouts lift`` names: ``TARGET`` (an
    IP address or a client id), ``--address``, ``--client``, ``--kid``."""
    address, client = args.address, args.client
    if args.target is not None:
        try:
            address = str(ipaddress.ip_address(args.target))
        except ValueError:
            if client is not None or args.kid is not None:
                raise InvalidArgument("give the client as TARGET or --client, not both") from None
            client = args.target
    if args.all and (address is not None or client is not None or args.kid is not None):
        raise InvalidArgument("--all lifts every ban; name no address, client or kid")
    if not args.all and address is None and client is None and args.kid is None:
        raise InvalidArgument("name what to lift: ADDRESS, ID, --kid HEX, or --all")
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise InvalidArgument(f"--address {address!r} is not an IP address") from None
    identity = None
    if client is not None:
        identity = str(client).encode("utf-8")
    elif args.kid is not None:
        try:
            identity = psk_identity_for_kid(bytes.fromhex(args.kid))
        except ValueError:
            raise InvalidArgument("KID is not hex") from None
    return address, identity


def cmd_lockouts_lift(
    args: argparse.Namespace, out: TextIO, config_of: ConfigOf, registry: Callable[..., Any]
) -> int:
    """Lift bans now on every worker of the running gateway (``POST
    /lockouts/lift`` with the admin token), and record the lift in the
    registry's change log for every other instance sharing it."""
    address, identity = lift_target(args)
    config = config_of(args)
    with registry(args) as reg:
        reg.lift_bans(address, identity)
    body: dict[str, Any] = {"all": True} if args.all else {}
    if address is not None:
        body["address"] = address
    if identity is not None:
        body["identity"] = identity.hex()
    try:
        answers = AdminClient(config).post("/lockouts/lift", body)["lifted"]
    except NoAnswer as exc:
        print(
            f"{exc.description}; lift recorded in the registry: running gateways sharing it "
            "apply it within a second",
            file=out,
        )
        args.audit_detail = {"lifted": None, **_lift_detail(address, identity, args.all)}
        return 0
    lifted = sum(int(a.get("lifted", 0)) for a in answers)
    args.audit_detail = {"lifted": lifted, **_lift_detail(address, identity, args.all)}
    print(f"{lifted} ban(s) lifted on {len(answers)} worker(s); lift recorded", file=out)
    return 0


def _lift_detail(address: str | None, identity: bytes | None, every: bool) -> dict[str, Any]:
    from gateway.runtime.gateway import identity_fields

    detail: dict[str, Any] = {"all": True} if every else {}
    if address is not None:
        detail["address"] = address
    if identity is not None:
        detail.update(identity_fields(identity))
    return detail


def held_under_key(config: Config, kid: bytes) -> int | None:
    """How many tokens the running gateway holds under the AS key ``kid``;
    None when it does not answer."""
    try:
        tokens = AdminClient(config).get("/tokens")["tokens"]
    except (NoAnswer, ConfigError):  # not running, or no HTTP port to ask
        return None
    return len({t["cti"] for t in tokens if t.get("key") == kid.hex()})


# --- token decode -------------------------------------------------------------------------


def decode_with_keys(token: bytes, config: Config, keystore: Any, registry: Any) -> dict[str, Any]:
    """Authenticate and open a token this AS issued (Sign1, or Encrypt0 under
    an AS-RS key) and describe its claims for an operator: cti, iss, aud,
    sub, exp, iat, scope as text, the PoP key's kid. Never the PoP key."""
    info = decode_unverified(token)
    shown: dict[str, Any] = {
        "type": info.kind.name if info.kind is not None else None,
        "key": info.kid.hex() if info.kid is not None else None,
        "size": info.size,
    }
    audiences = list(dict.fromkeys([*config.audiences, config.rs.audience]))
    claims: Claims | None = None
    problem = "no audience of this gateway"
    for audience in audiences:
        verifier = TokenVerifier(
            audience=audience,
            keys=keystore.verification_keys(),
            decryption_keys=keystore.decryption_keys(),
            accept_any_issuer=True,
            require_exp=False,
            leeway=1e12,  # expired or not yet valid: shown anyway
        )
        try:
            claims = verifier.verify(token, time.time())
            break
        except WrongAudience:
            continue
        except TokenError as exc:
            problem = exc.description
            break
    if claims is None:
        shown["verified"] = False
        shown["problem"] = f"{problem} (not a token of this AS, or its key was retired)"
        if info.claims is not None:
            shown["claims"] = claims_view(info.claims)
        return shown
    shown["verified"] = True
    shown["claims"] = claims_view(claims)
    if claims.cti is not None:
        shown["revoked"] = registry.is_revoked(claims.cti)
    return shown


def claims_view(claims: Claims) -> dict[str, Any]:
    """The operator's view of a token's claims (no key material)."""
    scope: Any = claims.scope
    if scope is not None:
        try:
            scope = str(Scope.from_scope_param(scope))
        except TokenError:
            scope = scope.hex() if isinstance(scope, bytes) else scope
    cnf = claims.cnf
    kid = None
    if isinstance(cnf, CnfKey):
        kid = cnf.key.kid.hex() if cnf.key.kid else None
    elif cnf is not None and getattr(cnf, "kid", None):
        kid = cnf.kid.hex()
    aud = list(claims.aud) if isinstance(claims.aud, tuple) else claims.aud
    view = {
        "cti": claims.cti.hex() if claims.cti is not None else None,
        "iss": claims.iss,
        "aud": aud,
        "sub": claims.sub,
        "exp": claims.exp,
        "exp_utc": _ts(claims.exp) if claims.exp is not None else None,
        "iat": claims.iat,
        "iat_utc": _ts(claims.iat) if claims.iat is not None else None,
        "scope": scope,
        "cnf": {"kid": kid},
    }
    return {k: v for k, v in view.items() if v is not None}


def warn(message: str) -> None:
    print(f"acegw: {message}", file=sys.stderr)


__all__ = [
    "audited",
    "claims_view",
    "cmd_audit_search",
    "cmd_audit_tail",
    "cmd_lockouts_lift",
    "cmd_lockouts_list",
    "cmd_sessions_list",
    "decode_with_keys",
    "held_under_key",
    "lift_target",
    "parse_when",
]
