"""The throwaway PostgreSQL cluster of :mod:`bench._fleet` as pytest fixtures
(import them into a conftest): ``pg_cluster`` (one per session) and
``pg_url`` (a fresh database per test). When the cluster cannot start, the
fixture fails with the reason; it never skips."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench._fleet import Cluster, running_cluster

__all__ = ["Cluster", "pg_cluster", "pg_url"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    return pg_cluster.create_database()
