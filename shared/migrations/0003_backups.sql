-- The backup catalog: one row per backup job (the command's jti), written by the maintenance
-- worker's backup engine (services/maintenance/backups) and read by the health probe `backups`.
-- The columns job_id, key, database, status, started_at, finished_at, size_bytes and sha256 are
-- the contract of docs/health-probes.md; the rest is the engine's own bookkeeping.
CREATE TABLE IF NOT EXISTS ops.backups (
    job_id          text PRIMARY KEY,
    key             text NOT NULL UNIQUE,
    database        text NOT NULL,
    status          text NOT NULL
                    CHECK (status IN ('running', 'succeeded', 'failed', 'pruned')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    size_bytes      bigint CHECK (size_bytes >= 0),
    sha256          text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    label           text,
    manifest        jsonb,
    pg_dump_version text,
    server_version  text,
    error           text,
    verified_at     timestamptz,
    verify_status   text CHECK (verify_status IN ('passed', 'failed', 'error')),
    verify_error    text,
    pruned_at       timestamptz,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status <> 'succeeded' OR (size_bytes IS NOT NULL AND sha256 IS NOT NULL))
);

-- The probe's query: the newest succeeded backup.
CREATE INDEX IF NOT EXISTS backups_succeeded_finished_idx
    ON ops.backups (finished_at DESC) WHERE status = 'succeeded';
-- Retention plans a database's backups at a time; verify picks the newest of one database.
CREATE INDEX IF NOT EXISTS backups_database_started_idx
    ON ops.backups (database, started_at DESC);
