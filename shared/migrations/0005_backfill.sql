-- backfill.tenant_ids (docs/backfill-purge.md): one row per non-dry run, and its checkpoints.
--
-- A checkpoint (job, table) holds the primary key of the last row the run processed in that
-- table, written in the same transaction as the batch that processed it: after a crash the
-- database holds exactly what was done. A run that did not finish (crashed, cancelled, failed)
-- keeps finished_at NULL; the next backfill run takes it over (taken_over_by = its job id), copies
-- its checkpoints under its own job id and resumes after them. Runs are serialised by the
-- destructive-job advisory lock, so at most one run is ever open.
CREATE TABLE IF NOT EXISTS ops.backfill_runs (
    job_id         text PRIMARY KEY,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    resumed_from   text REFERENCES ops.backfill_runs (job_id),
    taken_over_by  text REFERENCES ops.backfill_runs (job_id),
    result         jsonb
);
CREATE INDEX IF NOT EXISTS backfill_runs_open
    ON ops.backfill_runs (started_at DESC) WHERE finished_at IS NULL AND taken_over_by IS NULL;

CREATE TABLE IF NOT EXISTS ops.backfill_checkpoints (
    job_id        text NOT NULL REFERENCES ops.backfill_runs (job_id),
    table_name    text NOT NULL,                 -- schema.table
    last_key      jsonb NOT NULL,                -- the primary key, a JSON array of text values
    updated       bigint NOT NULL DEFAULT 0,     -- rows set so far (across taken-over runs)
    unresolvable  bigint NOT NULL DEFAULT 0,     -- rows left NULL: no parent tenant to take
    sample        jsonb NOT NULL DEFAULT '[]',   -- primary keys of some unresolvable rows
    batches       bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, table_name)
);
