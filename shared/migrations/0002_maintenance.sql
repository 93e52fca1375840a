-- The maintenance worker's state (docs/maintenance.md): jobs, the command audit trail and the
-- durable replay store of signed commands.

-- One row per job; job_id is the command's jti (or, for a rejected command whose jti cannot be
-- used, "t-" + the first 40 hex digits of the token's sha256).
CREATE TABLE IF NOT EXISTS ops.jobs (
    job_id       text PRIMARY KEY,
    action       text NOT NULL,
    state        text NOT NULL CHECK (state IN
                     ('queued', 'running', 'succeeded', 'failed', 'rejected', 'cancelled')),
    issuer       text,
    kid          text,
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    progress     jsonb NOT NULL DEFAULT '{}'::jsonb,
    message      text NOT NULL DEFAULT '',
    result       jsonb,
    error        text,
    -- The JetStream stream sequence of the command message: tells a redelivery of the same
    -- message (a duplicate) from the same token published again (a replay).
    stream_seq   bigint,
    -- The worker instance running the job and its lease: a running job whose lease is not
    -- renewed (updated_at) belongs to a lost worker and is marked failed.
    worker       text,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS jobs_recent ON ops.jobs (created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_active ON ops.jobs (state, updated_at)
    WHERE state IN ('queued', 'running');

-- Every command the worker received, accepted or not: append-only (UPDATE and DELETE refused).
-- Never a secret: the token itself is not stored, only its sha256.
CREATE TABLE IF NOT EXISTS ops.command_audit (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    subject      text NOT NULL,
    stream_seq   bigint,
    jti          text,
    kid          text,
    issuer       text,
    action       text,
    outcome      text NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'duplicate')),
    reason       text,
    job_id       text,
    token_sha256 text NOT NULL,
    worker       text
);
CREATE INDEX IF NOT EXISTS command_audit_received ON ops.command_audit (received_at DESC);
CREATE INDEX IF NOT EXISTS command_audit_jti ON ops.command_audit (jti);

CREATE OR REPLACE FUNCTION ops.refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ops.command_audit is append-only';
END;
$$;
DROP TRIGGER IF EXISTS command_audit_append_only ON ops.command_audit;
CREATE TRIGGER command_audit_append_only BEFORE UPDATE OR DELETE ON ops.command_audit
    FOR EACH ROW EXECUTE FUNCTION ops.refuse_audit_change();

-- The durable replay store: a jti whose signature verified is recorded here and kept at least
-- until the token's exp (plus clock skew); older rows are deleted by the worker.
CREATE TABLE IF NOT EXISTS ops.command_replay (
    jti          text PRIMARY KEY,
    expires_at   timestamptz NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS command_replay_expires ON ops.command_replay (expires_at);
