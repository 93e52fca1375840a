-- The maintenance worker's scheduler (docs/schedule.md).

-- One row per schedule entry and fire time: what was decided for it, by the first replica to
-- decide (the primary key makes the decision once across every replica). A run is a job
-- (outcome queued, or rejected when this worker cannot run the action); a skip has no job.
CREATE TABLE IF NOT EXISTS ops.schedule_fires (
    name        text NOT NULL,
    fire_time   timestamptz NOT NULL,
    action      text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN
                    ('queued', 'rejected', 'skipped_overlap', 'skipped_misfire')),
    job_id      text,
    detail      text NOT NULL DEFAULT '',
    worker      text,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, fire_time),
    CHECK ((job_id IS NOT NULL) = (outcome IN ('queued', 'rejected')))
);
CREATE INDEX IF NOT EXISTS schedule_fires_job ON ops.schedule_fires (job_id)
    WHERE job_id IS NOT NULL;

-- A free-text note on an audit row (a scheduled run says which entry and fire time).
ALTER TABLE ops.command_audit ADD COLUMN IF NOT EXISTS note text;
