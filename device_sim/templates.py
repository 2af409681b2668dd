"""Request payloads from templates: a JSON or CBOR body whose values may be
filled per device and per request.

A template is the TOML table ``[requests.body]`` (any nesting of tables,
arrays, numbers, booleans and strings). A string value that is exactly one
placeholder becomes a typed value; placeholders inside a longer string are
replaced by their text:

=====================  ============================================================
``$device_id``         the device's client id (text)
``$device_index``      its row in devices.csv (integer, 0-based)
``$seq``               the request's sequence number on this device (1, 2, ...)
``$random(lo, hi)``    uniform random number in [lo, hi]: an integer when both
                       bounds are integers, else a float rounded to 3 decimals
``$choice(a, b, ...)`` one of the listed words, uniformly
``$timestamp``         wall-clock seconds since the epoch (integer)
``$timestamp_ms``      milliseconds since the epoch (integer)
``$iso_time``          UTC time, RFC 3339 (``2024-05-01T12:00:00.123Z``)
=====================  ============================================================

``${name}`` is the same inside a longer string (``"sensor-${device_id}"``).
The body is encoded as JSON (Content-Format 50, RFC 8259) or CBOR
(Content-Format 60, RFC 8949) once per request. A template is compiled when
the scenario is read, so a mistake is a scenario error, not a runtime one.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

__all__ = ["CONTENT_FORMATS", "BodyTemplate", "TemplateError", "compile_body"]

#: Content-Format numbers (RFC 7252 §12.3) of the body formats.
CONTENT_FORMATS = {"json": 50, "cbor": 60}


class TemplateError(ValueError):
    """A body template that cannot be compiled (message names the place)."""


#: What a placeholder needs at fill time: (device id, device index, seq, rng, epoch).
Context = tuple[str, int, int, random.Random, float]
Filler = Callable[[Context], Any]

_WHOLE = re.compile(r"\$([a-z_]+)(?:\(([^()]*)\))?")
_INNER = re.compile(r"\$\{([a-z_]+)(?:\(([^()]*)\))?\}")


def _iso(epoch: float) -> str:
    t = time.gmtime(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(epoch * 1000) % 1000:03d}Z"


def _number(text: str, where: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise TemplateError(f"{where}: {text!r} is not a number") from None


def _placeholder(name: str, args: str | None, where: str) -> Filler:
    simple: dict[str, Filler] = {
        "device_id": lambda c: c[0],
        "device_index": lambda c: c[1],
        "seq": lambda c: c[2],
        "timestamp": lambda c: int(c[4]),
        "timestamp_ms": lambda c: int(c[4] * 1000),
        "iso_time": lambda c: _iso(c[4]),
    }
    if name in simple:
        if args is not None:
            raise TemplateError(f"{where}: ${name} takes no arguments")
        return simple[name]
    parts = [a.strip() for a in (args or "").split(",") if a.strip()]
    if name == "random":
        if len(parts) != 2:
            raise TemplateError(f"{where}: $random(lo, hi) needs two numbers")
        lo, hi = (_number(p, where) for p in parts)
        if hi < lo:
            raise TemplateError(f"{where}: $random(lo, hi) with hi < lo")
        if isinstance(lo, int) and isinstance(hi, int):
            return lambda c: c[3].randint(lo, hi)
        flo, fhi = float(lo), float(hi)
        return lambda c: round(c[3].uniform(flo, fhi), 3)
    if name == "choice":
        if not parts:
            raise TemplateError(f"{where}: $choice(a, b, ...) needs at least one word")
        words = tuple(parts)
        return lambda c: c[3].choice(words)
    raise TemplateError(f"{where}: unknown placeholder ${name}")


def _const(value: Any) -> Filler:
    return lambda c: value


def _compile(value: Any, where: str) -> Filler:
    if isinstance(value, str):
        m = _WHOLE.fullmatch(value)
        if m:
            return _placeholder(m.group(1), m.group(2), where)
        pieces: list[Filler | str] = []
        pos = 0
        for m in _INNER.finditer(value):
            pieces.append(value[pos : m.start()])
            pieces.append(_placeholder(m.group(1), m.group(2), where))
            pos = m.end()
        if not pieces:
            return _const(value)
        pieces.append(value[pos:])
        return lambda c: "".join(p if isinstance(p, str) else str(p(c)) for p in pieces)
    if isinstance(value, Mapping):
        items = [(str(k), _compile(v, f"{where}.{k}")) for k, v in value.items()]
        return lambda c: {k: f(c) for k, f in items}
    if isinstance(value, list):
        fillers = [_compile(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return lambda c: [f(c) for f in fillers]
    if isinstance(value, bool | int | float) or value is None:
        return _const(value)
    raise TemplateError(f"{where}: values of type {type(value).__name__} cannot be sent")


class BodyTemplate:
    """A compiled body template (see the module doc) and its format."""

    __slots__ = ("_fill", "content_format", "format", "source")

    def __init__(self, source: Mapping[str, Any] | list[Any], fmt: str, where: str) -> None:
        if fmt not in CONTENT_FORMATS:
            raise TemplateError(f"{where}: format must be one of {', '.join(CONTENT_FORMATS)}")
        self.source = source
        self.format = fmt
        self.content_format = CONTENT_FORMATS[fmt]
        self._fill = _compile(source, where)

    def value(self, device_id: str, index: int, seq: int, rng: random.Random, epoch: float) -> Any:
        """The body as a Python value for one request."""
        return self._fill((device_id, index, seq, rng, epoch))

    def render(
        self, device_id: str, index: int, seq: int, rng: random.Random, epoch: float
    ) -> bytes:
        """The encoded body for one request."""
        value = self._fill((device_id, index, seq, rng, epoch))
        if self.format == "json":
            return json.dumps(value, separators=(",", ":")).encode()
        return bytes(cbor2.dumps(value))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BodyTemplate):
            return NotImplemented
        return (self.source, self.format) == (other.source, other.format)

    def __hash__(self) -> int:
        return hash((json.dumps(self.source, sort_keys=True, default=str), self.format))

    def __repr__(self) -> str:
        return f"<BodyTemplate {self.format}>"


def compile_body(source: Any, fmt: str, where: str) -> BodyTemplate:
    """Compile ``[requests.body]`` (a table or an array)."""
    if not isinstance(source, Mapping | list):
        raise TemplateError(f"{where}: expected a table or an array")
    return BodyTemplate(source, fmt, where)
