"""The ``acegw`` command: set up a gateway directory, run the service, and
administer clients, revocations, keys and lockout bans; see the running
gateway's sessions and bans (:mod:`gateway.runtime.operator_commands`);
read the operators' audit trail. Every command that changes something is
recorded there (who, what, when, outcome).

Exit status: 0 on success, 2 for usage and configuration errors, 1 for other
errors. Results go to stdout, messages to stderr; expected errors print one
line, never a traceback. PSKs are printed only where a command exists to show
them (a generated or rotated PSK once, ``clients show --show-psk``,
``clients bulk-add --out``); key material never.

Every command that needs the registry or keys finds the configuration with
``--config FILE``, else ``--dir DIR`` (meaning ``DIR/acegw.toml``), else the
environment variable ``ACEGW_CONFIG``, else ``./acegw.toml``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import importlib
import inspect
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.authorization_server.keystore import Keystore
from gateway.config import CONFIG_FILE_NAME, Config, load_config
from gateway.errors import ConfigError, GatewayError, InvalidArgument, KeystoreError, UnknownKid
from gateway.operations.admin_access import ADMIN_TOKEN_FILE, create_admin_token
from gateway.registry.masterkey import ENV_VAR, create_key_file, load_master_key
from gateway.registry.registry import (
    GENERATED_PSK_BYTES,
    MAX_PSK_LEN,
    Client,
    Registry,
    narrows,
)
from gateway.registry.store import redact
from gateway.runtime import operator_commands as ops
from gateway.runtime.config_docs import default_config_text
from tokens.errors import TokenError

PROG = "acegw"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so :func:`main` returns 2."""

    def error(self, message: str) -> Any:
        raise _Usage(f"{self.prog}: error: {message}", self.format_usage())


class _Usage(Exception):
    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError:
        raise InvalidArgument(f"{what} is not hex") from None


def _psk_lines(psk: bytes) -> list[str]:
    lines = []
    if psk.isascii() and psk.decode("ascii").isprintable():
        lines.append(f"psk: {psk.decode('ascii')}")
    lines.append(f"psk_hex: {psk.hex()}")
    return lines


# --- finding the configuration ----------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path:
    if getattr(args, "config", None):
        return Path(args.config)
    if getattr(args, "dir", None):
        return Path(args.dir) / CONFIG_FILE_NAME
    if os.environ.get("ACEGW_CONFIG"):
        return Path(os.environ["ACEGW_CONFIG"])
    path = Path(CONFIG_FILE_NAME)
    if not path.exists():
        raise ConfigError(
            f"no configuration: pass --config FILE or --dir DIR, set ACEGW_CONFIG, "
            f"or run '{PROG} init' here (or '{PROG} init --dir DIR')"
        )
    return path


def _config(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _registry(args: argparse.Namespace) -> Registry:
    config = _config(args)
    return Registry.from_config(config, create=False)


def _keystore(args: argparse.Namespace) -> Keystore:
    return Keystore.from_config(_config(args), create=False)


# --- commands ------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    """Create DIR with a commented config, a master key, keys and an empty registry."""
    directory = Path(args.dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise GatewayError(f"cannot create {directory}: {exc.strerror}") from None
    cfg_path = directory / CONFIG_FILE_NAME
    try:
        with open(cfg_path, "x", encoding="utf-8") as f:
            f.write(default_config_text())
    except FileExistsError:
        raise GatewayError(f"{cfg_path} already exists; {directory} is already set up") from None
    except OSError as exc:
        raise GatewayError(f"cannot write {cfg_path}: {exc.strerror}") from None
    config = load_config(cfg_path)
    key_file = config.registry.master_key_file
    if os.environ.get(ENV_VAR, "").strip():
        key = load_master_key(key_file)
        note = f"master key: from {ENV_VAR} (no key file written)"
    elif key_file.exists():
        key = load_master_key(key_file)
        note = f"master key: kept existing {key_file}"
    else:
        key = create_key_file(key_file)
        note = f"master key: {key_file} (mode 0600; back it up, it decrypts the PSKs)"
    with Registry(config.registry.location, key):
        pass
    create_admin_token(directory / ADMIN_TOKEN_FILE)
    with Keystore.from_config(config) as keystore:
        keys = f"{keystore.backend.location} ({len(keystore.list())} keys)"
    print(f"config:     {cfg_path}", file=out)
    print(note, file=out)
    print(f"registry:   {redact(str(config.registry.location))}", file=out)
    print(f"keys:       {keys}", file=out)
    print(f"admin:      {directory / ADMIN_TOKEN_FILE} (mode 0600; live-state changes)", file=out)
    print(f"next: {PROG} clients add DEVICE_ID --scope '/temp:GET' --config {cfg_path}", file=out)
    return 0


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """Run the gateway (``gateway.runtime.serve.serve(config)``). ``--workers`` is
    an environment override (``ACEGW_SERVER_WORKERS``), so worker processes
    read the same value."""
    if getattr(args, "workers", None) is not None:
        if args.workers < 0:
            raise InvalidArgument("--workers must be 0 (one per CPU) or more")
        os.environ["ACEGW_SERVER_WORKERS"] = str(args.workers)
    config = _config(args)
    try:
        server = importlib.import_module("gateway.runtime.serve")
    except ModuleNotFoundError as exc:
        if exc.name != "gateway.runtime.serve":
            raise
        raise GatewayError(
            "this installation has no gateway.runtime.serve module; the service cannot start"
        ) from None
    serve = getattr(server, "serve", None)
    if serve is None:
        raise GatewayError("gateway.runtime.serve has no serve(config) function")
    level = getattr(args, "log_level", None)
    result = serve(config, log_level=level) if level else serve(config)
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    return result if isinstance(result, int) else 0


def _read_public_key(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read public key file {path}: {exc.strerror}") from None
    with contextlib.suppress(UnicodeDecodeError, ValueError):
        text = data.decode("ascii").strip()
        if text and all(c in "0123456789abcdefABCDEF \n\r\t" for c in text):
            return bytes.fromhex("".join(text.split()))
    return data


def _given_psk(args: argparse.Namespace) -> bytes | None:
    if args.psk is not None:
        return str(args.psk).encode("utf-8")
    if args.psk_hex is not None:
        return _hex(args.psk_hex, "--psk-hex")
    return None


def cmd_clients_add(args: argparse.Namespace, out: TextIO) -> int:
    psk = _given_psk(args)
    public_key = _read_public_key(args.public_key) if args.public_key else None
    with _registry(args) as reg:
        got = reg.add(
            args.id,
            scope=args.scope,
            psk=psk,
            default_scope=args.default_scope,
            printable=args.printable,
            audiences=args.audience or (),
            public_key=public_key,
        )
    args.audit_detail = {
        "scope": args.scope,
        "psk": "generated" if psk is None else "given",
        "audiences": args.audience or [],
    }
    print(f"client {args.id} added", file=out)
    if psk is None:
        for line in _psk_lines(got):
            print(line, file=out)
    config = _config(args)
    if config.as_.enabled:
        for line in trl_registration_lines():
            print(line, file=out)
    return 0


def trl_registration_lines() -> list[str]:
    """What a registered device or administrator is given at registration
    to follow the revocation list (RFC 9770 §10): the TRL's url-path, the
    token hash function, MAX_N and MAX_DIFF_BATCH. No secret."""
    from gateway.authorization_server import revocation_list as trl

    return [
        f"revocation list (RFC 9770): GET /{'/'.join(trl.TRL_PATH)} (Observe; full or diff query)",
        f"  token hash {trl.HASH_NAME} (Named Information Hash Algorithm ID {trl.SHA256_SUITE}),"
        f" MAX_N {trl.MAX_N}, MAX_DIFF_BATCH {trl.MAX_DIFF_BATCH}",
    ]


def cmd_clients_update(args: argparse.Namespace, out: TextIO) -> int:
    public_key = _read_public_key(args.public_key) if args.public_key else None
    with _registry(args) as reg:
        audiences = None if args.audience is None else tuple(args.audience)
        narrowed = narrows(reg.get(args.id), args.scope, audiences)
        reg.update(
            args.id,
            scope=args.scope,
            default_scope=args.default_scope,
            audiences=args.audience,
            public_key=public_key,
        )
    args.audit_detail = {
        k: v
        for k, v in (
            ("scope", args.scope),
            ("default_scope", args.default_scope),
            ("audiences", args.audience),
            ("public_key", "replaced" if public_key else None),
        )
        if v is not None
    }
    if narrowed:
        args.audit_detail["tokens_cut_off"] = True
    print(f"client {args.id} updated", file=out)
    if narrowed:
        print(
            "rights narrowed: its tokens issued until now are refused (reason token_cut_off) "
            "and its sessions closed; its devices request new tokens",
            file=out,
        )
    return 0


def _client_json(c: Client) -> dict[str, Any]:
    return {
        "id": c.client_id,
        "enabled": c.enabled,
        "scope": c.scope,
        "default_scope": c.default_scope,
        "audiences": list(c.audiences),
        "public_key": c.public_key.hex() if c.public_key else None,
        "created_at": c.created_at,
        "rotated_at": c.rotated_at,
        "generation": c.generation,
    }


def cmd_clients_list(args: argparse.Namespace, out: TextIO) -> int:
    with _registry(args) as reg:
        clients = reg.list()
    if args.json:
        json.dump([_client_json(c) for c in clients], out, indent=2)
        out.write("\n")
        return 0
    rows = [("ID", "ENABLED", "SCOPE", "AUDIENCES", "CREATED")]
    rows += [
        (
            c.client_id,
            "yes" if c.enabled else "no",
            c.scope,
            ",".join(c.audiences) or "-",
            _ts(c.created_at),
        )
        for c in clients
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[4], file=out
        )
    return 0


def cmd_clients_show(args: argparse.Namespace, out: TextIO) -> int:
    with _registry(args) as reg:
        c = reg.get(args.id)
        psk = reg.psk(args.id) if args.show_psk else None
    if args.json:
        d = _client_json(c)
        if psk is not None:
            d["psk_hex"] = psk.hex()
        json.dump(d, out, indent=2)
        out.write("\n")
        return 0
    print(f"id:            {c.client_id}", file=out)
    print(f"enabled:       {'yes' if c.enabled else 'no'}", file=out)
    print(f"scope:         {c.scope}", file=out)
    print(f"default_scope: {c.default_scope or '-'}", file=out)
    print(f"audiences:     {', '.join(c.audiences) or '-'}", file=out)
    print(f"public_key:    {c.public_key.hex() if c.public_key else '-'}", file=out)
    print(f"created_at:    {_ts(c.created_at)}", file=out)
    print(f"rotated_at:    {_ts(c.rotated_at)}", file=out)
    print(f"generation:    {c.generation}", file=out)
    if psk is not None:
        for line in _psk_lines(psk):
            print(line, file=out)
    return 0


def _simple(action: str) -> Callable[[argparse.Namespace, TextIO], int]:
    def run(args: argparse.Namespace, out: TextIO) -> int:
        with _registry(args) as reg:
            getattr(reg, action)(args.id)
        print(f"client {args.id} {action}d", file=out)
        return 0

    run.__name__ = f"cmd_clients_{action}"
    return run


def cmd_clients_rotate_psk(args: argparse.Namespace, out: TextIO) -> int:
    psk = _given_psk(args)
    with _registry(args) as reg:
        new = reg.rotate_psk(args.id, psk, printable=args.printable)
    print(f"client {args.id}: PSK rotated", file=out)
    if psk is None:
        for line in _psk_lines(new):
            print(line, file=out)
    return 0


def cmd_clients_bulk_add(args: argparse.Namespace, out: TextIO) -> int:
    """Register N clients in one transaction; write ``id,psk_hex,scope`` CSV
    (mode 0600: it holds the PSKs)."""
    reg = _registry(args)
    to_stdout = args.out == "-"
    target: TextIO
    with reg:
        if to_stdout:
            target = out
        else:
            try:
                fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                raise GatewayError(f"{args.out} already exists; not overwriting") from None
            except OSError as exc:
                raise GatewayError(f"cannot create {args.out}: {exc.strerror}") from None
            target = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            created = reg.bulk_add(
                args.count,
                args.prefix,
                args.scope,
                audiences=args.audience or (),
                psk_bytes=args.psk_bytes,
            )
        except BaseException:
            if not to_stdout:
                target.close()
                os.unlink(args.out)
            raise
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id", "psk_hex", "scope"])
        writer.writerows((cid, psk.hex(), args.scope) for cid, psk in created)
        target.write(buf.getvalue())
        if not to_stdout:
            target.flush()
            os.fsync(target.fileno())
            target.close()
    args.audit_detail = {
        "count": len(created),
        "first": created[0][0],
        "last": created[-1][0],
        "scope": args.scope,
    }
    if not to_stdout:
        print(
            f"{len(created)} clients added ({created[0][0]} .. {created[-1][0]}); "
            f"PSKs written to {args.out}",
            file=out,
        )
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, out: TextIO) -> int:
    cti = _hex(args.cti, "CTI_HEX")
    if not cti:
        raise InvalidArgument("CTI_HEX is empty")
    config = _config(args)
    exp = args.exp
    if exp is None:  # no token of ours outlives this
        exp = time.time() + config.as_.token_lifetime + config.rs.leeway
    with Registry.from_config(config, create=False) as reg:
        reg.revoke(cti, exp)
    args.audit_detail = {"exp": exp}
    print(f"token {cti.hex()} revoked until {_ts(exp)}", file=out)
    return 0


def cmd_tokens_revoked(args: argparse.Namespace, out: TextIO) -> int:
    with _registry(args) as reg:
        for cti, exp in reg.revoked():
            print(f"{cti.hex()}  {_ts(exp)}", file=out)
    return 0


def _token_bytes(arg: str) -> bytes:
    path = Path(arg)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a long hex token is no file name
        is_file = False
    if is_file:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"cannot read {arg}: {exc.strerror}") from None
        with contextlib.suppress(UnicodeDecodeError, ValueError):
            return bytes.fromhex("".join(data.decode("ascii").split()))
        return data
    return _hex(arg, "TOKEN (neither a file nor hex)")


def cmd_token_decode(args: argparse.Namespace, out: TextIO) -> int:
    """Show a token's headers and claims without verifying it and without any
    secret (a symmetric ``cnf`` key is redacted)."""
    from tokens.ace import TokenResponse
    from tokens.cwt import decode_unverified
    from tokens.errors import TokenError

    data = _token_bytes(args.token)
    if data[:1] and data[0] >> 5 == 5:  # a CBOR map: a /token response
        with contextlib.suppress(TokenError):
            data = TokenResponse.decode(data).access_token
    if args.config or args.dir or os.environ.get("ACEGW_CONFIG"):
        # with the AS keys: open an Encrypt0 token, check a signature
        config = _config(args)
        with Registry.from_config(config, create=False) as registry, _keystore(args) as keys:
            shown = ops.decode_with_keys(data, config, keys, registry)
    else:
        shown = decode_unverified(data).describe()
    json.dump(shown, out, indent=2, default=str)
    out.write("\n")
    return 0


def cmd_keys_list(args: argparse.Namespace, out: TextIO) -> int:
    with _keystore(args) as ks:
        entries = ks.list()
    if args.json:
        json.dump([e.to_json() for e in entries], out, indent=2)
        out.write("\n")
        return 0
    print(f"{'KID':10}{'KIND':9}{'ALG':19}{'STATUS':9}CREATED", file=out)
    for e in entries:
        print(f"{e.kid.hex():10}{e.kind:9}{e.alg.name:19}{e.status:9}{_ts(e.created_at)}", file=out)
    return 0


def cmd_keys_rotate(args: argparse.Namespace, out: TextIO) -> int:
    from tokens.params import Alg

    alg = {"ES256": Alg.ES256, "EdDSA": Alg.EDDSA}.get(args.alg) if args.alg else None
    with _keystore(args) as ks:
        new = ks.rotate("as_rs" if args.as_rs else "signing", alg=alg)
    args.audit_detail = {"kind": new.kind, "kid": new.kid.hex(), "alg": new.alg.name}
    print(
        f"new current {new.kind} key {new.kid.hex()} ({new.alg.name}); "
        "the previous one still verifies until retired",
        file=out,
    )
    return 0


def cmd_keys_retire(args: argparse.Namespace, out: TextIO) -> int:
    """Retire a key after saying how many tokens the running gateway holds
    under it (dropped at once); only with ``--yes``."""
    kid = _hex(args.kid, "KID")
    with _keystore(args) as ks:
        entry = next((e for e in ks.list() if e.kid == kid), None)
    if entry is None:
        raise UnknownKid(f"no key with kid {kid.hex()}")
    if entry.status == "current":
        raise KeystoreError(
            f"key {kid.hex()} is the current {entry.kind} key; rotate first, then retire it"
        )
    if entry.status == "retired":
        print(f"{entry.kind} key {kid.hex()} is already retired", file=out)
        return 0
    held = ops.held_under_key(_config(args), kid)
    count = (
        "the running gateway did not answer: held tokens unknown"
        if held is None
        else f"the running gateway holds {held} token(s) under it; they are dropped at once"
    )
    print(f"retiring {entry.kind} key {kid.hex()}: {count}", file=out)
    if not args.yes:
        raise InvalidArgument("not retired: add --yes to retire it")
    with _keystore(args) as ks:
        e = ks.retire(kid)
    args.audit_detail = {"kind": e.kind, "held_tokens": held}
    print(f"{e.kind} key {e.kid.hex()} retired", file=out)
    return 0


def cmd_keys_export(args: argparse.Namespace, out: TextIO) -> int:
    with _keystore(args) as ks:
        data = ks.export_for_rs() if args.include_as_rs else ks.export_public()
    try:
        fd = os.open(
            args.out,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            0o600 if args.include_as_rs else 0o644,
        )
    except FileExistsError:
        raise GatewayError(f"{args.out} already exists; not overwriting") from None
    except OSError as exc:
        raise GatewayError(f"cannot create {args.out}: {exc.strerror}") from None
    with open(fd, "wb") as f:
        f.write(data)
    args.audit_detail = {"file": str(args.out), "secret_as_rs_keys": bool(args.include_as_rs)}
    print(f"COSE_KeySet written to {args.out}", file=out)
    return 0


def _live(command: Callable[..., int], *extra: Any) -> Callable[[argparse.Namespace, TextIO], int]:
    def run(args: argparse.Namespace, out: TextIO) -> int:
        return command(args, out, _config, *extra)

    run.__name__ = command.__name__
    return run


def _audited(
    action: str, command: Callable[[argparse.Namespace, TextIO], int], target: str | None = "id"
) -> Callable[[argparse.Namespace, TextIO], int]:
    """``command`` recorded in the operators' audit trail as ``action`` on
    the argument named ``target``."""

    def target_of(args: argparse.Namespace) -> str | None:
        return None if target is None else getattr(args, target, None)

    return ops.audited(action, target_of, _config)(command)


def _lift_target(args: argparse.Namespace) -> str | None:
    if getattr(args, "all", False):
        return "all"
    parts = [args.target, args.address, args.client, args.kid and f"kid:{args.kid}"]
    return " ".join(p for p in parts if p) or None


def cmd_registry_migrate(args: argparse.Namespace, out: TextIO) -> int:
    """Copy this configuration's registry into the PostgreSQL database at
    ``--to`` (``gateway.registry.transfer``)."""
    from gateway.registry.transfer import copy_registry

    config = _config(args)
    with _registry(args) as source:
        keys = []  # the AS keys go along, so tokens issued before the move stay valid
        if (config.keys.dir / "manifest.json").exists():
            with Keystore.from_config(config, create=False) as local:
                keys = local.sealed_records(source.master_key)
        n = copy_registry(source, args.to, keys=keys)
    print(
        f"copied {n.clients} clients, {n.revocations} revocations, {n.cutoffs} cut-offs, "
        f"{n.changes} changes, {n.actions} audit records, {n.keys} AS keys "
        f"to {redact(args.to)}",
        file=out,
    )
    print(f'next: set [registry] url = "{redact(args.to)}" on every instance', file=out)
    return 0


# --- the parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    where = _Parser(add_help=False)
    g = where.add_mutually_exclusive_group()
    g.add_argument("--config", metavar="FILE", help="configuration file")
    g.add_argument("--dir", metavar="DIR", help=f"gateway directory (DIR/{CONFIG_FILE_NAME})")

    p = _Parser(prog=PROG, description="ACE-OAuth CoAP/DTLS gateway")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("init", help="create a gateway directory")
    s.add_argument(
        "--dir",
        default=".",
        metavar="DIR",
        help=f"where to create it (default: this directory; other commands then find "
        f"{CONFIG_FILE_NAME} here)",
    )
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("serve", parents=[where], help="run the gateway")
    s.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="override [logging] level",
    )
    s.add_argument(
        "--workers", type=int, metavar="N", help="override [server] workers (0 = one per CPU)"
    )
    s.set_defaults(func=cmd_serve)

    clients = sub.add_parser("clients", help="manage registered devices")
    cs = clients.add_subparsers(dest="action", required=True, parser_class=_Parser)

    def psk_args(s: argparse.ArgumentParser) -> None:
        m = s.add_mutually_exclusive_group()
        m.add_argument(
            "--psk", metavar="TEXT", help="PSK as text (default: 32 random bytes, generated)"
        )
        m.add_argument("--psk-hex", metavar="HEX", help="PSK as hex bytes")
        m.add_argument(
            "--printable",
            action="store_true",
            help="generate a printable PSK (43 characters, 258 bits) for libcoap's -k",
        )

    s = cs.add_parser("add", parents=[where], help="register a device")
    s.add_argument("id")
    psk_args(s)
    s.add_argument("--scope", required=True, help="allowed scope, e.g. '/temp:GET /cfg:GET,PUT'")
    s.add_argument("--default-scope", help="scope granted when a token request names none")
    s.add_argument("--audience", action="append", metavar="A", help="allowed audience (repeat)")
    s.add_argument("--public-key", metavar="FILE", help="device COSE_Key (CBOR or hex)")
    s.set_defaults(func=_audited("clients add", cmd_clients_add))

    s = cs.add_parser("update", parents=[where], help="change scope, audiences or public key")
    s.add_argument("id")
    s.add_argument("--scope")
    s.add_argument("--default-scope")
    s.add_argument("--audience", action="append", metavar="A")
    s.add_argument("--public-key", metavar="FILE")
    s.set_defaults(func=_audited("clients update", cmd_clients_update))

    s = cs.add_parser("list", parents=[where], help="list devices")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_clients_list)

    s = cs.add_parser("show", parents=[where], help="show one device")
    s.add_argument("id")
    s.add_argument("--show-psk", action="store_true", help="also print the PSK")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_clients_show)

    for action in ("disable", "enable", "delete"):
        s = cs.add_parser(action, parents=[where], help=f"{action} a device")
        s.add_argument("id")
        s.set_defaults(func=_audited(f"clients {action}", _simple(action)))

    s = cs.add_parser("rotate-psk", parents=[where], help="give a device a new PSK")
    s.add_argument("id")
    psk_args(s)
    s.set_defaults(func=_audited("clients rotate-psk", cmd_clients_rotate_psk))

    s = cs.add_parser("bulk-add", parents=[where], help="register many devices at once")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--scope", required=True)
    s.add_argument("--audience", action="append", metavar="A")
    s.add_argument("--out", required=True, metavar="CSV", help="CSV file for the PSKs, or -")
    s.add_argument(
        "--psk-bytes",
        type=int,
        default=GENERATED_PSK_BYTES,
        metavar="N",
        help=f"bytes of each generated PSK, 16..{MAX_PSK_LEN} (default {GENERATED_PSK_BYTES})",
    )
    s.set_defaults(func=_audited("clients bulk-add", cmd_clients_bulk_add, "prefix"))

    tokens = sub.add_parser("tokens", aliases=["token"], help="revoke or inspect tokens")
    ts = tokens.add_subparsers(dest="action", required=True, parser_class=_Parser)
    s = ts.add_parser("revoke", parents=[where], help="revoke a token by its cti")
    s.add_argument("cti", metavar="CTI_HEX")
    s.add_argument(
        "--exp",
        type=float,
        metavar="EPOCH",
        help="token expiry (default: now + as.token_lifetime + rs.leeway)",
    )
    s.set_defaults(func=_audited("tokens revoke", cmd_tokens_revoke, "cti"))
    s = ts.add_parser("revoked", parents=[where], help="list revoked token ids")
    s.set_defaults(func=cmd_tokens_revoked)
    s = ts.add_parser(
        "decode",
        parents=[where],
        help="show a token's content (with --config/--dir: opened and checked with the AS keys)",
    )
    s.add_argument("token", metavar="TOKEN_HEX_OR_FILE")
    s.set_defaults(func=cmd_token_decode)

    lockouts = sub.add_parser(
        "lockouts", aliases=["bans"], help="lockout bans of the running gateway"
    )
    bs = lockouts.add_subparsers(dest="action", required=True, parser_class=_Parser)
    s = bs.add_parser("list", parents=[where], help="bans in force on every worker")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_live(ops.cmd_lockouts_list))
    s = bs.add_parser("lift", parents=[where], help="lift bans on every worker")
    s.add_argument("target", nargs="?", metavar="ADDRESS|ID", help="an IP address or a client id")
    s.add_argument("--address", metavar="A", help="an address: its ban and its pair bans")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--client", metavar="ID", help="a client id: its pair bans")
    who.add_argument("--kid", metavar="HEX", help="an RFC 9202 key id identity: its pair bans")
    s.add_argument("--all", action="store_true", help="every ban")
    s.set_defaults(
        func=ops.audited("lockouts lift", _lift_target, _config)(
            _live(ops.cmd_lockouts_lift, _registry)
        )
    )

    sessions = sub.add_parser("sessions", help="DTLS sessions of the running gateway")
    ss = sessions.add_subparsers(dest="action", required=True, parser_class=_Parser)
    s = ss.add_parser("list", parents=[where], help="sessions on every worker, with held tokens")
    s.add_argument("--client", metavar="ID", help="only this client's sessions")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_live(ops.cmd_sessions_list))

    audit = sub.add_parser("audit", help="the operators' audit trail (who changed what)")
    aus = audit.add_subparsers(dest="action", required=True, parser_class=_Parser)
    s = aus.add_parser("tail", parents=[where], help="the newest records")
    s.add_argument("-n", "--lines", type=int, default=20, metavar="N")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_live(ops.cmd_audit_tail))
    s = aus.add_parser("search", parents=[where], help="records by target, action, time")
    s.add_argument("--client", metavar="ID", help="target: a client id (or a cti, a kid)")
    s.add_argument("--action", metavar="A", help="e.g. 'clients disable', or 'clients'")
    s.add_argument("--operator", metavar="USER")
    s.add_argument("--since", metavar="WHEN", help="10m, 2h, 3d, an ISO date/time, or epoch")
    s.add_argument("--until", metavar="WHEN")
    s.add_argument("--limit", type=int, metavar="N", help="the newest N matches only")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_live(ops.cmd_audit_search))

    keys = sub.add_parser("keys", help="AS signing and AS-RS keys")
    ks = keys.add_subparsers(dest="action", required=True, parser_class=_Parser)
    s = ks.add_parser("list", parents=[where])
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_keys_list)
    s = ks.add_parser("rotate", parents=[where], help="new current signing (or AS-RS) key")
    s.add_argument("--as-rs", action="store_true", help="rotate the AS-RS key instead")
    s.add_argument("--alg", choices=("ES256", "EdDSA"), help="signing algorithm")
    s.set_defaults(func=_audited("keys rotate", cmd_keys_rotate, None))
    s = ks.add_parser("retire", parents=[where], help="stop trusting a non-current key")
    s.add_argument("kid", metavar="KID_HEX")
    s.add_argument("--yes", action="store_true", help="retire even though held tokens are dropped")
    s.set_defaults(func=_audited("keys retire", cmd_keys_retire, "kid"))
    s = ks.add_parser("export", parents=[where], help="write a COSE_KeySet for an RS")
    s.add_argument("--out", required=True, metavar="FILE")
    s.add_argument(
        "--include-as-rs",
        action="store_true",
        help="include the secret AS-RS keys (file gets mode 0600)",
    )
    s.set_defaults(func=_audited("keys export", cmd_keys_export, "out"))

    registry = sub.add_parser("registry", help="the registry's storage")
    rs = registry.add_subparsers(dest="action", required=True, parser_class=_Parser)
    s = rs.add_parser(
        "migrate", parents=[where], help="copy this registry into a PostgreSQL database"
    )
    s.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host/db")
    s.set_defaults(func=_audited("registry migrate", cmd_registry_migrate, None))
    return p


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run one ``acegw`` command; returns the exit status."""
    out = sys.stdout if out is None else out
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _Usage as exc:
        sys.stderr.write(exc.usage)
        print(exc, file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return int(args.func(args, out))
    except GatewayError as exc:
        print(f"{PROG}: error: {exc.description}", file=sys.stderr)
        return exc.exit_status
    except TokenError as exc:
        print(f"{PROG}: error: {exc.description}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
