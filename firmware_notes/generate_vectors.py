"""Generate the firmware test vectors (``firmware_notes/vectors/*.json``) and
the generated blocks of the notes (``firmware_notes/*.md``) from fixed keys
and a fixed clock.

Run from the repository root::

    python -m firmware_notes.generate_vectors            # rewrite in place
    python -m firmware_notes.generate_vectors --out DIR  # write a copy to DIR

Everything is deterministic, so a second run writes byte-identical files
(``tests/firmware/test_vectors.py`` checks this):

* keys, kids, ctis and the AS's "random" draws come from SHA-256 over fixed
  labels (:func:`fixed`);
* the COSE_Encrypt0 token uses a fixed IV (``tokens.cwt.mint(iv=...)``);
* ES256 signatures (the Sign1 token, the ES256 proofs) are deterministic
  ECDSA, RFC 6979 (``cryptography``'s ``deterministic_signing``, checked
  against RFC 6979 A.2.5 by the tests); EdDSA is deterministic by design.

The vectors are made by the project's own code: the gateway's embedded AS
(:class:`gateway.authorization_server.token_endpoint.AuthorizationServer`, fed the fixed
draws), :mod:`tokens.cwt` and :func:`tokens.proof.build_proof`; CoAP
messages are encoded by aiocoap. Sizes on the wire measured from a real
handshake come from ``vectors/wire.json`` (written by
:mod:`firmware_notes.measure_wire`), which this script only reads.

The Markdown notes are hand-written except for the regions between
``<!-- generated: NAME -->`` and ``<!-- /generated -->``, which this script
fills from the vectors (see :func:`render_block`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiocoap
import cbor2
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import OpaqueOption
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from firmware_notes.diag import diag
from firmware_notes.render import fill
from gateway.authorization_server.token_endpoint import AuthorizationServer, ClientPolicy
from gateway.registry.registry import MAX_CLIENT_ID_LEN
from tokens import cnf as cnf_mod
from tokens import cose
from tokens.ace import CreationHints, ErrorResponse, TokenRequest
from tokens.aif import Scope
from tokens.cwt import mint
from tokens.echo import EchoIssuer
from tokens.errors import TokenError
from tokens.keys import CoseKey, Ec2Key, OkpKey, SymmetricKey
from tokens.params import PROOF_OPTION, Alg
from tokens.proof import ProofedRequest, build_proof, detached_content, encode_piv

HERE = Path(__file__).resolve().parent
VECTORS = "vectors"
#: The measured wire sizes (written by measure_wire.py, read here).
WIRE_FILE = "wire.json"
#: Markdown files with generated blocks.
DOCS = ("README.md", "flow.md", "proof.md", "budgets.md", "device.md", "security.md")

# --- fixed inputs ---------------------------------------------------------------

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
CLIENT_ID = "sensor-0001"
PSK = b"Vq3xT8mZr2Lk9Hd4"  # 16 printable bytes: tinydtls' cap, libcoap's -k
ISSUER = "acegw"
AUDIENCE = "acegw"
LIFETIME = 3600
SCOPE_TEXT = "/whoami:GET /temp:GET /readings:POST /cfg:GET,PUT"
#: Example Request Creation Hints AS URI (192.0.2.0/24 is for documentation).
AS_URI = "coaps://192.0.2.10/token"
#: DTLS 1.2 record with TLS_PSK_WITH_AES_128_CCM_8, used when wire.json is missing.
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def fixed(label: str, n: int) -> bytes:
    """``n`` fixed pseudo-random bytes for ``label``: SHA-256 of
    ``"acegw firmware vectors/<label>/<i>"`` for i = 0, 1, ... concatenated."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"acegw firmware vectors/{label}/{i}".encode()).digest()
        i += 1
    return out[:n]


def _p256_scalar(label: str) -> bytes:
    d = int.from_bytes(fixed(label, 32), "big") % (_P256_N - 1) + 1
    return d.to_bytes(32, "big")


class Rfc6979Key(Ec2Key):
    """An ES256 key whose signatures are deterministic (RFC 6979), so that
    vectors regenerate byte for byte. Verification is the ordinary one."""

    def __init__(self, kid: bytes, d: bytes) -> None:
        priv = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
        super().__init__(kid, priv.public_key(), priv)
        self._rfc6979 = priv

    def sign(self, to_be_signed: bytes) -> bytes:
        try:
            algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        except TypeError:  # pragma: no cover - cryptography < 44
            raise SystemExit("deterministic ECDSA needs cryptography >= 44") from None
        r, s = decode_dss_signature(self._rfc6979.sign(to_be_signed, algorithm))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class Draws:
    """The AS's ``random``: fixed bytes per draw, recorded in order."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.draws: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        b = fixed(f"{self.label}/{len(self.draws)}", n)
        self.draws.append(b)
        return b


@dataclasses.dataclass
class Keys:
    as_rs: SymmetricKey
    as_signing: Rfc6979Key
    device_es256: Rfc6979Key
    device_eddsa: OkpKey
    echo_secret: bytes


def make_keys() -> Keys:
    return Keys(
        as_rs=SymmetricKey(fixed("as-rs/kid", 4), fixed("as-rs/k", 16), Alg.AES_CCM_16_64_128),
        as_signing=Rfc6979Key(fixed("as-signing/kid", 4), _p256_scalar("as-signing/d")),
        device_es256=Rfc6979Key(fixed("device-es256/kid", 8), _p256_scalar("device-es256/d")),
        device_eddsa=OkpKey.from_private_bytes(
            fixed("device-eddsa/kid", 8), fixed("device-eddsa/d", 32)
        ),
        echo_secret=fixed("echo-secret", 32),
    )


# --- helpers ------------------------------------------------------------------


def shown(data: bytes, ctx: str | None = None, value: Any = None) -> dict[str, Any]:
    """``{hex, length, diag}`` for encoded CBOR ``data``."""
    return {
        "hex": data.hex(),
        "length": len(data),
        "diag": diag(cbor2.loads(data) if value is None else value, ctx),
    }


_CODE_NAMES = {int(c): c.name for c in (Code.GET, Code.POST, Code.PUT, Code.DELETE)}


def coap(
    code: Code,
    *,
    mid: int,
    token: bytes,
    mtype: Type = Type.CON,
    path: tuple[str, ...] = (),
    query: tuple[str, ...] = (),
    content_format: int | None = None,
    echo: bytes | None = None,
    proof: bytes | None = None,
    payload: bytes = b"",
) -> dict[str, Any]:
    """A CoAP message (RFC 7252 §3) encoded by aiocoap, as hex and length."""
    m = aiocoap.Message(code=code, payload=payload)
    m.mid = mid
    m.mtype = mtype
    m.token = token
    if path:
        m.opt.uri_path = path
    if query:
        m.opt.uri_query = query
    if content_format is not None:
        m.opt.content_format = content_format
    if echo is not None:
        m.opt.echo = echo
    if proof is not None:
        m.opt.add_option(OpaqueOption(PROOF_OPTION, proof))
    data = m.encode()
    return {
        "type": mtype.name,
        "code": f"{int(code) >> 5}.{int(code) & 0x1F:02d}",
        "mid": mid,
        "token_hex": token.hex(),
        "hex": data.hex(),
        "length": len(data),
    }


def _reply(request: dict[str, Any], code: Code, **kw: Any) -> dict[str, Any]:
    """The piggybacked ACK answering ``request`` (same Message ID and token)."""
    return coap(
        code,
        mid=request["mid"],
        token=bytes.fromhex(request["token_hex"]),
        mtype=Type.ACK,
        **kw,
    )


def _key_entry(key: CoseKey, role: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": role, "alg": key.alg.name, "kid": key.kid.hex()}
    if isinstance(key, SymmetricKey):
        out["k"] = key.secret.hex()
    else:
        cose_map = key.to_cose(include_private=True)
        for label, name in ((-2, "x"), (-3, "y"), (-4, "d")):
            if label in cose_map:
                out[name] = cose_map[label].hex()
    out.update(extra)
    return out


def _public_cose_key(key: CoseKey) -> bytes:
    return key.public().encode()


def _policy(client_id: str, scope: Scope) -> ClientPolicy:
    """A registered client allowed ``scope``, with no public key."""
    return ClientPolicy(
        client_id=client_id, allowed_scope=scope, default_scope=None, audiences=(), public_key=None
    )


def _server(keys: Keys, draws: Draws) -> AuthorizationServer:
    """The embedded AS with the fixed keys, issuer, audience and lifetime."""
    return AuthorizationServer(
        issuer=ISSUER,
        audiences=(AUDIENCE,),
        lifetime=LIFETIME,
        signing_key=lambda: keys.as_signing,
        as_rs_key=lambda: keys.as_rs,
        random=draws,
    )


# --- the vectors ----------------------------------------------------------------


#: Client ids and scopes the token sizes are sampled at: the shortest and
#: longest ids the registry accepts (1 and MAX_CLIENT_ID_LEN bytes, with 23
#: and 24 where the CBOR head grows), scopes from one entry to 64 entries of
#: 1 KiB. Device kids (the ES256 key's, carried by the Sign1 token and the
#: asymmetric response): the vectors' 8 bytes over that grid, and 1, 23, 24
#: and 128 bytes at its smallest and largest corners.
_SIZE_IDS = (1, 11, 23, 24, 32, MAX_CLIENT_ID_LEN)
_SIZE_SCOPES = (
    "/a:GET",
    SCOPE_TEXT,
    " ".join(f"/p{i:02d}:GET" for i in range(20)),
    " ".join(f"/path/number{i:03d}:GET,PUT" for i in range(64)),
)
_SIZE_KID = 8
_SIZE_OTHER_KIDS = (1, 23, 24, 128)


def _token_size_sample(keys: Keys, id_len: int, text: str, kid_len: int) -> dict[str, int]:
    """The four lengths for one client id length, scope and device kid length."""
    scope = Scope.parse(text)
    policy = _policy("x" * id_len, scope)
    server = _server(keys, Draws("token-sizes"))
    device = Rfc6979Key(fixed("device-es256/kid", kid_len), _p256_scalar("device-es256/d"))
    row = {"client_id": id_len, "scope": len(scope.encode()), "device_kid": kid_len}
    for kind, req_cnf in (("symmetric", None), ("asymmetric", {1: device.public().to_cose()})):
        request = TokenRequest(scope=scope.encode(), req_cnf=req_cnf).encode()
        issued = server.issue(TokenRequest.decode(request), policy, NOW)
        row[f"{kind}_token"] = len(issued.response.access_token)
        row[f"{kind}_response"] = len(issued.response.encode())
    return row


#: How often each length counts in each item: the client id and the scope
#: once in every item (the token carries them, the response carries the
#: token); the device kid once in the Sign1 token (its cnf) and twice in the
#: asymmetric response (the token's, and the response's cnf naming the key).
TOKEN_SIZE_TERMS = {
    "symmetric_token": {"client_id": 1, "scope": 1},
    "symmetric_response": {"client_id": 1, "scope": 1},
    "asymmetric_token": {"client_id": 1, "scope": 1, "device_kid": 1},
    "asymmetric_response": {"client_id": 1, "scope": 1, "device_kid": 2},
}


def _token_sizes(keys: Keys) -> dict[str, Any]:
    """Token and token response lengths as they grow with the client id, the
    scope and (asymmetric) the device kid: each is at most ``overhead`` plus
    its :data:`TOKEN_SIZE_TERMS` (the sample includes every CBOR head size
    that a client id or kid of at most 255 bytes, so the registry's 128, and a
    token under 64 KiB can have)."""
    rows = [
        _token_size_sample(keys, id_len, text, _SIZE_KID)
        for id_len in _SIZE_IDS
        for text in _SIZE_SCOPES
    ]
    corners = ((_SIZE_IDS[0], _SIZE_SCOPES[0]), (_SIZE_IDS[-1], _SIZE_SCOPES[-1]))
    rows += [
        _token_size_sample(keys, id_len, text, kid_len)
        for kid_len in _SIZE_OTHER_KIDS
        for id_len, text in corners
    ]
    overhead = {
        key: max(r[key] - sum(n * r[term] for term, n in terms.items()) for r in rows)
        for key, terms in TOKEN_SIZE_TERMS.items()
    }
    return {
        "description": (
            "Lengths of tokens and token responses by client id length, AIF scope length "
            f"and device kid length (issuer and audience {ISSUER!r}): each is at most "
            "overhead + client id + scope, plus the device kid once in the Sign1 token "
            "and twice in the asymmetric response."
        ),
        "overhead": overhead,
        "terms": TOKEN_SIZE_TERMS,
        "samples": rows,
    }


def build() -> dict[str, Any]:
    """Every vector file's content, by file name."""
    keys = make_keys()
    scope = Scope.parse(SCOPE_TEXT)
    scope_aif = scope.encode()
    policy = _policy(CLIENT_ID, scope)

    # -- symmetric PoP: Encrypt0 token, HMAC proofs --------------------------
    draws_sym = Draws("as-random/symmetric")
    as_sym = _server(keys, draws_sym)
    request_sym = TokenRequest(scope=scope_aif).encode()
    request_text = TokenRequest(scope=str(scope)).encode()
    assert TokenRequest.decode(request_text).aif_scope() == scope
    issued = as_sym.issue(TokenRequest.decode(request_sym), policy, NOW)
    iv = fixed("encrypt0-iv", 13)
    token_sym = mint(issued.claims, keys.as_rs, iv=iv)
    response_sym = dataclasses.replace(issued.response, access_token=token_sym).encode()
    confirmation = cnf_mod.decode(issued.response.cnf)
    assert isinstance(confirmation, cnf_mod.CnfKey)
    pop = confirmation.key
    assert isinstance(pop, SymmetricKey)

    items = cbor2.loads(token_sym)
    protected, unprotected, ciphertext = items
    enc_structure = cose.enc_structure(protected, b"")
    plaintext = issued.claims.encode()
    assert keys.as_rs.encrypt(iv, plaintext, enc_structure) == ciphertext

    token_req_msg = coap(
        Code.POST,
        mid=0x3A01,
        token=b"\x01",
        path=("token",),
        content_format=19,
        payload=request_sym,
    )
    authz_msg = coap(
        Code.POST,
        mid=0x3A02,
        token=b"\x02",
        path=("authz-info",),
        content_format=19,
        payload=token_sym,
    )
    token_symmetric = {
        "description": (
            "Symmetric PoP: the device POSTs /token over its DTLS-PSK session; the "
            "embedded AS mints a 128-bit HMAC 256/64 PoP key, returns it in cnf and "
            "seals it with the claims in a COSE_Encrypt0 (AES-CCM-16-64-128) under "
            "the AS-RS key. The device then POSTs the token unchanged to /authz-info."
        ),
        "now": NOW,
        "token_request": {
            **shown(request_sym, "token_request"),
            "coap_request": token_req_msg,
        },
        "token_request_text_scope": {
            "description": (
                "The same request with the scope in its text form (a CBOR text string "
                "instead of the AIF byte string): the AS reads both to the same scope "
                "and the token carries it as AIF."
            ),
            "scope_text": str(scope),
            **shown(request_text, "token_request"),
        },
        "claims": shown(plaintext, "claims"),
        "token": {
            "kind": "COSE_Encrypt0 (untagged)",
            "protected": shown(protected, "protected"),
            "unprotected_diag": diag(unprotected, "unprotected"),
            "iv_hex": iv.hex(),
            "enc_structure": shown(enc_structure, "enc_structure"),
            "aead": "AES-CCM-16-64-128: 13-byte nonce = IV, 8-byte tag, AAD = Enc_structure",
            "plaintext_hex": plaintext.hex(),
            "ciphertext_hex": ciphertext.hex(),
            **shown(token_sym, "token"),
        },
        "token_response": {
            **shown(response_sym, "token_response"),
            "coap_response": _reply(
                token_req_msg, Code.CREATED, content_format=19, payload=response_sym
            ),
        },
        "pop_key": {"kid_hex": pop.kid.hex(), "k_hex": pop.secret.hex(), "alg": "HMAC 256/64"},
        "token_sizes": _token_sizes(keys),
        "authz_info": {
            "description": "POST /authz-info, payload = the access_token bytes as received",
            "coap_request": authz_msg,
            "coap_response": _reply(authz_msg, Code.CREATED),
        },
    }

    # -- asymmetric PoP: Sign1 token, ES256 proofs ----------------------------
    draws_asym = Draws("as-random/asymmetric")
    as_asym_server = _server(keys, draws_asym)
    device_pub = keys.device_es256.public()
    req_cnf = {1: device_pub.to_cose()}
    request_asym = TokenRequest(scope=scope_aif, req_cnf=req_cnf).encode()
    issued_a = as_asym_server.issue(TokenRequest.decode(request_asym), policy, NOW)
    token_asym = issued_a.response.access_token
    response_asym = issued_a.response.encode()
    prot_a, unprot_a, payload_a, signature_a = cbor2.loads(token_asym)
    sig_structure_a = cose.sig_structure(prot_a, b"", payload_a)
    by_kid = TokenRequest(scope=scope_aif, req_cnf={3: keys.device_es256.kid}).encode()
    token_req_asym_msg = coap(
        Code.POST,
        mid=0x3B01,
        token=b"\x01",
        path=("token",),
        content_format=19,
        payload=request_asym,
    )
    token_asymmetric = {
        "description": (
            "Asymmetric PoP: the device holds an ES256 key pair and sends its public "
            "COSE_Key (with its kid) in req_cnf; the AS signs a COSE_Sign1 token (ES256, "
            "RFC 6979 deterministic signature here) with that key in cnf. The response "
            "has no cnf: the device already knows its key and kid."
        ),
        "now": NOW,
        "token_request": {
            **shown(request_asym, "token_request"),
            "coap_request": token_req_asym_msg,
        },
        "token_request_by_kid": {
            "description": (
                "The same request naming a public key registered for the client "
                "(acegw clients add --public-key) by its kid, RFC 9201 §5: smaller."
            ),
            **shown(by_kid, "token_request"),
        },
        "claims": shown(payload_a, "claims"),
        "token": {
            "kind": "COSE_Sign1 (untagged)",
            "protected": shown(prot_a, "protected"),
            "unprotected_diag": diag(unprot_a, "unprotected"),
            "sig_structure": shown(sig_structure_a, "sig_structure_token"),
            "sig_structure_sha256_hex": hashlib.sha256(sig_structure_a).hexdigest(),
            "signature_hex": signature_a.hex(),
            "signature": "ES256 r || s, deterministic (RFC 6979) in this vector",
            **shown(token_asym, "token"),
        },
        "token_response": {
            **shown(response_asym, "token_response"),
            "coap_response": _reply(
                token_req_asym_msg, Code.CREATED, content_format=19, payload=response_asym
            ),
        },
    }

    # -- proofs -----------------------------------------------------------------
    echo_issuer = EchoIssuer(keys.echo_secret)
    proofs = _proofs(pop, keys, echo_issuer)

    # -- gateway answers a device must handle ---------------------------------
    first = next(p for p in proofs if p["name"] == "hmac_get_whoami_first")
    hints = CreationHints(as_uri=AS_URI, audience=AUDIENCE).encode()
    try:
        as_sym.issue(TokenRequest(scope="/admin:GET"), policy, NOW)
    except TokenError as exc:
        token_error = ErrorResponse.from_exception(exc).encode()
    else:  # pragma: no cover
        raise AssertionError("the AS granted a scope beyond the client's")
    no_proof = coap(Code.GET, mid=0x3C01, token=b"\x11", path=("whoami",))
    bad_request = coap(Code.POST, mid=0x3C02, token=b"\x12", path=("token",), content_format=19,
                       payload=TokenRequest(scope="/admin:GET").encode())  # fmt: skip
    echo_value = bytes.fromhex(first["gateway_answer"]["echo_hex"])
    responses = {
        "description": "Answers of the gateway a device must recognise, as CoAP messages.",
        "echo_challenge": {
            "description": (
                "4.01 with an Echo option (RFC 9175) to the first proof-bearing request "
                "for a kid the gateway holds no replay window for. The value is opaque "
                "to the device: 6-byte issue time (ms) || 8-byte HMAC under a secret "
                "the gateway generates at start (so it changes across restarts)."
            ),
            "echo_hex": echo_value.hex(),
            "coap_response": _reply(first["coap_request"], Code.UNAUTHORIZED, echo=echo_value),
        },
        "creation_hints": {
            "description": (
                "4.01, Content-Format 19, AS Request Creation Hints (RFC 9200 §5.3): "
                "no Proof option, or the proof's kid names no token the gateway holds "
                "(never uploaded, expired and dropped, gateway restarted)."
            ),
            **shown(hints, "creation_hints"),
            "coap_request": no_proof,
            "coap_response": _reply(no_proof, Code.UNAUTHORIZED, content_format=19, payload=hints),
        },
        "token_error": {
            "description": (
                "/token refused (RFC 9200 §5.8.3): 4.00 with an ACE error map, here "
                "invalid_scope for a scope the client is not registered for."
            ),
            **shown(token_error, "ace_error"),
            "coap_request": bad_request,
            "coap_response": _reply(
                bad_request, Code.BAD_REQUEST, content_format=19, payload=token_error
            ),
        },
        "plain_401": {
            "description": (
                "4.01 with a short UTF-8 diagnostic and no Content-Format: the request "
                "was refused for a reason the device cannot fix by repeating it (bad MAC, "
                "replayed piv, expired or revoked token, token of another client)."
            ),
            "coap_response": _reply(no_proof, Code.UNAUTHORIZED, payload=b"token expired"),
        },
    }

    keys_out = {
        "as_rs": _key_entry(
            keys.as_rs,
            "gateway secret (AS-RS key): decrypts the Encrypt0 token; never on a device",
        ),
        "as_signing": _key_entry(
            keys.as_signing,
            "AS signing key (ES256): signs the Sign1 token; the device never needs it",
            cose_key_public_hex=_public_cose_key(keys.as_signing).hex(),
        ),
        "pop_hmac": {
            "role": "PoP key minted by the AS for the symmetric token (from draws below)",
            "alg": "HMAC_256_64",
            "kid": pop.kid.hex(),
            "k": pop.secret.hex(),
        },
        "device_es256": _key_entry(
            keys.device_es256,
            "device key pair for the asymmetric token and the ES256 proofs",
            cose_key_public_hex=_public_cose_key(keys.device_es256).hex(),
        ),
        "device_eddsa": _key_entry(
            keys.device_eddsa,
            "device Ed25519 key pair for the EdDSA proof",
            cose_key_public_hex=_public_cose_key(keys.device_eddsa).hex(),
        ),
        "echo_secret": {
            "role": "gateway's per-process Echo secret (fixed here to reproduce Echo values)",
            "hex": keys.echo_secret.hex(),
        },
    }
    inputs = {
        "description": (
            "Fixed inputs of every vector. All keys here are test keys: never use them "
            "on a device. Bytes come from SHA-256 over fixed labels "
            "(firmware_notes/generate_vectors.py: fixed())."
        ),
        "now": NOW,
        "client_id": CLIENT_ID,
        "psk": {"text": PSK.decode(), "hex": PSK.hex()},
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "token_lifetime": LIFETIME,
        "scope_text": SCOPE_TEXT,
        "scope_text_canonical": str(scope),
        "scope_order": (
            "A scope may list its entries in any order; the AS merges repeated paths and "
            "sorts the entries by path, comparing bytes, and that canonical form is what "
            "tokens and responses carry (scope_aif, scope_text_canonical)."
        ),
        "scope_aif": shown(scope_aif, "aif"),
        "keys": keys_out,
        "as_random_draws": {
            "symmetric": [d.hex() for d in draws_sym.draws],
            "asymmetric": [d.hex() for d in draws_asym.draws],
            "order": "cti (8 bytes); symmetric only: PoP kid (8), PoP key (16)",
        },
        "encrypt0_iv_hex": iv.hex(),
        "ecdsa": (
            "ES256 signatures in these vectors are deterministic ECDSA (RFC 6979, SHA-256) "
            "so that they regenerate byte for byte; a device may sign with a random k: "
            "the gateway verifies either."
        ),
    }
    return {
        "inputs.json": inputs,
        "token_symmetric.json": token_symmetric,
        "token_asymmetric.json": token_asymmetric,
        "proofs.json": {
            "description": (
                "Proof options (CoAP option 65001) for several requests, with every "
                "intermediate. 'sequence' vectors are consecutive requests of one "
                "device; 'gateway_answer' is what the gateway replies at 'gateway_now'."
            ),
            "option_number": PROOF_OPTION,
            "vectors": proofs,
        },
        "responses.json": responses,
    }


@dataclasses.dataclass(frozen=True)
class _Case:
    name: str
    description: str
    key: str
    code: Code
    path: tuple[str, ...]
    piv: int
    at: float
    query: tuple[str, ...] = ()
    content_format: int | None = None
    payload: bytes = b""
    echo_from: str | None = None  # name of the case whose answer carried the Echo
    sequence: str | None = None


_JSON = b'{"celsius":21.5}'
_CFG = cbor2.dumps({"interval": 60})

CASES = (
    _Case("hmac_get_whoami_first", "GET /whoami, no payload, first request with this token: "
          "the gateway holds no replay window for the kid and answers 4.01 + Echo",
          "pop_hmac", Code.GET, ("whoami",), 1, NOW + 1, sequence="hmac"),
    _Case("hmac_get_whoami_echo", "the same GET repeated with the Echo value in the Echo "
          "option and in the detached content, next piv: opens the window",
          "pop_hmac", Code.GET, ("whoami",), 2, NOW + 1.25,
          echo_from="hmac_get_whoami_first", sequence="hmac"),
    _Case("hmac_post_json", "POST /readings with a JSON payload (Content-Format 50)",
          "pop_hmac", Code.POST, ("readings",), 3, NOW + 10, content_format=50,
          payload=_JSON, sequence="hmac"),
    _Case("hmac_get_query", "GET /temp?unit=C&window=60: two Uri-Query items",
          "pop_hmac", Code.GET, ("temp",), 4, NOW + 20, query=("unit=C", "window=60"),
          sequence="hmac"),
    _Case("hmac_put_cbor", "PUT /cfg with a CBOR payload (Content-Format 60)",
          "pop_hmac", Code.PUT, ("cfg",), 5, NOW + 30, content_format=60,
          payload=_CFG, sequence="hmac"),
    _Case("hmac_get_piv_300", "GET /whoami with piv 300: a 2-byte Partial IV, and a "
          "2-byte unsigned integer in the detached content (pivs may skip ahead)",
          "pop_hmac", Code.GET, ("whoami",), 300, NOW + 40, sequence="hmac"),
    _Case("hmac_piv_zero", "encoding example: piv 0 is the Partial IV h'00' and the "
          "integer 0 (not part of the sequence)", "pop_hmac", Code.GET, ("whoami",), 0,
          NOW + 1),
    _Case("es256_get_whoami_first", "ES256 (COSE_Sign1) proof, first request: 4.01 + Echo",
          "device_es256", Code.GET, ("whoami",), 1, NOW + 50, sequence="es256"),
    _Case("es256_get_whoami_echo", "ES256 repeat with the Echo",
          "device_es256", Code.GET, ("whoami",), 2, NOW + 50.25,
          echo_from="es256_get_whoami_first", sequence="es256"),
    _Case("es256_post_json", "ES256 proof on POST /readings with JSON",
          "device_es256", Code.POST, ("readings",), 3, NOW + 60, content_format=50,
          payload=_JSON, sequence="es256"),
    _Case("eddsa_get_whoami", "EdDSA (Ed25519) proof, GET /whoami (encoding example)",
          "device_eddsa", Code.GET, ("whoami",), 1, NOW + 70),
)  # fmt: skip


def _proofs(pop: SymmetricKey, keys: Keys, echo_issuer: EchoIssuer) -> list[dict[str, Any]]:
    by_name: dict[str, CoseKey] = {
        "pop_hmac": pop,
        "device_es256": keys.device_es256,
        "device_eddsa": keys.device_eddsa,
    }
    out: list[dict[str, Any]] = []
    answers: dict[str, bytes] = {}
    for i, case in enumerate(CASES):
        key = by_name[case.key]
        echo = answers[case.echo_from] if case.echo_from else None
        request = ProofedRequest(
            code=int(case.code),
            path=case.path,
            query=case.query,
            content_format=case.content_format,
            payload=case.payload,
        )
        option = build_proof(key, request, case.piv, echo)
        protected = b"\xa1\x01" + cbor2.dumps(int(key.alg))
        content = detached_content(request, case.piv, echo)
        steps: dict[str, Any] = {
            "payload_sha256_hex": hashlib.sha256(case.payload).hexdigest() if case.payload else "",
            "detached_content": shown(content, "detached"),
            "protected_hex": protected.hex(),
            "external_aad_hex": "",
            "piv_hex": encode_piv(case.piv).hex(),
        }
        if key.alg == Alg.HMAC_256_64:
            to_mac = cose.mac_structure(protected, b"", content)
            full = hmac.digest(pop.secret, to_mac, hashlib.sha256)
            steps["mac_structure"] = shown(to_mac, "mac_structure")
            steps["hmac_sha256_hex"] = full.hex()
            steps["tag_hex"] = full[:8].hex()
            assert option.endswith(full[:8])
        else:
            to_sign = cose.sig_structure(protected, b"", content)
            steps["sig_structure"] = shown(to_sign, "sig_structure")
            if key.alg == Alg.ES256:
                steps["sig_structure_sha256_hex"] = hashlib.sha256(to_sign).hexdigest()
                steps["signature"] = "ES256 r || s, RFC 6979 deterministic in this vector"
            else:
                steps["signature"] = "Ed25519 over the Sig_structure (deterministic)"
            steps["signature_hex"] = cbor2.loads(option)[3].hex()
        coap_request = coap(
            case.code,
            mid=0x4000 + i,
            token=bytes((0x20 + i,)),
            path=case.path,
            query=case.query,
            content_format=case.content_format,
            echo=echo,
            proof=option,
            payload=case.payload,
        )
        entry: dict[str, Any] = {
            "name": case.name,
            "description": case.description,
            "key": case.key,
            "alg": key.alg.name,
            "kid_hex": key.kid.hex(),
            "request": {
                "method": case.code.name,
                "code": int(case.code),
                "path": list(case.path),
                "query": list(case.query),
                "content_format": case.content_format,
                "payload_hex": case.payload.hex(),
            },
            "piv": case.piv,
            "echo_hex": echo.hex() if echo is not None else None,
            "steps": steps,
            "option_value": shown(option, "proof"),
            "coap_request": coap_request,
            "sequence": case.sequence,
            "gateway_now": case.at,
        }
        if case.sequence is not None:
            if case.name.endswith("_first"):
                issued = echo_issuer.issue(key.kid, case.at)
                answers[case.name] = issued
                entry["gateway_answer"] = {"code": "4.01", "echo_hex": issued.hex()}
            else:
                entry["gateway_answer"] = {"code": "authorized"}
        out.append(entry)
    return out


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def load_wire(source: Path = HERE) -> dict[str, Any] | None:
    path = source / VECTORS / WIRE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def generate(out: Path, source: Path = HERE) -> list[Path]:
    """Write the vector files to ``out/vectors`` and the notes with their
    generated regions filled to ``out``; return the paths written."""
    vectors = build()
    wire = load_wire(source)
    written = []
    (out / VECTORS).mkdir(parents=True, exist_ok=True)
    for name, obj in vectors.items():
        path = out / VECTORS / name
        path.write_text(dump_json(obj))
        written.append(path)
    for doc in DOCS:
        src = source / doc
        if not src.exists():
            continue
        path = out / doc
        path.write_text(fill(src.read_text(), vectors, wire))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
