"""Scenario files (TOML), the device list (``devices.csv``) and how devices
are split between shards and workers.

A scenario says how many devices run, for how long, what each does (request
mix and rate, PoP kind, timers) and which share of them attack the gateway.
``docs/simulator.md`` is the reference for every key; :func:`load_scenario`
refuses unknown keys so a typo cannot silently fall back to a default.

``devices.csv`` is what ``acegw clients bulk-add --out`` writes: a header
``id,psk_hex,scope`` and one row per device.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tokens.params import Method

from .coap import TransmissionParameters
from .dtls_client import MAX_LONG_IDENTITY_LENGTH, MAX_LONG_PSK_LENGTH
from .templates import BodyTemplate, TemplateError, compile_body
from .verdict import Thresholds

__all__ = [
    "ATTACK_KINDS",
    "DeviceSpec",
    "RequestSpec",
    "Scenario",
    "ScenarioError",
    "assign_roles",
    "load_devices",
    "load_scenario",
    "parse_duration",
    "parse_shard",
    "resolve_scenario",
    "scenario_from_dict",
    "scenario_names",
    "split",
    "unassigned_attacks",
]

#: Every attack and fault kind a scenario can mix in (see ``device_sim.attacks``).
ATTACK_KINDS = (
    "wrong_psk",
    "expired_token_reuse",
    "replayed_proof",
    "tampered_proof",
    "scope_violation",
    "oversized_payload",
    "malformed_cbor",
    "handshake_flood",
    "abrupt_disconnect",
    "token_theft",
    "request_flood",
    "lockout_abuse",
    "half_open_flood",
)
POP_KINDS = ("symmetric", "es256", "eddsa")
#: ``[target] auth``: ``ace`` (token, upload, Proof option) or ``none`` (plain
#: CoAP over DTLS, for servers without ACE endpoints).
AUTH_KINDS = ("ace", "none")
#: Attack kinds that need no token, so they also run with ``auth = "none"``.
NO_AUTH_ATTACKS = ("wrong_psk", "handshake_flood", "lockout_abuse", "half_open_flood")
#: Device starts per second when the scenario sets no ramp_up: a fleet
#: that boots at one instant behind one NAT would otherwise meet the gateway's
#: per-address share of half-open handshakes, which is not what a default
#: run is meant to measure.
DEFAULT_START_RATE = 200.0
#: The scenario library shipped with the package (``--scenario NAME``).
LIBRARY = Path(__file__).parent / "scenarios"


class ScenarioError(Exception):
    """A scenario file, device list or command-line value that cannot be used."""


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|d)?\s*")


def parse_duration(value: Any, what: str) -> float:
    """Seconds from a number or a string such as ``"500ms"``, ``"10s"``,
    ``"2m"``, ``"1h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ScenarioError(f"{what}: expected a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if not m:
            raise ScenarioError(f"{what}: {value!r} is not a duration (e.g. 10s, 500ms, 2m)")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ScenarioError(f"{what}: expected a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ScenarioError(f"{what}: must be a non-negative duration")
    return seconds


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One entry of the request mix: a protected request a device sends."""

    method: int = Method.GET
    path: str = "/whoami"
    weight: float = 1.0
    payload_size: int = 0
    content_format: int | None = None
    query: tuple[str, ...] = ()
    #: a JSON/CBOR body filled per request (``device_sim.templates``)
    body: BodyTemplate | None = None

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(s for s in self.path.split("/") if s)

    @property
    def route(self) -> str:
        """``METHOD /path``: the key of the per-route statistics."""
        return f"{Method(self.method).name} {self.path}"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One row of ``devices.csv``. ``index`` is the row number (0-based)."""

    index: int
    client_id: str
    psk: bytes = field(repr=False)
    scope: str | None = None


@dataclass(frozen=True)
class Scenario:
    """Everything one run needs besides the device list (defaults: one
    request per 10 s per device, symmetric PoP, RFC 7252 timers)."""

    name: str = "default"
    description: str = ""
    devices: int | None = None
    #: None: :meth:`ramp_up_for` chooses (at most DEFAULT_START_RATE starts/s)
    ramp_up: float | None = None
    duration: float = 60.0
    seed: int = 1
    # [target]
    host: str = "127.0.0.1"
    port: int = 5684
    token_path: str = "/token"
    authz_info_path: str = "/authz-info"
    trl_path: str = "/revoke/trl"
    auth: str = "ace"
    audience: str | None = None
    source_addresses: tuple[str, ...] = ()
    # [device]
    pop: str = "symmetric"
    rate: float | None = 0.1
    think_time: float | None = None
    handshake_timeout: float = 10.0
    response_timeout: float = 30.0
    reconnect_backoff: tuple[float, float] = (0.5, 10.0)
    #: follow the device's part of the Token Revocation List (RFC 9770)
    observe_trl: bool = False
    # [coap]
    transmission: TransmissionParameters = field(default_factory=TransmissionParameters)
    # [token]
    renew_before: float = 60.0
    min_lifetime: float | None = None
    max_lifetime: float | None = None
    # [[stages]]: (duration, requests per second per device), one after the other
    stages: tuple[tuple[float, float], ...] = ()
    # [thresholds] (k6-style; the command line overrides them)
    served_ratio: float = 0.99
    error_rate: float = 0.01
    p99_ms: float | None = None
    strict_attacks: bool = False
    # [report]
    report_interval: float | None = None
    # [[requests]]
    requests: tuple[RequestSpec, ...] = (RequestSpec(),)
    # [attacks] percent of devices per kind, [attacks.options]
    attacks: Mapping[str, float] = field(default_factory=dict)
    attack_interval: float | None = None
    oversized_bytes: int = 4096
    oversized_path: str | None = None
    expiry_leeway: float = 30.0
    scope_violation_path: str = "/acegw-sim/forbidden"
    abrupt_pause: float = 1.0
    flood_requests: int = 100
    lockout_attempts: int = 12
    lockout_victims: int = 2
    half_open_rate: float = 200.0

    def with_overrides(self, **changes: Any) -> Scenario:
        """A copy with ``changes`` (None values ignored), validated again."""
        s = replace(self, **{k: v for k, v in changes.items() if v is not None})
        _validate(s)
        return s

    def summary(self) -> dict[str, Any]:
        """JSON-ready description for reports (no secrets: none are here),
        with a ``fingerprint`` of everything but the target and thresholds
        (``merge`` compares it)."""
        out = self._summary()
        body = {k: v for k, v in out.items() if k not in ("target", "thresholds")}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        out["fingerprint"] = digest[:16]
        return out

    def thresholds(self) -> dict[str, Any]:
        """The verdict's limits (``[thresholds]``)."""
        return Thresholds(
            self.served_ratio, self.error_rate, self.p99_ms, self.strict_attacks
        ).to_dict()

    def _summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "devices": self.devices,
            "ramp_up": self.ramp_up,
            "duration": self.duration,
            "seed": self.seed,
            "target": f"{self.host}:{self.port}",
            "token_path": self.token_path,
            "authz_info_path": self.authz_info_path,
            "trl_path": self.trl_path,
            "observe_trl": self.observe_trl,
            "auth": self.auth,
            "pop": self.pop,
            "rate": self.rate,
            "think_time": self.think_time,
            "requests": [
                {
                    "method": Method(r.method).name,
                    "path": r.path,
                    "weight": r.weight,
                    "payload_size": r.payload_size,
                    "content_format": r.content_format,
                    "body": None if r.body is None else {r.body.format: r.body.source},
                }
                for r in self.requests
            ],
            "stages": [list(st) for st in self.stages],
            "interval": self.report_interval,
            "attacks": dict(self.attacks),
            "attack_options": {
                "interval": self.attack_interval,
                "oversized_bytes": self.oversized_bytes,
                "oversized_path": self.oversized_path,
                "expiry_leeway": self.expiry_leeway,
                "scope_violation_path": self.scope_violation_path,
                "abrupt_pause": self.abrupt_pause,
                "flood_requests": self.flood_requests,
                "lockout_attempts": self.lockout_attempts,
                "lockout_victims": self.lockout_victims,
                "half_open_rate": self.half_open_rate,
            },
            "thresholds": self.thresholds(),
        }

    @property
    def interval(self) -> float:
        """Mean seconds between two requests of one device."""
        if self.think_time is not None:
            return self.think_time
        assert self.rate is not None
        return 1.0 / self.rate

    def ramp_up_for(self, devices: int) -> float:
        """Seconds over which ``devices`` start: ``ramp_up``, or by default
        at most :data:`DEFAULT_START_RATE` device starts per second and at
        most a quarter of the run."""
        if self.ramp_up is not None:
            return self.ramp_up
        return min(self.duration / 4, devices / DEFAULT_START_RATE)

    def rate_at(self, elapsed: float) -> tuple[float, float]:
        """The request rate per device ``elapsed`` seconds into the run and
        until when (seconds into the run) it holds: the ``[[stages]]`` one
        after the other, then ``rate``."""
        end = 0.0
        for duration, rate in self.stages:
            end += duration
            if elapsed < end:
                return rate, end
        return 1.0 / self.interval, math.inf

    @property
    def timeline_interval(self) -> float:
        """Seconds per row of the timeline: ``[report] interval``, else 1 s
        for runs up to 10 minutes and about 600 rows for longer ones."""
        if self.report_interval is not None:
            return self.report_interval
        return float(max(1, math.ceil(self.duration / 600)))


# --- TOML --------------------------------------------------------------------------

_TOP = {"name", "description", "devices", "ramp_up", "duration", "seed"}
_SECTIONS: dict[str, set[str]] = {
    "target": {
        "host",
        "port",
        "token_path",
        "authz_info_path",
        "trl_path",
        "auth",
        "audience",
        "source_addresses",
    },
    "device": {
        "pop",
        "rate",
        "think_time",
        "handshake_timeout",
        "response_timeout",
        "reconnect_backoff",
        "observe_trl",
    },
    "coap": {"ack_timeout", "ack_random_factor", "max_retransmit"},
    "token": {"renew_before", "min_lifetime", "max_lifetime"},
    "thresholds": {"served_devices", "error_rate", "p99_ms", "strict_attacks"},
    "report": {"interval"},
}
_REQUEST_KEYS = {
    "method",
    "path",
    "weight",
    "payload_size",
    "content_format",
    "query",
    "body",
    "format",
}
_ATTACK_OPTIONS = {
    "flood_requests",
    "lockout_attempts",
    "lockout_victims",
    "half_open_rate",
    "interval",
    "oversized_bytes",
    "oversized_path",
    "scope_violation_path",
    "abrupt_pause",
    "expiry_leeway",
}


def _check_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ScenarioError(f"[{name}] must be a table")
    return value


def _number(value: Any, what: str, *, low: float = 0.0, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{what}: expected a number")
    if integer and not isinstance(value, int):
        raise ScenarioError(f"{what}: expected an integer")
    if not math.isfinite(value) or value < low:
        raise ScenarioError(f"{what}: must be >= {low}")
    return value


def _path(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ScenarioError(f"{what}: expected an absolute path such as /token")
    return value


def _method(value: Any, what: str) -> int:
    if isinstance(value, str) and value.upper() in Method.__members__:
        return int(Method[value.upper()])
    raise ScenarioError(f"{what}: unknown method {value!r}")


def scenario_from_dict(data: Mapping[str, Any]) -> Scenario:
    """Build a :class:`Scenario` from parsed TOML (see ``docs/simulator.md``)."""
    _check_keys(data, _TOP | set(_SECTIONS) | {"requests", "attacks", "stages"}, "scenario")
    kw: dict[str, Any] = {}
    if "name" in data:
        kw["name"] = str(data["name"])
    if "description" in data:
        kw["description"] = " ".join(str(data["description"]).split())
    if "devices" in data:
        kw["devices"] = _number(data["devices"], "devices", low=1, integer=True)
    if "ramp_up" in data:
        kw["ramp_up"] = parse_duration(data["ramp_up"], "ramp_up")
    if "duration" in data:
        kw["duration"] = parse_duration(data["duration"], "duration")
    if "seed" in data:
        kw["seed"] = _number(data["seed"], "seed", integer=True)

    for section, keys in _SECTIONS.items():
        table = _table(data, section)
        _check_keys(table, keys, f"[{section}]")
        for key, value in table.items():
            what = f"{section}.{key}"
            if key in ("host", "audience", "pop", "auth"):
                if not isinstance(value, str):
                    raise ScenarioError(f"{what}: expected a string")
                kw[key] = value
            elif key == "port":
                kw[key] = _number(value, what, low=1, integer=True)
            elif key in ("token_path", "authz_info_path", "trl_path"):
                kw[key] = _path(value, what)
            elif key == "source_addresses":
                if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                    raise ScenarioError(f"{what}: expected a list of addresses")
                kw[key] = tuple(value)
            elif key == "observe_trl":
                if not isinstance(value, bool):
                    raise ScenarioError(f"{what}: expected true or false")
                kw[key] = value
            elif key == "rate":
                kw[key] = _number(value, what)
            elif key == "reconnect_backoff":
                if not isinstance(value, list) or len(value) != 2:
                    raise ScenarioError(f"{what}: expected [min, max]")
                kw[key] = (parse_duration(value[0], what), parse_duration(value[1], what))
            elif section == "coap":
                kw.setdefault("_coap", {})[key] = _number(
                    value, what, integer=key == "max_retransmit"
                )
            elif section == "thresholds":
                if key == "strict_attacks":
                    if not isinstance(value, bool):
                        raise ScenarioError(f"{what}: expected true or false")
                    kw[key] = value
                elif key == "p99_ms":
                    kw[key] = float(_number(value, what))
                else:
                    ratio = float(_number(value, what))
                    if ratio > 1:
                        raise ScenarioError(f"{what}: a share between 0 and 1")
                    kw["served_ratio" if key == "served_devices" else key] = ratio
            elif section == "report":
                kw["report_interval"] = parse_duration(value, what)
            else:
                kw[key] = parse_duration(value, what)
    if "think_time" in kw and "rate" not in kw:
        kw["rate"] = None
    if "stages" in data:
        kw["stages"] = _stages(data["stages"])
    coap_kw = kw.pop("_coap", None)
    if coap_kw:
        kw["transmission"] = TransmissionParameters(**coap_kw)

    if "requests" in data:
        mix = []
        for where, item in _array_of_tables(data["requests"], "requests", _REQUEST_KEYS):
            query = item.get("query", [])
            if not isinstance(query, list) or not all(isinstance(q, str) for q in query):
                raise ScenarioError(f"{where}.query: expected a list of strings")
            cf = item.get("content_format")
            body = None
            if "body" in item:
                if "payload_size" in item:
                    raise ScenarioError(f"{where}: give body or payload_size, not both")
                fmt = item.get("format", "json")
                try:
                    body = compile_body(item["body"], fmt, f"{where}.body")
                except TemplateError as exc:
                    raise ScenarioError(str(exc)) from None
                if cf is None:
                    cf = body.content_format
            elif "format" in item:
                raise ScenarioError(f"{where}.format: only with a body template")
            mix.append(
                RequestSpec(
                    method=_method(item.get("method", "GET"), f"{where}.method"),
                    path=_path(item.get("path", "/whoami"), f"{where}.path"),
                    weight=_number(item.get("weight", 1.0), f"{where}.weight"),
                    payload_size=_number(
                        item.get("payload_size", 0), f"{where}.payload_size", integer=True
                    ),
                    content_format=None
                    if cf is None
                    else _number(cf, f"{where}.content_format", integer=True),
                    query=tuple(query),
                    body=body,
                )
            )
        kw["requests"] = tuple(mix)

    attacks = dict(_table(data, "attacks"))
    options = attacks.pop("options", {})
    if not isinstance(options, dict):
        raise ScenarioError("[attacks.options] must be a table")
    _check_keys(attacks, ATTACK_KINDS, "[attacks]")
    kw["attacks"] = {k: float(_number(v, f"attacks.{k}")) for k, v in attacks.items()}
    _check_keys(options, _ATTACK_OPTIONS, "[attacks.options]")
    for key, value in options.items():
        what = f"attacks.options.{key}"
        if key == "interval":
            kw["attack_interval"] = parse_duration(value, what)
        elif key in ("abrupt_pause", "expiry_leeway"):
            kw[key] = parse_duration(value, what)
        elif key in ("oversized_bytes", "flood_requests", "lockout_attempts", "lockout_victims"):
            kw[key] = _number(value, what, low=1, integer=True)
        elif key == "half_open_rate":
            kw[key] = float(_number(value, what, low=0.1))
        else:
            kw[key] = _path(value, what)
    s = Scenario(**kw)
    _validate(s)
    return s


def _array_of_tables(items: Any, name: str, keys: set[str]) -> list[tuple[str, Mapping[str, Any]]]:
    """``[[name]]`` entries with where each is (``name[i]``), keys checked."""
    if not isinstance(items, list) or not items:
        raise ScenarioError(f"[[{name}]] must be a non-empty array of tables")
    out: list[tuple[str, Mapping[str, Any]]] = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise ScenarioError(f"{where}: expected a table")
        _check_keys(item, keys, where)
        out.append((where, item))
    return out


def _stages(items: Any) -> tuple[tuple[float, float], ...]:
    out = []
    for where, item in _array_of_tables(items, "stages", {"duration", "rate"}):
        if "duration" not in item or "rate" not in item:
            raise ScenarioError(f"{where}: needs duration and rate")
        duration = parse_duration(item["duration"], f"{where}.duration")
        rate = float(_number(item["rate"], f"{where}.rate"))
        if duration <= 0 or rate <= 0:
            raise ScenarioError(f"{where}: duration and rate must be > 0")
        out.append((duration, rate))
    return tuple(out)


def _validate(s: Scenario) -> None:
    if s.pop not in POP_KINDS:
        raise ScenarioError(f"device.pop: one of {', '.join(POP_KINDS)}")
    if s.auth not in AUTH_KINDS:
        raise ScenarioError(f"target.auth: one of {', '.join(AUTH_KINDS)}")
    if s.auth == "none":
        needs_token = sorted(k for k, v in s.attacks.items() if v > 0 and k not in NO_AUTH_ATTACKS)
        if needs_token:
            raise ScenarioError(
                f'attacks {", ".join(needs_token)} need a token: not with target.auth = "none"'
            )
    if s.auth == "none" and s.observe_trl:
        raise ScenarioError('device.observe_trl follows tokens: not with target.auth = "none"')
    if (s.rate is None) == (s.think_time is None):
        raise ScenarioError("device: give exactly one of rate and think_time")
    if s.rate is not None and s.rate <= 0:
        raise ScenarioError("device.rate must be > 0")
    if s.think_time is not None and s.think_time <= 0:
        raise ScenarioError("device.think_time must be > 0")
    if s.duration <= 0:
        raise ScenarioError("duration must be > 0")
    if s.handshake_timeout <= 0 or s.response_timeout <= 0:
        raise ScenarioError("device timeouts must be > 0")
    lo, hi = s.reconnect_backoff
    if not 0 < lo <= hi:
        raise ScenarioError("device.reconnect_backoff: 0 < min <= max")
    t = s.transmission
    if t.ack_timeout <= 0 or t.ack_random_factor < 1 or t.max_retransmit < 0:
        raise ScenarioError("coap: ack_timeout > 0, ack_random_factor >= 1, max_retransmit >= 0")
    if not s.requests or sum(r.weight for r in s.requests) <= 0:
        raise ScenarioError("requests: at least one entry with a positive weight")
    total = sum(s.attacks.values())
    if total > 100:
        raise ScenarioError(f"attacks: percentages add up to {total} > 100")
    if not 0 < s.port < 65536:
        raise ScenarioError("target.port out of range")
    if s.stages and s.think_time is not None:
        raise ScenarioError("stages set request rates: not with device.think_time")
    staged = sum(d for d, _ in s.stages)
    if staged > s.duration:
        # a stage past the end never runs: a spike cut off would still PASS
        raise ScenarioError(
            f"stages add up to {staged:g} s but the run lasts {s.duration:g} s: "
            "lengthen the duration or shorten the stages"
        )
    if s.report_interval is not None and s.report_interval < 1:
        raise ScenarioError("report.interval must be at least 1 s")
    if not (0 <= s.served_ratio <= 1 and 0 <= s.error_rate <= 1):
        raise ScenarioError("thresholds: served_devices and error_rate are shares in [0, 1]")


def scenario_names() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return sorted(p.stem for p in LIBRARY.glob("*.toml"))


def resolve_scenario(name: str) -> Path:
    """A scenario file: ``name`` as a path if it exists, else the library's
    ``NAME.toml``."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = LIBRARY / f"{name}.toml"
    if "/" not in name and shipped.is_file():
        return shipped
    raise ScenarioError(
        f"--scenario {name!r}: no such file and not in the library ({', '.join(scenario_names())})"
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario TOML file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return scenario_from_dict(data)


# --- devices.csv -------------------------------------------------------------------


def load_devices(path: str | Path, *, limit: int | None = None) -> list[DeviceSpec]:
    """Read ``id,psk_hex,scope`` rows (``acegw clients bulk-add`` output).
    The PSK never appears in an error message."""
    try:
        f = open(path, encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    out: list[DeviceSpec] = []
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["id", "psk_hex"]:
            raise ScenarioError(f"{path}: expected a header id,psk_hex,scope")
        for row in reader:
            if not row or not row[0].strip():
                continue
            line = reader.line_num
            if len(row) < 2:
                raise ScenarioError(f"{path}:{line}: expected id,psk_hex[,scope]")
            cid = row[0].strip()
            try:
                psk = bytes.fromhex(row[1].strip())
            except ValueError:
                raise ScenarioError(f"{path}:{line}: psk_hex is not hex") from None
            if not 0 < len(psk) <= MAX_LONG_PSK_LENGTH:
                raise ScenarioError(
                    f"{path}:{line}: PSK of {cid} is {len(psk)} bytes; "
                    f"DTLS-PSK takes 1..{MAX_LONG_PSK_LENGTH} (RFC 4279 §5.3)"
                )
            if not 0 < len(cid.encode()) <= MAX_LONG_IDENTITY_LENGTH or "\x00" in cid:
                raise ScenarioError(
                    f"{path}:{line}: client id must be 1..{MAX_LONG_IDENTITY_LENGTH} bytes"
                )
            scope = row[2].strip() if len(row) > 2 and row[2].strip() else None
            out.append(DeviceSpec(len(out), cid, psk, scope))
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise ScenarioError(f"{path}: no devices")
    return out


# --- roles, shards, workers ------------------------------------------------------------


def assign_roles(count: int, attacks: Mapping[str, float], seed: int) -> list[str | None]:
    """The role of each of ``count`` devices: None (a normal device) or an
    attack kind. Each kind gets ``round(percent * count / 100)`` devices
    (at least one when its percentage is positive), picked by a seeded
    shuffle of the whole list, so every shard computes the same roles."""
    roles: list[str | None] = [None] * count
    order = list(range(count))
    random.Random(seed).shuffle(order)
    pos = 0
    for kind in ATTACK_KINDS:
        pct = attacks.get(kind, 0.0)
        if pct <= 0:
            continue
        n = max(1, round(pct * count / 100.0))
        for i in order[pos : pos + n]:
            roles[i] = kind
        pos += n
        if pos >= count:
            break
    return roles


def unassigned_attacks(roles: Sequence[str | None], attacks: Mapping[str, float]) -> dict[str, str]:
    """The configured attack kinds :func:`assign_roles` gave no device (a
    fleet smaller than the kinds), each with why: they never run, so the
    verdict must report them not exercised."""
    kinds = [k for k in ATTACK_KINDS if attacks.get(k, 0.0) > 0]
    given = set(roles)
    why = f"no device assigned ({len(roles)} devices for {len(kinds)} attack kinds)"
    return {k: why for k in kinds if k not in given}


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) as ``(K, N)``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ScenarioError(f"--shard {text!r}: expected K/N, e.g. 1/4")
    k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise ScenarioError(f"--shard {text!r}: need 1 <= K <= N")
    return k, n


def split(items: Sequence[Any], part: int, parts: int) -> list[Any]:
    """The ``part``-th (1-based) of ``parts`` contiguous, near-equal slices."""
    n = len(items)
    return list(items[(part - 1) * n // parts : part * n // parts])
