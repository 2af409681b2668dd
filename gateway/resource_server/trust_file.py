"""Trusted (identity, address) pairs of the lockout kept across a restart
(:mod:`gateway.resource_server.lockout`): each worker writes its own file
``trusted-pairs.<worker>.json`` beside the configuration when it stops and
every few minutes; at start a worker reads every worker's file (the port's
workers share one address space of devices). Identities are client ids or
RFC 9202 identities, never keys; the file is still written with mode 0600.
A missing, unreadable or malformed file is no trust, never an error."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from gateway.registry.masterkey import write_private_file

log = logging.getLogger(__name__)

PREFIX = "trusted-pairs."
#: Entries kept at most per file (the lockout's own table is bounded alike).
MAX_ENTRIES = 100_000


def trust_path(directory: Path, worker: int) -> Path:
    return directory / f"{PREFIX}{worker}.json"


def save(path: Path, pairs: list[tuple[bytes, str, float]]) -> None:
    """Replace ``path`` atomically with ``pairs``."""
    doc = [[identity.hex(), address, round(at, 3)] for identity, address, at in pairs]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        write_private_file(tmp, json.dumps(doc[-MAX_ENTRIES:]).encode())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep the trusted pairs in %s: %s", path, exc.strerror)


def load_all(directory: Path) -> list[tuple[bytes, str, float]]:
    """Every worker's kept pairs in ``directory``."""
    pairs: list[tuple[bytes, str, float]] = []
    for path in sorted(directory.glob(f"{PREFIX}*.json")):
        try:
            doc = json.loads(path.read_bytes())
            pairs += [
                (bytes.fromhex(identity), str(address), float(at))
                for identity, address, at in doc[:MAX_ENTRIES]
            ]
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring %s (%s): no trust kept from it", path, type(exc).__name__)
    return pairs
