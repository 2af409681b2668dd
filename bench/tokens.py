"""Token and proof verification: ours next to pycose 1.1.0, python-cwt and the
bare ``cryptography`` / ``hmac`` primitive (the floor), in one interleaved run.

    python -m bench.tokens [--tiny] [--rounds N] [--json FILE]

Operations (the same bytes feed every candidate of an operation):

* ``es256_token_verify``: a typical COSE_Sign1 ES256 CWT (iss, aud, exp, iat,
  cti, cnf = device P-256 COSE_Key, AIF scope; RFC 8392, RFC 9200 §5.10),
  tagged 18 because pycose and python-cwt need a tag. Ours is
  ``TokenVerifier.verify``; the floor is ECDSA P-256 over the same
  Sig_structure (RFC 9052 §4.4) with a pre-encoded DER signature.
* ``proof_mac0_verify``: the Proof option (HMAC 256/64) on the gateway's full
  path, option bytes to committed window: ``parse_proof`` -> key by kid ->
  ``ParsedProof.verify`` -> ``FreshnessGuard.check`` -> ``commit``, a fresh
  proof (next sequence number) every call. The floor is HMAC-SHA256 of one
  MAC_structure (RFC 9052 §6.3); pycose gets the same Mac0 tagged 17, with the
  detached content attached as its payload.
* ``enc0_token_decrypt``: an AES-CCM-16-64-128 COSE_Encrypt0 token with a
  symmetric PoP key in cnf, decrypted and its claims validated; the floor is
  ``AESCCM.decrypt`` with the same nonce, ciphertext and Enc_structure.
* extra rows, ours vs the floor only: ``eddsa_token_verify`` and
  ``proof_es256_verify`` (full path as for Mac0).

Every candidate is run once on a valid and once on a tampered input before
it is timed (see :mod:`bench._common`), so nothing times a no-op. A peer that
cannot run is listed with the reason. The last line printed is
``RESULT proof_mac0_us=.. es256_verify_us=.. vs_pycose=.. vs_cwt=..``
(the vs_ values: their ES256 verify time divided by ours).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from bench._common import (
    Candidate,
    Rejected,
    fixed,
    fmt_ratio,
    fmt_us,
    measure,
    print_table,
)
from tokens import cose
from tokens.aif import Scope
from tokens.cnf import CnfKey
from tokens.cwt import Claims, TokenVerifier, mint
from tokens.echo import EchoIssuer
from tokens.errors import BadSignature, EchoRequired, ReplayError
from tokens.keys import CoseKey, Ec2Key, KeySet, OkpKey, SymmetricKey
from tokens.params import Alg, CoseTag, HeaderLabel, Method
from tokens.proof import ProofedRequest, build_proof, detached_content, parse_proof
from tokens.replay import FreshnessGuard

AUDIENCE = "gw-bench"
ISSUER = "as-bench"
#: A sensor posting a reading: two path segments, CBOR payload.
REQUEST = ProofedRequest(Method.POST, ("sensors", "temp"), (), 60, b"\xa1\x01\xfb\x40\x36\x80")
#: The gateway's clock for proofs and windows (sans-I/O: any fixed value).
PROOF_NOW = 1_000_000.0


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes((data[-1] ^ 1,))


@dataclass
class Operation:
    key: str
    label: str
    candidates: list[Candidate]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ours(self) -> Candidate:
        return self.candidates[0]

    @property
    def peers(self) -> list[Candidate]:
        return self.candidates[1:]

    def peer(self, prefix: str) -> Candidate | None:
        return next((c for c in self.peers if c.name.startswith(prefix)), None)


# --- fixtures ----------------------------------------------------------------


@dataclass
class Fixture:
    now: float
    as_es: Ec2Key
    as_ed: OkpKey
    as_rs: SymmetricKey
    verifier: TokenVerifier
    es_claims: Claims
    ed_claims: Claims
    enc_claims: Claims
    es_token: bytes
    ed_token: bytes
    enc_token: bytes


def make_fixture() -> Fixture:
    # python-cwt checks exp against the real clock, so the claims use it too.
    now = time.time()
    as_es = Ec2Key.generate(b"as-es")
    as_ed = OkpKey.generate(b"as-ed")
    as_rs = SymmetricKey.generate(b"as-rs", Alg.AES_CCM_16_64_128)
    scope = Scope.parse("/sensors/temp:GET,POST /cfg:GET,PUT").encode()

    def claims(cnf: CnfKey) -> Claims:
        return Claims(
            iss=ISSUER,
            aud=AUDIENCE,
            exp=int(now) + 3600,
            iat=int(now),
            cti=os.urandom(8),
            cnf=cnf,
            scope=scope,
        )

    es_claims = claims(CnfKey(Ec2Key.generate(b"dev-ec-0001").public()))
    ed_claims = claims(CnfKey(OkpKey.generate(b"dev-ed-0001").public()))
    enc_claims = claims(CnfKey(SymmetricKey.generate(b"pop-0001", Alg.HMAC_256_64)))
    verifier = TokenVerifier(
        audience=AUDIENCE,
        issuer=ISSUER,
        keys=KeySet([as_es.public(), as_ed.public()]),
        decryption_keys=KeySet([as_rs]),
    )
    return Fixture(
        now=now,
        as_es=as_es,
        as_ed=as_ed,
        as_rs=as_rs,
        verifier=verifier,
        es_claims=es_claims,
        ed_claims=ed_claims,
        enc_claims=enc_claims,
        es_token=mint(es_claims, as_es, tagged=True),
        ed_token=mint(ed_claims, as_ed, tagged=True),
        enc_token=mint(enc_claims, as_rs, tagged=True),
    )


def _ours_token(fx: Fixture, token: bytes, expected: Claims) -> Candidate:
    verify, now = fx.verifier.verify, fx.now
    return Candidate(
        "ours",
        fn=lambda t: verify(t, now),
        batch=fixed(token),
        tampered=lambda: _flip_last(token),
        expect=lambda got: got == expected,
        rejects=(BadSignature,),
    )


def _guarded(make: Callable[[], Candidate], name: str) -> Candidate:
    """Build a peer candidate; any failure to set it up is its skip reason."""
    try:
        return make()
    except Exception as exc:
        return Candidate.unavailable(name, exc)


# --- peers: pycose and python-cwt --------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(not installed)"


PYCOSE = f"pycose {_version('pycose')}"
PYCWT = f"python-cwt {_version('cwt')}"


def _pycose_sign1(token: bytes, public: CoseKey, expected: dict[Any, Any]) -> Candidate:
    from pycose.keys.cosekey import CoseKey as PyKey
    from pycose.messages.sign1message import Sign1Message

    key: Any = PyKey.from_dict(public.to_cose())

    def run(data: bytes) -> Any:
        msg = Sign1Message.decode(data)
        msg.key = key
        if not msg.verify_signature():
            raise Rejected("signature")
        return cbor2.loads(msg.payload or b"")

    return Candidate(
        PYCOSE,
        fn=run,
        batch=fixed(token),
        tampered=lambda: _flip_last(token),
        expect=lambda got: got == expected,
        rejects=(Rejected,),
    )


def _pycwt(token: bytes, key_bytes: bytes, expected: dict[Any, Any]) -> Candidate:
    import cwt

    key = cwt.COSEKey.from_bytes(key_bytes)
    return Candidate(
        PYCWT,
        fn=lambda data: cwt.decode(data, key),
        batch=fixed(token),
        tampered=lambda: _flip_last(token),
        expect=lambda got: got == expected,
        rejects=(cwt.VerifyError, cwt.DecodeError),
    )


def _pycose_enc0(token: bytes, secret: CoseKey, expected: dict[Any, Any]) -> Candidate:
    from pycose.keys.cosekey import CoseKey as PyKey
    from pycose.messages.enc0message import Enc0Message

    key: Any = PyKey.decode(secret.encode(include_private=True))

    def run(data: bytes) -> Any:
        msg = Enc0Message.decode(data)
        msg.key = key
        return cbor2.loads(msg.decrypt())

    return Candidate(
        PYCOSE,
        fn=run,
        batch=fixed(token),
        tampered=lambda: _flip_last(token),
        expect=lambda got: got == expected,
        rejects=(InvalidTag,),
    )


def _pycose_mac0(option: bytes, pop: SymmetricKey) -> Candidate:
    from pycose.headers import PartialIV
    from pycose.keys.cosekey import CoseKey as PyKey
    from pycose.messages.mac0message import Mac0Message

    key: Any = PyKey.from_dict(pop.to_cose(include_private=True))
    tagged = b"\xd1" + option  # tag 17 (RFC 9052 §2): pycose decodes tagged only

    def run(data: bytes) -> int:
        msg = Mac0Message.decode(data)
        msg.key = key
        piv = int.from_bytes(msg.uhdr[PartialIV], "big")
        msg.payload = detached_content(REQUEST, piv, None)  # no detached mode for Mac0
        if not msg.verify_tag():
            raise Rejected("tag")
        return piv

    return Candidate(
        PYCOSE,
        fn=run,
        batch=fixed(tagged),
        tampered=lambda: _flip_last(tagged),
        expect=lambda piv: piv == 1,
        rejects=(Rejected,),
    )


# --- the floors ----------------------------------------------------------------

_ECDSA = ec.ECDSA(hashes.SHA256())


def _crypto_public(key: Ec2Key | OkpKey) -> Any:
    """The ``cryptography`` public key object, rebuilt from the COSE_Key."""
    m = key.public().to_cose()
    if isinstance(key, Ec2Key):
        x, y = (int.from_bytes(m[label], "big") for label in (-2, -3))
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    return ed25519.Ed25519PublicKey.from_public_bytes(m[-2])


def _der(raw: bytes) -> bytes:
    """A raw ``r || s`` ES256 signature (RFC 9053 §2.1) as DER."""
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _bare_sign1(token: bytes, public: Ec2Key | OkpKey) -> Candidate:
    msg = cose.decode(token, CoseTag.SIGN1)
    assert msg.payload is not None
    tbs = cose.sig_structure(msg.protected_bytes, b"", msg.payload)
    pub = _crypto_public(public)
    if isinstance(public, Ec2Key):
        name = "bare cryptography ECDSA P-256"
        good, bad = _der(msg.last), _der(_flip_last(msg.last))
        verify: Callable[[Any], Any] = lambda sig: pub.verify(sig, tbs, _ECDSA)  # noqa: E731
    else:
        name = "bare cryptography Ed25519"
        good, bad = msg.last, _flip_last(msg.last)
        verify = lambda sig: pub.verify(sig, tbs)  # noqa: E731
    return Candidate(
        name, fn=verify, batch=fixed(good), tampered=lambda: bad, rejects=(InvalidSignature,)
    )


def _bare_hmac(option: bytes, pop: SymmetricKey) -> Candidate:
    parsed = parse_proof(option)
    structure = cose.mac_structure(
        parsed.protected, b"", detached_content(REQUEST, parsed.piv, None)
    )
    secret, tag = pop.secret, parsed.tag

    def run(data: bytes) -> None:
        if not hmac.compare_digest(hmac.digest(secret, data, hashlib.sha256)[:8], tag):
            raise Rejected("tag")

    return Candidate(
        "bare HMAC-SHA256",
        fn=run,
        batch=fixed(structure),
        tampered=lambda: _flip_last(structure),
        rejects=(Rejected,),
    )


def _bare_aesccm(token: bytes, key: SymmetricKey) -> Candidate:
    msg = cose.decode(token, CoseTag.ENCRYPT0)
    iv = msg.unprotected[HeaderLabel.IV]
    aad = cose.enc_structure(msg.protected_bytes, b"")
    aead = AESCCM(key.secret, tag_length=8)
    return Candidate(
        "bare cryptography AESCCM",
        fn=lambda ct: aead.decrypt(iv, ct, aad),
        batch=fixed(msg.last),
        tampered=lambda: _flip_last(msg.last),
        rejects=(InvalidTag,),
    )


def _bare_ecdsa(tbs: bytes, raw_sig: bytes, public: Ec2Key) -> Candidate:
    pub = _crypto_public(public)
    der = _der(raw_sig)
    bad_tbs = _flip_last(tbs)
    return Candidate(
        "bare cryptography ECDSA P-256",
        fn=lambda data: pub.verify(der, data, _ECDSA),
        batch=fixed(tbs),
        tampered=lambda: bad_tbs,
        rejects=(InvalidSignature,),
    )


# --- the proof path ----------------------------------------------------------------


class ProofStream:
    """Fresh Proof option values for one PoP key, sequence numbers counting
    up, and the gateway state that verifies them (key set, replay guard with
    its window already opened by an Echo round trip, RFC 9175 §2.4)."""

    def __init__(self, key: CoseKey, verify_key: CoseKey) -> None:
        self.key = key
        self.keys = KeySet([verify_key])
        self.guard = FreshnessGuard(EchoIssuer(os.urandom(32)))
        self.piv = 0
        try:
            self.ours(build_proof(key, REQUEST, 0))
        except EchoRequired as need:
            echo = need.echo
        else:
            raise RuntimeError("a proof without a window was accepted")
        parsed = parse_proof(build_proof(key, REQUEST, 1, echo))
        parsed.verify(self.keys.get(parsed.kid), REQUEST, echo)
        self.guard.commit(parsed.kid, parsed.piv, echo, PROOF_NOW)
        self.piv = 2
        first = self.next(1)[0]
        self.ours(first)
        try:
            self.ours(first)
        except ReplayError:
            pass
        else:
            raise RuntimeError("a replayed proof was accepted")

    def next(self, n: int) -> list[bytes]:
        start, self.piv = self.piv, self.piv + n
        return [build_proof(self.key, REQUEST, p) for p in range(start, start + n)]

    def ours(self, option: bytes) -> int:
        """The gateway's path from option bytes to a committed window."""
        p = parse_proof(option)
        p.verify(self.keys.get(p.kid), REQUEST, None)
        self.guard.check(p.kid, p.piv, None, PROOF_NOW)
        self.guard.commit(p.kid, p.piv, None, PROOF_NOW)
        return p.piv

    def candidate(self) -> Candidate:
        return Candidate(
            "ours",
            fn=self.ours,
            batch=self.next,
            tampered=lambda: _flip_last(self.next(1)[0]),
            expect=lambda piv: isinstance(piv, int) and piv >= 2,
            rejects=(BadSignature,),
        )


# --- assembling the run ------------------------------------------------------------------


def build_operations(fx: Fixture) -> list[Operation]:
    es_dict = cbor2.loads(fx.es_claims.encode())
    enc_dict = cbor2.loads(fx.enc_claims.encode())
    es_pub = fx.as_es.public()

    es256 = Operation(
        "es256_token_verify",
        "ES256 token verify",
        [
            _ours_token(fx, fx.es_token, fx.es_claims),
            _bare_sign1(fx.es_token, es_pub),
            _guarded(lambda: _pycwt(fx.es_token, es_pub.encode(), es_dict), PYCWT),
            _guarded(lambda: _pycose_sign1(fx.es_token, es_pub, es_dict), PYCOSE),
        ],
        {"bytes": len(fx.es_token)},
    )

    pop = SymmetricKey.generate(b"pop-0001", Alg.HMAC_256_64)
    mac_stream = ProofStream(pop, pop)
    sample = build_proof(pop, REQUEST, 1)
    mac0 = Operation(
        "proof_mac0_verify",
        "Mac0 proof verify, full path",
        [
            mac_stream.candidate(),
            _bare_hmac(sample, pop),
            _guarded(lambda: _pycose_mac0(sample, pop), PYCOSE),
        ],
        {"bytes": len(sample)},
    )

    enc0 = Operation(
        "enc0_token_decrypt",
        "Encrypt0 token decrypt+validate",
        [
            _ours_token(fx, fx.enc_token, fx.enc_claims),
            _bare_aesccm(fx.enc_token, fx.as_rs),
            _guarded(
                lambda: _pycwt(fx.enc_token, fx.as_rs.encode(include_private=True), enc_dict),
                PYCWT,
            ),
            _guarded(lambda: _pycose_enc0(fx.enc_token, fx.as_rs, enc_dict), PYCOSE),
        ],
        {"bytes": len(fx.enc_token)},
    )

    eddsa = Operation(
        "eddsa_token_verify",
        "EdDSA token verify",
        [
            _ours_token(fx, fx.ed_token, fx.ed_claims),
            _bare_sign1(fx.ed_token, fx.as_ed.public()),
        ],
        {"bytes": len(fx.ed_token)},
    )

    dev = Ec2Key.generate(b"dev-ec-0001")
    es_stream = ProofStream(dev, dev.public())
    es_option = build_proof(dev, REQUEST, 1)
    parsed = parse_proof(es_option)
    es_tbs = cose.sig_structure(parsed.protected, b"", detached_content(REQUEST, 1, None))
    es_proof = Operation(
        "proof_es256_verify",
        "ES256 proof verify, full path",
        [es_stream.candidate(), _bare_ecdsa(es_tbs, parsed.tag, dev.public())],
        {"bytes": len(es_option)},
    )
    return [es256, mac0, enc0, eddsa, es_proof]


# --- report ------------------------------------------------------------------------------


def _ratio(peer: Candidate | None, ours: Candidate) -> float:
    """Peer time / our time (> 1: ours is faster); NaN if the peer did not run."""
    if peer is None or peer.skipped is not None:
        return float("nan")
    return peer.best_us / ours.best_us


def _targets(ops: dict[str, Operation]) -> list[dict[str, Any]]:
    es, mac, enc = ops["es256_token_verify"], ops["proof_mac0_verify"], ops["enc0_token_decrypt"]
    bare = es.peer("bare")
    floor = float("nan") if bare is None else es.ours.best_us / bare.best_us
    rows = [
        ("Mac0 proof verify, full path (us)", mac.ours.best_us, "<=", 15.0),
        ("ES256 token verify / bare ECDSA verify", floor, "<=", 1.5),
        ("pycose ES256 verify / ours", _ratio(es.peer("pycose"), es.ours), ">=", 20.0),
        ("python-cwt ES256 verify / ours", _ratio(es.peer("python-cwt"), es.ours), ">", 1.0),
        ("python-cwt Encrypt0 decrypt / ours", _ratio(enc.peer("python-cwt"), enc.ours), ">", 1.0),
    ]
    out = []
    for label, value, op, limit in rows:
        if value != value:
            verdict = "SKIP"
        elif op == "<=":
            verdict = "PASS" if value <= limit else "MISS"
        elif op == ">=":
            verdict = "PASS" if value >= limit else "MISS"
        else:
            verdict = "PASS" if value > limit else "MISS"
        out.append({"target": label, "value": value, "op": op, "limit": limit, "verdict": verdict})
    return out


def _jsonable(x: float) -> float | None:
    return None if x != x else round(x, 3)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, targets and the RESULT line;
    return what ``--json`` writes."""
    parser = argparse.ArgumentParser(prog="python -m bench.tokens", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="smoke run of a second or two")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.tiny else 9)
    batch_seconds = 0.002 if args.tiny else 0.05

    fx = make_fixture()
    operations = build_operations(fx)
    ops = {op.key: op for op in operations}
    measure(
        [c for op in operations for c in op.candidates], rounds=rounds, batch_seconds=batch_seconds
    )
    broken = [op.label for op in operations if op.ours.skipped is not None]
    if broken:
        for op in operations:
            if op.ours.skipped is not None:
                print(f"ERROR {op.label}: ours {op.ours.skipped}", file=sys.stderr)
        raise SystemExit(f"our implementation failed its correctness check: {broken}")

    versions = {
        "python": platform.python_version(),
        "cryptography": _version("cryptography"),
        "cbor2": _version("cbor2"),
        "pycose": _version("pycose"),
        "cwt": _version("cwt"),
    }
    print(
        f"bench.tokens ({'tiny' if args.tiny else 'full'}): microseconds per operation, "
        f"best of {rounds} interleaved batches; ratio = peer / ours (> 1: ours faster)"
    )
    print(", ".join(f"{k} {v}" for k, v in versions.items()) + f"; {os.cpu_count()} CPUs")
    print("inputs: " + ", ".join(f"{op.label} {op.info['bytes']} B" for op in operations))
    print()
    rows = []
    for op in operations:
        for peer in op.peers:
            if peer.skipped is not None:
                rows.append(
                    [op.label, peer.name, fmt_us(op.ours.best_us), "n/a", "-", peer.skipped]
                )
            else:
                ratio = _ratio(peer, op.ours)
                rows.append(
                    [
                        op.label,
                        peer.name,
                        fmt_us(op.ours.best_us),
                        fmt_us(peer.best_us),
                        fmt_ratio(ratio),
                    ]
                )
    print_table(["operation", "peer", "ours_us", "peer_us", "ratio"], rows, left=2)
    print()
    targets = _targets(ops)
    for t in targets:
        value = t["value"]
        shown = "n/a" if value != value else f"{value:.2f}"
        print(f"{t['verdict']:4}  {t['target']}: {shown} (target {t['op']} {t['limit']:g})")

    es = ops["es256_token_verify"]
    result = {
        "proof_mac0_us": ops["proof_mac0_verify"].ours.best_us,
        "es256_verify_us": es.ours.best_us,
        "vs_pycose": _ratio(es.peer("pycose"), es.ours),
        "vs_cwt": _ratio(es.peer("python-cwt"), es.ours),
    }
    report = {
        "bench": "tokens",
        "mode": "tiny" if args.tiny else "full",
        "rounds": rounds,
        "versions": versions,
        "operations": {
            op.key: {
                "label": op.label,
                **op.info,
                "candidates": {c.name: c.summary() for c in op.candidates},
            }
            for op in operations
        },
        "targets": [{**t, "value": _jsonable(t["value"])} for t in targets],
        "result": {k: _jsonable(v) for k, v in result.items()},
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")
    print()
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in result.items()))
    return report


if __name__ == "__main__":
    main()
