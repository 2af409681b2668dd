"""Smoke test of ``bench.tokens`` in its tiny mode, the correctness gate that
stops it from timing a no-op, and the lazy cnf point it measures (RFC 8747
§3.2 COSE_Key loaded on first use)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest

import tokens.cnf
from bench._common import Candidate, fixed
from bench.tokens import main, make_fixture
from tokens import cose
from tokens.cnf import CnfKey
from tokens.cwt import TokenVerifier, decode_unverified
from tokens.errors import MalformedError
from tokens.params import CoapCode

ROOT = Path(__file__).resolve().parent.parent
RESULT = re.compile(
    r"^RESULT proof_mac0_us=(\S+) es256_verify_us=(\S+) vs_pycose=(\S+) vs_cwt=(\S+)$"
)


def test_tiny_run_checks_every_candidate_and_ends_with_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "bench.json"
    report = main(["--tiny", "--json", str(out_file)])
    lines = capsys.readouterr().out.rstrip("\n").splitlines()

    match = RESULT.match(lines[-1])
    assert match, lines[-1]
    values = [float(v) for v in match.groups()]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert json.loads(out_file.read_text()) == json.loads(json.dumps(report))

    ops = report["operations"]
    assert set(ops) == {
        "es256_token_verify",
        "proof_mac0_verify",
        "enc0_token_decrypt",
        "eddsa_token_verify",
        "proof_es256_verify",
    }
    for key, op in ops.items():
        cands = op["candidates"]
        # ours verified a valid input and refused a tampered one before timing
        assert cands["ours"]["checked"] is True, key
        assert cands["ours"]["best_us"] > 0
        assert len(cands) >= 2
        for name, c in cands.items():
            assert c.get("checked") is True or c.get("skipped"), (key, name)
            assert any(name in line for line in lines), name  # listed, never dropped
    es = ops["es256_token_verify"]["candidates"]
    assert {"pycose 1.1.0", "bare cryptography ECDSA P-256"} <= set(es)
    assert all(c.get("checked") for c in es.values()), es  # the peers really ran
    assert values[1] == pytest.approx(es["ours"]["best_us"], abs=0.01)
    verdicts = [t["verdict"] for t in report["targets"]]
    assert len(verdicts) == 5 and set(verdicts) <= {"PASS", "MISS"}
    assert sum(line.startswith(("PASS", "MISS")) for line in lines) == 5


def test_module_entry_point_tiny() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.tokens", "--tiny", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert RESULT.match(proc.stdout.strip().splitlines()[-1])


def test_a_verifier_that_checks_nothing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Claims without verification: right result, but the tampered token passes
    too, so the benchmark stops instead of timing it."""

    def no_op(self: TokenVerifier, token: bytes, now: float) -> Any:
        return decode_unverified(token, reveal_keys=True).claims

    monkeypatch.setattr(TokenVerifier, "verify", no_op)
    with pytest.raises(SystemExit, match="correctness check"):
        main(["--tiny", "--rounds", "1"])


def test_candidate_check_names_what_is_wrong() -> None:
    def refuse(_: Any) -> None:
        raise ValueError("no")

    noop = Candidate("noop", fn=lambda x: x, batch=fixed(b"ok"), tampered=lambda: b"bad")
    assert noop.check() == "accepted a tampered input"
    wrong = Candidate(
        "wrong", fn=lambda x: x, batch=fixed(b"ok"), tampered=lambda: 1, expect=lambda r: r == 2
    )
    assert wrong.check() == "wrong result for a valid input"
    refusing = Candidate("refuse", fn=refuse, batch=fixed(b"ok"), tampered=lambda: b"")
    assert (refusing.check() or "").startswith("refused a valid input")
    picky = Candidate(
        "picky", fn=refuse, batch=fixed(b"ok"), tampered=lambda: b"", rejects=(KeyError,)
    )
    assert (picky.check() or "").startswith("refused a valid input")
    good = Candidate(
        "good",
        fn=lambda x: x if x == b"ok" else refuse(x),
        batch=fixed(b"ok"),
        tampered=lambda: b"bad",
        rejects=(ValueError,),
    )
    assert good.check() is None


# --- the lazy cnf COSE_Key (tokens/cnf.py) ------------------------------------------


def test_es256_verify_does_not_load_the_cnf_point(monkeypatch: pytest.MonkeyPatch) -> None:
    fx = make_fixture()
    calls: list[Any] = []
    real = tokens.cnf.key_from_cose

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(tokens.cnf, "key_from_cose", counting)
    claims = fx.verifier.verify(fx.es_token, fx.now)
    cnf = claims.cnf
    assert isinstance(cnf, CnfKey)
    expected = fx.es_claims.cnf
    assert isinstance(expected, CnfKey)
    assert (cnf.kid, cnf.alg, cnf.kty) == (expected.kid, expected.key.alg, expected.key.kty)
    assert calls == []  # kid/alg/kty did not load it either
    assert "point not loaded" in repr(cnf)
    assert cnf.key.to_cose() == expected.key.to_cose()
    assert cnf.key is cnf.key and len(calls) == 1  # loaded once, then cached
    assert cnf == expected


def test_an_off_curve_cnf_point_fails_on_first_use() -> None:
    fx = make_fixture()
    payload = fx.es_claims.to_cbor()
    cose_key = dict(payload[8][1])
    cose_key[-3] = bytes(32)  # y = 0: not on P-256
    payload[8] = {1: cose_key}
    token = cose.sign1(fx.as_es, cbor2.dumps(payload), tagged=True)

    claims = fx.verifier.verify(token, fx.now)  # the AS signed it: shape is fine
    assert isinstance(claims.cnf, CnfKey) and claims.cnf.kid == cose_key[2]
    for _ in range(2):  # nothing cached on failure
        with pytest.raises(MalformedError) as info:
            _ = claims.cnf.key
        assert info.value.coap_code == CoapCode.BAD_REQUEST
