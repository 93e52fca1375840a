"""backfill.tenant_ids on a real PostgreSQL with the demo app loaded: dry run, the real run
(parents first, unresolvable rows reported), resuming after a crash, cancel, lock timeouts."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from services.maintenance.actions import ActionFailed, JobCancelled
from services.maintenance.actions.backfill import backfill_tenant_ids
from services.maintenance.tenancy import DESTRUCTIVE_LOCK_ID
from shared import BackfillTenantIds, Progress
from tests.harness import eventually

from .test_tenant_graph_support import (
    CHILDREN_WITH_NULLS,
    FAST,
    Recorder,
    context,
    demo_db,  # noqa: F401 - fixture
    nulls,
)

ACTION = "backfill.tenant_ids"


async def orphan_rows(dsn: str) -> None:
    """Rows no parent can resolve: an entry whose project and user have no tenant (the columns
    were made nullable for the test) and a comment on that entry."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""
            ALTER TABLE projects ALTER COLUMN tenant_id DROP NOT NULL;
            ALTER TABLE users ALTER COLUMN tenant_id DROP NOT NULL;
            INSERT INTO projects (id, tenant_id, name) VALUES (9001, NULL, 'Lost');
            INSERT INTO users (id, tenant_id, email, name) VALUES (9001, NULL, 'x@y', 'X');
            INSERT INTO time_entries (id, project_id, user_id, tenant_id, started_at, ended_at)
                VALUES (9900001, 9001, 9001, NULL, now() - interval '2 h',
                        now() - interval '1 h');
            INSERT INTO time_entry_comments (id, time_entry_id, tenant_id, body)
                VALUES (9900001, 9900001, NULL, 'orphan');
        """)
    finally:
        await conn.close()


async def run(dsn: str, recorder: Recorder | None = None, **params: Any) -> dict[str, Any]:
    async with context(dsn, ACTION, recorder=recorder) as ctx:
        return await backfill_tenant_ids(ctx, BackfillTenantIds(**params))


async def test_dry_run_counts_what_is_null_and_writes_nothing(demo_db: str) -> None:  # noqa: F811
    await orphan_rows(demo_db)
    before = await nulls(demo_db)
    result = await run(demo_db, dry_run=True)
    assert await nulls(demo_db) == before, "a dry run writes nothing"
    tables = result["tables"]
    for name, count in before.items():
        entry = tables[f"public.{name}"]
        assert entry["null_rows"] == count
        assert entry["would_set"] + entry["unresolvable"] == count
    # Comments whose entry lacks tenant_id too count as settable: the entry is filled first.
    assert tables["public.time_entry_comments"]["would_set"] == before["time_entry_comments"] - 1
    assert tables["public.time_entries"]["unresolvable_sample"] == ["9900001"]
    assert tables["public.time_entry_comments"]["unresolvable_sample"] == ["9900001"]
    # No parent with a tenant at all: reported, never guessed.
    assert tables["public.projects"]["unresolvable"] == 1
    assert tables["public.users"]["unresolvable_sample"] == ["9001"]
    assert result["order"].index("public.time_entries") < \
        result["order"].index("public.time_entry_comments")
    conn = await asyncpg.connect(demo_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ops.backfill_runs") == 0
    finally:
        await conn.close()


async def test_backfill_sets_every_resolvable_tenant_parents_first(
    demo_db: str,  # noqa: F811
) -> None:
    await orphan_rows(demo_db)
    before = await nulls(demo_db)
    dry = await run(demo_db, dry_run=True)
    recorder = Recorder()
    result = await run(demo_db, recorder, batch_size=7)
    after = await nulls(demo_db)
    assert after == {"users": 1, "projects": 1, "project_members": 0, "time_entries": 1,
                     "time_entry_comments": 1}
    for name, entry in result["tables"].items():
        assert entry["updated"] == dry["tables"][name]["would_set"], name
        assert entry["unresolvable"] == dry["tables"][name]["unresolvable"], name
        assert entry["remaining_null"] == after[name.removeprefix("public.")]
    assert result["updated"] == sum(before.values()) - 4
    assert result["tables"]["public.time_entry_comments"]["unresolvable_sample"] == ["9900001"]
    assert result["tables"]["public.time_entries"]["batches"] > 1, "batched by batch_size"
    assert result["resumed_from"] is None and result["duration_s"] >= 0
    conn = await asyncpg.connect(demo_db)
    try:
        # Every filled row carries its parent's tenant.
        for child, parent, key in (("time_entries", "projects", "project_id"),
                                   ("project_members", "projects", "project_id"),
                                   ("time_entry_comments", "time_entries", "time_entry_id")):
            wrong = await conn.fetchval(
                f"SELECT count(*) FROM {child} c JOIN {parent} p ON p.id = c.{key} "
                "WHERE c.tenant_id IS DISTINCT FROM p.tenant_id")
            assert wrong == 0, child
        run_row = await conn.fetchrow("SELECT * FROM ops.backfill_runs")
        assert run_row["finished_at"] is not None
        assert json.loads(run_row["result"])["updated"] == result["updated"]
    finally:
        await conn.close()
    # Progress: rows done against the total, ending complete.
    last: Progress = recorder.events[-1][0]
    assert last.unit == "rows" and last.done == last.total == sum(before.values())
    assert any("public.time_entries:" in m for m in recorder.messages)


async def test_parents_disagreeing_is_unresolvable_not_guessed(demo_db: str) -> None:  # noqa: F811
    conn = await asyncpg.connect(demo_db)
    try:  # a membership of an acme user in a globex project
        await conn.execute("INSERT INTO project_members (id, project_id, user_id, tenant_id) "
                           "VALUES (777777, 201, 101, NULL)")
    finally:
        await conn.close()
    result = await run(demo_db)
    members = result["tables"]["public.project_members"]
    assert members["unresolvable"] == 1 and members["unresolvable_sample"] == ["777777"]
    conn = await asyncpg.connect(demo_db)
    try:
        assert await conn.fetchval(
            "SELECT tenant_id FROM project_members WHERE id = 777777") is None
    finally:
        await conn.close()


async def test_a_crashed_run_is_resumed_from_its_checkpoint_no_row_twice(
    demo_db: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(demo_db)
    await conn.execute("""
        CREATE TABLE touched (tbl text, id bigint);
        CREATE FUNCTION note_touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO touched VALUES (TG_TABLE_NAME, NEW.id); RETURN NEW; END $$;
        CREATE TRIGGER t1 AFTER UPDATE ON time_entries FOR EACH ROW EXECUTE FUNCTION note_touch();
        CREATE TRIGGER t2 AFTER UPDATE ON time_entry_comments FOR EACH ROW
            EXECUTE FUNCTION note_touch();
    """)
    await conn.close()
    before = await nulls(demo_db)

    class Crash(Exception):
        pass

    async def crash_after_third(table: str, batch: int) -> None:
        if table == "public.time_entries" and batch == 3:
            raise Crash("worker died")

    crashing = {"tenancy_config": replace(FAST, after_batch=crash_after_third)}
    async with context(demo_db, ACTION, extras=crashing, job_id="job-crashed") as ctx:
        with pytest.raises(Crash):
            await backfill_tenant_ids(ctx, BackfillTenantIds(batch_size=5))
    halfway = await nulls(demo_db)
    assert halfway["time_entries"] == before["time_entries"] - 15, "three batches committed"
    assert halfway["time_entry_comments"] == before["time_entry_comments"]

    async with context(demo_db, ACTION, job_id="job-resumed") as ctx:
        result = await backfill_tenant_ids(ctx, BackfillTenantIds(batch_size=5))
    assert result["resumed_from"] == "job-crashed"
    entries = result["tables"]["public.time_entries"]
    assert entries["resumed_after"] is not None
    assert entries["updated"] == before["time_entries"], "counts carried over the crash"
    assert await nulls(demo_db) == dict.fromkeys(before, 0)
    conn = await asyncpg.connect(demo_db)
    try:
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT tbl, id FROM touched GROUP BY 1, 2 "
            "HAVING count(*) > 1) x")
        assert twice == 0, "no row was processed twice"
        assert await conn.fetchval("SELECT count(*) FROM touched WHERE tbl = 'time_entries'") \
            == before["time_entries"]
        runs = {r["job_id"]: r for r in await conn.fetch("SELECT * FROM ops.backfill_runs")}
        assert runs["job-crashed"]["taken_over_by"] == "job-resumed"
        assert runs["job-crashed"]["finished_at"] is None
        assert runs["job-resumed"]["finished_at"] is not None
    finally:
        await conn.close()
    # A later run has nothing left to resume: it starts from the beginning.
    again = await run(demo_db)
    assert again["resumed_from"] is None and again["updated"] == 0


async def test_cancel_between_batches_then_a_new_run_finishes(demo_db: str) -> None:  # noqa: F811
    before = await nulls(demo_db)
    recorder = Recorder()
    async with context(demo_db, ACTION, recorder=recorder, job_id="job-cancelled") as ctx:
        async def cancel_after_two(progress: Progress, message: str) -> None:
            if progress.done >= 4 and "set" in message:
                ctx.cancel_event.set()

        recorder.on_report = cancel_after_two
        with pytest.raises(JobCancelled):
            await backfill_tenant_ids(ctx, BackfillTenantIds(batch_size=2))
    partial = await nulls(demo_db)
    assert 0 < sum(before.values()) - sum(partial.values()) < sum(before.values())
    result = await run(demo_db, batch_size=2)
    assert result["resumed_from"] == "job-cancelled"
    assert await nulls(demo_db) == dict.fromkeys(before, 0)


async def test_a_locked_row_makes_the_batch_retry_until_released(
    demo_db: str,  # noqa: F811
) -> None:
    blocker = await asyncpg.connect(demo_db)
    tx = blocker.transaction()
    await tx.start()
    locked = await blocker.fetchval(
        "SELECT id FROM time_entries WHERE tenant_id IS NULL ORDER BY id LIMIT 1 FOR UPDATE")
    recorder = Recorder()
    task = asyncio.create_task(run(demo_db, recorder, batch_size=50))
    try:
        await eventually(lambda: sum("waiting for locks" in m for m in recorder.messages) >= 2,
                         timeout_s=20, message="the batch retrying on the lock")
        assert not task.done()
    finally:
        await tx.rollback()
        await blocker.close()
    result = await asyncio.wait_for(task, 30)
    assert result["tables"]["public.time_entries"]["remaining_null"] == 0
    conn = await asyncpg.connect(demo_db)
    try:
        assert await conn.fetchval("SELECT tenant_id FROM time_entries WHERE id = $1",
                                   locked) is not None
    finally:
        await conn.close()


async def test_lock_retries_are_bounded_and_fail_clearly(demo_db: str) -> None:  # noqa: F811
    blocker = await asyncpg.connect(demo_db)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE time_entries IN ACCESS EXCLUSIVE MODE")
    try:
        bounded = {"tenancy_config": replace(FAST, max_attempts=3)}
        async with context(demo_db, ACTION, extras=bounded) as ctx:
            with pytest.raises(ActionFailed, match=r"still blocked .* after 3 attempts"):
                await backfill_tenant_ids(ctx, BackfillTenantIds())
    finally:
        await tx.rollback()
        await blocker.close()


async def test_a_real_run_waits_for_the_destructive_lock(demo_db: str) -> None:  # noqa: F811
    holder = await asyncpg.connect(demo_db)
    await holder.execute("SELECT pg_advisory_lock($1)", DESTRUCTIVE_LOCK_ID)
    recorder = Recorder()
    task = asyncio.create_task(run(demo_db, recorder))
    try:
        await eventually(lambda: "waiting for another destructive job to finish"
                         in recorder.messages, timeout_s=10, message="waiting on the lock")
        assert (await nulls(demo_db))["time_entries"] > 0, "nothing written while waiting"
    finally:
        await holder.execute("SELECT pg_advisory_unlock($1)", DESTRUCTIVE_LOCK_ID)
        await holder.close()
    await asyncio.wait_for(task, 30)
    assert sum((await nulls(demo_db)).values()) == 0


async def test_without_tenant_tables_the_job_fails_clearly(demo_db: str) -> None:  # noqa: F811
    conn = await asyncpg.connect(demo_db)
    await conn.execute("DROP TABLE time_entry_comments, time_entries, project_members, "
                       "projects, users")
    await conn.close()
    with pytest.raises(ActionFailed, match="no application table has a tenant_id column"):
        await run(demo_db)


def test_children_with_nulls_constant_matches_the_seed() -> None:
    assert set(CHILDREN_WITH_NULLS) <= {"project_members", "time_entries",
                                        "time_entry_comments"}


async def test_a_table_without_a_primary_key_is_skipped_and_said_so(
    demo_db: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(demo_db)
    await conn.execute("CREATE TABLE notes (tenant_id text, project_id bigint REFERENCES "
                       "projects (id)); INSERT INTO notes VALUES (NULL, 101), (NULL, 201)")
    await conn.close()
    dry = await run(demo_db, dry_run=True)
    assert dry["tables"]["public.notes"]["null_rows"] == 2
    assert dry["tables"]["public.notes"]["would_set"] == 0
    assert "no primary key" in dry["tables"]["public.notes"]["skipped"]
    result = await run(demo_db)
    assert result["tables"]["public.notes"] == {
        "skipped": dry["tables"]["public.notes"]["skipped"], "null_rows": 2}
    assert result["tables"]["public.time_entries"]["remaining_null"] == 0
