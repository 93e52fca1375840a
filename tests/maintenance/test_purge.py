"""purge.app_data on a real PostgreSQL with the demo app loaded: one tenant's rows through the
foreign-key graph (children first), everything (one TRUNCATE, ops untouched), dry runs, and the
backup that must come first."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from services.maintenance.actions import ActionContext, ActionFailed
from services.maintenance.actions.purge import purge_app_data
from shared import PurgeAppData
from tests.harness import eventually

from .test_tenant_graph_support import (
    APP_TABLES,
    FAST,
    Recorder,
    context,
    counts,
    demo_db,  # noqa: F401 - fixture
)

ACTION = "purge.app_data"


class Backups:
    """A backup callable that records what it was asked for (and the state it saw)."""

    def __init__(self, dsn: str, fail: bool = False) -> None:
        self.dsn, self.fail = dsn, fail
        self.labels: list[str] = []
        self.seen: list[dict[str, int]] = []

    async def __call__(self, ctx: ActionContext, label: str) -> dict[str, Any]:
        self.labels.append(label)
        self.seen.append(await counts(self.dsn))
        if self.fail:
            raise RuntimeError("S3 unreachable")
        return {"key": f"backups/demo/{label}.dump", "size_bytes": 1}


async def purge(dsn: str, backup: Any = None, recorder: Recorder | None = None,
                **params: Any) -> dict[str, Any]:
    extras = {"backup": backup} if backup is not None else {}
    async with context(dsn, ACTION, extras=extras, recorder=recorder) as ctx:
        return await purge_app_data(ctx, PurgeAppData(**params))


async def ops_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM ops.{t}"))
                for t in ("schema_migrations", "jobs", "backfill_runs")}
    finally:
        await conn.close()


async def tenant_counts(dsn: str, tenant: str) -> dict[str, int]:
    """Rows per table reaching ``tenant`` through their parents (independent of tenant_id)."""
    conn = await asyncpg.connect(dsn)
    try:
        sql = {
            "tenants": "SELECT count(*) FROM tenants WHERE id = $1",
            "users": "SELECT count(*) FROM users WHERE tenant_id = $1",
            "projects": "SELECT count(*) FROM projects WHERE tenant_id = $1",
            "project_members": "SELECT count(*) FROM project_members m JOIN projects p "
                               "ON p.id = m.project_id WHERE p.tenant_id = $1",
            "time_entries": "SELECT count(*) FROM time_entries e JOIN projects p "
                            "ON p.id = e.project_id WHERE p.tenant_id = $1",
            "time_entry_comments": "SELECT count(*) FROM time_entry_comments c JOIN "
                                   "time_entries e ON e.id = c.time_entry_id JOIN projects p "
                                   "ON p.id = e.project_id WHERE p.tenant_id = $1",
        }
        return {t: int(await conn.fetchval(q, tenant)) for t, q in sql.items()}
    finally:
        await conn.close()


async def test_dry_run_lists_the_tenants_rows_and_changes_nothing(
    demo_db: str,  # noqa: F811
) -> None:
    before = await counts(demo_db)
    backups = Backups(demo_db)
    result = await purge(demo_db, backups, scope="tenant", tenant_id="acme", confirm="acme",
                         dry_run=True)
    assert await counts(demo_db) == before
    assert backups.labels == [], "a dry run takes no backup"
    expected = await tenant_counts(demo_db, "acme")
    assert result["tables"] == {f"public.{t}": n for t, n in expected.items()}
    # Children before parents, the tenant's own row last.
    order = list(result["tables"])
    assert order.index("public.time_entry_comments") < order.index("public.time_entries") < \
        order.index("public.projects") < order.index("public.tenants") == len(order) - 1
    # Rows lacking tenant_id are still counted, through their parents.
    assert result["tables"]["public.time_entry_comments"] > 0
    assert result["total"] == sum(expected.values()) and "backup_key" not in result


async def test_purge_tenant_removes_exactly_that_tenants_rows_children_first(
    demo_db: str,  # noqa: F811
) -> None:
    others = {t: await tenant_counts(demo_db, t) for t in ("globex", "initech", "umbrella",
                                                          "hooli")}
    acme = await tenant_counts(demo_db, "acme")
    before = await counts(demo_db)
    ops_before = await ops_counts(demo_db)
    backups = Backups(demo_db)
    recorder = Recorder()
    result = await purge(demo_db, backups, recorder, scope="tenant", tenant_id="acme",
                         confirm="acme")
    # The backup came first, while every row was still there.
    assert backups.labels == ["before-purge-acme"] and backups.seen == [before]
    assert result["backup_key"] == "backups/demo/before-purge-acme.dump"
    assert result["deleted"] == {f"public.{t}": n for t, n in acme.items()}
    assert await tenant_counts(demo_db, "acme") == dict.fromkeys(APP_TABLES, 0)
    for tenant, count in others.items():
        assert await tenant_counts(demo_db, tenant) == count, tenant
    after = await counts(demo_db)
    assert after == {t: before[t] - acme[t] for t in APP_TABLES}
    assert await ops_counts(demo_db) == ops_before
    deleted_in_order = [m.split(":")[0] for m in recorder.messages if "rows deleted" in m]
    firsts = list(dict.fromkeys(deleted_in_order))
    assert firsts.index("public.time_entry_comments") < firsts.index("public.time_entries") \
        < firsts.index("public.projects") < firsts.index("public.tenants")


async def test_a_child_reaching_the_tenant_only_through_its_parent_is_deleted(
    demo_db: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(demo_db)
    try:
        # A table the app added without tenant_id, hanging off comments; and a comment whose
        # tenant_id says globex but whose entry is acme's: the foreign key decides.
        await conn.execute("""
            CREATE TABLE attachments (id bigint PRIMARY KEY,
                comment_id bigint NOT NULL REFERENCES time_entry_comments (id), name text);
            INSERT INTO attachments SELECT c.id, c.id, 'file' FROM time_entry_comments c;
            UPDATE time_entry_comments SET tenant_id = 'globex' WHERE id = 100103;
        """)
        acme_attachments = await conn.fetchval(
            "SELECT count(*) FROM attachments WHERE comment_id / 100000 = 1")
    finally:
        await conn.close()
    result = await purge(demo_db, Backups(demo_db), scope="tenant", tenant_id="acme",
                         confirm="acme")
    assert result["deleted"]["public.attachments"] == acme_attachments > 0
    conn = await asyncpg.connect(demo_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM time_entry_comments WHERE id = 100103") \
            == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM attachments WHERE comment_id / 100000 <> 1") > 0
    finally:
        await conn.close()


async def test_purge_all_truncates_app_tables_and_leaves_ops_alone(
    demo_db: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(demo_db)
    await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY); "
                       "INSERT INTO schema_migrations VALUES ('20240101')")
    await conn.execute("INSERT INTO ops.backfill_runs (job_id) VALUES ('kept')")
    await conn.close()
    before = await counts(demo_db)
    ops_before = await ops_counts(demo_db)
    backups = Backups(demo_db)
    dry = await purge(demo_db, backups, scope="all", confirm="CONFIRM", dry_run=True)
    assert await counts(demo_db) == before and backups.labels == []
    assert dry["tables"] == {f"public.{t}": n for t, n in before.items()}
    result = await purge(demo_db, backups, scope="all", confirm="CONFIRM")
    assert backups.labels == ["before-purge-all"] and backups.seen == [before]
    assert result["backup_key"] == "backups/demo/before-purge-all.dump"
    assert sorted(result["truncated"]) == sorted(f"public.{t}" for t in APP_TABLES)
    assert await counts(demo_db) == dict.fromkeys(APP_TABLES, 0)
    assert await ops_counts(demo_db) == ops_before
    conn = await asyncpg.connect(demo_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        await conn.close()


@pytest.mark.parametrize("scope", ["all", "tenant"])
async def test_no_backup_callable_refuses_and_deletes_nothing(
    demo_db: str, scope: str  # noqa: F811
) -> None:
    before = await counts(demo_db)
    params = {"scope": "all", "confirm": "CONFIRM"} if scope == "all" else {
        "scope": "tenant", "tenant_id": "acme", "confirm": "acme"}
    with pytest.raises(ActionFailed, match="purge refused, nothing was deleted: this worker "
                                           "has no backup configured"):
        await purge(demo_db, None, **params)
    assert await counts(demo_db) == before


@pytest.mark.parametrize("scope", ["all", "tenant"])
async def test_a_failing_backup_refuses_and_deletes_nothing(
    demo_db: str, scope: str  # noqa: F811
) -> None:
    before = await counts(demo_db)
    params = {"scope": "all", "confirm": "CONFIRM"} if scope == "all" else {
        "scope": "tenant", "tenant_id": "acme", "confirm": "acme"}
    backups = Backups(demo_db, fail=True)
    with pytest.raises(ActionFailed, match="the backup before it failed: S3 unreachable"):
        await purge(demo_db, backups, **params)
    assert len(backups.labels) == 1 and await counts(demo_db) == before

    async def no_key(ctx: ActionContext, label: str) -> dict[str, Any]:
        return {"size_bytes": 0}

    with pytest.raises(ActionFailed, match="returned no key"):
        await purge(demo_db, no_key, **params)
    assert await counts(demo_db) == before


async def test_a_locked_row_makes_the_delete_retry_until_released(
    demo_db: str,  # noqa: F811
) -> None:
    blocker = await asyncpg.connect(demo_db)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT 1 FROM time_entries WHERE id = 100101 FOR UPDATE")
    recorder = Recorder()
    task = asyncio.create_task(purge(demo_db, Backups(demo_db), recorder, scope="tenant",
                                     tenant_id="acme", confirm="acme"))
    try:
        await eventually(lambda: any("waiting for locks" in m for m in recorder.messages),
                         timeout_s=20, message="the delete batch retrying on the lock")
        assert not task.done()
    finally:
        await tx.rollback()
        await blocker.close()
    result = await asyncio.wait_for(task, 30)
    assert result["deleted"]["public.time_entries"] > 0
    assert await tenant_counts(demo_db, "acme") == dict.fromkeys(APP_TABLES, 0)


async def test_cancel_stops_between_batches_and_keeps_the_rest(
    demo_db: str,  # noqa: F811
) -> None:
    from services.maintenance.actions import JobCancelled

    before = await counts(demo_db)
    recorder = Recorder()
    async with context(demo_db, ACTION, recorder=recorder,
                       extras={"backup": Backups(demo_db),
                               "tenancy_config": replace(FAST, purge_batch_size=3)}) as ctx:
        async def cancel_on_first_delete(progress: Any, message: str) -> None:
            if "rows deleted" in message:
                ctx.cancel_event.set()

        recorder.on_report = cancel_on_first_delete
        with pytest.raises(JobCancelled):
            await purge_app_data(ctx, PurgeAppData(scope="tenant", tenant_id="acme",
                                                   confirm="acme"))
    after = await counts(demo_db)
    assert after["time_entry_comments"] == before["time_entry_comments"] - 3
    assert {t: after[t] for t in APP_TABLES if t != "time_entry_comments"} == \
        {t: before[t] for t in APP_TABLES if t != "time_entry_comments"}


async def test_tables_without_a_key_and_self_references_are_purged_too(
    demo_db: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(demo_db)
    try:
        await conn.execute("""
            CREATE TABLE notes (tenant_id text REFERENCES tenants (id), body text);
            INSERT INTO notes SELECT t, 'n' || g FROM unnest(ARRAY['acme', 'globex']) t,
                generate_series(1, 7) g;
            CREATE TABLE threads (id bigint PRIMARY KEY, tenant_id text,
                                  parent_id bigint REFERENCES threads (id));
            INSERT INTO threads VALUES (1, 'acme', NULL), (2, 'acme', 1), (3, NULL, 2),
                                       (4, 'globex', NULL);
        """)
    finally:
        await conn.close()
    tiny = {"backup": Backups(demo_db), "tenancy_config": replace(FAST, purge_batch_size=3)}
    async with context(demo_db, ACTION, extras=tiny) as ctx:
        result = await purge_app_data(ctx, PurgeAppData(scope="tenant", tenant_id="acme",
                                                        confirm="acme"))
    assert result["deleted"]["public.notes"] == 7
    # Row 3 lacks tenant_id but its parent is acme's row 2; self-references go in one statement.
    assert result["deleted"]["public.threads"] == 3
    conn = await asyncpg.connect(demo_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM notes WHERE tenant_id = 'globex'") == 7
        assert await conn.fetch("SELECT id FROM threads") == [(4,)]
    finally:
        await conn.close()


async def test_an_unknown_tenant_deletes_nothing_and_takes_no_backup(
    demo_db: str,  # noqa: F811
) -> None:
    before = await counts(demo_db)
    backups = Backups(demo_db)
    result = await purge(demo_db, backups, scope="tenant", tenant_id="nobody",
                         confirm="nobody")
    assert result["total"] == 0 and backups.labels == [] and "backup_key" not in result
    assert await counts(demo_db) == before


async def test_a_child_inserted_meanwhile_is_caught_by_another_pass(
    demo_db: str,  # noqa: F811
) -> None:
    recorder = Recorder()
    inserted: list[int] = []

    async def app_writes(progress: Any, message: str) -> None:
        if message.startswith("public.time_entry_comments:") and not inserted:
            conn = await asyncpg.connect(demo_db)
            try:  # the app comments on an acme entry after the comments were purged
                inserted.append(await conn.fetchval(
                    "INSERT INTO time_entry_comments (time_entry_id, tenant_id, body) "
                    "VALUES (100101, 'acme', 'late') RETURNING id"))
            finally:
                await conn.close()

    recorder.on_report = app_writes
    result = await purge(demo_db, Backups(demo_db), recorder, scope="tenant", tenant_id="acme",
                         confirm="acme")
    assert inserted and any("pass 1: rows arrived meanwhile" in m for m in recorder.messages)
    assert await tenant_counts(demo_db, "acme") == dict.fromkeys(APP_TABLES, 0)
    assert result["deleted"]["public.time_entry_comments"] == \
        result["tables"]["public.time_entry_comments"] + 1
