"""Which implementation runs: the C extensions or their Python references.

C is used only at the leaves, for primitives with no policy in them (the
MAC over a proof's detached content, the replay window, the token bucket,
CoAP option decoding); each has a pure-Python reference it is tested
against. :data:`EXTENSIONS` names them with their sources; :func:`choices`
says which runs in this process (start-up logs it, the metric
``acegw_native_extension`` exports it); :func:`stale_extensions` finds a
built extension older than its source (the test suite refuses to run on
one: ``make venv`` rebuilds it).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path

#: Extension module -> its C source, relative to the project root (setup.py).
EXTENSIONS: dict[str, str] = {
    "tokens._mac0": "tokens/_mac0.c",
    "tokens._window": "tokens/_window.c",
    "gateway.resource_server._bucket": "gateway/resource_server/_bucket.c",
    "gateway.dtls._codec": "gateway/dtls/_codec.c",
}
#: What each extension accelerates, for the log line.
PURPOSE: dict[str, str] = {
    "tokens._mac0": "Mac0 proof check",
    "tokens._window": "replay window",
    "gateway.resource_server._bucket": "rate-limit buckets",
    "gateway.dtls._codec": "CoAP option decoding",
}
_ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)


def choices() -> dict[str, bool]:
    """Extension module -> whether it runs (False: the Python reference),
    as the modules that use them decided at import."""
    from gateway.dtls import codec
    from gateway.resource_server import rate_limits
    from tokens import proof, replay

    return {
        "tokens._mac0": proof.ACCELERATED,
        "tokens._window": replay.ACCELERATED,
        "gateway.resource_server._bucket": rate_limits.ACCELERATED,
        "gateway.dtls._codec": codec.ACCELERATED,
    }


def log_choices() -> dict[str, bool]:
    """Log which implementation runs (once per process, at start-up)."""
    chosen = choices()
    log.info(
        "native code: %s",
        ", ".join(f"{PURPOSE[m]} {'C' if c else 'Python'}" for m, c in chosen.items()),
    )
    missing = [m for m, c in chosen.items() if not c]
    if missing:
        log.warning("C extensions not built, Python references run: %s", ", ".join(missing))
    return chosen


def stale_extensions(root: Path = _ROOT) -> list[str]:
    """Extensions that are not built or older than their C source, each with
    why (for a source checkout; an installed package has no sources)."""
    problems = []
    for module, source in EXTENSIONS.items():
        c_file = root / source
        if not c_file.exists():
            continue
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            problems.append(f"{module} is not built from {source}")
            continue
        built = Path(spec.origin)
        if built.stat().st_mtime < c_file.stat().st_mtime:
            problems.append(f"{module} ({built.name}) is older than {source}")
    return problems


__all__ = ["EXTENSIONS", "choices", "log_choices", "stale_extensions"]
