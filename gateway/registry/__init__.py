"""The client registry: devices, their sealed PSKs, scopes and audiences, and
revoked token ids, in SQLite (:mod:`.sqlite`), with the master key that seals
secrets at rest (:mod:`.masterkey`)."""
