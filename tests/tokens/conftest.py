"""Fixtures that load the RFC test vectors kept in ``tests/tokens/vectors/``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest

from tokens.keys import CoseKey, SymmetricKey, key_from_cose
from tokens.params import Alg, KeyParam, KeyType

VECTORS = Path(__file__).parent / "vectors"


@dataclass(frozen=True)
class Rfc8392:
    """RFC 8392 Appendix A: keys by kid (text), examples by section."""

    keys: dict[str, CoseKey]
    examples: dict[str, dict[str, Any]]

    def bytes_of(self, section: str) -> bytes:
        return bytes.fromhex(self.examples[section]["hex"])


def _load_rfc8392() -> Rfc8392:
    base = VECTORS / "rfc8392"
    keys: dict[str, CoseKey] = {}
    for entry in json.loads((base / "keys.json").read_text())["keys"]:
        raw = bytes.fromhex(entry["cose_key"])
        m = cbor2.loads(raw)
        if m[KeyParam.KTY] == KeyType.SYMMETRIC:
            # A.2.2 names alg 10 but is used with HMAC 256/64: the file says which.
            key: CoseKey = SymmetricKey(m[KeyParam.KID], m[KeyParam.K], Alg[entry["alg"]])
        else:
            key = key_from_cose(raw)
        assert key.alg == Alg[entry["alg"]] and key.kid == entry["kid"].encode()
        keys[entry["kid"]] = key
    examples = {}
    for path in sorted(base.glob("a*.json")):
        data = json.loads(path.read_text())
        examples[data["section"]] = data
    return Rfc8392(keys, examples)


@pytest.fixture(scope="session")
def rfc8392() -> Rfc8392:
    return _load_rfc8392()
