-- Seed data for the demo app: 5 tenants with users, projects, memberships, time entries
-- (finished ones and running timers) and comments. Idempotent: fixed ids, ON CONFLICT DO NOTHING
-- (which also covers the one-running-timer-per-user index), so loading it again changes nothing.
-- Times are relative to the first load. Old rows (every 4th entry, some memberships and
-- comments) lack tenant_id, as they would after the column was added: backfill material.

DROP TABLE IF EXISTS pg_temp.seed_plan;
CREATE TEMP TABLE seed_plan (tenant_id text, n int, users int, projects int, running int);
INSERT INTO seed_plan VALUES
    ('acme', 1, 6, 4, 2),
    ('globex', 2, 5, 3, 1),
    ('initech', 3, 4, 3, 1),
    ('umbrella', 4, 8, 4, 3),
    ('hooli', 5, 5, 3, 2);

INSERT INTO tenants (id, name, plan) VALUES
    ('acme', 'Acme Corp', 'business'),
    ('globex', 'Globex Corporation', 'team'),
    ('initech', 'Initech', 'team'),
    ('umbrella', 'Umbrella Corporation', 'enterprise'),
    ('hooli', 'Hooli', 'business')
ON CONFLICT DO NOTHING;

INSERT INTO users (id, tenant_id, email, name, role)
SELECT s.n * 100 + u, s.tenant_id,
       format('%s@%s.example', lower((ARRAY['ada', 'grace', 'linus', 'margaret', 'ken',
              'barbara', 'edsger', 'frances'])[u]), s.tenant_id),
       (ARRAY['Ada', 'Grace', 'Linus', 'Margaret', 'Ken', 'Barbara', 'Edsger', 'Frances'])[u],
       CASE WHEN u = 1 THEN 'admin' ELSE 'member' END
FROM seed_plan s, generate_series(1, s.users) AS u
ON CONFLICT DO NOTHING;

INSERT INTO projects (id, tenant_id, name)
SELECT s.n * 100 + p, s.tenant_id,
       (ARRAY['Website relaunch', 'Mobile app', 'Billing', 'Customer onboarding'])[p]
FROM seed_plan s, generate_series(1, s.projects) AS p
ON CONFLICT DO NOTHING;

-- Each user is in two projects; a third of the memberships predate the tenant_id column.
INSERT INTO project_members (id, project_id, user_id, tenant_id, role)
SELECT s.n * 1000 + u * 10 + p, s.n * 100 + p, s.n * 100 + u,
       CASE WHEN (u + p) % 3 = 0 THEN NULL ELSE s.tenant_id END,
       CASE WHEN u = 1 THEN 'owner' ELSE 'member' END
FROM seed_plan s, generate_series(1, s.users) AS u,
     LATERAL (VALUES ((u - 1) % s.projects + 1), (u % s.projects + 1)) AS pick (p)
ON CONFLICT DO NOTHING;

-- Twelve finished entries per user over the last days; every 4th predates tenant_id.
INSERT INTO time_entries (id, project_id, user_id, tenant_id, description, started_at, ended_at)
SELECT s.n * 100000 + u * 100 + k, s.n * 100 + (u + k) % s.projects + 1, s.n * 100 + u,
       CASE WHEN k % 4 = 0 THEN NULL ELSE s.tenant_id END,
       (ARRAY['Design review', 'Bug triage', 'Standup', 'Implementation', 'Support'])[k % 5 + 1],
       date_trunc('hour', now()) - make_interval(days => k, hours => u),
       date_trunc('hour', now()) - make_interval(days => k, hours => u)
           + make_interval(mins => 20 + (k * u * 37) % 200)
FROM seed_plan s, generate_series(1, s.users) AS u, generate_series(1, 12) AS k
ON CONFLICT DO NOTHING;

-- Running timers (ended_at IS NULL): every tenant has some, so active timers show per tenant.
INSERT INTO time_entries (id, project_id, user_id, tenant_id, description, started_at)
SELECT s.n * 100000 + u * 100, s.n * 100 + u % s.projects + 1, s.n * 100 + u, s.tenant_id,
       'Working on it', now() - make_interval(mins => u * 23 + s.n * 5)
FROM seed_plan s, generate_series(1, s.running) AS u
ON CONFLICT DO NOTHING;

-- Comments on some finished entries; those on old entries (k = 12) lack tenant_id like their
-- parent, so the backfill must fill time_entries before time_entry_comments.
INSERT INTO time_entry_comments (id, time_entry_id, tenant_id, body)
SELECT s.n * 100000 + u * 100 + k, s.n * 100000 + u * 100 + k,
       CASE WHEN k = 12 OR (u + k) % 5 = 0 THEN NULL ELSE s.tenant_id END,
       (ARRAY['Billable', 'Needs approval', 'Approved'])[k / 3 % 3 + 1]
FROM seed_plan s, generate_series(1, s.users) AS u, unnest(ARRAY[3, 6, 9, 12]) AS k
ON CONFLICT DO NOTHING;

-- Identity sequences past the seeded ids, so the app's own inserts never collide with them.
SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users));
SELECT setval(pg_get_serial_sequence('projects', 'id'), (SELECT max(id) FROM projects));
SELECT setval(pg_get_serial_sequence('project_members', 'id'), (SELECT max(id) FROM project_members));
SELECT setval(pg_get_serial_sequence('time_entries', 'id'), (SELECT max(id) FROM time_entries));
SELECT setval(pg_get_serial_sequence('time_entry_comments', 'id'),
              (SELECT max(id) FROM time_entry_comments));

DROP TABLE pg_temp.seed_plan;
