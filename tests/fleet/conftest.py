"""Fleet tests: ``acegw serve`` instances on their own loopback addresses
sharing one PostgreSQL registry (the throwaway cluster of
:mod:`tests.postgres_cluster`)."""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.runtime.cli import main as cli_main
from tests.ops.conftest import ACEGW, Served, free_port, gateway_env, serving
from tests.postgres_cluster import pg_cluster, pg_url  # noqa: F401 - fixtures

HOSTS = ("127.0.0.1", "127.0.0.2")


@dataclass
class Instance:
    """One ``acegw serve`` of the fleet: its process, UDP target and environment."""

    served: Served
    target: tuple[str, int]
    env: dict[str, str]


async def start_instances(
    stack: contextlib.AsyncExitStack,
    state: Path | Sequence[Path],
    url: str,
    log_dir: Path,
    **extra: str,
) -> list[Instance]:
    """One single-worker instance per address of :data:`HOSTS`, every one
    from the same ``acegw init`` directory (or each from its own, as on
    separate machines) on the PostgreSQL registry."""
    instances = []
    states = [state] * len(HOSTS) if isinstance(state, Path) else list(state)
    for n, host in enumerate(HOSTS):
        udp, http = free_port(), free_port(socket.SOCK_STREAM)
        env = gateway_env(
            udp,
            http,
            ACEGW_REGISTRY_URL=url,
            ACEGW_SERVER_BIND=host,
            ACEGW_SERVER_WORKERS="1",
            **extra,
        )
        served = await stack.enter_async_context(
            serving(
                [*ACEGW, "serve", "--dir", str(states[n])], env, log_dir / f"gw{n}.log", udp, http
            )
        )
        instances.append(Instance(served, (host, udp), env))
    return instances


def cli(env: dict[str, str], *argv: str, code: int = 0) -> str:
    """Run an ``acegw`` command in-process against the instances' registry;
    asserts its exit code, returns what it printed."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACEGW_REGISTRY_URL", env["ACEGW_REGISTRY_URL"])
        assert cli_main(list(argv), out=out) == code, out.getvalue()
    return out.getvalue()
