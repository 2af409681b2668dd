"""Every number in the firmware notes that the project can compute is checked
here against the code that sets it (gateway config defaults, protocol
constants, the C library's header) or against the vectors, so that the notes
cannot drift. Each claim is found by its wording; a reworded claim fails
until its check is updated with it."""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path

import pytest

from firmware_notes import recipe
from gateway.authorization_server.token_endpoint import AuthorizationServer, ClientPolicy
from gateway.coap.ace_resources import MAX_ACE_PAYLOAD
from gateway.config import AsConfig, DtlsConfig, LimitsConfig, RsConfig
from gateway.dtls.server import TUNING
from gateway.registry.registry import GENERATED_PSK_CHARS, MAX_CLIENT_ID_LEN, MAX_PSK_LEN
from gateway.resource_server.token_intake import TokenIntake, TrustedIssuer
from tests.firmware.test_vectors import INPUTS, NOW, PROOFS, RESPONSES, SYM, h, keys
from tokens.ace import TokenRequest
from tokens.aif import Scope
from tokens.cwt import TokenVerifier
from tokens.echo import DEFAULT_FRESHNESS
from tokens.errors import Expired
from tokens.keys import Ec2Key, KeySet, key_from_cose
from tokens.proof import MAX_PIV
from tokens.replay import WINDOW_SIZE

NOTES = Path(recipe.__file__).resolve().parent
C_DIR = NOTES / "c"
HEADER = (C_DIR / "include" / "acedev.h").read_text()


def text(doc: str) -> str:
    """A notes file with its line breaks folded, so claims match across lines."""
    return re.sub(r"\s+", " ", (NOTES / doc).read_text())


def claims(doc: str, pattern: str) -> list[tuple[str, ...]]:
    found = [m if isinstance(m, tuple) else (m,) for m in re.findall(pattern, text(doc))]
    assert found, f"{doc}: no claim matching {pattern!r}"
    return found


def header_int(name: str) -> int:
    m = re.search(rf"#define {name} \(?(?:\(uint64_t\))?(0x[0-9A-Fa-f]+|\d+)u?\)?", HEADER)
    assert m, name
    return int(m.group(1), 0)


def num(s: str) -> float:
    return float(s)


# --- gateway defaults and limits ----------------------------------------------

CONFIG_CLAIMS = [
    ("device.md", r"`dtls\.idle_timeout` \((\d+) s by default\)", [DtlsConfig().idle_timeout]),
    ("flow.md", r"`dtls\.idle_timeout` \((\d+) s by default\)", [DtlsConfig().idle_timeout]),
    (
        "device.md",
        r"`dtls\.handshake_timeout` \((\d+) s by default\)",
        [DtlsConfig().handshake_timeout],
    ),
    ("device.md", r"retransmitting past (\d+) s", [DtlsConfig().handshake_timeout]),
    ("device.md", r"`rs\.leeway` \((\d+) s by default\)", [RsConfig().leeway]),
    (
        "device.md",
        r"`limits\.device_rate` (\d+) requests/s with a burst of `limits\.device_burst` (\d+)",
        [LimitsConfig().device_rate, LimitsConfig().device_burst],
    ),
    (
        "device.md",
        r"`limits\.ace_rate` (\d+)/s, burst `limits\.ace_burst` (\d+)",
        [LimitsConfig().ace_rate, LimitsConfig().ace_burst],
    ),
    (
        "device.md",
        r"(\d+) within (\d+) s ban the identity \*and\* the source address for (\d+) s",
        [
            LimitsConfig().lockout_failures,
            LimitsConfig().lockout_window,
            LimitsConfig().lockout_seconds,
        ],
    ),
    ("device.md", r"payload above (\d+) bytes", [MAX_ACE_PAYLOAD]),
    ("budgets.md", r"refuses `/authz-info` payloads above (\d+) bytes", [MAX_ACE_PAYLOAD]),
    ("budgets.md", r"so a (\d+)-byte buffer holds any token", [MAX_ACE_PAYLOAD]),
    (
        "flow.md",
        r"`rs\.max_tokens_per_client`, default (\d+)",
        [RsConfig().max_tokens_per_client],
    ),
    (
        "flow.md",
        r"Tokens live `expires_in` seconds \((\d+) by default\)",
        [AsConfig().token_lifetime],
    ),
    ("flow.md", r"client id.{0,80}At most (\d+) bytes", [MAX_CLIENT_ID_LEN]),
    ("flow.md", r"the \*\*PSK\*\*: at most (\d+) bytes", [MAX_PSK_LEN]),
    ("flow.md", r"generates (\d+) printable characters", [GENERATED_PSK_CHARS]),
    ("flow.md", r"(\d+) or more below the highest", [WINDOW_SIZE]),
    ("device.md", r"(\d+) or more below the highest", [WINDOW_SIZE]),
    # Echo freshness (tokens.echo)
    ("device.md", r"Echo values \| never \| valid (\d+) s", [DEFAULT_FRESHNESS]),
    ("device.md", r"issued less than (\d+) s ago", [DEFAULT_FRESHNESS]),
    ("device.md", r"Echo freshness is (\d+) s", [DEFAULT_FRESHNESS]),
    ("flow.md", r"the Echo you sent was older than (\d+) s", [DEFAULT_FRESHNESS]),
    ("flow.md", r"delayed past (\d+) s", [DEFAULT_FRESHNESS]),
    # RFC 7252 §4.8 transmission parameters, as the gateway has them
    (
        "device.md",
        r"`ACK_TIMEOUT` (\d+) s, `ACK_RANDOM_FACTOR` ([\d.]+), `MAX_RETRANSMIT` (\d+)",
        [TUNING.ACK_TIMEOUT, TUNING.ACK_RANDOM_FACTOR, TUNING.MAX_RETRANSMIT],
    ),
    ("device.md", r"`MAX_TRANSMIT_SPAN` \((\d+) s\)", [TUNING.MAX_TRANSMIT_SPAN]),
    ("device.md", r"`MAX_TRANSMIT_WAIT` \((\d+) s\)", [TUNING.MAX_TRANSMIT_WAIT]),
    ("device.md", r"recognises duplicates for (\d+) s", [TUNING.EXCHANGE_LIFETIME]),
    ("device.md", r"`MAX_LATENCY` of (\d+) s", [TUNING.MAX_LATENCY]),
    ("device.md", r"keeps retransmitting \((\d+) s\)", [TUNING.MAX_TRANSMIT_SPAN]),
]


@pytest.mark.parametrize(("doc", "pattern", "expected"), CONFIG_CLAIMS)
def test_numbers_in_the_notes_are_the_codes(doc: str, pattern: str, expected: list[float]) -> None:
    for found in claims(doc, pattern):
        assert [num(x) for x in found] == [float(e) for e in expected], (doc, pattern)


def test_retransmission_timing_claims_follow_from_the_parameters() -> None:
    """MAX_TRANSMIT_SPAN and MAX_TRANSMIT_WAIT as RFC 7252 §4.8.2 defines
    them; the duplicate window outlasts the sender's last retransmission."""
    span = TUNING.ACK_TIMEOUT * (2**TUNING.MAX_RETRANSMIT - 1) * TUNING.ACK_RANDOM_FACTOR
    wait = TUNING.ACK_TIMEOUT * (2 ** (TUNING.MAX_RETRANSMIT + 1) - 1) * TUNING.ACK_RANDOM_FACTOR
    assert (span, wait) == (TUNING.MAX_TRANSMIT_SPAN, TUNING.MAX_TRANSMIT_WAIT) == (45, 93)
    assert TUNING.EXCHANGE_LIFETIME > TUNING.MAX_TRANSMIT_SPAN
    (latency,) = claims("device.md", r"less than (\d+) s of latency")[0]
    # a CON retransmitted at MAX_TRANSMIT_SPAN still arrives within the window
    assert TUNING.MAX_TRANSMIT_SPAN + float(latency) <= TUNING.EXCHANGE_LIFETIME
    # gives up at MAX_TRANSMIT_WAIT, not at MAX_TRANSMIT_SPAN
    assert "gives up waiting for its ACK at `MAX_TRANSMIT_WAIT`" in text("device.md")


def test_renewal_figures() -> None:
    permille = header_int("ACE_RENEW_PERMILLE")
    (minutes,) = claims("device.md", r"\((\d+) minutes of the default hour\)")[0]
    assert AsConfig().token_lifetime == 3600
    assert int(minutes) == AsConfig().token_lifetime * permille // 1000 // 60
    for (pct,) in claims("device.md", r"Renew at about (\d+) % of `expires_in`"):
        assert int(pct) * 10 == permille
    for (pct,) in claims("flow.md", r"Renew at about (\d+) % of `expires_in`"):
        assert int(pct) * 10 == permille


def test_leeway_does_not_lengthen_a_token() -> None:
    """device.md: the gateway refuses an upload once exp has passed even
    within rs.leeway; the leeway is the verifier's clock skew allowance."""
    k = keys()
    token = h(SYM["token"]["hex"])
    exp = NOW + INPUTS["token_lifetime"]
    leeway = RsConfig().leeway
    verifier = TokenVerifier(
        audience=INPUTS["audience"],
        keys=KeySet([k["as_signing"]]),
        decryption_keys=KeySet([k["as_rs"]]),
        issuer=INPUTS["issuer"],
        leeway=leeway,
    )
    assert verifier.verify(token, exp + leeway / 2).exp == exp  # the skew allowance
    intake = TokenIntake(
        audience=INPUTS["audience"],
        issuers=[TrustedIssuer(INPUTS["issuer"], KeySet([k["as_signing"]]), KeySet([k["as_rs"]]))],
        leeway=leeway,
    )
    assert intake.accept(token, exp - 1).kid == h(SYM["pop_key"]["kid_hex"])
    with pytest.raises(Expired):
        intake.accept(token, exp + 1)
    assert "no grace period" in text("device.md")
    assert "with no leeway" not in text("device.md")


# --- the Proof option and the detached content -------------------------------


def test_proof_option_size_formula() -> None:
    """proof.md and acedev.h: 20 + kid + piv bytes for Mac0, 77 + kid + piv
    for Sign1; the old sketch said 18 + kid + 5."""
    (mac0, sign1) = claims(
        "proof.md",
        r"(\d+) \+ kid_len \+ piv_len bytes for COSE_Mac0 and (\d+) \+ kid_len \+ piv_len",
    )[0]
    assert int(mac0) == header_int("ACE_PROOF_MAC0_LEN\\(kid_len, piv_len\\)")
    assert int(sign1) == header_int("ACE_PROOF_SIGN1_LEN\\(kid_len, piv_len\\)")
    for v in PROOFS:
        base = int(mac0) if v["alg"] == "HMAC_256_64" else int(sign1)
        kid_len = len(h(v["kid_hex"]))
        assert v["option_value"]["length"] == base + kid_len + len(recipe.piv_bytes(v["piv"]))
    kid = h(PROOFS[0]["kid_hex"])
    for piv, want in ((1, 29), (2**24, 32), (MAX_PIV, 33)):
        assert len(recipe.proof_option(b"\xa1\x01\x04", kid, piv, b"\0" * 8)) == want
        assert want == int(mac0) + len(kid) + len(recipe.piv_bytes(piv))
    assert len(recipe.proof_option(b"\xa1\x01\x04", kid, 2**24, b"\0" * 8)) > 18 + len(kid) + 5
    with pytest.raises(ValueError):
        recipe.piv_bytes(2**56)
    small, small_sign, big, big_sign = claims(
        "proof.md",
        r"An 8-byte kid and a 1-byte piv make (\d+) \((\d+) for Sign1\); the largest piv, "
        r"2\^40 - 1, makes (\d+) \((\d+)\)",
    )[0]
    assert (int(small), int(big)) == (int(mac0) + 9, int(mac0) + 8 + 5)
    assert (int(small_sign), int(big_sign)) == (int(sign1) + 9, int(sign1) + 8 + 5)
    assert header_int("ACE_PIV_MAX_LEN") == len(recipe.piv_bytes(MAX_PIV)) == 5
    assert "at most 5 bytes" in text("proof.md")
    assert "content[96]" not in text("proof.md") and "18 + kid_len" not in text("proof.md")


def _content_len_from_the_notes(
    path: list[str], query: list[str], cf: int | None, payload: bytes, piv: int, echo: bytes | None
) -> int:
    """proof.md's rule for the detached content's length, as written."""
    (base,) = claims("proof.md", r"(\d+) bytes for a GET of `/` with no query")[0]
    n = int(base)
    for item in path + query:
        raw = len(item.encode())
        n += raw + (1 if raw < 24 else 2)
    n += 16 if payload else 0
    if echo is not None:
        n += len(echo) + (0 if len(echo) < 24 else 1)
    if cf is not None:
        n += 0 if cf < 24 else 1 if cf < 256 else 2
    n += 0 if piv < 24 else 1 if piv < 256 else 2 if piv < 65536 else 4 if piv < 2**32 else 8
    return n


def test_detached_content_length_rule() -> None:
    rng = random.Random(7)
    for _ in range(300):
        path = ["s" * rng.choice((0, 1, 5, 23, 24, 30, 120)) for _ in range(rng.randint(0, 4))]
        query = ["q=" + "x" * rng.randint(0, 40) for _ in range(rng.randint(0, 3))]
        cf = rng.choice((None, 0, 19, 50, 60, 300, 65000))
        payload = rng.choice((b"", b"x", b"y" * 500))
        piv = rng.choice((0, 1, 23, 24, 255, 256, 65536, 2**32, MAX_PIV))
        echo = rng.choice((None, b"e" * 14, b"e" * 40))
        content = recipe.detached_content(1, path, query, cf, payload, piv, echo)
        assert len(content) == _content_len_from_the_notes(path, query, cf, payload, piv, echo)
    # the old sketch's fixed 96-byte buffer: one long path segment overruns it
    assert len(recipe.detached_content(1, ["a" * 120], piv=1)) > 96


# --- scope, token, piv ---------------------------------------------------------


def authorization_server() -> AuthorizationServer:
    """The embedded AS with the vectors' keys, issuer, audience and lifetime."""
    k = keys()
    return AuthorizationServer(
        issuer=INPUTS["issuer"],
        audiences=(INPUTS["audience"],),
        lifetime=INPUTS["token_lifetime"],
        signing_key=lambda: k["as_signing"],  # type: ignore[arg-type,return-value]
        as_rs_key=lambda: k["as_rs"],  # type: ignore[arg-type,return-value]
    )


def client_policy(client_id: str, scope: Scope) -> ClientPolicy:
    return ClientPolicy(
        client_id=client_id, allowed_scope=scope, default_scope=None, audiences=(), public_key=None
    )


def test_scope_order_rule_and_the_text_form() -> None:
    """flow.md §3: any order is accepted, the canonical form is sorted by
    path (bytes), and the text form reads to the same scope."""
    registered = INPUTS["scope_text"]
    canonical = INPUTS["scope_text_canonical"]
    assert str(Scope.parse(registered)) == canonical
    entries = canonical.split()
    assert entries == sorted(entries, key=lambda e: e.rpartition(":")[0].encode())
    assert Scope.parse(registered).encode() == h(INPUTS["scope_aif"]["hex"])
    flow = text("flow.md")
    assert f"`{registered}`" in flow
    assert canonical in flow
    request = TokenRequest.decode(h(SYM["token_request_text_scope"]["hex"]))
    assert request.scope == canonical
    assert request.aif_scope() == Scope.decode(h(INPUTS["scope_aif"]["hex"]))
    # a request in the registration's order gets the same scope in its token
    server = authorization_server()
    policy = client_policy(INPUTS["client_id"], Scope.parse(registered))
    unsorted = recipe.aif_scope(registered)
    assert unsorted != h(INPUTS["scope_aif"]["hex"])
    issued = server.issue(TokenRequest.decode(recipe.token_request(unsorted)), policy, NOW)
    assert Scope.from_scope_param(issued.claims.scope) == Scope.parse(canonical)
    assert issued.claims.scope == h(INPUTS["scope_aif"]["hex"])


def test_first_piv() -> None:
    first = header_int("ACE_PIV_FIRST")
    sequences: dict[str, list[int]] = {}
    for v in PROOFS:
        if v.get("sequence"):
            sequences.setdefault(v["sequence"], []).append(v["piv"])
    assert sequences and all(pivs[0] == first for pivs in sequences.values())
    assert f"starts at piv {first}" in text("flow.md")
    assert f"starts over at {first}" in text("flow.md")
    assert f"start over at {first}" in text("device.md")


def test_access_token_is_the_byte_strings_content() -> None:
    """flow.md §4: the upload's payload is the access_token byte string's
    content, without its CBOR head."""
    response = h(SYM["token_response"]["hex"])
    token = h(SYM["token"]["hex"])
    head = recipe.cbor_head(2, len(token))
    assert head + token in response
    upload = h(SYM["authz_info"]["coap_request"]["hex"])
    assert upload.endswith(b"\xff" + token) and not upload.endswith(head + token)
    (quoted,) = claims("flow.md", r"without its CBOR head \(`([0-9a-f ]+)` here")[0]
    assert bytes.fromhex(quoted) == head
    assert f"a byte string of {len(token)} bytes" in text("flow.md")


def signing_authorization_server() -> AuthorizationServer:
    """The vectors' AS with its ES256 signing key, for asymmetric tokens."""
    k = INPUTS["keys"]
    signing = Ec2Key.from_private_bytes(h(k["as_signing"]["kid"]), h(k["as_signing"]["d"]))
    as_rs = keys()["as_rs"]
    return AuthorizationServer(
        issuer=INPUTS["issuer"],
        audiences=(INPUTS["audience"],),
        lifetime=INPUTS["token_lifetime"],
        signing_key=lambda: signing,
        as_rs_key=lambda: as_rs,  # type: ignore[arg-type,return-value]
    )


def test_token_size_bound_holds() -> None:
    """budgets.md: a token is at most overhead + client id + scope bytes (+
    the device kid once in a Sign1 token, twice in its response); checked on
    tokens the AS mints for random ids and kids up to 128 bytes and random
    scopes, and the sample the bound comes from spans those lengths."""
    sizes = SYM["token_sizes"]
    over, terms = sizes["overhead"], sizes["terms"]
    samples = sizes["samples"]
    assert max(r["client_id"] for r in samples) == MAX_CLIENT_ID_LEN
    assert min(r["client_id"] for r in samples) == 1
    # every CBOR head size an id or kid of at most MAX_CLIENT_ID_LEN bytes has
    for field in ("client_id", "device_kid"):
        lengths = {r[field] for r in samples}
        assert {23, 24, MAX_CLIENT_ID_LEN} <= lengths and min(lengths) == 1, field
    assert any(r["client_id"] == r["device_kid"] == MAX_CLIENT_ID_LEN for r in samples)
    for r in samples:
        for key, ts in terms.items():
            assert r[key] <= over[key] + sum(n * r[t] for t, n in ts.items()), (key, r)

    device = key_from_cose(h(INPUTS["keys"]["device_es256"]["cose_key_public_hex"])).to_cose()
    del device[2]  # the kid: each request names its own below
    rng = random.Random(3)
    sym_server, asym_server = authorization_server(), signing_authorization_server()
    for _ in range(40):
        cid = "d" * rng.randint(1, MAX_CLIENT_ID_LEN)
        kid = bytes(rng.randint(1, 255) for _ in range(rng.randint(1, MAX_CLIENT_ID_LEN)))
        scope = Scope.parse(
            " ".join(f"/{'p' * rng.randint(1, 40)}{i}:GET" for i in range(rng.randint(1, 30)))
        )
        policy = client_policy(cid, scope)
        lengths = {"client_id": len(cid), "scope": len(scope.encode()), "device_kid": len(kid)}
        issued = {
            "symmetric": sym_server.issue(TokenRequest(scope=scope.encode()), policy, NOW),
            "asymmetric": asym_server.issue(
                TokenRequest(
                    scope=scope.encode(),
                    req_cnf={1: key_from_cose(device, kid=kid).to_cose()},
                ),
                policy,
                NOW,
            ),
        }
        for kind, it in issued.items():
            for item, got in (
                ("token", len(it.response.access_token)),
                ("response", len(it.response.encode())),
            ):
                key = f"{kind}_{item}"
                bound = over[key] + sum(n * lengths[t] for t, n in terms[key].items())
                assert bound - 6 <= got <= bound, (key, lengths, got, bound)
    token_max = header_int("ACE_TOKEN_MAX")
    (stated_max,) = claims("budgets.md", r"`ACE_TOKEN_MAX` bytes, (\d+) by default")[0]
    (scope_room,) = claims("budgets.md", r"(?:client id )?and a scope of up to (\d+) bytes")[0]
    assert int(stated_max) == token_max
    assert int(scope_room) == token_max - over["symmetric_token"] - MAX_CLIENT_ID_LEN
    (kid_max,) = claims("budgets.md", r"`ACE_KID_MAX` \((\d+) by default\)")[0]
    assert int(kid_max) == header_int("ACE_KID_MAX")
    # the ranges the prose says the bound was measured over are the sample's
    ((id_lo, id_hi, scope_lo, scope_hi, kid_lo, kid_hi),) = claims(
        "budgets.md",
        r"over client ids of (\d+) to (\d+) bytes, scopes of (\d+) to (\d+) bytes "
        r"and device kids of (\d+) to (\d+) bytes",
    )
    for field, lo, hi in (
        ("client_id", id_lo, id_hi),
        ("scope", scope_lo, scope_hi),
        ("device_kid", kid_lo, kid_hi),
    ):
        got = sorted(r[field] for r in samples)
        assert (int(lo), int(hi)) == (got[0], got[-1]), field
    assert "<!-- generated: table:token-sizes -->" in (NOTES / "budgets.md").read_text()


def test_first_contact_totals_in_device_md_are_the_budgets() -> None:
    up, down = claims("device.md", r"\((\d+) bytes up and (\d+) down")[0]
    totals = re.findall(
        r"\| (?:device -> gateway|gateway -> device) \| \*\*total\*\* \| \*\*(\d+)\*\*",
        (NOTES / "budgets.md").read_text(),
    )
    assert totals == [up, down]


def test_echo_value_length_in_the_notes() -> None:
    echo = h(RESPONSES["echo_challenge"]["echo_hex"])
    (n,) = claims("proof.md", r"`4e` \+ (\d+) bytes for the gateway's Echo values")[0]
    assert int(n) == len(echo) == 14
    assert header_int("ACE_ECHO_MAX") == 40  # RFC 9175 §2.2


# --- libcoap ---------------------------------------------------------------------


def test_libcoap_block_mode_advice() -> None:
    """device.md says plainly not to enable COAP_BLOCK_USE_LIBCOAP, and the
    example device (tested against a live gateway) does not."""
    assert "**Do not enable `COAP_BLOCK_USE_LIBCOAP`**" in text("device.md")
    source = re.sub(r"/\*.*?\*/", "", (C_DIR / "example" / "device.c").read_text(), flags=re.S)
    calls = re.findall(r"coap_context_set_block_mode\s*\(([^)]*)\)", source)
    assert not [c for c in calls if "COAP_BLOCK_USE_LIBCOAP" in c]


def test_libcoap_client_hello_is_marked_build_dependent() -> None:
    budgets = text("budgets.md")
    assert "ClientHello sizes (flights 1 and 3) depend on the OpenSSL build" in budgets
    wire = json.loads((NOTES / "vectors" / "wire.json").read_text())
    flights = wire["libcoap"]["handshake"]["flights"]
    hello = [f for f in flights if f["direction"] == "device -> gateway"][:2]
    for f in hello:
        (d,) = f["datagrams"]
        assert f"| {d['size']}: ClientHello({d['size']}) |" in (NOTES / "budgets.md").read_text()


# --- the C library's sizes in budgets.md ------------------------------------------


def test_budgets_hold_the_c_library_sizes_sizes_py_computes(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["python3", str(C_DIR / "sizes.py"), "--build", str(tmp_path), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    budgets = (NOTES / "budgets.md").read_text()
    section = budgets[budgets.index("<!-- measured: c-sizes -->") :]
    assert "| **total** |" in section and "`struct ace_token`" in section
