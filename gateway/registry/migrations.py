"""Versioned schema of the PostgreSQL registry store.

Each :class:`Migration` is applied once, in order, inside one transaction
that also records it in ``schema_migrations``; a transaction-scoped advisory
lock makes instances that start together apply each step exactly once
(https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS).
A database whose newest recorded version is above :data:`LATEST` belongs to
a newer acegw and is refused rather than written to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``version`` (1, 2, ...), a name for the operator and
    its SQL statements."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "clients, revocations, change log, cut-offs, lockout lifts, operator audit",
        (
            """CREATE TABLE meta (
                name  text PRIMARY KEY,
                value bytea NOT NULL
            )""",
            """CREATE TABLE clients (
                client_id     text COLLATE "C" PRIMARY KEY,
                psk           bytea NOT NULL,
                scope         text NOT NULL,
                default_scope text,
                audiences     text NOT NULL DEFAULT '[]',
                public_key    bytea,
                enabled       boolean NOT NULL DEFAULT true,
                created_at    double precision NOT NULL,
                rotated_at    double precision,
                generation    integer NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE revoked (
                cti bytea PRIMARY KEY,
                exp double precision NOT NULL
            )""",
            "CREATE INDEX revoked_exp ON revoked (exp)",
            """CREATE TABLE changelog (
                seq       bigserial PRIMARY KEY,
                kind      text NOT NULL,
                client_id text COLLATE "C",
                at        double precision NOT NULL
            )""",
            """CREATE TABLE client_cutoffs (
                client_id text COLLATE "C" PRIMARY KEY,
                at        double precision NOT NULL
            )""",
            """CREATE TABLE ban_lifts (
                seq      bigint PRIMARY KEY,
                address  text,
                identity bytea
            )""",
            """CREATE TABLE operator_audit (
                seq      bigserial PRIMARY KEY,
                at       double precision NOT NULL,
                operator text NOT NULL,
                action   text NOT NULL,
                target   text,
                outcome  text NOT NULL,
                detail   text NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX operator_audit_target ON operator_audit (target, at)",
        ),
    ),
    Migration(
        2,
        "tokens accepted by /authz-info, by proof-of-possession key id",
        (
            """CREATE TABLE held_tokens (
                kid       bytea PRIMARY KEY,
                token     bytea NOT NULL,
                exp       double precision NOT NULL,
                stored_at double precision NOT NULL
            )""",
            "CREATE INDEX held_tokens_exp ON held_tokens (exp)",
        ),
    ),
    Migration(
        3,
        "AS keys, private parts sealed under the master key",
        (
            """CREATE TABLE as_keys (
                kid        bytea PRIMARY KEY,
                kind       text NOT NULL CHECK (kind IN ('signing', 'as_rs')),
                alg        text NOT NULL,
                status     text NOT NULL CHECK (status IN ('current', 'active', 'retired')),
                created_at double precision NOT NULL,
                retired_at double precision,
                sealed     bytea NOT NULL
            )""",
            # at most one current key per kind, whatever two writers do
            "CREATE UNIQUE INDEX as_keys_current ON as_keys (kind) WHERE status = 'current'",
        ),
    ),
    Migration(
        4,
        "tokens issued by the embedded AS, by hash (RFC 9770 token revocation list)",
        (
            """CREATE TABLE issued_tokens (
                hash      bytea PRIMARY KEY,
                cti       bytea NOT NULL,
                client_id text COLLATE "C" NOT NULL,
                audience  text NOT NULL,
                iat       double precision NOT NULL,
                exp       double precision NOT NULL
            )""",
            "CREATE INDEX issued_tokens_cti ON issued_tokens (cti)",
            "CREATE INDEX issued_tokens_client ON issued_tokens (client_id, iat)",
            "CREATE INDEX issued_tokens_exp ON issued_tokens (exp)",
        ),
    ),
)

#: The schema version this acegw writes.
LATEST = MIGRATIONS[-1].version

__all__ = ["LATEST", "MIGRATIONS", "Migration"]
