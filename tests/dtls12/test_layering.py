"""The packages' import direction (docs/design.md, "Packages and their
direction"): ``dtls12`` is a leaf (standard library and ``cryptography``,
no asyncio, no sockets), the simulator never imports ``gateway``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level module names each file of ``package`` imports (absolute imports)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_dtls12_is_a_sans_io_leaf() -> None:
    allowed = set(sys.stdlib_module_names) - {"asyncio", "socket", "selectors", "time"}
    allowed |= {"cryptography", "__future__"}
    offending = {
        path: sorted(names - allowed)
        for path, names in imported_roots("dtls12").items()
        if names - allowed
    }
    assert offending == {}


def test_simulator_and_tokens_never_import_gateway() -> None:
    for package in ("device_sim", "tokens", "dtls12"):
        offending = [path for path, names in imported_roots(package).items() if "gateway" in names]
        assert offending == [], package


def test_gateway_and_simulator_use_dtls12() -> None:
    # the engine lives in one place: both sides import it by its package name
    assert any("dtls12" in names for names in imported_roots("device_sim").values())
    assert any("dtls12" in names for names in imported_roots("gateway").values())
    assert not (ROOT / "gateway" / "dtls" / "engine").exists()
