"""Fleet tests: ``acegw serve`` instances on their own loopback addresses
sharing one PostgreSQL registry (the throwaway cluster of
:mod:`tests.postgres_cluster`)."""

from __future__ import annotations

from tests.postgres_cluster import pg_cluster, pg_url  # noqa: F401 - fixtures
