"""The generated regions of the firmware notes: Markdown rendered from the
vectors (``vectors/*.json``) and the measured sizes (``vectors/wire.json``).

A region is ``<!-- generated: NAME -->`` ... ``<!-- /generated -->`` in a
notes file; :func:`fill` re-renders every region, :func:`render_block` says
which names exist. Called by :mod:`firmware_notes.generate_vectors`, which
writes the results; nothing here reads or writes files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiocoap

from firmware_notes import recipe

PROOF_OPTION = recipe.PROOF_OPTION
_ALG_NAMES = {"HMAC_256_64": "HMAC 256/64", "ES256": "ES256", "EDDSA": "EdDSA"}


def _hex_lines(h: str, width: int = 64) -> str:
    return "\n".join(h[i : i + width] for i in range(0, len(h), width)) or "(empty)"


def _cbor_block(node: dict[str, Any], caption: str | None = None) -> str:
    parts = []
    if caption:
        parts.append(caption)
    parts.append("```cbor-diag\n" + node["diag"] + "\n```")
    parts.append(f"```hex\n{_hex_lines(node['hex'])}\n```")
    parts.append(f"{node['length']} bytes.")
    return "\n\n".join(parts)


def _coap_line(msg: dict[str, Any]) -> str:
    return (
        f"CoAP {msg['type']} {msg['code']}, Message ID 0x{msg['mid']:04x}, "
        f"token {msg['token_hex']}: {msg['length']} bytes"
    )


def _coap_block(msg: dict[str, Any]) -> str:
    return _coap_line(msg) + f"\n\n```hex\n{_hex_lines(msg['hex'])}\n```"


def _proof_steps(v: dict[str, Any]) -> str:
    s = v["steps"]
    req = v["request"]
    lines = [
        f"Request: {req['method']} /{'/'.join(req['path'])}"
        + (("?" + "&".join(req["query"])) if req["query"] else "")
        + (f", Content-Format {req['content_format']}" if req["content_format"] is not None else "")
        + (f", payload `{req['payload_hex']}`" if req["payload_hex"] else ", no payload")
        + f"; piv {v['piv']}; Echo "
        + (f"`{v['echo_hex']}`" if v["echo_hex"] else "none")
        + f"; key `{v['key']}` (kid `{v['kid_hex']}`, {_ALG_NAMES[v['alg']]}).",
        "",
    ]
    n = 1
    if s["payload_sha256_hex"]:
        lines.append(
            f"{n}. SHA-256(payload) = `{s['payload_sha256_hex']}`; keep the first 16 bytes."
        )
        n += 1
    lines += [
        f"{n}. Detached content ({s['detached_content']['length']} bytes):",
        "",
        "   ```cbor-diag\n"
        + _indent(s["detached_content"]["diag"], 3)
        + "\n   ```\n\n   ```hex\n"
        + _indent(_hex_lines(s["detached_content"]["hex"]), 3)
        + "\n   ```",
    ]
    n += 1
    if "mac_structure" in s:
        ms = s["mac_structure"]
        lines += [
            f"{n}. MAC_structure = HMAC input ({ms['length']} bytes):",
            "",
            "   ```hex\n" + _indent(_hex_lines(ms["hex"]), 3) + "\n   ```",
            f"{n + 1}. HMAC-SHA-256 under the PoP key = `{s['hmac_sha256_hex']}`; "
            f"the tag is its first 8 bytes `{s['tag_hex']}`.",
        ]
    else:
        ss = s["sig_structure"]
        lines += [
            f"{n}. Sig_structure = signature input ({ss['length']} bytes):",
            "",
            "   ```hex\n" + _indent(_hex_lines(ss["hex"]), 3) + "\n   ```",
        ]
        if "sig_structure_sha256_hex" in s:
            lines.append(
                f"{n + 1}. SHA-256(Sig_structure) = `{s['sig_structure_sha256_hex']}` "
                f"(what an ECDSA engine or secure element signs); signature r || s = "
                f"`{s['signature_hex']}` ({s['signature']})."
            )
        else:
            lines.append(f"{n + 1}. Ed25519 signature = `{s['signature_hex']}`.")
    ov = v["option_value"]
    lines += [
        f"{n + 2}. Option value ({ov['length']} bytes):",
        "",
        "   ```cbor-diag\n"
        + _indent(ov["diag"], 3)
        + "\n   ```\n\n   ```hex\n"
        + _indent(_hex_lines(ov["hex"]), 3)
        + "\n   ```",
        f"{n + 3}. Whole request: {_coap_line(v['coap_request'])}",
        "",
        "   ```hex\n" + _indent(_hex_lines(v["coap_request"]["hex"]), 3) + "\n   ```",
    ]
    return "\n".join(lines)


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _proof_table(vectors: dict[str, Any]) -> str:
    rows = [
        "| vector | request | piv | Echo | alg | option bytes | CoAP bytes |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in vectors["proofs.json"]["vectors"]:
        r = v["request"]
        target = "/" + "/".join(r["path"]) + ("?" + "&".join(r["query"]) if r["query"] else "")
        rows.append(
            f"| `{v['name']}` | {r['method']} {target} | {v['piv']} | "
            f"{'yes' if v['echo_hex'] else '-'} | {_ALG_NAMES[v['alg']]} | "
            f"{v['option_value']['length']} | {v['coap_request']['length']} |"
        )
    return "\n".join(rows)


_OPTION_NAMES = {11: "Uri-Path", 12: "Content-Format", 15: "Uri-Query", 252: "Echo"}


def _option_before_proof(v: dict[str, Any]) -> int:
    msg = aiocoap.Message.decode(bytes.fromhex(v["coap_request"]["hex"]))
    return max(int(o.number) for o in msg.opt.option_list() if int(o.number) < PROOF_OPTION)


def _proof_header(v: dict[str, Any]) -> bytes:
    """The Proof option's header in the vector's message (RFC 7252 §3.1)."""
    header = recipe.coap_option_header(
        PROOF_OPTION - _option_before_proof(v), v["option_value"]["length"]
    )
    assert header.hex() + v["option_value"]["hex"] in v["coap_request"]["hex"]
    return header


def _option_headers(vectors: dict[str, Any]) -> str:
    """Where the Proof option's header comes from in each vector's message."""
    rows = [
        "| vector | option before it | delta | value length | option header bytes |",
        "|---|---|---|---|---|",
    ]
    for v in vectors["proofs.json"]["vectors"]:
        before = _option_before_proof(v)
        rows.append(
            f"| `{v['name']}` | {_OPTION_NAMES.get(before, before)} ({before}) "
            f"| {PROOF_OPTION - before} | {v['option_value']['length']} "
            f"| `{_proof_header(v).hex(' ')}` |"
        )
    return "\n".join(rows)


def _sha256_blocks(n: int) -> int:
    """SHA-256 compression calls for an n-byte message (FIPS 180-4 padding:
    the message, 0x80, zeros, an 8-byte length, in 64-byte blocks)."""
    return (n + 9 + 63) // 64


def _cpu_table(vectors: dict[str, Any]) -> str:
    rows = [
        "| vector | payload | SHA-256 blocks for the payload digest | MAC / signature input "
        "| SHA-256 blocks for HMAC (with cached key pads) | other |",
        "|---|---|---|---|---|---|",
    ]
    for v in vectors["proofs.json"]["vectors"]:
        payload = len(v["request"]["payload_hex"]) // 2
        digest = _sha256_blocks(payload) if payload else 0
        s = v["steps"]
        if "mac_structure" in s:
            n = s["mac_structure"]["length"]
            inner = _sha256_blocks(64 + n)
            hmac_blocks = f"{inner + 2} ({inner})"
            other = "-"
            shown_input = f"MAC_structure {n} bytes"
        else:
            n = s["sig_structure"]["length"]
            hmac_blocks = "-"
            if v["alg"] == "ES256":
                blocks = _sha256_blocks(n)
                other = (
                    f"SHA-256 of Sig_structure: {blocks} block{'s' if blocks > 1 else ''}; "
                    "1 ECDSA P-256 sign"
                )
            else:
                other = "1 Ed25519 sign (SHA-512 inside)"
            shown_input = f"Sig_structure {n} bytes"
        rows.append(
            f"| `{v['name']}` | {payload} | {digest or '-'} | {shown_input} | {hmac_blocks} "
            f"| {other} |"
        )
    return "\n".join(rows)


def _proof_overhead(vectors: dict[str, Any]) -> str:
    rows = [
        "| vector | CoAP request without the Proof option | with it | added bytes |",
        "|---|---|---|---|",
    ]
    for v in vectors["proofs.json"]["vectors"]:
        if v["name"] == "hmac_piv_zero":
            continue
        added = len(_proof_header(v)) + v["option_value"]["length"]
        full = v["coap_request"]["length"]
        rows.append(f"| `{v['name']}` | {full - added} | {full} | {added} |")
    return "\n".join(rows)


def _totals(vectors: dict[str, Any], wire: dict[str, Any] | None) -> str:
    if wire is None:
        return "(not measured yet: run `python -m firmware_notes.measure_wire`)"
    over = int(wire["dtls_record_overhead"])
    sym = vectors["token_symmetric.json"]
    proofs = {v["name"]: v for v in vectors["proofs.json"]["vectors"]}
    echo = vectors["responses.json"]["echo_challenge"]["coap_response"]
    hs = wire["tinydtls"]["handshake"]["totals"]
    up = [
        ("handshake (tinydtls)", hs["device_to_gateway"], hs["datagrams_device_to_gateway"]),
        ("POST /token", sym["token_request"]["coap_request"]["length"] + over, 1),
        ("POST /authz-info", sym["authz_info"]["coap_request"]["length"] + over, 1),
        ("first request (piv 1)", proofs["hmac_get_whoami_first"]["coap_request"]["length"]
         + over, 1),
        ("repeat with Echo (piv 2)", proofs["hmac_get_whoami_echo"]["coap_request"]["length"]
         + over, 1),
    ]  # fmt: skip
    down = [
        ("handshake (tinydtls)", hs["gateway_to_device"], hs["datagrams_gateway_to_device"]),
        ("2.01 token response", sym["token_response"]["coap_response"]["length"] + over, 1),
        ("2.01 authz-info", sym["authz_info"]["coap_response"]["length"] + over, 1),
        ("4.01 + Echo", echo["length"] + over, 1),
    ]
    rows = ["| direction | step | bytes (UDP payload) | datagrams |", "|---|---|---|---|"]
    for name, items in (("device -> gateway", up), ("gateway -> device", down)):
        for step, size, count in items:
            rows.append(f"| {name} | {step} | {size} | {count} |")
        total = sum(size for _, size, _ in items)
        dgs = sum(count for _, _, count in items)
        rows.append(f"| {name} | **total** | **{total}** | **{dgs}** |")
    return "\n".join(rows)


def _overhead(wire: dict[str, Any] | None) -> int | None:
    return None if wire is None else int(wire["dtls_record_overhead"])


def _budget_messages(vectors: dict[str, Any], wire: dict[str, Any] | None) -> str:
    sym = vectors["token_symmetric.json"]
    asym = vectors["token_asymmetric.json"]
    resp = vectors["responses.json"]
    proofs = {v["name"]: v for v in vectors["proofs.json"]["vectors"]}
    over = _overhead(wire)
    rows = [
        ("POST /token (symmetric PoP)", sym["token_request"]["coap_request"], "token", "sent"),
        ("2.01 token response (Encrypt0 token + PoP key)", sym["token_response"]["coap_response"],
         "token", "received"),
        ("POST /token (ES256 public key in req_cnf)", asym["token_request"]["coap_request"],
         None, None),
        ("2.01 token response (Sign1 token)", asym["token_response"]["coap_response"], None, None),
        ("POST /authz-info (Encrypt0 token)", sym["authz_info"]["coap_request"], "authz-info",
         "sent"),
        ("2.01 (authz-info)", sym["authz_info"]["coap_response"], "authz-info", "received"),
        ("GET /whoami + Proof (HMAC, piv 1)", proofs["hmac_get_whoami_first"]["coap_request"],
         "proof-first", "sent_first"),
        ("4.01 + Echo", resp["echo_challenge"]["coap_response"], "proof-first",
         "received_first"),
        ("GET /whoami + Echo + Proof (HMAC, piv 2)", proofs["hmac_get_whoami_echo"]["coap_request"],
         "proof-echo", "sent"),
        ("GET /whoami + Proof (HMAC, piv 3, window open)", None, "proof-steady", "sent"),
        ("POST /readings JSON + Proof (HMAC)", proofs["hmac_post_json"]["coap_request"], None,
         None),
        ("GET /temp?unit=C&window=60 + Proof (HMAC)", proofs["hmac_get_query"]["coap_request"],
         None, None),
        ("GET /whoami + Proof (ES256)", proofs["es256_get_whoami_first"]["coap_request"], None,
         None),
        ("POST /readings JSON + Proof (ES256)", proofs["es256_post_json"]["coap_request"], None,
         None),
        ("4.01 + Creation Hints", resp["creation_hints"]["coap_response"], None, None),
    ]  # fmt: skip
    out = [
        "| message | CoAP bytes (vectors) | DTLS record = UDP payload | measured (libcoap walk) |",
        "|---|---|---|---|",
    ]
    for label, msg, step, which in rows:
        if msg is None:
            # the same shape as the piv 1 request (a 1-byte piv either way)
            msg = proofs["hmac_get_whoami_first"]["coap_request"]
        record = "?" if over is None else str(msg["length"] + over)
        measured = "-" if step is None or which is None else _measured_one(wire, step, which)
        out.append(f"| {label} | {msg['length']} | {record} | {measured} |")
    return "\n".join(out)


def _measured_one(wire: dict[str, Any] | None, step: str, which: str) -> str:
    if wire is None:
        return "not measured"
    for ex in wire["libcoap"]["exchanges"]:
        if ex["step"] != step:
            continue
        if which in ("sent", "received"):
            sizes = [d["size"] for d in ex[which]]
        elif which == "sent_first":
            sizes = [ex["sent"][0]["size"]]
        else:  # received_first
            sizes = [ex["received"][0]["size"]]
        return " + ".join(str(s) for s in sizes)
    return "-"


def _handshake_table(wire: dict[str, Any] | None, client: str) -> str:
    if wire is None:
        return "(not measured yet: run `python -m firmware_notes.measure_wire`)"
    hs = wire[client]["handshake"]
    rows = ["| flight | direction | datagrams (bytes: records) |", "|---|---|---|"]
    for f in hs["flights"]:
        dgs = "; ".join(f"{d['size']}: {' + '.join(d['records'])}" for d in f["datagrams"])
        rows.append(f"| {f['flight']} | {f['direction']} | {dgs} |")
    t = hs["totals"]
    rows.append(
        f"| total | device -> gateway {t['device_to_gateway']} bytes in "
        f"{t['datagrams_device_to_gateway']} datagrams; gateway -> device "
        f"{t['gateway_to_device']} bytes in {t['datagrams_gateway_to_device']} datagrams | |"
    )
    return "\n".join(rows)


def _ram_table(vectors: dict[str, Any]) -> str:
    sym = vectors["token_symmetric.json"]
    asym = vectors["token_asymmetric.json"]
    inputs = vectors["inputs.json"]
    proofs = vectors["proofs.json"]["vectors"]
    longest_content = max(v["steps"]["detached_content"]["length"] for v in proofs)
    longest_option = max(v["option_value"]["length"] for v in proofs)
    rows = [
        "| what | bytes | kept | source |",
        "|---|---|---|---|",
        f"| PSK | {len(inputs['psk']['hex']) // 2} | flash, for the device's life | inputs.json |",
        f"| identity (client id) | {len(inputs['client_id'])} | flash | inputs.json |",
        f"| access token, symmetric PoP (Encrypt0) | {sym['token']['length']} | RAM while "
        "valid (flash optional, see device.md) | token_symmetric.json |",
        f"| access token, ES256 PoP (Sign1) | {asym['token']['length']} | same | "
        "token_asymmetric.json |",
        f"| PoP key k + kid (symmetric) | {len(sym['pop_key']['k_hex']) // 2} + "
        f"{len(sym['pop_key']['kid_hex']) // 2} | RAM while the token is valid | "
        "token_symmetric.json |",
        f"| ES256 private key d + kid | 32 + "
        f"{len(inputs['keys']['device_es256']['kid']) // 2} | flash / secure element | "
        "inputs.json |",
        "| piv (sequence number) | 5 (40-bit counter; a uint64_t in practice) | RAM; "
        "flash only with a reservation scheme | proofs.json |",
        "| token deadline (ticks at receipt + expires_in) | 4 | RAM | token_symmetric.json |",
        f"| Echo value, during recovery only | "
        f"{len(vectors['responses.json']['echo_challenge']['echo_hex']) // 2} | until the "
        "repeat is sent | responses.json |",
        f"| largest detached content in the vectors | {longest_content} | transient, "
        "or streamed into the MAC | proofs.json |",
        f"| largest Proof option value in the vectors | {longest_option} | transient, "
        "in the CoAP message buffer | proofs.json |",
    ]
    return "\n".join(rows)


def _token_sizes(vectors: dict[str, Any]) -> str:
    """The bound per item, then sample columns: the diagonal of the grid at
    the vectors' device kid, and the largest sample (longest id, scope and
    kid)."""
    sizes = vectors["token_symmetric.json"]["token_sizes"]
    over = sizes["overhead"]
    names = {
        "symmetric_token": "Encrypt0 token (symmetric PoP)",
        "symmetric_response": "token response, symmetric",
        "asymmetric_token": "Sign1 token (ES256 device key)",
        "asymmetric_response": "token response, asymmetric",
    }
    words = {"client_id": "id", "scope": "scope", "device_kid": "kid"}
    samples = sizes["samples"]
    base_kid = samples[0]["device_kid"]
    columns = [r for r in samples if r["device_kid"] == base_kid][::5]
    largest = max(samples, key=lambda r: (r["client_id"], r["scope"], r["device_kid"]))
    if largest not in columns:
        columns.append(largest)

    def label(r: dict[str, int]) -> str:
        kid = f", kid {r['device_kid']}" if r["device_kid"] != base_kid else ""
        return f"id {r['client_id']}, scope {r['scope']}{kid}"

    def bound(key: str) -> str:
        terms = sizes["terms"][key]
        return f"{over[key]} + " + " + ".join(
            (f"{n} × " if n > 1 else "") + words[term] for term, n in terms.items()
        )

    rows = [
        "| item | at most (bytes) | " + " | ".join(label(r) for r in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for key, name in names.items():
        rows.append(f"| {name} | {bound(key)} | " + " | ".join(str(r[key]) for r in columns) + " |")
    return "\n".join(rows)


def _message_index(vectors: dict[str, Any]) -> str:
    sym = vectors["token_symmetric.json"]
    asym = vectors["token_asymmetric.json"]
    rows = [
        "| item | bytes |",
        "|---|---|",
        f"| token request, symmetric | {sym['token_request']['length']} |",
        f"| token request, ES256 req_cnf with COSE_Key | {asym['token_request']['length']} |",
        f"| token request, ES256 req_cnf by kid | {asym['token_request_by_kid']['length']} |",
        f"| Encrypt0 token | {sym['token']['length']} |",
        f"| Sign1 token | {asym['token']['length']} |",
        f"| token response, symmetric | {sym['token_response']['length']} |",
        f"| token response, asymmetric | {asym['token_response']['length']} |",
    ]
    return "\n".join(rows)


C_DIR = Path(__file__).resolve().parent / "c"


def _c_excerpt(ref: str) -> str:
    file, _, label = ref.partition("#")
    text = (C_DIR / file).read_text()
    begin, end = f"/* notes:begin {label} */\n", f"/* notes:end {label} */"
    start = text.index(begin) + len(begin)
    return "```c\n" + text[start : text.index(end, start)].rstrip("\n") + "\n```"


def _resolve(vectors: dict[str, Any], dotted: str) -> Any:
    file, _, rest = dotted.partition(".")
    node: Any = vectors[file + ".json"]
    for part in rest.split(".") if rest else ():
        node = node[part] if not isinstance(node, list) else node[int(part)]
    return node


def render_block(name: str, vectors: dict[str, Any], wire: dict[str, Any] | None) -> str:
    """The Markdown for ``<!-- generated: NAME -->``. Names:

    * ``cbor:FILE.PATH`` - diagnostic notation and hex of a vector item;
    * ``coap:FILE.PATH`` - a CoAP message's summary line and hex;
    * ``proof:NAME`` - the step-by-step intermediates of one proof vector;
    * ``request:NAME`` / ``option:NAME`` - its CoAP message / its option value;
    * ``table:proofs``, ``table:messages``, ``table:ram``, ``table:sizes``,
      ``table:handshake-tinydtls``, ``table:handshake-libcoap``;
    * ``value:FILE.PATH`` - a scalar, inline;
    * ``c:FILE#NAME`` - the C library's code between ``/* notes:begin NAME */``
      and ``/* notes:end NAME */`` in ``c/FILE`` (compiled and tested code,
      never a hand-copied sketch).
    """
    kind, _, arg = name.partition(":")
    if kind == "c":
        return _c_excerpt(arg)
    if kind == "cbor":
        return _cbor_block(_resolve(vectors, arg))
    if kind == "coap":
        return _coap_block(_resolve(vectors, arg))
    if kind in ("proof", "request", "option"):
        v = next(p for p in vectors["proofs.json"]["vectors"] if p["name"] == arg)
        if kind == "request":
            return _coap_block(v["coap_request"])
        if kind == "option":
            return _cbor_block(v["option_value"])
        return _proof_steps(v)
    if kind == "value":
        return str(_resolve(vectors, arg))
    tables: dict[str, Callable[[], str]] = {
        "proofs": lambda: _proof_table(vectors),
        "option-headers": lambda: _option_headers(vectors),
        "cpu": lambda: _cpu_table(vectors),
        "proof-overhead": lambda: _proof_overhead(vectors),
        "totals": lambda: _totals(vectors, wire),
        "messages": lambda: _budget_messages(vectors, wire),
        "ram": lambda: _ram_table(vectors),
        "sizes": lambda: _message_index(vectors),
        "token-sizes": lambda: _token_sizes(vectors),
        "handshake-tinydtls": lambda: _handshake_table(wire, "tinydtls"),
        "handshake-libcoap": lambda: _handshake_table(wire, "libcoap"),
    }
    if kind == "table" and arg in tables:
        return tables[arg]()
    raise KeyError(f"unknown generated block {name!r}")


_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[^ ]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.DOTALL
)


def fill(text: str, vectors: dict[str, Any], wire: dict[str, Any] | None) -> str:
    """``text`` with every generated region re-rendered."""

    def sub(m: re.Match[str]) -> str:
        body = render_block(m.group("name"), vectors, wire)
        return m.group(1) + body + "\n" + m.group(4)

    return _BLOCK.sub(sub, text)
