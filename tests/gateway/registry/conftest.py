"""Store fixtures: ``store_location`` gives each contract test a new, empty
registry location on each backend (a SQLite file, a PostgreSQL database in
the throwaway cluster of :mod:`tests.postgres_cluster`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres_cluster import Cluster, pg_cluster, pg_url  # noqa: F401 - fixtures

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "r.db"
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()
