"""The tenant graph: pure planning (order, cycles, scope, migration tables) and the graph read
from the catalog of the real demo schema and of schemas built to test the edges."""

from __future__ import annotations

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.maintenance.tenancy import (
    ForeignKey,
    GraphCycle,
    Table,
    TenantGraph,
    is_migration_table,
    read_graph,
    topological,
)

from .test_tenant_graph_support import demo_db  # noqa: F401 - fixture

T = "text"


def graph(tables: dict[str, bool], fks: list[tuple[str, str, tuple[str, ...]]]) -> TenantGraph:
    """``tables``: name -> has tenant_id; ``fks``: (child, parent, child columns)."""
    built = {f"public.{n}": Table("public", n, ("id",), ("bigint",), T if has else None)
             for n, has in tables.items()}
    keys = tuple(ForeignKey(f"{c}_{p}_{'_'.join(cols)}", f"public.{c}", f"public.{p}", cols,
                            ("id",) * len(cols)) for c, p, cols in fks)
    return TenantGraph(built, keys)


def test_topological_puts_parents_first_and_breaks_ties_by_name() -> None:
    order = topological(["c", "b", "a", "d"], [("a", "c"), ("b", "c"), ("c", "d"), ("d", "d")])
    assert order == ["a", "b", "c", "d"]


def test_a_cycle_is_reported_with_its_tables_not_looped_on() -> None:
    with pytest.raises(GraphCycle) as caught:
        topological(["a", "b", "c", "z"], [("a", "b"), ("b", "c"), ("c", "a"), ("z", "a")])
    assert caught.value.tables == ["a", "b", "c"]
    assert "cycle between: a, b, c" in str(caught.value)


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=30))
def test_any_acyclic_graph_orders_every_edge(pairs: list[tuple[int, int]]) -> None:
    edges = [(f"n{a}", f"n{b}") for a, b in pairs if a < b]  # a < b: never a cycle
    nodes = [f"n{i}" for i in range(8)]
    order = topological(nodes, edges)
    assert sorted(order) == nodes
    assert all(order.index(a) < order.index(b) for a, b in edges)


def test_sources_order_and_scope_multi_hop() -> None:
    g = graph(
        {"tenants": False, "projects": True, "entries": True, "comments": True,
         "attachments": False, "settings": False},
        [("projects", "tenants", ("tenant_id",)), ("entries", "projects", ("project_id",)),
         ("entries", "tenants", ("tenant_id",)), ("comments", "entries", ("entry_id",)),
         ("attachments", "comments", ("comment_id",)), ("comments", "comments", ("reply_to",))],
    )
    assert g.roots == {"public.tenants": "id"}
    assert [fk.parent for fk in g.sources("public.entries")] == ["public.projects"]
    assert {fk.parent for fk in g.sources("public.comments")} == {"public.entries",
                                                                  "public.comments"}
    assert g.backfill_order() == ["public.projects", "public.entries", "public.comments"]
    # attachments has no tenant_id but hangs off a tenant's comment: it belongs to the scope;
    # settings hangs off nothing: it does not.
    assert g.tenant_scope() == ["public.attachments", "public.comments", "public.entries",
                                "public.projects", "public.tenants"]
    order = g.purge_order()
    assert order.index("public.attachments") < order.index("public.comments") < \
        order.index("public.entries") < order.index("public.projects") < \
        order.index("public.tenants")


def test_a_backfill_cycle_between_tables_is_refused() -> None:
    g = graph({"a": True, "b": True}, [("a", "b", ("b_id",)), ("b", "a", ("a_id",))])
    with pytest.raises(GraphCycle, match=r"public\.a, public\.b"):
        g.backfill_order()


@pytest.mark.parametrize("name", ["schema_migrations", "_prisma_migrations", "knex_migrations",
                                  "knex_migrations_lock", "django_migrations", "alembic_version",
                                  "flyway_schema_history", "__drizzle_migrations",
                                  "goose_db_version", "DATABASECHANGELOG"])
def test_migration_tables_are_recognised(name: str) -> None:
    assert is_migration_table(name)


@pytest.mark.parametrize("name", ["tenants", "time_entries", "migrants", "versions"])
def test_application_tables_are_not_migration_tables(name: str) -> None:
    assert not is_migration_table(name)


async def test_the_demo_schema_graph_from_the_catalog(demo_db: str) -> None:  # noqa: F811
    conn = await asyncpg.connect(demo_db)
    try:
        g = await read_graph(conn)
    finally:
        await conn.close()
    names = {f"public.{t}" for t in ("tenants", "users", "projects", "project_members",
                                     "time_entries", "time_entry_comments")}
    assert set(g.application_tables) == names, "ops.* and schema_migrations are not app tables"
    assert g.roots == {"public.tenants": "id"}
    assert g.table("public.time_entries").primary_key == ("id",)
    assert g.table("public.time_entries").tenant_type == "text"
    order = g.backfill_order()
    assert set(order) == names - {"public.tenants"}
    assert order.index("public.projects") < order.index("public.time_entries") < \
        order.index("public.time_entry_comments")
    assert order.index("public.users") < order.index("public.project_members")
    assert {fk.parent for fk in g.sources("public.project_members")} == {
        "public.projects", "public.users"}
    assert [fk.parent for fk in g.sources("public.time_entry_comments")] == [
        "public.time_entries"]
    assert order == ["public.projects", "public.users", "public.project_members",
                     "public.time_entries", "public.time_entry_comments"]  # as in the docs
    purge = g.purge_order()
    assert purge == ["public.time_entry_comments", "public.time_entries",
                     "public.project_members", "public.users", "public.projects",
                     "public.tenants"]
    assert purge.index("public.time_entry_comments") < purge.index("public.time_entries") < \
        purge.index("public.projects")


async def test_composite_keys_other_schemas_and_excluded_tables(demo_db: str) -> None:  # noqa: F811
    conn = await asyncpg.connect(demo_db)
    try:
        await conn.execute("""
            CREATE SCHEMA billing;
            CREATE TABLE billing.invoices (tenant_id text REFERENCES tenants (id),
                                           year int, no int, PRIMARY KEY (year, no));
            CREATE TABLE billing.invoice_lines (id bigint PRIMARY KEY, year int, no int,
                tenant_id text, FOREIGN KEY (year, no) REFERENCES billing.invoices (year, no));
            CREATE TABLE public.schema_migrations (version text PRIMARY KEY);
            CREATE TABLE public.audit_log (line text);
        """)
        g = await read_graph(conn)
    finally:
        await conn.close()
    assert "public.schema_migrations" not in g.tables
    assert "ops.jobs" not in g.tables and "ops.backfill_checkpoints" not in g.tables
    assert g.table("public.audit_log").primary_key == ()
    assert g.table("billing.invoices").primary_key == ("year", "no")
    [source] = g.sources("billing.invoice_lines")
    assert (source.parent, source.child_columns) == ("billing.invoices", ("year", "no"))
    assert source.join("c", "p") == 'p."year" = c."year" AND p."no" = c."no"'
    assert g.backfill_order().index("billing.invoices") < \
        g.backfill_order().index("billing.invoice_lines")
