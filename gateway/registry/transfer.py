"""Copying a registry into a PostgreSQL database (``acegw registry migrate``).

The rows move as they are: PSKs stay sealed under the same master key (the
client id is their associated data, so a sealed PSK opens only under its own
id), token cut-offs, revocations, the change log's kinds (renumbered, one
``import`` change after them), the operators' audit trail and the AS keys
(sealed under the same master key, so tokens issued before the move stay
valid). The target must hold no clients (and no AS keys when keys are
copied); the copy is one transaction, so a failure leaves it empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.errors import RegistryError
from gateway.registry.registry import Registry
from gateway.registry.store import KeyRecord, redact


@dataclass(frozen=True, slots=True)
class TransferCounts:
    """What one copy moved."""

    clients: int
    revocations: int
    cutoffs: int
    changes: int
    actions: int
    keys: int = 0


def copy_registry(
    source: Registry,
    url: str,
    *,
    keys: Sequence[KeyRecord] = (),
    clock: Callable[[], float] = time.time,
) -> TransferCounts:
    """Copy ``source`` (opened with its master key, which checks the key) and
    the AS ``keys`` (sealed under that key:
    :meth:`gateway.authorization_server.keystore.Keystore.sealed_records`)
    into the PostgreSQL registry at ``url`` (created or migrated to the
    current schema first)."""
    from gateway.registry.postgres import PostgresStore, is_postgres_url

    if not is_postgres_url(url):
        raise RegistryError(f"{redact(url)} is not a postgresql:// URL")
    store = source.store
    check = store.key_check(lambda: b"")  # exists: the Registry checked it on open
    clients = store.clients()
    cutoffs = store.cutoffs()
    revoked = store.revoked()
    changes = store.changes_since(0)
    actions = store.search_actions()
    target = PostgresStore(url)
    try:
        target.import_rows(
            key_check=check,
            clients=clients,
            cutoffs=cutoffs,
            revoked=revoked,
            kinds=changes.kinds,
            actions=actions,
            at=clock(),
            keys=keys,
        )
    finally:
        target.close()
    return TransferCounts(
        len(clients), len(revoked), len(cutoffs), len(changes.kinds), len(actions), len(keys)
    )


__all__ = ["TransferCounts", "copy_registry"]
