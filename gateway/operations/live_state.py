"""What the running gateway can tell and do for an operator, per worker:
its DTLS sessions, its lockout bans, the tokens it holds, its readiness
(for a supervisor's ``/readyz``), and lifting bans.

One worker answers with :func:`answer` (a query name and JSON arguments in,
JSON out); a single process serves its answers on the admin HTTP port
directly, a supervisor asks every worker over its control channel and
lists their answers together (each item says its ``worker``). Nothing
returned holds a key, a PSK or a token: identities appear as client ids,
kids or lengths (:func:`gateway.runtime.gateway.identity_fields`), tokens
by their cti.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidArgument

#: The queries a worker answers, and whether they change state.
QUERIES = {"sessions": False, "lockouts": False, "tokens": False, "ready": False, "lift": True}


def answer(gateway: Any, query: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    """One worker's answer to ``query`` (a :data:`QUERIES` name)."""
    if query == "sessions":
        return sessions(gateway, args.get("client"))
    if query == "lockouts":
        return list(gateway.bans())
    if query == "tokens":
        return held_tokens(gateway)
    if query == "ready":
        ready, detail = gateway.readiness()
        return [{**detail, "worker": gateway.worker, "ready": ready}]
    if query == "lift":
        return [lift(gateway, args)]
    raise InvalidArgument(f"unknown query {query!r}")


def sessions(gateway: Any, client: str | None = None) -> list[dict[str, Any]]:
    """Established sessions (of one client id, if given): address, identity,
    age, worker, and the tokens held for it (cti and exp)."""
    from gateway.runtime.gateway import identity_fields

    if gateway.dtls is None:
        return []
    now = gateway.clock()
    out: list[dict[str, Any]] = []
    for remote in gateway.dtls.remotes(client.encode() if client else None):
        identity: bytes = remote.psk_identity
        started = gateway.session_started(remote)
        fields = identity_fields(identity)
        tokens = held_for(gateway, identity, fields)
        out.append(
            {
                "address": _address(remote.address),
                **fields,
                "age": None if started is None else round(now - started, 1),
                "worker": gateway.worker,
                "tokens": [{"cti": t.cti.hex(), "exp": t.exp} for t in tokens],
            }
        )
    out.sort(key=lambda s: (s.get("client_id") or s.get("kid") or "", s["address"]))
    return out


def held_for(gateway: Any, identity: bytes, fields: dict[str, str]) -> list[Any]:
    """The held tokens a session authenticated as ``identity`` may use."""
    if "client_id" in fields:
        return list(gateway.tokens.for_client(fields["client_id"]))
    if "kid" in fields:
        token = gateway.tokens.peek(bytes.fromhex(fields["kid"]))
        return [] if token is None else [token]
    return []


def held_tokens(gateway: Any) -> list[dict[str, Any]]:
    """Every held token: cti, client, exp, and the AS key (signing or AS-RS)
    it came under when this AS issued it."""
    out = []
    for t in gateway.tokens.all():
        key = gateway.token_key(t)
        out.append(
            {
                "cti": t.cti.hex(),
                "client_id": t.client_id,
                "exp": t.exp,
                "issuer": t.issuer,
                "key": None if key is None else key.hex(),
                "worker": gateway.worker,
            }
        )
    return out


def lift(gateway: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Lift matching bans on this worker (an operator's ``acegw lockouts
    lift``): ``address``, ``identity`` (hex of the PSK identity), or ``all``."""
    address = args.get("address")
    identity_hex = args.get("identity")
    if not args.get("all") and address is None and identity_hex is None:
        raise InvalidArgument("name an address, an identity, or all")
    try:
        identity = None if identity_hex is None else bytes.fromhex(str(identity_hex))
    except ValueError:
        raise InvalidArgument("identity must be hex") from None
    count = gateway.lift_bans(address, identity, "operator")
    return {"worker": gateway.worker, "lifted": count}


def _address(address: Any) -> str:
    host, port = str(address[0]), int(address[1])
    if host[:7].lower() == "::ffff:" and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["QUERIES", "answer", "held_for", "held_tokens", "lift", "sessions"]
