"""The operators' audit trail: one record per ``acegw`` command that changes
something (clients, revocations, keys, lockout lifts), with who ran it, when,
on what, and the outcome.

Records live in the registry store next to its change log
(:meth:`gateway.registry.store.RegistryStore.record_action`), so every
process and every instance sharing the registry sees the same history
(``acegw audit tail`` / ``acegw audit search``). A record is written after
the action, in its own transaction, whether the action succeeded or was
refused. It holds ids, counts and settings, never a PSK, a key or a token
(``detail`` refuses bytes).
"""

from __future__ import annotations

import getpass
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.errors import InvalidArgument, RegistryError
from gateway.registry.store import ActionQuery, OperatorAction, RegistryStore, open_store


def operator_name(env: Mapping[str, str] | None = None) -> str:
    """The OS user running the command; under sudo, also who invoked it."""
    env = os.environ if env is None else env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.geteuid()}"
    sudo = env.get("SUDO_USER")
    return f"{user} (sudo by {sudo})" if sudo and sudo != user else user


class OperatorAudit:
    """The operators' audit trail of one registry store (no master key needed)."""

    def __init__(
        self, store: RegistryStore | str | Path, *, clock: Callable[[], float] = time.time
    ) -> None:
        """``store``: a :class:`RegistryStore` or its location (which must exist)."""
        self.store = store if isinstance(store, RegistryStore) else open_store(store, create=False)
        self._clock = clock

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> OperatorAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(
        self,
        action: str,
        target: str | None,
        outcome: str,
        detail: Mapping[str, Any] | None = None,
        *,
        operator: str | None = None,
    ) -> int:
        """Append one record; returns its sequence number."""
        detail = dict(detail or {})
        for key, value in detail.items():
            if isinstance(value, bytes | bytearray):
                raise TypeError(f"audit detail {key!r}: pass hex ids, never bytes")
        text = json.dumps(detail, separators=(",", ":"), sort_keys=True)
        try:
            return self.store.record_action(
                self._clock(), operator or operator_name(), action, target, outcome, text
            )
        except RegistryError as exc:
            raise RegistryError(f"cannot write the audit record: {exc}") from None

    def search(
        self,
        *,
        target: str | None = None,
        action: str | None = None,
        operator: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[OperatorAction]:
        """Matching records, oldest first (:class:`ActionQuery`)."""
        if limit is not None and limit < 1:
            raise InvalidArgument("the number of records must be at least 1")
        return self.store.search_actions(ActionQuery(target, action, operator, since, until, limit))


__all__ = ["OperatorAction", "OperatorAudit", "operator_name"]
