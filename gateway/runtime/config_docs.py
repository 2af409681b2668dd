"""Text generated from the configuration schema in :mod:`gateway.config`:
the commented default file that ``acegw init`` writes, and the key reference
in ``docs/config.md`` (a test checks that the document is current)."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from gateway.config import SECTIONS, IssuerConfig, RouteConfig, _fields, _num, _Opt

# --- the default file -------------------------------------------------------------


def _toml(value: Any, base: Path | None = None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value).__name__)


def _wrap(text: str, width: int = 78) -> list[str]:
    lines: list[str] = []
    line = "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#"
        line += " " + word
    lines.append(line)
    return lines


def default_config_text() -> str:
    """The commented default configuration written by ``acegw init``; it
    parses to the defaults (checked by the tests)."""
    out = [
        "# acegw configuration (TOML). Every value shown is the default.",
        "# Relative paths are relative to this file's directory.",
        "# Environment variables ACEGW_<SECTION>_<KEY> override keys, e.g.",
        "# ACEGW_SERVER_PORT=5685. The master key itself comes from ACEGW_MASTER_KEY",
        "# or the file named by registry.master_key_file. Reference: docs/config.md.",
    ]
    for section, cls in SECTIONS.items():
        out += ["", f"[{section}]"]
        arrays: list[tuple[_Opt, Any]] = []
        for name, (f, opt, _tp) in _fields(cls).items():
            if opt.example is not None and opt.example.startswith("[["):
                arrays.append((opt, None))
                continue
            out += _wrap(opt.help)
            if opt.example is not None:
                out.append(f"# {opt.example}")
            else:
                out.append(f"{name} = {_toml(f.default)}")
        for opt, _ in arrays:
            out += ["", *_wrap(opt.help)]
            out += [
                f"# {line}" if not line.startswith("#") else line
                for line in (opt.example or "").split("\n")
            ]
    out += [
        "",
        "# Routes: CoAP path prefixes forwarded to HTTP services. Example:",
        "# [[routes]]",
        '# prefix = "/temp"',
        '# upstream = "http://127.0.0.1:8080/api/temp"',
        '# methods = ["GET", "PUT"]',
        "# timeout = 10.0",
        "# max_body = 65536",
        '# headers = { "X-Gateway" = "acegw" }',
        "",
    ]
    return "\n".join(out)


# --- the reference in docs/config.md -----------------------------------------------


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return "array of strings" if args[0] is str else "array of tables"
    if origin is Mapping:
        return "table of numbers" if args[1] is float else "table of strings"
    return {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}[tp]


def _default_text(f: dataclasses.Field[Any], opt: _Opt, table: str) -> str:
    if f.default is MISSING and f.default_factory is MISSING:
        return "required"
    if opt.example is not None and opt.example.startswith("[["):
        return f"see `[[{table}.{f.name}]]`"
    value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
    return f"`{_toml(value)}`"


def _limits(opt: _Opt) -> str:
    parts = []
    if opt.min is not None or opt.max is not None:
        parts.append(f"{_num(opt.min)}..{_num(opt.max)}")
    if opt.choices:
        parts.append(" / ".join(opt.choices))
    return "; ".join(parts) or ""


def reference_markdown() -> str:
    """Markdown tables of every key (the generated part of docs/config.md)."""
    out: list[str] = []
    tables: list[tuple[str, type, bool]] = [(name, cls, True) for name, cls in SECTIONS.items()]
    tables.insert(4, ("rs.issuers", IssuerConfig, False))
    tables.append(("routes", RouteConfig, False))
    for name, cls, env in tables:
        header = f"[{name}]" if env else f"[[{name}]]"
        doc = (cls.__doc__ or "").strip()
        doc = doc.split(": ", 1)[-1] if doc.startswith("``") else doc
        out += [f"### `{header}`", "", (doc[:1].upper() + doc[1:]).replace("``", "`"), ""]
        out += ["| key | type | default | range | description |", "|---|---|---|---|---|"]
        for key, (f, opt, tp) in _fields(cls).items():
            settable = env and not (
                typing.get_origin(tp) is tuple and typing.get_args(tp)[0] is not str
            )
            env_name = f" (`ACEGW_{name.upper()}_{key.upper()}`)" if settable else ""
            desc = " ".join(opt.help.split()).replace("|", "\\|") + env_name
            out.append(
                f"| `{key}` | {_type_name(tp)} | {_default_text(f, opt, name)} | {_limits(opt)} "
                f"| {desc} |"
            )
        out.append("")
    return "\n".join(out)
