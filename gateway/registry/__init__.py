"""The client registry: devices, their sealed PSKs, scopes and audiences,
revoked token ids and the operators' audit trail. :mod:`.registry` checks,
seals and serves the request path from memory; :mod:`.store` is the storage
interface and :mod:`.sqlite` its SQLite implementation; :mod:`.masterkey`
seals secrets at rest."""
