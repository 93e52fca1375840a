-- The ops schema's first objects: a registry of opsplane instances that touched this database
-- (which versions ran migrations when), so an operator can tell which release did what.
CREATE TABLE IF NOT EXISTS ops.instances (
    instance    text PRIMARY KEY,
    service     text NOT NULL,
    version     text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
